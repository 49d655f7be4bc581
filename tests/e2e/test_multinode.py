"""Issue 15, several nodes in one process: ``--nodename vk-mn-0,vk-mn-1,vk-mn-2``.

One `virtual-kubelet` daemon (the real CLI, the in-process process provider, deploy/rbac.yaml's
ServiceAccount) registers three nodes, node i's kubelet API on the --listen-address port + i.
kube-scheduler places one pod on each (nodeSelector kubernetes.io/hostname); `kubectl logs`
reaches each through the API server's node proxy, i.e. each node's own kubelet API. Deleting
one pod leaves the other two alone; one SIGTERM stops all three nodes.

The tests of this module run in order on one daemon; the last one stops it.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.network import TestNetwork, unavailable_reason
from tests.e2e.test_whole_cluster import apply, pod_spec
from tests.e2e.vkubelet_process import (
    VkubeletProcess,
    node_is_ready,
    scratch_namespace,
    service_account_kubeconfig,
    wait_for,
)

NODES = ("vk-mn-0", "vk-mn-1", "vk-mn-2")
CAPACITY = {"cpu": "2", "memory": "4Gi", "pods": "10"}


@pytest.fixture(scope="module")
def daemon(
    control_plane: Any, test_network: TestNetwork | None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VkubeletProcess]:
    """One daemon serving the three nodes, all Ready."""
    if unavailable_reason() is not None:
        pytest.skip(f"the node proxy refuses loopback kubelets and no test network: {unavailable_reason()}")
    assert test_network is not None
    work_dir = tmp_path_factory.mktemp("multinode")
    process = VkubeletProcess(
        work_dir=work_dir,
        kubeconfig=service_account_kubeconfig(control_plane, work_dir),
        node_name=",".join(NODES),
        network=test_network,
        provider="process",
        provider_config={node: CAPACITY for node in NODES},
    ).start()
    try:
        for node in NODES:
            wait_for(functools.partial(node_is_ready, control_plane, node), timeout=90, what=f"{node} Ready")
        yield process
    finally:
        process.stop()
        print(process.log_tail(120))
        for node in NODES:
            control_plane.kubectl("delete", "node", node, "--wait=false", check=False)


@pytest.fixture(scope="module")
def namespace(control_plane: Any, daemon: VkubeletProcess) -> Iterator[str]:
    """One pod per node, placed by the scheduler, each Running and logging its node's name."""
    with scratch_namespace(control_plane, "multinode") as name:
        for node in NODES:
            command = ["sh", "-c", f"echo hello from {node}; exec sleep 3600"]
            apply(
                control_plane,
                name,
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": node},
                    "spec": pod_spec(node, command),
                },
            )
        for node in NODES:
            wait_for(
                functools.partial(pod_running, control_plane, name, node), timeout=90, what=f"{node} Running"
            )
        yield name


def pod(control_plane: Any, namespace: str, name: str) -> dict[str, Any] | None:
    found = control_plane.kubectl("get", "pod", name, "-n", namespace, "-o", "json", check=False)
    if found.returncode != 0:
        return None
    document: dict[str, Any] = json.loads(found.stdout)
    return document


def running(found: dict[str, Any] | None) -> bool:
    return found is not None and found.get("status", {}).get("phase") == "Running"


def pod_running(control_plane: Any, namespace: str, name: str) -> bool:
    return running(pod(control_plane, namespace, name))


def logs_greet(control_plane: Any, namespace: str, node: str) -> bool:
    """The pod named after ``node`` logged its greeting (kubectl -> API server -> that node's
    kubelet API, on its own port -> the process's log)."""
    return bool(control_plane.kubectl("logs", "-n", namespace, node).stdout == f"hello from {node}\n")


def node_json(control_plane: Any, node: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(control_plane.kubectl("get", "node", node, "-o", "json").stdout)
    return found


def node_not_ready(control_plane: Any, node: str) -> bool:
    conditions = node_json(control_plane, node)["status"].get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] != "True" for c in conditions)


def test_each_node_has_its_own_kubelet_port(control_plane: Any, daemon: VkubeletProcess) -> None:
    ports = [
        node_json(control_plane, node)["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        for node in NODES
    ]
    assert ports == [daemon.port, daemon.port + 1, daemon.port + 2]
    for node in NODES:  # each is its own Node, with its own name as hostname
        labels = node_json(control_plane, node)["metadata"]["labels"]
        assert labels["kubernetes.io/hostname"] == node


def test_the_scheduler_places_a_pod_on_each_node_and_logs_work(control_plane: Any, namespace: str) -> None:
    for node in NODES:
        found = pod(control_plane, namespace, node)
        assert found is not None and found["spec"]["nodeName"] == node
        wait_for(
            functools.partial(logs_greet, control_plane, namespace, node), timeout=30, what=f"{node} logs"
        )


def test_deleting_one_pod_leaves_the_others_untouched(control_plane: Any, namespace: str) -> None:
    before = {node: pod(control_plane, namespace, node) for node in NODES[1:]}
    control_plane.kubectl("delete", "pod", NODES[0], "-n", namespace, "--wait=false")
    wait_for(lambda: pod(control_plane, namespace, NODES[0]) is None, timeout=60, what=f"{NODES[0]} deleted")
    for node, old in before.items():
        now = pod(control_plane, namespace, node)
        assert old is not None and now is not None
        assert now["metadata"]["uid"] == old["metadata"]["uid"]
        assert running(now)
        assert [s["restartCount"] for s in now["status"]["containerStatuses"]] == [0]
        assert logs_greet(control_plane, namespace, node)


def test_sigterm_stops_every_node(control_plane: Any, daemon: VkubeletProcess) -> None:
    assert daemon.stop() == 0
    for node in NODES:
        wait_for(functools.partial(node_not_ready, control_plane, node), timeout=30, what=f"{node} NotReady")
    # Each node's lines say which node they are about (the log is the one process's).
    log = daemon.log_path.read_text(errors="replace")
    for node in NODES:
        assert f"shutting down node={node}" in log


def test_one_node_failing_at_startup_fails_the_process_naming_it(
    control_plane: Any, test_network: TestNetwork | None, tmp_path: Path
) -> None:
    names = (f"vk-mn-ok-{uuid.uuid4().hex[:4]}", f"vk-mn-bad-{uuid.uuid4().hex[:4]}")
    process = VkubeletProcess(
        work_dir=tmp_path,
        kubeconfig=service_account_kubeconfig(control_plane, tmp_path),
        node_name=",".join(names),
        network=test_network,
        provider="process",
        provider_config={names[0]: CAPACITY},  # none for the second node
    ).start()
    try:
        assert process.process is not None
        code = process.process.wait(timeout=90)
        log = process.log_path.read_text(errors="replace")
        assert code == 1, log
        assert f"virtual-kubelet: node {names[1]}: " in log
        assert f"no entry for node {names[1]!r}" in log
    finally:
        process.stop()
        for name in names:
            control_plane.kubectl("delete", "node", name, "--wait=false", check=False)
