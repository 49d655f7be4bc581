"""Issue 11: ordinary workloads on the whole local cluster, as a user sends them.

Nothing here writes ``spec.nodeName``: kube-scheduler binds every pod (a nodeSelector keeps it on
this module's node, since other modules' virtual nodes carry the same taint key), the
controller-manager runs the Deployment, ReplicaSet, Job, EndpointSlice and node lifecycle
controllers, and the ServiceAccount admission plugin gives every pod its projected token
volume. vkubelet runs the pods with the process provider, in process or as its own process.
"""

from __future__ import annotations

import json
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.network import TestNetwork
from tests.e2e.vkubelet_process import (
    ProviderProcess,
    VkubeletProcess,
    process_provider_node,
    scratch_namespace,
    service_account_kubeconfig,
    wait_for,
)

NODE = "vk-e2e-workloads"
NODE_CPU = "4"


def toleration(provider: str) -> dict[str, str]:
    return {
        "key": "virtual-kubelet.io/provider",
        "operator": "Equal",
        "value": provider,
        "effect": "NoSchedule",
    }


def pod_spec(node: str, command: list[str], *, provider: str = "process", **extra: Any) -> dict[str, Any]:
    return {
        "nodeSelector": {"kubernetes.io/hostname": node},
        "tolerations": [toleration(provider)],
        "terminationGracePeriodSeconds": 2,
        "containers": [{"name": "app", "image": "busybox:1.36", "command": command}],
        **extra,
    }


def deployment(name: str, replicas: int, command: list[str], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec(NODE, command, **spec)},
        },
    }


def apply(control_plane: Any, namespace: str, manifest: dict[str, Any]) -> None:
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))


def pods(control_plane: Any, namespace: str, selector: str) -> list[dict[str, Any]]:
    by_label = ["-l", selector] if selector else []
    listed = control_plane.kubectl("get", "pods", "-n", namespace, *by_label, "-o", "json")
    items: list[dict[str, Any]] = json.loads(listed.stdout)["items"]
    return items


def is_ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def node_condition(control_plane: Any, node: str) -> dict[str, Any]:
    found = json.loads(control_plane.kubectl("get", "node", node, "-o", "json").stdout)
    ready: dict[str, Any] = next(c for c in found["status"]["conditions"] if c["type"] == "Ready")
    return {**ready, "taints": found["spec"].get("taints") or []}


def rollout_status(control_plane: Any, namespace: str, name: str) -> None:
    control_plane.kubectl(
        "rollout", "status", f"deployment/{name}", "-n", namespace, "--timeout=120s", timeout=130
    )


def only_live_pods(control_plane: Any, namespace: str, selector: str, count: int) -> list[dict[str, Any]]:
    """Wait until exactly ``count`` pods match, all Ready, none terminating; return them."""

    def settled() -> list[dict[str, Any]] | None:
        found = pods(control_plane, namespace, selector)
        live = [p for p in found if "deletionTimestamp" not in p["metadata"]]
        if len(found) == count and len(live) == count and all(is_ready(p) for p in live):
            return live
        return None

    return wait_for(settled, timeout=120, what=f"exactly {count} ready pods matching {selector}")


@pytest.fixture(scope="module")
def daemon(
    control_plane: Any, test_network: TestNetwork | None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VkubeletProcess]:
    capacity = {"cpu": NODE_CPU, "memory": "8Gi", "pods": "40"}
    work_dir = tmp_path_factory.mktemp("workloads")
    with process_provider_node(control_plane, test_network, work_dir, NODE, capacity) as process:
        yield process


@pytest.fixture
def namespace(control_plane: Any) -> Iterator[str]:
    with scratch_namespace(control_plane, "wl") as name:
        yield name


def test_a_deployment_is_scheduled_scaled_and_restarted(
    control_plane: Any, daemon: VkubeletProcess, namespace: str
) -> None:
    apply(control_plane, namespace, deployment("web", 3, ["sleep", "3600"]))
    rollout_status(control_plane, namespace, "web")
    first = only_live_pods(control_plane, namespace, "app=web", 3)
    for pod in first:
        assert pod["spec"]["nodeName"] == NODE
        scheduled = next(c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled")
        assert scheduled["status"] == "True"  # bound by kube-scheduler: the template has no nodeName
        # The ServiceAccount admission plugin is on: the projected token volume every real pod has.
        volumes = [v["name"] for v in pod["spec"].get("volumes") or []]
        assert any(name.startswith("kube-api-access-") for name in volumes), volumes
    events = control_plane.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "reason=Scheduled", "-o", "json"
    )
    sources = {
        e.get("reportingComponent") or e["source"].get("component")
        for e in json.loads(events.stdout)["items"]
    }
    assert sources == {"default-scheduler"}

    control_plane.kubectl("scale", "deployment/web", "-n", namespace, "--replicas=5")
    rollout_status(control_plane, namespace, "web")
    assert len(only_live_pods(control_plane, namespace, "app=web", 5)) == 5

    control_plane.kubectl("scale", "deployment/web", "-n", namespace, "--replicas=1")
    (survivor,) = only_live_pods(control_plane, namespace, "app=web", 1)

    control_plane.kubectl("rollout", "restart", "deployment/web", "-n", namespace)
    rollout_status(control_plane, namespace, "web")
    (restarted,) = only_live_pods(control_plane, namespace, "app=web", 1)
    assert restarted["metadata"]["uid"] != survivor["metadata"]["uid"]
    assert "kubectl.kubernetes.io/restartedAt" in restarted["metadata"].get("annotations", {})


