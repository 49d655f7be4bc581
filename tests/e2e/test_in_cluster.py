"""Issue 14: vkubelet as a pod of the cluster, from deploy/ exactly as shipped.

A process-provider node (its pods run as processes on this host) stands in for a real node. The
test applies a kustomize overlay whose base is deploy/ unchanged and which patches only what this
environment needs, then checks that vkubelet runs as a pod with in-cluster config and the
ServiceAccount and RBAC of deploy/rbac.yaml (the test applies nothing else for it), that its
node registers and turns Ready, and that a workload runs there. Then the same for the StatefulSet
component (deploy/statefulset/), two replicas, two nodes named after their pods.

What the overlay patches, and why:
* placement: nodeSelector + toleration for the process-provider node instead of the base's
  affinity, which keeps vkubelet off virtual nodes (this one is virtual);
* command: the venv's ``virtual-kubelet``, since the provider's PATH need not include it (the
  image, which would have it on PATH, is ignored);
* ``--listen-address 0.0.0.0:0`` and no readiness probe: the provider's pods share the host
  network, so two replicas cannot both listen on 10250; the OS picks each port, the Node reports
  it in daemonEndpoints, and the probe (tcpSocket on 10250) could not follow it;
* ``VKUBELET_POD_IP`` from ``status.hostIP`` instead of ``status.podIP``: on this provider the
  two are the same address (host network), but vkubelet resolves a pod's environment before the
  provider has reported its podIP, so ``status.podIP`` is still empty then, and the in-pod
  vkubelet would fall back to the host's primary address, 127.0.0.1 in the test network
  namespace (no default route), which the API server's node proxy refuses;
* ``--client-ca-file``: this control plane signs the API server's kubelet client certificate
  with a client CA of its own, not the cluster CA in the ServiceAccount's ca.crt that the base
  uses (right for kubeadm-style clusters), so the overlay follows docs/deploy.md's recipe for such
  clusters: that CA from ``extension-apiserver-authentication`` in a ConfigMap, mounted;
* no emptyDir over ``/tmp``: the provider's pods are host processes that see the host's /tmp
  (writable anyway), and a checkout under /tmp (CI clones into a temporary folder) holds the
  very command the pod runs, which the mount would hide.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.vkubelet_process import (
    REPO,
    node_is_ready,
    process_provider_daemon,
    scratch_namespace,
    wait_for,
)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="the process provider mounts the pod's volumes (its token) only as root"
)

HOST_NODE = "vk-e2e-in-cluster-host"
NAMESPACE = "vkubelet-system"
SERVICE_ACCOUNT = "virtual-kubelet"
TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
VIRTUAL_KUBELET = Path(sys.executable).with_name("virtual-kubelet")

daemon = process_provider_daemon(HOST_NODE, {"cpu": "8", "memory": "16Gi", "pods": "40"})


def kubectl_json(control_plane: Any, *args: str) -> Any:
    return json.loads(control_plane.kubectl(*args, "-o", "json").stdout)


def host_patch() -> list[dict[str, Any]]:
    """JSON 6902 operations on the vkubelet workload for this environment (module doc)."""
    container = "/spec/template/spec/containers/0"
    return [
        {"op": "remove", "path": "/spec/template/spec/affinity"},
        {
            "op": "add",
            "path": "/spec/template/spec/nodeSelector",
            "value": {"kubernetes.io/hostname": HOST_NODE},
        },
        {
            "op": "add",
            "path": "/spec/template/spec/tolerations",
            "value": [{"key": "virtual-kubelet.io/provider", "operator": "Exists", "effect": "NoSchedule"}],
        },
        {"op": "replace", "path": f"{container}/command", "value": [str(VIRTUAL_KUBELET)]},
        {"op": "add", "path": f"{container}/args/-", "value": "--listen-address"},
        {"op": "add", "path": f"{container}/args/-", "value": "0.0.0.0:0"},
        {"op": "remove", "path": f"{container}/readinessProbe"},
    ]


def pod_ip_patch(*, kind: str, name: str) -> dict[str, Any]:
    """A strategic merge patch: VKUBELET_POD_IP from status.hostIP and no /tmp mount (module
    doc). By name and merge key, as the indexes differ between the Deployment and the StatefulSet."""
    env = {"name": "VKUBELET_POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}}
    # The host's /tmp stays visible (module doc): the /tmp mount is deleted by its merge key.
    no_tmp_mount = {"mountPath": "/tmp", "$patch": "delete"}
    container = {"name": "vkubelet", "env": [env], "volumeMounts": [no_tmp_mount]}
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"template": {"spec": {"containers": [container]}}},
    }


def client_ca_patch() -> list[dict[str, Any]]:
    """JSON 6902 operations of docs/deploy.md's recipe for a cluster whose API server signs its
    kubelet client certificate with a CA other than the one in the ServiceAccount's ca.crt (this
    local control plane has separate serving and client CAs): the ConfigMap of that CA mounted,
    and ``--client-ca-file`` pointed at it."""
    container = "/spec/template/spec/containers/0"
    return [
        {
            "op": "add",
            "path": "/spec/template/spec/volumes/-",
            "value": {"name": "client-ca", **CLIENT_CA_VOLUME},
        },
        {
            "op": "add",
            "path": f"{container}/volumeMounts/-",
            "value": {"name": "client-ca", "mountPath": "/etc/vkubelet-client-ca", "readOnly": True},
        },
        # "test" first: a base whose arguments moved fails here instead of patching the wrong one.
        {"op": "test", "path": f"{container}/args/6", "value": "--client-ca-file"},
        {"op": "replace", "path": f"{container}/args/7", "value": "/etc/vkubelet-client-ca/client-ca.crt"},
    ]


CLIENT_CA_VOLUME = {"configMap": {"name": "vkubelet-client-ca"}}


def cluster_client_ca(control_plane: Any) -> str:
    """The CA the API server verifies client certificates with, as it publishes it for
    aggregated API servers (what docs/deploy.md tells a user to fetch)."""
    found: str = control_plane.kubectl(
        "get",
        "configmap",
        "-n",
        "kube-system",
        "extension-apiserver-authentication",
        "-o",
        "jsonpath={.data.client-ca-file}",
    ).stdout
    assert found.startswith("-----BEGIN CERTIFICATE-----"), found
    return found


def write_overlay(directory: Path, *, kind: str, name: str, components: list[Path], client_ca: str) -> Path:
    """A kustomization in ``directory`` over deploy/ (relative paths: kustomize loads bases by path)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "client-ca.crt").write_text(client_ca)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(REPO / "deploy", directory)],
        "components": [os.path.relpath(component, directory) for component in components],
        "configMapGenerator": [
            {"name": "vkubelet-client-ca", "namespace": NAMESPACE, "files": ["client-ca.crt"]}
        ],
        "patches": [
            {
                "target": {"group": "apps", "version": "v1", "kind": kind, "name": name},
                "patch": yaml.safe_dump(client_ca_patch()),
            },
            {
                "target": {
                    "group": "apps",
                    "version": "v1",
                    "kind": kind,
                    "name": name,
                    "namespace": NAMESPACE,
                },
                "patch": yaml.safe_dump(host_patch()),
            },
            {
                "target": {"group": "apps", "version": "v1", "kind": kind, "name": name},
                "patch": yaml.safe_dump(pod_ip_patch(kind=kind, name=name)),
            },
        ],
    }
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return directory


