"""``kubectl logs`` against a vkubelet node whose containers are real processes.

The stack of tests/e2e/test_grpc_provider_e2e.py (vkubelet --provider grpc and
`vkubelet-process-provider` on a unix socket), its own node name; every request goes
kubectl -> API server (its kubelet client certificate) -> vkubelet /containerLogs -> gRPC ->
the process provider's log file.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.network import TestNetwork, unavailable_reason
from tests.e2e.vkubelet_process import VkubeletProcess, service_account_kubeconfig, wait_for

NODE = "vk-e2e-logs"
PROVIDER_SCRIPT = Path(sys.executable).with_name("vkubelet-process-provider")
POD = "talker"


@pytest.fixture(scope="module")
def stack(
    control_plane: Any, test_network: TestNetwork | None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """Yields the work directory (the pod's script waits for a marker file there)."""
    if unavailable_reason() is not None:
        pytest.skip(f"the node proxy refuses loopback kubelets and no test network: {unavailable_reason()}")
    assert test_network is not None
    work_dir = tmp_path_factory.mktemp("logs")
    socket_path = work_dir / "provider.sock"
    provider_log = (work_dir / "process-provider.log").open("ab")
    provider = subprocess.Popen(
        [str(PROVIDER_SCRIPT), "--listen", f"unix://{socket_path}", "--root-dir", str(work_dir / "pods"),
         "--node-name", NODE, "--host-ip", test_network.node_ip],
        stdout=provider_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    config = work_dir / "grpc-provider.json"
    config.write_text(json.dumps({"address": f"unix://{socket_path}", "call_timeout": 5}))
    daemon = VkubeletProcess(
        work_dir=work_dir,
        kubeconfig=service_account_kubeconfig(control_plane, work_dir),
        node_name=NODE,
        network=test_network,
        provider="grpc",
        provider_config_path=config,
    )
    try:
        wait_for(socket_path.exists, timeout=30, what="provider socket")
        daemon.start()
        wait_for(lambda: node_ready(control_plane), timeout=60, what=f"node {NODE} Ready")
        yield work_dir
        daemon.assert_alive()
    finally:
        if daemon.process is not None:
            daemon.stop()
            print(daemon.log_tail(80))
        provider.terminate()
        try:
            provider.wait(timeout=20)
        except subprocess.TimeoutExpired:
            provider.kill()
            provider.wait()


def node_ready(control_plane: Any) -> bool:
    result = control_plane.kubectl("get", "node", NODE, "-o", "json", check=False)
    if result.returncode != 0:
        return False
    conditions = json.loads(result.stdout)["status"].get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


@pytest.fixture(scope="module")
def talker(control_plane: Any, stack: Path) -> tuple[str, Path]:
    """A running pod that wrote three lines and writes a fourth once the marker file exists."""
    namespace = f"logs-{uuid.uuid4().hex[:6]}"
    control_plane.create_namespace(namespace)
    marker = stack / f"marker-{uuid.uuid4().hex}"
    script = (
        f"echo one; echo two; echo three; while [ ! -e {marker} ]; do sleep 0.1; done; echo after; sleep 3600"
    )
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": POD, "namespace": namespace},
        "spec": {
            "nodeName": NODE,
            "terminationGracePeriodSeconds": 2,
            "enableServiceLinks": False,
            "containers": [{"name": "main", "image": "ignored", "command": ["sh", "-c", script]}],
        },
    }
    control_plane.kubectl("create", "-f", "-", input=json.dumps(manifest))
    wait_for(
        lambda: logs(control_plane, namespace) == "one\ntwo\nthree\n", timeout=30, what="three lines logged"
    )
    return namespace, marker


def logs(control_plane: Any, namespace: str, *args: str) -> str:
    result = control_plane.kubectl("logs", "-n", namespace, POD, *args, check=False)
    assert result.returncode == 0, result.stderr
    return str(result.stdout)


def test_kubectl_logs_tail_and_timestamps(control_plane: Any, talker: tuple[str, Path]) -> None:
    namespace, _ = talker
    assert logs(control_plane, namespace, "-c", "main") == "one\ntwo\nthree\n"
    assert logs(control_plane, namespace, "--tail=1") == "three\n"
    assert logs(control_plane, namespace, "--limit-bytes=5") == "one\nt"
    stamped = logs(control_plane, namespace, "--timestamps", "--tail=2").splitlines()
    assert [line.split(" ", 1)[1] for line in stamped] == ["two", "three"]
    assert all(line.split(" ", 1)[0].endswith("Z") for line in stamped)


def test_kubectl_logs_since(control_plane: Any, talker: tuple[str, Path]) -> None:
    namespace, _ = talker
    assert logs(control_plane, namespace, "--since=1h") == "one\ntwo\nthree\n"
    # The lines age: --since=1s selects none of them once they are older than a second.
    wait_for(lambda: logs(control_plane, namespace, "--since=1s") == "", timeout=15, what="--since=1s empty")


def test_kubectl_logs_follow_gets_a_line_written_after_it_started(
    control_plane: Any, talker: tuple[str, Path]
) -> None:
    namespace, marker = talker
    command = [str(control_plane.binaries.kubectl), f"--kubeconfig={control_plane.kubeconfig_path}"]
    follow = subprocess.Popen(
        [*command, "logs", "-f", "-n", namespace, POD],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read_lines() -> None:
        for line in follow.stdout or ():
            lines.put(line)

    reader = threading.Thread(target=read_lines, daemon=True)
    reader.start()
    try:
        assert [lines.get(timeout=30) for _ in range(3)] == ["one\n", "two\n", "three\n"]
        marker.touch()  # the container writes "after" only now
        assert lines.get(timeout=30) == "after\n"
        assert follow.poll() is None  # still following
    finally:
        follow.terminate()
        follow.wait(timeout=10)
    started = time.monotonic()
    reader.join(timeout=10)
    assert time.monotonic() - started < 10
