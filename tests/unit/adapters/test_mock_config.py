"""The mock provider config's ``"*"`` entry: capacity for node names the file does not list."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vkubelet.adapters.mock.config import MockConfigError, load_mock_config, parse_mock_config


def write(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "mock.json"
    path.write_text(json.dumps(document))
    return path


def test_an_unlisted_node_takes_the_any_node_entry(tmp_path: Path) -> None:
    path = write(tmp_path, {"*": {"cpu": "4", "memory": "8Gi", "pods": "30"}})
    config = load_mock_config(path, node_name="vk-1")
    assert config.capacity == {"cpu": "4", "memory": "8Gi", "pods": "30"}


def test_a_listed_node_keeps_its_own_entry(tmp_path: Path) -> None:
    path = write(tmp_path, {"*": {"cpu": "4"}, "vk-0": {"cpu": "2"}})
    assert load_mock_config(path, node_name="vk-0").cpu == "2"
    assert load_mock_config(path, node_name="vk-9").cpu == "4"


def test_without_an_any_node_entry_the_error_suggests_one(tmp_path: Path) -> None:
    path = write(tmp_path, {"vk-1": {}})
    with pytest.raises(MockConfigError) as caught:
        load_mock_config(path, node_name="vk-0")
    message = str(caught.value)
    assert "'vk-0'" in message and "'vk-1'" in message and "'*'" in message


def test_errors_in_the_any_node_entry_name_it(tmp_path: Path) -> None:
    path = write(tmp_path, {"*": {"memory": "lots"}})
    with pytest.raises(MockConfigError, match=r"node '\*'.*memory"):
        load_mock_config(path, node_name="vk-0")


def test_parse_without_any_node_ignores_the_entry() -> None:
    # --provider process reads the same format without the fallback.
    with pytest.raises(MockConfigError, match="'vk-0'"):
        parse_mock_config({"*": {"cpu": "4"}}, node_name="vk-0")