def vkubelet_pods(control_plane: Any, instance: str) -> list[dict[str, Any]]:
    selector = f"app.kubernetes.io/name=vkubelet,app.kubernetes.io/instance={instance}"
    items: list[dict[str, Any]] = kubectl_json(control_plane, "get", "pods", "-n", NAMESPACE, "-l", selector)[
        "items"
    ]
    return [pod for pod in items if "deletionTimestamp" not in pod["metadata"]]


def running_on(pod: dict[str, Any], node: str) -> bool:
    return bool(pod["spec"].get("nodeName") == node and pod.get("status", {}).get("phase") == "Running")


def pid_of(pod: dict[str, Any]) -> int:
    """The process provider's container ID is ``process://<pid>``."""
    (status,) = pod["status"]["containerStatuses"]
    scheme, _, pid = status["containerID"].partition("://")
    assert scheme == "process", status
    return int(pid)


def in_root(root: Path, path: str) -> Path:
    """``path`` as seen by the process whose root is ``root`` (a /proc/<pid>/root).

    An absolute symlink on the way (/var/run -> /run on most hosts) would otherwise leave that
    root and resolve in ours, where the pod's volumes are not mounted."""
    resolved, parts, hops = root, [part for part in path.split("/") if part], 0
    while parts:
        candidate = resolved / parts.pop(0)
        if not candidate.is_symlink():
            resolved = candidate
            continue
        hops += 1
        assert hops <= 40, f"too many symlinks resolving {path} under {root}"  # the kernel's limit
        target = os.readlink(candidate)
        if target.startswith("/"):
            resolved = root
        parts = [part for part in target.split("/") if part] + parts
    return resolved


