"""Issue 4 end to end: vkubelet and an out-of-process provider, each a real process.

vkubelet (`--provider grpc`) talks over a unix socket to `vkubelet-process-provider`, which runs
each container's command as a local process. The provider is killed with SIGKILL mid-burst and
restarted; vkubelet must neither delete nor duplicate anything and the node must come back Ready.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.network import TestNetwork
from tests.e2e.vkubelet_process import ProviderProcess, VkubeletProcess, service_account_kubeconfig, wait_for

NODE = "vk-e2e-grpc"


@pytest.fixture(scope="module")
def stack(
    control_plane: Any, test_network: TestNetwork | None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[VkubeletProcess, ProviderProcess]]:
    work_dir = tmp_path_factory.mktemp("grpc")
    node_ip = test_network.node_ip if test_network else "127.0.0.1"
    provider = ProviderProcess(work_dir, work_dir / "provider.sock", node_ip, node_name=NODE).start()
    config = work_dir / "grpc-provider.json"
    config.write_text(json.dumps({"address": f"unix://{provider.socket_path}", "call_timeout": 5}))
    kubeconfig = service_account_kubeconfig(control_plane, work_dir)
    daemon = VkubeletProcess(
        work_dir=work_dir,
        kubeconfig=kubeconfig,
        node_name=NODE,
        network=test_network,
        provider="grpc",
        provider_config_path=config,
        extra_args=["--full-resync-period", "10s"],
    ).start()
    try:
        wait_for(lambda: node_ready(control_plane), timeout=60, what=f"node {NODE} Ready")
        yield daemon, provider
        daemon.assert_alive()
    finally:
        daemon.stop()
        provider.stop()
        print(daemon.log_tail(120))
        print("\n".join(provider.log_path.read_text(errors="replace").splitlines()[-40:]))


@pytest.fixture(scope="module")
def namespace(control_plane: Any) -> str:
    name = f"grpc-{uuid.uuid4().hex[:6]}"
    control_plane.create_namespace(name)
    return name


def node_ready(control_plane: Any) -> bool:
    result = control_plane.kubectl("get", "node", NODE, "-o", "json", check=False)
    if result.returncode != 0:
        return False
    conditions = json.loads(result.stdout)["status"].get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def pod_manifest(namespace: str, name: str, script: str, *, restart_policy: str = "Always") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "nodeName": NODE,
            "restartPolicy": restart_policy,
            "terminationGracePeriodSeconds": 2,
            "enableServiceLinks": False,
            "containers": [{"name": "main", "image": "ignored", "command": ["sh", "-c", script]}],
        },
    }


def create(control_plane: Any, manifest: dict[str, Any]) -> dict[str, Any]:
    out = control_plane.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(manifest)).stdout
    return dict(json.loads(out))


def get_pod(control_plane: Any, namespace: str, name: str) -> dict[str, Any] | None:
    result = control_plane.kubectl("get", "pod", "-n", namespace, name, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def container_status(control_plane: Any, namespace: str, name: str) -> dict[str, Any]:
    pod = get_pod(control_plane, namespace, name) or {}
    statuses = (pod.get("status") or {}).get("containerStatuses") or [{}]
    return dict(statuses[0])


def pids_running(marker: str) -> list[int]:
    result = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    return [int(pid) for pid in result.stdout.split()]


def test_pod_runs_as_a_process_and_its_log_is_readable(
    control_plane: Any, stack: tuple[VkubeletProcess, ProviderProcess], namespace: str
) -> None:
    marker = f"marker-{uuid.uuid4().hex}"
    create(control_plane, pod_manifest(namespace, "hello", f"echo hello; sleep 3600; echo {marker}"))
    wait_for(
        lambda: (
            (get_pod(control_plane, namespace, "hello") or {}).get("status", {}).get("phase") == "Running"
        ),
        timeout=30,
        what="pod hello Running",
    )
    assert pids_running(marker), "the container's process is not running on this host"
    log = asyncio_run_logs(stack[1].socket_path, namespace, "hello")
    assert "hello" in log
    # Deleting the pod kills the process.
    control_plane.kubectl("delete", "pod", "-n", namespace, "hello", "--wait=false")
    wait_for(lambda: not pids_running(marker), timeout=20, what="process killed")
    wait_for(lambda: get_pod(control_plane, namespace, "hello") is None, timeout=20, what="pod removed")


def asyncio_run_logs(socket_path: Path, namespace: str, name: str) -> str:
    """Read the container log through the provider's gRPC stream, as vkubelet's logs route does."""
    script = f"""
