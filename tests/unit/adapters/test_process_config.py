"""The in-daemon process provider's --provider-config: the mock's format, this machine's defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vkubelet.adapters.node_config import MockConfigError
from vkubelet.adapters.process.config import DEFAULT_PODS, load_process_config


def test_no_file_means_this_machine() -> None:
    config = load_process_config(None, node_name="vk-0")
    assert (config.cpu, config.memory, config.pods, config.labels) == (None, None, DEFAULT_PODS, {})


def test_given_keys_are_used_and_absent_ones_stay_the_machines(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"vk-0": {"cpu": "4", "labels": {"zone": "a"}}, "vk-1": {"cpu": "9"}}))
    config = load_process_config(path, node_name="vk-0")
    assert (config.cpu, config.memory, config.pods, config.labels) == ("4", None, DEFAULT_PODS, {"zone": "a"})


def test_a_bad_quantity_names_the_file_key_and_value(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"vk-0": {"cpu": "four"}}))
    with pytest.raises(MockConfigError, match=r"cpu='four' is not a valid resource quantity") as caught:
        load_process_config(path, node_name="vk-0")
    assert str(path) in str(caught.value)


def test_unparsable_json_is_named(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text("{not json")
    with pytest.raises(MockConfigError, match=r"process provider config .*not valid JSON"):
        load_process_config(path, node_name="vk-0")