def assert_in_cluster_identity(control_plane: Any, pod: dict[str, Any]) -> None:
    """vkubelet runs with in-cluster config only: the service host/port in its environment, no
    kubeconfig anywhere it would look, and the projected token of its pod, which the API server
    authenticates as vkubelet-system/virtual-kubelet."""
    assert pod["spec"]["serviceAccountName"] == SERVICE_ACCOUNT
    pid = pid_of(pod)
    environ = dict(
        entry.split(b"=", 1)
        for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        if b"=" in entry
    )
    host, _, port = control_plane.server_url.removeprefix("https://").rpartition(":")
    assert environ.get(b"KUBERNETES_SERVICE_HOST") == host.encode(), environ
    assert environ.get(b"KUBERNETES_SERVICE_PORT") == port.encode(), environ
    assert b"KUBECONFIG" not in environ
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert not any(arg.startswith(b"--kubeconfig") for arg in argv), argv
    # /proc/<pid>/root resolves in the process's own mount namespace, where the token is mounted.
    root = Path(f"/proc/{pid}/root")
    home = environ.get(b"HOME", b"/root").decode()
    assert not in_root(root, f"{home}/.kube/config").exists()
    token = in_root(root, f"{TOKEN_DIR}/token").read_text()
    assert in_root(root, f"{TOKEN_DIR}/ca.crt").read_text().startswith("-----BEGIN CERTIFICATE-----")
    review = control_plane.kubectl(
        "create",
        "-o",
        "json",
        "-f",
        "-",
        input=json.dumps(
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}
        ),
    )
    status = json.loads(review.stdout)["status"]
    assert status.get("authenticated") is True, status
    assert status["user"]["username"] == f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"
    # A bound token of this very pod, as the projected volume gives it, not a long-lived one.
    assert status["user"]["extra"]["authentication.kubernetes.io/pod-name"] == [pod["metadata"]["name"]]


def ready_node(control_plane: Any, node: str, *, pod: dict[str, Any]) -> dict[str, Any]:
    """The Node, once Ready, with the pod's address and the kubelet port the OS picked."""
    wait_for(lambda: node_is_ready(control_plane, node), timeout=120, what=f"node {node} Ready")
    found: dict[str, Any] = kubectl_json(control_plane, "get", "node", node)
    addresses = {a["type"]: a["address"] for a in found["status"]["addresses"]}
    assert addresses["InternalIP"] == pod["status"]["podIP"]
    port = found["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
    assert 0 < port != 10250, port  # --listen-address 0.0.0.0:0
    return found


def run_workload(control_plane: Any, namespace: str, node: str) -> str:
    """A Deployment that tolerates the mock node's taint and selects ``node``, as a user would
    ask the scheduler for it; the name of its pod, once Running there."""
    name = f"web-{node}"
    manifest = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "nodeSelector": {"kubernetes.io/hostname": node},
                    "tolerations": [
                        {
                            "key": "virtual-kubelet.io/provider",
                            "operator": "Equal",
                            "value": "mock",
                            "effect": "NoSchedule",
                        }
                    ],
                    "containers": [{"name": "web", "image": "nginx:1.27"}],
                },
            },
        },
    }
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(manifest))

    def running() -> list[str]:
        listed = kubectl_json(control_plane, "get", "pods", "-n", namespace, "-l", f"app={name}")["items"]
        return [pod["metadata"]["name"] for pod in listed if running_on(pod, node)]

    (pod,) = wait_for(running, timeout=60, what=f"a pod of {name} Running on {node}")
    return pod


