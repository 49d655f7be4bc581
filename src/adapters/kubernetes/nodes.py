"""The Node object over the Kubernetes API (implements ``NodeGateway``).

Patches are strategic merge patches, so lists with a merge key (``status.conditions`` by
``type``, ``status.addresses`` by ``type``) are merged item by item: a condition another actor
added to our node (say, a node-problem-detector) survives our heartbeat. Node manifests cross as
the server's JSON, unknown fields included.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from vkubelet.adapters.kubernetes.client import STRATEGIC_MERGE_PATCH, KubeClient

NODES = "/api/v1/nodes"


def node_path(name: str, subresource: str = "") -> str:
    path = f"{NODES}/{quote(name, safe='')}"
    return f"{path}/{subresource}" if subresource else path


class KubernetesNodeGateway:
    """``NodeGateway``: get, create and strategic-merge-patch nodes and their status."""

    def __init__(self, client: KubeClient) -> None:
        self._client = client

    async def get_node(self, name: str) -> Mapping[str, Any]:
        return await self._client.request("GET", node_path(name), what=f"node {name}")

    async def create_node(self, node: Mapping[str, Any]) -> Mapping[str, Any]:
        name = str((node.get("metadata") or {}).get("name") or "")
        body = {"apiVersion": "v1", "kind": "Node", **node}
        return await self._client.request("POST", NODES, what=f"node {name}", body=body)

    async def patch_node(self, name: str, patch: Mapping[str, Any]) -> Mapping[str, Any]:
        return await self._client.request(
            "PATCH",
            node_path(name),
            what=f"node {name}",
            body=patch,
            content_type=STRATEGIC_MERGE_PATCH,
        )

    async def patch_node_status(self, name: str, patch: Mapping[str, Any]) -> Mapping[str, Any]:
        return await self._client.request(
            "PATCH",
            node_path(name, "status"),
            what=f"status of node {name}",
            body=patch,
            content_type=STRATEGIC_MERGE_PATCH,
        )