def test_a_job_with_three_completions_completes(
    control_plane: Any, daemon: VkubeletProcess, namespace: str
) -> None:
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "count"},
        "spec": {
            "completions": 3,
            "parallelism": 2,
            "template": {"spec": pod_spec(NODE, ["sh", "-c", "echo done"], restartPolicy="Never")},
        },
    }
    apply(control_plane, namespace, job)
    control_plane.kubectl(
        "wait", "--for=condition=Complete", "job/count", "-n", namespace, "--timeout=120s", timeout=130
    )
    finished = pods(control_plane, namespace, "job-name=count")
    succeeded = [p for p in finished if p["status"]["phase"] == "Succeeded"]
    assert len(succeeded) == 3, [p["status"]["phase"] for p in finished]
    status = json.loads(control_plane.kubectl("get", "job/count", "-n", namespace, "-o", "json").stdout)[
        "status"
    ]
    assert status["succeeded"] == 3 and not status.get("failed")
    log = control_plane.kubectl("logs", f"pod/{succeeded[0]['metadata']['name']}", "-n", namespace)
    assert log.stdout.strip() == "done"


def test_a_service_lists_the_ready_pods_in_its_endpointslice(
    control_plane: Any, daemon: VkubeletProcess, namespace: str
) -> None:
    apply(control_plane, namespace, deployment("api", 2, ["sleep", "3600"]))
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "api"},
        "spec": {"selector": {"app": "api"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    apply(control_plane, namespace, service)
    ready = only_live_pods(control_plane, namespace, "app=api", 2)
    expected = {(p["metadata"]["name"], p["status"]["podIP"]) for p in ready}

    def listed() -> set[tuple[str, str]] | None:
        slices = control_plane.kubectl(
            "get", "endpointslices", "-n", namespace, "-l", "kubernetes.io/service-name=api", "-o", "json"
        )
        endpoints = {
            (e["targetRef"]["name"], address)
            for item in json.loads(slices.stdout)["items"]
            for e in item.get("endpoints") or []
            if e.get("conditions", {}).get("ready")
            for address in e["addresses"]
        }
        return endpoints if endpoints == expected else None

    wait_for(listed, timeout=60, what=f"EndpointSlice of service api listing {expected}")
    assert all(
        ip == daemon.node_ip for _, ip in expected
    )  # the process provider's pods share the host network


def test_a_pod_asking_for_more_cpu_than_the_node_has_stays_pending(
    control_plane: Any, daemon: VkubeletProcess, namespace: str
) -> None:
    node = json.loads(control_plane.kubectl("get", "node", NODE, "-o", "json").stdout)
    assert node["status"]["capacity"]["cpu"] == NODE_CPU  # from the provider config
    assert node["status"]["allocatable"]["cpu"] == NODE_CPU
    spec = pod_spec(NODE, ["sleep", "3600"])
    spec["containers"][0]["resources"] = {"requests": {"cpu": "6"}}
    manifest = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "greedy"}, "spec": spec}
    apply(control_plane, namespace, manifest)

    def unschedulable() -> dict[str, Any] | None:
        pod = json.loads(control_plane.kubectl("get", "pod/greedy", "-n", namespace, "-o", "json").stdout)
        conditions = pod.get("status", {}).get("conditions") or []
        scheduled = next((c for c in conditions if c["type"] == "PodScheduled"), None)
        return scheduled if scheduled and scheduled.get("reason") == "Unschedulable" else None

    scheduled = wait_for(unschedulable, timeout=60, what="the scheduler to give up on pod greedy")
    assert scheduled["status"] == "False"
    assert "Insufficient cpu" in scheduled["message"]
    pod = json.loads(control_plane.kubectl("get", "pod/greedy", "-n", namespace, "-o", "json").stdout)
    assert pod["status"]["phase"] == "Pending" and not pod["spec"].get("nodeName")


LIFECYCLE_NODE = "vk-e2e-lifecycle"
UNREACHABLE = "node.kubernetes.io/unreachable"