def assert_kubelet_api_reached(control_plane: Any, *, namespace: str, pod: str, node: str) -> None:
    """The API server reaches ``node``'s kubelet API at its InternalIP and daemonEndpoints port
    and authenticates to it with its client certificate, for ``kubectl logs`` and the node proxy.

    The mock provider keeps no logs, so ``kubectl logs`` gets vkubelet's answer that it lacks the
    logs capability, a message only that node's kubelet API produces; the node proxy's ``/pods``
    lists the pod, as the kubelet's does."""
    result = control_plane.kubectl("logs", "-n", namespace, pod, check=False)
    assert f"the provider of node '{node}' does not support container logs" in result.stderr, (
        result.returncode,
        result.stderr,
    )
    listed = json.loads(control_plane.kubectl("get", "--raw", f"/api/v1/nodes/{node}/proxy/pods").stdout)
    assert pod in [item["metadata"]["name"] for item in listed["items"]], listed


def assert_own_logs(control_plane: Any, pod: dict[str, Any], node: str) -> None:
    """``kubectl logs`` of the vkubelet pod itself (the process provider's real output) shows
    it registered ``node`` with in-cluster config."""
    logs = control_plane.kubectl("logs", "-n", NAMESPACE, pod["metadata"]["name"]).stdout
    assert f"node {node} is ready" in logs, logs[-2000:]
    (status,) = pod["status"]["containerStatuses"]
    if status["restartCount"]:  # it must come up at the first attempt
        name = pod["metadata"]["name"]
        previous = control_plane.kubectl("logs", "-n", NAMESPACE, name, "--previous", check=False)
        raise AssertionError(f"{name} restarted: {status}\n{previous.stdout[-3000:]}{previous.stderr}")


def remove(control_plane: Any, *, kind: str, name: str, instance: str, nodes: list[str]) -> None:
    """Delete the vkubelet workload and wait for its pods to stop (the host node is still
    authorised to finish that), then delete its nodes and wait until they are gone."""
    control_plane.kubectl(
        "delete", kind, name, "-n", NAMESPACE, "--ignore-not-found", "--cascade=foreground", "--wait=false"
    )
    wait_for(lambda: not _any_pods(control_plane, instance), timeout=90, what=f"{instance} pods gone")
    control_plane.kubectl("delete", "node", *nodes, "--ignore-not-found", "--wait=true", timeout=60)


def _any_pods(control_plane: Any, instance: str) -> bool:
    selector = f"app.kubernetes.io/name=vkubelet,app.kubernetes.io/instance={instance}"
    listed = kubectl_json(control_plane, "get", "pods", "-n", NAMESPACE, "-l", selector)["items"]
    return bool(listed)


@pytest.fixture(scope="module")
def system_namespace(control_plane: Any, daemon: Any) -> Iterator[str]:
    """vkubelet-system, deleted at the end (and waited for, so later modules can re-create it).

    Torn down before ``daemon``: the host node's own credentials are a token of the same
    ServiceAccount, so its pods here must be gone before the namespace (and that token) goes."""
    yield NAMESPACE
    control_plane.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=false")
    wait_for(
        lambda: control_plane.kubectl("get", "namespace", NAMESPACE, check=False).returncode != 0,
        timeout=120,
        what=f"namespace {NAMESPACE} gone",
    )


@pytest.fixture
def workloads(control_plane: Any) -> Iterator[str]:
    with scratch_namespace(control_plane, "in-cluster") as name:
        yield name


