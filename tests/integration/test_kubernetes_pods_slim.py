"""Pods enter vkubelet without ``metadata.managedFields``, by every read of the pod gateway.

The API server sends the field-ownership records on every list, watch, get and patch reply;
nothing in vkubelet or its providers reads them, and they were a large share of the memory kept
per pod (docs/benchmarks.md). Everything else of the manifest must arrive unchanged.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from vkubelet.adapters.kubernetes.client import KubeClient, create_client
from vkubelet.adapters.kubernetes.pods import KubernetesPodGateway
from vkubelet.domain.pod import Pod, PodRef

MANAGED = [
    {
        "manager": "kubectl-create",
        "operation": "Update",
        "apiVersion": "v1",
        "time": "2026-01-01T00:00:00Z",
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}}},
    }
]


def served_pod(name: str, version: str) -> dict[str, Any]:
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": f"uid-{name}",
            "resourceVersion": version,
            "labels": {"app": "web"},
            "annotations": {"note": "kept"},
            "ownerReferences": [{"kind": "ReplicaSet", "name": "rs", "uid": "rs-1"}],
            "managedFields": MANAGED,
        },
        "spec": {"nodeName": "vk", "containers": [{"name": "app", "image": "app:1"}]},
        "status": {"phase": "Pending"},
    }


def expected(name: str, version: str) -> dict[str, Any]:
    pod = copy.deepcopy(served_pod(name, version))
    del pod["metadata"]["managedFields"]
    return pod


class PodServer:
    """Serves a list page, a watch, a GET and a status PATCH, each pod with managedFields."""

    def __init__(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        self.port = 0

    async def start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/api/v1/pods" and request.query.get("watch") == "true":
            response = web.StreamResponse()
            await response.prepare(request)
            for kind, version in (("ADDED", "10"), ("MODIFIED", "11"), ("DELETED", "12")):
                line = {"type": kind, "object": served_pod("a", version)}
                await response.write(json.dumps(line).encode() + b"\n")
            await response.write_eof()
            return response
        if request.path == "/api/v1/pods":
            item = served_pod("a", "7")
            del item["kind"], item["apiVersion"]  # as list items come
            return web.json_response({"metadata": {"resourceVersion": "7"}, "items": [item]})
        if request.path == "/api/v1/namespaces/ns/pods/a":
            return web.json_response(served_pod("a", "8"))
        if request.path == "/api/v1/namespaces/ns/pods/a/status" and request.method == "PATCH":
            return web.json_response(served_pod("a", "9"))
        return web.json_response({"kind": "Status", "code": 404}, status=404)


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[KubernetesPodGateway]:
    server = PodServer()
    await server.start()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{server.port}"}}],
        "users": [{"name": "fake", "user": {"token": "t"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
        "current-context": "fake",
    }
    (tmp_path / "kubeconfig").write_text(json.dumps(config))
    client: KubeClient = create_client(tmp_path / "kubeconfig", qps=0, burst=0)
    try:
        yield KubernetesPodGateway(client, node_name="vk")
    finally:
        await client.close()
        await server.runner.cleanup()


def manifest(pod: Pod) -> Any:
    return json.loads(json.dumps(pod.manifest))


async def test_listed_pods_come_without_managed_fields(gateway: KubernetesPodGateway) -> None:
    pods, version = await gateway.list_node_pods()
    assert version == "7"
    assert [manifest(p) for p in pods] == [expected("a", "7")]


async def test_watched_pods_come_without_managed_fields(gateway: KubernetesPodGateway) -> None:
    events = [manifest(e.pod) async for e in gateway.watch_node_pods("5")]
    assert events == [expected("a", "10"), expected("a", "11"), expected("a", "12")]


async def test_got_and_patched_pods_come_without_managed_fields(gateway: KubernetesPodGateway) -> None:
    assert manifest(await gateway.get_pod("ns", "a")) == expected("a", "8")
    patched = await gateway.patch_pod_status(PodRef("ns", "a", "uid-a"), {"phase": "Running"})
    assert manifest(patched) == expected("a", "9")
