"""``--nodename vk-0,vk-1,vk-2``: several nodes in one process, one Settings copy each."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from vkubelet.application.settings import Settings
from vkubelet.entrypoints.cli_args import CliError, RunCommand, parse_command_line
from vkubelet.entrypoints.multinode import (
    MultiNodeError,
    duplicate_node_name,
    node_settings,
    split_node_names,
)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """No kubeconfig anywhere, not in a cluster (the local control plane, never started here)."""
    return {"HOME": str(tmp_path)}


def run(*argv: str, env: Mapping[str, str]) -> RunCommand:
    command = parse_command_line(["--provider", "mock", *argv], env, providers=("mock",), exporters=())
    assert isinstance(command, RunCommand)
    return command


def cli_error(*argv: str, env: Mapping[str, str]) -> str:
    with pytest.raises(CliError) as raised:
        run(*argv, env=env)
    assert raised.value.exit_code == 2
    return str(raised.value)


def nodes(*argv: str, env: Mapping[str, str]) -> tuple[Settings, ...]:
    command = run(*argv, env=env)
    return node_settings(command.settings, command.node_names)


def multinode_error(*argv: str, env: Mapping[str, str]) -> str:
    with pytest.raises(MultiNodeError) as raised:
        nodes(*argv, env=env)
    assert raised.value.exit_code == 2
    return str(raised.value)


# --- parsing --------------------------------------------------------------------------------


def test_split_keeps_order_and_empty_items() -> None:
    assert split_node_names("vk-0") == ("vk-0",)
    assert split_node_names("vk-2,vk-0,vk-1") == ("vk-2", "vk-0", "vk-1")
    assert split_node_names("a,,b") == ("a", "", "b")


def test_duplicate_node_name_is_the_first_repeated() -> None:
    assert duplicate_node_name(["a", "b", "c"]) is None
    assert duplicate_node_name(["a", "b", "b", "a"]) == "b"


def test_a_single_name_is_the_usual_single_node(env: dict[str, str]) -> None:
    command = run("--nodename", "vk-0", "--listen-address", "127.0.0.1:10300", env=env)
    assert command.node_names == ("vk-0",)
    assert node_settings(command.settings, command.node_names) == (command.settings,)
    assert command.settings.node.name == "vk-0"
    assert command.settings.server.listen_port == 10300


def test_the_default_name_is_one_node(env: dict[str, str]) -> None:
    command = run(env=env)
    assert command.node_names == ("virtual-kubelet",)
    assert node_settings(command.settings, command.node_names) == (command.settings,)


def test_a_list_gives_the_first_name_to_settings(env: dict[str, str]) -> None:
    command = run("--nodename", "vk-0,vk-1,vk-2", env=env)
    assert command.node_names == ("vk-0", "vk-1", "vk-2")
    assert command.settings.node.name == "vk-0"


def test_the_list_may_come_from_the_environment(env: dict[str, str]) -> None:
    env["DEFAULT_NODE_NAME"] = "a,b"
    assert run(env=env).node_names == ("a", "b")


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("vk-0,VK-1", "VK-1"),
        ("vk-0,,vk-2", ""),
        ("vk-0, vk-1", " vk-1"),
        ("vk-0,", ""),
        ("vk_0,vk-1", "vk_0"),
    ],
)
def test_each_name_must_be_a_valid_node_name(env: dict[str, str], raw: str, shown: str) -> None:
    message = cli_error("--nodename", raw, env=env)
    assert f"invalid value {shown!r} for --nodename" in message
    assert "node name" in message


def test_an_invalid_name_in_the_environment_names_the_variable(env: dict[str, str]) -> None:
    env["DEFAULT_NODE_NAME"] = "ok,Not Ok"
    assert "invalid value 'Not Ok' for DEFAULT_NODE_NAME" in cli_error(env=env)


def test_duplicates_are_an_error_naming_the_duplicate(env: dict[str, str]) -> None:
    message = cli_error("--nodename", "vk-0,vk-1,vk-0", env=env)
    assert "--nodename" in message
    assert "'vk-0' is given twice" in message


# --- one Settings per node ------------------------------------------------------------------


def test_each_node_gets_its_name_and_the_next_port(env: dict[str, str]) -> None:
    per_node = nodes("--nodename", "vk-0,vk-1,vk-2", "--listen-address", "127.0.0.1:10300", env=env)
    assert [(s.node.name, s.server.listen_port) for s in per_node] == [
        ("vk-0", 10300),
        ("vk-1", 10301),
        ("vk-2", 10302),
    ]
    first = per_node[0]
    for other in per_node[1:]:  # nothing else differs
        assert other.server.listen_host == "127.0.0.1"
        assert other.node.provider == first.node.provider and other.node.taint == first.node.taint
        assert other.kube == first.kube and other.controller == first.controller
        assert other.trace == first.trace and other.leader_election == first.leader_election


def test_port_zero_gives_every_node_an_ephemeral_port(env: dict[str, str]) -> None:
    per_node = nodes("--nodename", "a,b", "--listen-address", "127.0.0.1:0", env=env)
    assert [s.server.listen_port for s in per_node] == [0, 0]


def test_the_last_port_may_be_65535(env: dict[str, str]) -> None:
    per_node = nodes("--nodename", "a,b,c", "--listen-address", "0.0.0.0:65533", env=env)
    assert per_node[-1].server.listen_port == 65535


def test_ports_past_65535_are_an_error_naming_the_flag(env: dict[str, str]) -> None:
    message = multinode_error("--nodename", "a,b,c", "--listen-address", "0.0.0.0:65534", env=env)
    assert "--listen-address" in message
    assert "65534..65536" in message


def test_a_kubelet_port_from_the_environment_counts_too(env: dict[str, str]) -> None:
    env["KUBELET_PORT"] = "65535"
    assert "--listen-address" in multinode_error("--nodename", "a,b", env=env)
    assert [s.server.listen_port for s in nodes("--nodename", "a", env=env)] == [65535]


def test_leader_election_with_several_nodes_is_refused(env: dict[str, str]) -> None:
    message = multinode_error("--nodename", "a,b", "--leader-elect", env=env)
    assert "--leader-elect" in message and "one node per process" in message


def test_leader_election_with_one_node_is_as_before(env: dict[str, str]) -> None:
    (only,) = nodes("--nodename", "a", "--leader-elect", env=env)
    assert only.leader_election.enabled
    assert only.leader_election.name == "vkubelet-a"