import asyncio, json
from vkubelet.adapters.grpc.client import GrpcProvider
from vkubelet.adapters.grpc.config import parse_grpc_config
from vkubelet.application.ports.streams import LogOptions

async def main():
    provider = GrpcProvider(parse_grpc_config({{"address": "unix://{socket_path}"}}))
    await provider.connect()
    pods = await provider.list_pods()
    pod = next(p for p in pods if (p.ref.namespace, p.ref.name) == ({namespace!r}, {name!r}))
    chunks = [c async for c in provider.container_logs(pod.ref, "main", LogOptions())]
    print(b"".join(chunks).decode())
    await provider.close()

asyncio.run(main())
"""
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    ).stdout


def test_exit_code_is_reported_and_restart_policy_always_restarts(
    control_plane: Any, stack: tuple[VkubeletProcess, ProviderProcess], namespace: str
) -> None:
    create(control_plane, pod_manifest(namespace, "exit3", "exit 3"))

    def restarted_with_exit_3() -> bool:
        status = container_status(control_plane, namespace, "exit3")
        terminated: dict[str, Any] = (
            (status.get("lastState") or {}).get("terminated")
            or (status.get("state") or {}).get("terminated")
            or {}
        )
        return bool(terminated) and terminated.get("exitCode") == 3 and status.get("restartCount", 0) >= 1

    wait_for(restarted_with_exit_3, timeout=60, what="exit code 3 and a restart")


def test_provider_killed_mid_burst_loses_nothing(
    control_plane: Any, stack: tuple[VkubeletProcess, ProviderProcess], namespace: str
) -> None:
    daemon, provider = stack
    burst = f"burst-{uuid.uuid4().hex[:4]}"
    items = [pod_manifest(namespace, f"{burst}-{i}", f"sleep 3600; echo {burst}") for i in range(100)]
    control_plane.kubectl(
        "create", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    )
    # Kill the provider while the burst is being synced, then bring it back.
    wait_for(lambda: len(pids_running(burst)) >= 10, timeout=60, what="burst under way")
    provider.kill9()
    provider.start()

    def burst_pods() -> list[dict[str, Any]]:
        pods = json.loads(control_plane.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]
        return [p for p in pods if p["metadata"]["name"].startswith(burst)]

    before = {p["metadata"]["name"]: p["metadata"]["uid"] for p in burst_pods()}
    assert len(before) == 100

    def all_running() -> bool:
        pods = burst_pods()
        return len(pods) == 100 and all((p.get("status") or {}).get("phase") == "Running" for p in pods)

    wait_for(all_running, timeout=180, what="all 100 pods Running after the provider restart", interval=1)
    after = {p["metadata"]["name"]: p["metadata"]["uid"] for p in burst_pods()}
    assert after == before, "a pod was deleted or recreated in the API"
    # One process per pod: nothing was started twice by the restarted provider.
    wait_for(lambda: len(pids_running(burst)) == 100, timeout=60, what="exactly 100 processes")
    wait_for(lambda: node_ready(control_plane), timeout=60, what="node Ready again")
    daemon.assert_alive()
    control_plane.kubectl("delete", "pods", "-n", namespace, "--all", "--wait=false")
    wait_for(lambda: not pids_running(burst), timeout=60, what="burst processes stopped")


def test_provider_gone_turns_the_node_not_ready_with_a_reason(
    control_plane: Any, stack: tuple[VkubeletProcess, ProviderProcess]
) -> None:
    _, provider = stack
    provider.kill9()
    try:

        def not_ready_reason() -> str | None:
            node = json.loads(control_plane.kubectl("get", "node", NODE, "-o", "json").stdout)
            ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
            return ready["reason"] if ready["status"] == "False" else None

        reason = wait_for(not_ready_reason, timeout=60, what="Ready=False while the provider is away")
        assert reason.startswith("Provider"), reason
    finally:
        provider.start()
    wait_for(lambda: node_ready(control_plane), timeout=60, what="node Ready after the provider returned")


def test_pgrep_is_available() -> None:
    assert (
        os.path.exists("/usr/bin/pgrep")
        or subprocess.run(["which", "pgrep"], capture_output=True).returncode == 0
    )