def apply_and_time(control_plane: Any, overlay: Path, nodes: list[str]) -> float:
    """Seconds from ``kubectl apply -k`` until every node in ``nodes`` is Ready."""
    control_plane.kubectl("delete", "node", *nodes, "--ignore-not-found")  # no stale Ready node
    started = time.monotonic()
    control_plane.kubectl("apply", "-k", str(overlay))
    wait_for(
        lambda: all(node_is_ready(control_plane, node) for node in nodes),
        timeout=120,
        what=f"nodes {nodes} Ready",
    )
    return time.monotonic() - started


def test_the_deployment_runs_vkubelet_as_a_pod_with_in_cluster_config(
    control_plane: Any, daemon: Any, system_namespace: str, workloads: str, tmp_path: Path
) -> None:
    overlay = write_overlay(
        tmp_path / "deployment",
        kind="Deployment",
        name="vkubelet-vk-0",
        components=[],
        client_ca=cluster_client_ca(control_plane),
    )
    try:
        elapsed = apply_and_time(control_plane, overlay, ["vk-0"])
        print(f"in-cluster Deployment: kubectl apply -k -> node vk-0 Ready in {elapsed:.1f}s")
        (pod,) = wait_for(
            lambda: [p for p in vkubelet_pods(control_plane, "vk-0") if running_on(p, HOST_NODE)],
            timeout=60,
            what=f"the vkubelet pod Running on {HOST_NODE}",
        )
        assert_in_cluster_identity(control_plane, pod)
        ready_node(control_plane, "vk-0", pod=pod)
        assert_own_logs(control_plane, pod, "vk-0")
        workload = run_workload(control_plane, workloads, "vk-0")
        assert_kubelet_api_reached(control_plane, namespace=workloads, pod=workload, node="vk-0")
        daemon.assert_alive()
    finally:
        control_plane.kubectl(
            "delete", "deployment", "--all", "-n", workloads, "--wait=true", timeout=60, check=False
        )
        remove(control_plane, kind="deployment", name="vkubelet-vk-0", instance="vk-0", nodes=["vk-0"])


def test_the_statefulset_registers_one_node_per_replica(
    control_plane: Any, daemon: Any, system_namespace: str, workloads: str, tmp_path: Path
) -> None:
    overlay = write_overlay(
        tmp_path / "statefulset",
        kind="StatefulSet",
        name="vk",
        components=[REPO / "deploy" / "statefulset"],
        client_ca=cluster_client_ca(control_plane),
    )
    nodes = ["vk-0", "vk-1"]
    try:
        elapsed = apply_and_time(control_plane, overlay, nodes)
        print(
            f"in-cluster StatefulSet (2 replicas): kubectl apply -k -> nodes {nodes} Ready in {elapsed:.1f}s"
        )

        def both_running() -> list[dict[str, Any]] | None:
            pods = [p for p in vkubelet_pods(control_plane, "vk") if running_on(p, HOST_NODE)]
            return pods if len(pods) == 2 else None

        found = wait_for(
            both_running,
            timeout=60,
            what=f"two vkubelet pods Running on {HOST_NODE}",
        )
        by_name = {pod["metadata"]["name"]: pod for pod in found}
        assert sorted(by_name) == nodes  # each node is named after its pod
        ports = set()
        for node, pod in by_name.items():
            assert_in_cluster_identity(control_plane, pod)
            ports.add(
                ready_node(control_plane, node, pod=pod)["status"]["daemonEndpoints"]["kubeletEndpoint"][
                    "Port"
                ]
            )
            assert_own_logs(control_plane, pod, node)
            workload = run_workload(control_plane, workloads, node)
            assert_kubelet_api_reached(control_plane, namespace=workloads, pod=workload, node=node)
        assert len(ports) == 2  # one host network, two kubelet ports
        daemon.assert_alive()
    finally:
        control_plane.kubectl(
            "delete", "deployment", "--all", "-n", workloads, "--wait=true", timeout=60, check=False
        )
        remove(control_plane, kind="statefulset", name="vk", instance="vk", nodes=nodes)
