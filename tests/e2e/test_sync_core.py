"""Issue 3 end to end: vkubelet (real CLI, mock provider) against a real API server.

Covers the nine upstream e2e cases (upstream-behavior.md §7.2; stats and metrics read through
``nodes/<node>/proxy`` since the daemon is a host process, not a pod), node readiness, lease
renewal, node re-creation and a 200-pod burst. The daemon runs as the ServiceAccount bound to
deploy/rbac.yaml, so these tests also prove that RBAC is sufficient.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.network import TestNetwork, unavailable_reason
from tests.e2e.vkubelet_process import (
    VkubeletProcess,
    service_account_kubeconfig,
    wait_for,
)

NODE = "vk-e2e-0"


@pytest.fixture(scope="module")
def daemon(
    control_plane: Any, test_network: TestNetwork | None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VkubeletProcess]:
    work_dir = tmp_path_factory.mktemp("vkubelet")
    kubeconfig = service_account_kubeconfig(control_plane, work_dir)
    process = VkubeletProcess(work_dir=work_dir, kubeconfig=kubeconfig, node_name=NODE, network=test_network)
    process.start()
    try:
        wait_for(lambda: node_ready(control_plane, NODE), timeout=60, what=f"node {NODE} Ready")
        yield process
        process.assert_alive()
    finally:
        code = process.stop()
        print(process.log_tail(200))
    assert code == 0, f"virtual-kubelet exited with {code} on SIGTERM"
    # --shutdown-node-not-ready (default on): the node says why it is not ready.
    ready = [
        c
        for c in kubectl_json(control_plane, "get", "node", NODE)["status"]["conditions"]
        if c["type"] == "Ready"
    ]
    assert ready[0]["status"] == "False"
    assert ready[0]["reason"] == "KubeletShuttingDown"


@pytest.fixture(scope="module")
def namespace(control_plane: Any) -> str:
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    control_plane.create_namespace(name)
    return name


# -- helpers ------------------------------------------------------------------------------


def kubectl_json(control_plane: Any, *args: str) -> Any:
    return json.loads(control_plane.kubectl(*args, "-o", "json").stdout)


def node_ready(control_plane: Any, node: str) -> bool:
    result = control_plane.kubectl("get", "node", node, "-o", "json", check=False)
    if result.returncode != 0:
        return False
    conditions = json.loads(result.stdout)["status"].get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def create_pod(
    control_plane: Any,
    namespace: str,
    prefix: str,
    *,
    containers: int = 1,
    env: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": f"{prefix}-", "namespace": namespace},
        "spec": {
            "nodeName": NODE,
            "enableServiceLinks": False,
            "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists"}],
            "containers": [
                {"name": f"c{i}", "image": "busybox", **({"env": env} if env else {})}
                for i in range(containers)
            ],
        },
    }
    result = control_plane.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(manifest))
    return dict(json.loads(result.stdout))


def get_pod(control_plane: Any, namespace: str, name: str) -> dict[str, Any] | None:
    result = control_plane.kubectl("get", "pod", "-n", namespace, name, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def pod_ready(control_plane: Any, namespace: str, name: str) -> bool:
    pod = get_pod(control_plane, namespace, name)
    if pod is None:
        return False
    status = pod.get("status") or {}
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])
    return status.get("phase") == "Running" and ready and bool(status.get("podIP"))


def wait_pod_ready(control_plane: Any, pod: dict[str, Any], timeout: float = 30) -> None:
    meta = pod["metadata"]
    wait_for(
        lambda: pod_ready(control_plane, meta["namespace"], meta["name"]),
        timeout=timeout,
        what=f"{meta['name']} Ready",
    )


def events_for(control_plane: Any, namespace: str, uid: str) -> list[dict[str, Any]]:
    events = kubectl_json(
        control_plane, "get", "events", "-n", namespace, "--field-selector", f"involvedObject.uid={uid}"
    )
    return list(events["items"])


def wait_event(control_plane: Any, pod: dict[str, Any], reason: str) -> dict[str, Any]:
    meta = pod["metadata"]

    def found() -> dict[str, Any] | None:
        matches = [
            e for e in events_for(control_plane, meta["namespace"], meta["uid"]) if e["reason"] == reason
        ]
        return matches[0] if matches else None

    event = wait_for(found, timeout=30, what=f"event {reason} on {meta['name']}")
    assert event["involvedObject"]["kind"] == "Pod"
    assert event["source"]["component"] == f"{NODE}/pod-controller"
    return event


def proxy(control_plane: Any, path: str) -> str:
    """GET a kubelet path through the API server's node proxy, as the upstream e2e suite does."""
    if unavailable_reason() is not None:
        pytest.skip(f"the node proxy refuses loopback kubelets and no test network: {unavailable_reason()}")
    return str(control_plane.kubectl("get", "--raw", f"/api/v1/nodes/{NODE}/proxy/{path}").stdout)


def running_pod_uids(control_plane: Any) -> set[str]:
    return {p["metadata"]["uid"] for p in json.loads(proxy(control_plane, "runningpods/"))["items"]}


