"""The mock provider config: the ``"*"`` entry for node names the file does not list, and the
Kubernetes rules its names, taints and quantities follow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vkubelet.adapters.node_config import MockConfigError, load_mock_config, parse_mock_config


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


# -- the Kubernetes rules are the domain's (vkubelet.domain.names), as on the command line -------


@pytest.mark.parametrize(
    ("entry", "named"),
    [
        ({"labels": {"bad key": "x"}}, r"labels: key 'bad key': a label key"),
        ({"labels": {"zone": "not ok"}}, r"labels: value 'not ok' of 'zone': a label value"),
        ({"taints": [{"key": "a b", "effect": "NoSchedule"}]}, r"taints\[0\]: key 'a b': a taint key"),
        (
            {"taints": [{"key": "gpu", "value": "-x", "effect": "NoSchedule"}]},
            r"taints\[0\]: value '-x': a taint value",
        ),
        ({"cpu": "1.5.2"}, r"cpu='1.5.2' is not a valid resource quantity"),
    ],
)
def test_names_taints_and_quantities_follow_the_kubernetes_rules(
    entry: dict[str, object], named: str
) -> None:
    with pytest.raises(MockConfigError, match=named):
        parse_mock_config({"vk-0": entry}, node_name="vk-0")


def test_valid_labels_and_taints_pass() -> None:
    config = parse_mock_config(
        {
            "vk-0": {
                "labels": {"topology.kubernetes.io/zone": "zone-a", "empty": ""},
                "taints": [{"key": "example.com/dedicated", "value": "", "effect": "NoExecute"}],
            }
        },
        node_name="vk-0",
    )
    assert config.labels["topology.kubernetes.io/zone"] == "zone-a"
    assert config.taints[0].key == "example.com/dedicated"
