"""Issue 2 acceptance: the real control plane answers kubectl and lightkube alike."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from lightkube import AsyncClient, Client, KubeConfig
from lightkube.resources.core_v1 import Namespace, Node

from vkubelet.entrypoints.localcluster.cluster import LocalCluster


def _suffix() -> str:
    return uuid.uuid4().hex[:8]


def test_kubectl_writes_and_lightkube_reads_back(control_plane: LocalCluster) -> None:
    namespace, node = f"e2e-{_suffix()}", f"vk-e2e-{_suffix()}"
    control_plane.create_namespace(namespace)
    manifest = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node, "labels": {"type": "virtual-kubelet", "vkubelet.test/id": node}},
        "spec": {"taints": [{"key": "virtual-kubelet.io/provider", "value": "mock", "effect": "NoSchedule"}]},
    }
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    try:
        client = Client(config=KubeConfig.from_file(control_plane.kubeconfig_path))
        read_namespace = client.get(Namespace, namespace)
        read_node = client.get(Node, node)
        assert read_namespace.metadata is not None and read_namespace.metadata.name == namespace
        assert read_namespace.status is not None and read_namespace.status.phase == "Active"
        assert read_node.metadata is not None and read_node.metadata.labels is not None
        assert read_node.metadata.labels["vkubelet.test/id"] == node
        assert read_node.spec is not None and read_node.spec.taints is not None
        # (the TaintNodesByCondition admission plugin adds node.kubernetes.io/not-ready as well)
        taints = {(t.key, t.value, t.effect) for t in read_node.spec.taints}
        assert ("virtual-kubelet.io/provider", "mock", "NoSchedule") in taints
        names = {n.metadata.name for n in client.list(Node) if n.metadata is not None}
        assert node in names
    finally:
        control_plane.kubectl("delete", "node", node, "--wait=false")


async def test_async_client_sees_kubectl_objects(control_plane: LocalCluster) -> None:
    node = f"vk-e2e-{_suffix()}"
    control_plane.kubectl(
        "create",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}}),
    )
    client = AsyncClient(config=KubeConfig.from_file(control_plane.kubeconfig_path))
    try:
        read = await client.get(Node, node)
        assert read.metadata is not None and read.metadata.name == node
        await client.delete(Node, node)
    finally:
        await client.close()
    gone = control_plane.kubectl("get", "node", node, check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr


def test_server_is_the_pinned_release_and_ready(control_plane: LocalCluster) -> None:
    version = json.loads(control_plane.kubectl("version", "-o", "json").stdout)
    assert version["clientVersion"]["gitVersion"] == "v1.36.3"
    assert version["serverVersion"]["gitVersion"] == "v1.36.3"
    assert control_plane.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
    # The admin identity is in system:masters, so RBAC lets it do anything.
    assert control_plane.kubectl("auth", "can-i", "*", "*").stdout.strip() == "yes"


def test_issued_client_certificates_are_accepted(control_plane: LocalCluster, tmp_path: Path) -> None:
    pair = control_plane.issue_client_certificate("system:node:vk-cert", ["system:nodes"])
    cert, key = tmp_path / "node.crt", tmp_path / "node.key"
    cert.write_bytes(pair.cert_pem)
    key.write_bytes(pair.key_pem)
    result = control_plane.kubectl(
        f"--client-certificate={cert}", f"--client-key={key}", "auth", "whoami", "-o", "json"
    )
    user = json.loads(result.stdout)["status"]["userInfo"]
    assert user["username"] == "system:node:vk-cert"
    assert "system:nodes" in user["groups"]