# -- the nine upstream cases --------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "reason"),
    [("configMapKeyRef", "MandatoryConfigMapNotFound"), ("secretKeyRef", "MandatorySecretNotFound")],
)
def test_pod_with_missing_mandatory_reference_is_not_created(
    control_plane: Any, daemon: VkubeletProcess, namespace: str, source: str, reason: str
) -> None:
    env = [{"name": "KEY_0", "valueFrom": {source: {"name": "missing-0", "key": "key_0", "optional": False}}}]
    pod = create_pod(control_plane, namespace, "env-mandatory", env=env)
    wait_event(control_plane, pod, reason)
    meta = pod["metadata"]
    # Our status says why (upstream left the pod silently Pending).
    status = wait_for(
        lambda: (
            (get_pod(control_plane, namespace, meta["name"]) or {}).get("status", {}).get("reason") == reason
            and get_pod(control_plane, namespace, meta["name"])
        ),
        timeout=30,
        what="status reason",
    )
    waiting = status["status"]["containerStatuses"][0]["state"]["waiting"]
    assert waiting["reason"] == "CreateContainerConfigError"
    assert "missing-0" in waiting["message"]
    assert meta["uid"] not in running_pod_uids(control_plane)
    daemon.assert_alive()


@pytest.mark.parametrize(
    ("source", "reason"),
    [("configMapKeyRef", "OptionalConfigMapNotFound"), ("secretKeyRef", "OptionalSecretNotFound")],
)
def test_pod_with_missing_optional_reference_runs(
    control_plane: Any, daemon: VkubeletProcess, namespace: str, source: str, reason: str
) -> None:
    env = [{"name": "KEY_0", "valueFrom": {source: {"name": "missing-1", "key": "key_0", "optional": True}}}]
    pod = create_pod(control_plane, namespace, "env-optional", env=env)
    wait_pod_ready(control_plane, pod)
    wait_event(control_plane, pod, reason)
    assert pod["metadata"]["uid"] in running_pod_uids(control_plane)


def test_get_metrics_resource(control_plane: Any, daemon: VkubeletProcess, namespace: str) -> None:
    pod = create_pod(control_plane, namespace, "metrics", containers=3)
    wait_pod_ready(control_plane, pod)
    name = pod["metadata"]["name"]
    families = {f.name: f for f in text_string_to_metric_families(proxy(control_plane, "metrics/resource"))}
    pod_samples = [s for s in families["pod_cpu_usage_seconds"].samples if s.labels.get("pod") == name]
    assert pod_samples, sorted(families)
    container_samples = [
        s for s in families["container_cpu_usage_seconds"].samples if s.labels.get("pod") == name
    ]
    assert len(container_samples) == 3
    assert {s.labels["namespace"] for s in container_samples} == {namespace}


def test_get_pods(control_plane: Any, daemon: VkubeletProcess, namespace: str) -> None:
    pod = create_pod(control_plane, namespace, "pods")
    uid = pod["metadata"]["uid"]

    def listed() -> list[dict[str, Any]] | None:
        items = json.loads(proxy(control_plane, "pods"))["items"]
        return items if any(p["metadata"]["uid"] == uid for p in items) else None

    items = wait_for(listed, timeout=30, what="pod in /pods")
    assert all(p["spec"]["nodeName"] == NODE for p in items)


def test_get_stats_summary(control_plane: Any, daemon: VkubeletProcess, namespace: str) -> None:
    pod = create_pod(control_plane, namespace, "stats", containers=3)
    wait_pod_ready(control_plane, pod)
    meta = pod["metadata"]
    summary = json.loads(proxy(control_plane, "stats/summary"))
    assert summary["node"]["nodeName"] == NODE
    [entry] = [
        p
        for p in summary["pods"]
        if (p["podRef"]["namespace"], p["podRef"]["name"], p["podRef"]["uid"])
        == (meta["namespace"], meta["name"], meta["uid"])
    ]
    assert len(entry["containers"]) == 3


def test_pod_lifecycle_force_delete(control_plane: Any, daemon: VkubeletProcess, namespace: str) -> None:
    pod = create_pod(control_plane, namespace, "force")
    wait_pod_ready(control_plane, pod)
    meta = pod["metadata"]
    assert meta["uid"] in running_pod_uids(control_plane)
    control_plane.kubectl("delete", "pod", "-n", namespace, meta["name"], "--grace-period=0", "--force")
    wait_for(lambda: meta["uid"] not in running_pod_uids(control_plane), timeout=10, what="provider delete")


def test_pod_lifecycle_graceful_delete(control_plane: Any, daemon: VkubeletProcess, namespace: str) -> None:
    pod = create_pod(control_plane, namespace, "graceful")
    wait_pod_ready(control_plane, pod)
    meta = pod["metadata"]
    assert meta["uid"] in running_pod_uids(control_plane)
    control_plane.kubectl("delete", "pod", "-n", namespace, meta["name"], "--wait=false")
    terminating = get_pod(control_plane, namespace, meta["name"])
    if terminating is not None:  # the API object may already be gone: that is the point
        assert terminating["metadata"].get("deletionGracePeriodSeconds", 30) > 0
    # Upstream's e2e requires the provider delete within about a second of deletionTimestamp.
    wait_for(lambda: meta["uid"] not in running_pod_uids(control_plane), timeout=3, what="provider delete")
    # And unlike upstream, the API object goes as soon as the containers stopped, well before
    # the 30 s grace period ends (upstream bug 9).
    wait_for(
        lambda: get_pod(control_plane, namespace, meta["name"]) is None, timeout=15, what="API object removed"
    )