def ready_pods(control_plane: Any, namespace: str, count: int) -> list[dict[str, Any]] | None:
    found = pods(control_plane, namespace, "")
    return found if len(found) == count and all(map(is_ready, found)) else None


def taint_keys(control_plane: Any, node: str, *, effect: str | None = None) -> set[str]:
    return {t["key"] for t in node_condition(control_plane, node)["taints"] if effect in (None, t["effect"])}


def test_the_node_lifecycle_controller_evicts_from_a_dead_node_and_vkubelet_recovers(
    control_plane: Any, test_network: TestNetwork | None, tmp_path: Path, daemon: VkubeletProcess
) -> None:
    """kill -9 vkubelet: the controller-manager marks the node Unknown and taints it; a pod that
    tolerates `unreachable` for 2 s is evicted, one with the default 300 s stays. vkubelet back:
    the node is Ready, the evicted pod is gone from the provider, the other is untouched.

    The node gets a zone of its own, and the module's other node (``daemon``) stays Ready in
    another: the node lifecycle controller stops tainting in a zone where most nodes are down
    (PartialDisruption: the stopped nodes of earlier tests) and everywhere when every zone is
    down, which it takes for a control-plane problem."""
    assert daemon.process is not None  # the other node is up
    node_ip = test_network.node_ip if test_network else "127.0.0.1"
    # Everything that can fail before the try/finally comes before the provider process starts.
    kubeconfig = service_account_kubeconfig(control_plane, tmp_path)
    namespace = f"life-{uuid.uuid4().hex[:6]}"
    control_plane.create_namespace(namespace)
    provider = ProviderProcess(
        tmp_path, tmp_path / "provider.sock", node_ip, node_name=LIFECYCLE_NODE
    ).start()
    config = tmp_path / "grpc.json"
    config.write_text(json.dumps({"address": f"unix://{provider.socket_path}", "call_timeout": 5}))

    def start_daemon() -> VkubeletProcess:
        return VkubeletProcess(
            work_dir=tmp_path,
            kubeconfig=kubeconfig,
            node_name=LIFECYCLE_NODE,
            network=test_network,
            provider="grpc",
            provider_config_path=config,
        ).start()

    starts = tmp_path / "starts"
    node_daemon = start_daemon()
    try:
        wait_for(
            lambda: node_condition(control_plane, LIFECYCLE_NODE)["status"] == "True",
            timeout=60,
            what="node Ready",
        )
        control_plane.kubectl("label", "node", LIFECYCLE_NODE, "topology.kubernetes.io/zone=e2e-lifecycle")
        command = ["sh", "-c", f'echo "$HOSTNAME" >> {starts}; exec sleep 3600']
        unreachable = {"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}
        for name, extra in (("brief", [{**unreachable, "tolerationSeconds": 2}]), ("patient", [])):
            spec = pod_spec(LIFECYCLE_NODE, command, provider="grpc")
            spec["tolerations"] += extra
            apply(
                control_plane,
                namespace,
                {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec},
            )
        both = wait_for(lambda: ready_pods(control_plane, namespace, 2), timeout=60, what="both pods Ready")
        uids = {p["metadata"]["name"]: p["metadata"]["uid"] for p in both}

        node_daemon.kill()
        # First the NoSchedule taint, then (a monitor period later) the NoExecute one that evicts.
        wait_for(
            lambda: (
                node_condition(control_plane, LIFECYCLE_NODE)["status"] == "Unknown"
                and UNREACHABLE in taint_keys(control_plane, LIFECYCLE_NODE, effect="NoExecute")
            ),
            timeout=90,
            what="the node lifecycle controller to mark the node Unknown and taint it unreachable:NoExecute",
        )
        assert UNREACHABLE in taint_keys(control_plane, LIFECYCLE_NODE, effect="NoSchedule")
        wait_for(
            lambda: (
                "deletionTimestamp"
                in json.loads(
                    control_plane.kubectl("get", "pod/brief", "-n", namespace, "-o", "json").stdout
                )["metadata"]
            ),
            timeout=60,
            what="pod brief to be evicted",
        )

        node_daemon = start_daemon()
        wait_for(
            lambda: (
                node_condition(control_plane, LIFECYCLE_NODE)["status"] == "True"
                and UNREACHABLE not in taint_keys(control_plane, LIFECYCLE_NODE)
            ),
            timeout=90,
            what="node Ready and untainted again",
        )
        wait_for(
            lambda: control_plane.kubectl("get", "pod/brief", "-n", namespace, check=False).returncode != 0,
            timeout=60,
            what="the evicted pod to be gone from the API",
        )
        (patient,) = wait_for(
            lambda: ready_pods(control_plane, namespace, 1), timeout=60, what="patient Ready"
        )
        assert patient["metadata"]["uid"] == uids["patient"]
        assert patient["status"]["containerStatuses"][0]["restartCount"] == 0
        # Each pod's process started once: nothing was created twice, brief was not revived.
        assert sorted(starts.read_text().split()) == ["brief", "patient"]
        # ... and the provider runs patient alone (the kubelet API's /runningpods/ is its list).
        if test_network is not None:  # the node proxy needs a non-loopback kubelet
            running = control_plane.kubectl(
                "get", "--raw", f"/api/v1/nodes/{LIFECYCLE_NODE}/proxy/runningpods/"
            )
            assert {p["metadata"]["name"] for p in json.loads(running.stdout)["items"]} == {"patient"}
        node_daemon.assert_alive()
    finally:
        node_daemon.stop()
        provider.stop()
        print(node_daemon.log_tail(80))


GROWING_NODE = "vk-e2e-growing"
MOCK_PROVIDER_SCRIPT = Path(sys.executable).with_name("vkubelet-mock-provider")


def test_a_provider_that_grows_its_node_gets_the_pending_pod_scheduled(
    control_plane: Any, test_network: TestNetwork | None, tmp_path: Path
) -> None:
    """Issue 13: the provider raises its CPU capacity from 4 to 8 at run time (the mock provider
    re-reads its config on SIGHUP and pushes the node over WatchNodeStatus); the Node shows it
    and a Pending pod asking for 6 CPUs is then scheduled."""
    node_ip = test_network.node_ip if test_network else "127.0.0.1"
    mock_config = tmp_path / "mock.json"
    mock_config.write_text(json.dumps({GROWING_NODE: {"cpu": "4", "memory": "8Gi", "pods": "20"}}))
    socket_path = tmp_path / "mock.sock"
    provider = ProviderProcess(tmp_path, socket_path, node_ip, node_name=GROWING_NODE)
    provider.args = [
        str(MOCK_PROVIDER_SCRIPT), "--listen", f"unix://{socket_path}", "--provider-config", str(mock_config),
        "--nodename", GROWING_NODE, "--internal-ip", node_ip,
    ]  # fmt: skip
    kubeconfig = service_account_kubeconfig(control_plane, tmp_path)
    namespace = f"grow-{uuid.uuid4().hex[:6]}"
    control_plane.create_namespace(namespace)
    provider.start()
    grpc_config = tmp_path / "grpc.json"
    grpc_config.write_text(json.dumps({"address": f"unix://{socket_path}", "call_timeout": 5}))
    daemon = VkubeletProcess(
        work_dir=tmp_path,
        kubeconfig=kubeconfig,
        node_name=GROWING_NODE,
        network=test_network,
        provider="grpc",
        provider_config_path=grpc_config,
    ).start()

    def capacity_cpu() -> str:
        node = json.loads(control_plane.kubectl("get", "node", GROWING_NODE, "-o", "json").stdout)
        return str(node["status"]["capacity"]["cpu"])

    try:
        wait_for(lambda: capacity_cpu() == "4", timeout=60, what="node registered with 4 CPUs")
        spec = pod_spec(GROWING_NODE, ["sleep", "3600"], provider="grpc")
        spec["containers"][0]["resources"] = {"requests": {"cpu": "6"}}
        big = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "big"}, "spec": spec}
        apply(control_plane, namespace, big)
        wait_for(lambda: pod_condition(control_plane, namespace, "big", "PodScheduled", "Unschedulable"),
                 timeout=60, what="pod big Unschedulable on a 4-CPU node")  # fmt: skip

        mock_config.write_text(json.dumps({GROWING_NODE: {"cpu": "8", "memory": "8Gi", "pods": "20"}}))
        assert provider.process is not None
        started = time.monotonic()
        provider.process.send_signal(signal.SIGHUP)
        wait_for(lambda: capacity_cpu() == "8", timeout=10, what="the node's capacity to become 8 CPUs")
        print(f"capacity change visible after {time.monotonic() - started:.2f}s")
        wait_for(lambda: pod_condition(control_plane, namespace, "big", "Ready", None),
                 timeout=60, what="pod big scheduled onto the grown node and Ready")  # fmt: skip
        pod = json.loads(control_plane.kubectl("get", "pod/big", "-n", namespace, "-o", "json").stdout)
        assert pod["spec"]["nodeName"] == GROWING_NODE
        daemon.assert_alive()
    finally:
        daemon.stop()
        provider.stop()
        print(daemon.log_tail(40))


def pod_condition(control_plane: Any, namespace: str, name: str, kind: str, reason: str | None) -> bool:
    """Whether the pod has condition ``kind``: True when ``reason`` is None, else with that reason."""
    pod = json.loads(control_plane.kubectl("get", f"pod/{name}", "-n", namespace, "-o", "json").stdout)
    for condition in pod.get("status", {}).get("conditions") or []:
        if condition["type"] == kind:
            return bool(condition.get("reason") == reason if reason else condition["status"] == "True")
    return False