# -- node, lease, scale -------------------------------------------------------------------


def test_node_is_registered_with_labels_taint_and_endpoint(
    control_plane: Any, daemon: VkubeletProcess
) -> None:
    node = kubectl_json(control_plane, "get", "node", NODE)
    labels = node["metadata"]["labels"]
    assert labels["type"] == "virtual-kubelet"
    assert labels["kubernetes.io/os"] == "linux"
    assert labels["kubernetes.io/arch"]
    taints = node["spec"]["taints"]
    assert {"key": "virtual-kubelet.io/provider", "value": "mock", "effect": "NoSchedule"} in taints
    assert node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] == daemon.port
    assert {"type": "InternalIP", "address": daemon.node_ip} in node["status"]["addresses"]


def test_lease_renew_time_advances(control_plane: Any, daemon: VkubeletProcess) -> None:
    def renew_time() -> str:
        lease = kubectl_json(control_plane, "get", "lease", "-n", "kube-node-lease", NODE)
        assert lease["spec"]["holderIdentity"] == NODE
        assert lease["metadata"]["ownerReferences"][0]["kind"] == "Node"
        return str(lease["spec"]["renewTime"])

    first = wait_for(renew_time, timeout=30, what="lease")
    later = wait_for(
        lambda: renew_time() if renew_time() != first else None, timeout=25, what="lease renewal"
    )
    assert datetime.fromisoformat(later.replace("Z", "+00:00")) > datetime.fromisoformat(
        first.replace("Z", "+00:00")
    )


def test_node_is_recreated_after_kubectl_delete_node(control_plane: Any, daemon: VkubeletProcess) -> None:
    old_uid = kubectl_json(control_plane, "get", "node", NODE)["metadata"]["uid"]
    control_plane.kubectl("delete", "node", NODE)

    def recreated() -> bool:
        result = control_plane.kubectl("get", "node", NODE, "-o", "json", check=False)
        return result.returncode == 0 and bool(json.loads(result.stdout)["metadata"]["uid"] != old_uid)

    wait_for(recreated, timeout=90, what="node recreated")
    wait_for(lambda: node_ready(control_plane, NODE), timeout=60, what="recreated node Ready")
    # The lease follows the new node.
    new_uid = kubectl_json(control_plane, "get", "node", NODE)["metadata"]["uid"]
    wait_for(
        lambda: (
            kubectl_json(control_plane, "get", "lease", "-n", "kube-node-lease", NODE)["metadata"][
                "ownerReferences"
            ][0]["uid"]
            == new_uid
        ),
        timeout=30,
        what="lease owner follows the new node",
    )


def test_two_hundred_pods_run_and_delete_cleanly(control_plane: Any, daemon: VkubeletProcess) -> None:
    namespace = f"burst-{uuid.uuid4().hex[:6]}"
    control_plane.create_namespace(namespace)
    items = [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"burst-{i}", "namespace": namespace},
            "spec": {
                "nodeName": NODE,
                "enableServiceLinks": False,
                "containers": [{"name": "c", "image": "x"}],
            },
        }
        for i in range(200)
    ]
    control_plane.kubectl(
        "create", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    )

    def all_running() -> bool:
        pods = kubectl_json(control_plane, "get", "pods", "-n", namespace)["items"]
        return len(pods) == 200 and all((p.get("status") or {}).get("phase") == "Running" for p in pods)

    wait_for(all_running, timeout=120, what="200 pods Running", interval=1)
    control_plane.kubectl("delete", "pods", "--all", "-n", namespace, "--wait=false")

    def all_gone() -> bool:
        return not kubectl_json(control_plane, "get", "pods", "-n", namespace)["items"]

    wait_for(all_gone, timeout=120, what="200 pods deleted", interval=1)
    assert not any(uid for uid in running_pod_uids(control_plane) if uid in {p.get("uid") for p in items})
    daemon.assert_alive()


# -- bad input ----------------------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vkubelet", *args], capture_output=True, text=True, timeout=60, env=env
    )


def test_unparsable_flags_exit_non_zero_naming_the_value() -> None:
    result = run_cli("--provider", "mock", "--pod-sync-workers", "zero")
    assert result.returncode != 0
    assert "zero" in result.stderr


def test_provider_config_without_the_node_is_a_clear_error(control_plane: Any, tmp_path: Path) -> None:
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"some-other-node": {"cpu": "1"}}))
    result = run_cli(
        "--provider",
        "mock",
        "--nodename",
        "vk-missing",
        "--provider-config",
        str(config),
        "--kubeconfig",
        str(control_plane.kubeconfig_path),
    )
    assert result.returncode != 0
    assert "vk-missing" in result.stderr
    assert "some-other-node" in result.stderr
