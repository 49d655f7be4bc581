"""The Kubernetes adapter (vkubelet.adapters.kubernetes) against a real kube-apiserver.

Each test builds its own client (one event loop per test); objects live in a namespace of this
module and carry unique names, so the tests are independent of each other and of other modules.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from lightkube.resources.core_v1 import Node

from vkubelet.adapters.kubernetes.client import KubeClient, create_client
from vkubelet.adapters.kubernetes.config import KubernetesConfigSource
from vkubelet.adapters.kubernetes.events import KubernetesEventRecorder
from vkubelet.adapters.kubernetes.leases import KubernetesLeaseGateway
from vkubelet.adapters.kubernetes.nodes import KubernetesNodeGateway
from vkubelet.adapters.kubernetes.pods import KubernetesPodGateway
from vkubelet.application.ports.cluster import EventType, Lease, ObjectRef, PodEvent, WatchEventType
from vkubelet.domain.errors import Conflict, Expired, NotFound
from vkubelet.domain.pod import PodRef
from vkubelet.entrypoints.localcluster.cluster import LocalCluster


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def namespace(control_plane: LocalCluster) -> str:
    name = _unique("kadapter")
    control_plane.create_namespace(name)
    return name


@pytest.fixture
async def kube(control_plane: LocalCluster) -> AsyncIterator[KubeClient]:
    client = create_client(control_plane.kubeconfig_path, qps=0, burst=0)
    try:
        yield client
    finally:
        await client.close()


def kubectl_json(control_plane: LocalCluster, *args: str) -> Any:
    return json.loads(control_plane.kubectl(*args, "-o", "json").stdout)


async def create_pod(
    kube: KubeClient, namespace: str, name: str, node: str, **metadata: Any
) -> dict[str, Any]:
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, **metadata},
        "spec": {"nodeName": node, "containers": [{"name": "main", "image": "busybox"}]},
    }
    return await kube.request(
        "POST", f"/api/v1/namespaces/{namespace}/pods", what=f"pod {name}", body=manifest
    )


def ref_of(manifest: dict[str, Any]) -> PodRef:
    meta = manifest["metadata"]
    return PodRef(meta["namespace"], meta["name"], meta["uid"])


# -- pods ---------------------------------------------------------------------------------


async def test_list_and_watch_see_only_this_nodes_pods(kube: KubeClient, namespace: str) -> None:
    node, other = _unique("vk-a"), _unique("vk-b")
    gateway = KubernetesPodGateway(kube, node_name=node, page_size=2)
    listed_before = await create_pod(kube, namespace, _unique("listed"), node)
    for _ in range(2):  # more pods than one page: the list paginates
        await create_pod(kube, namespace, _unique("listed"), node)
    await create_pod(kube, namespace, _unique("elsewhere"), other)

    pods, version = await gateway.list_node_pods()
    assert {p.node_name for p in pods} == {node}
    assert len(pods) == 3 and ref_of(listed_before) in {p.ref for p in pods}
    assert pods[0].manifest["kind"] == "Pod" and pods[0].manifest["apiVersion"] == "v1"
    assert version

    seen: list[PodEvent] = []

    async def collect(watched: str) -> None:
        async for event in gateway.watch_node_pods(version):
            seen.append(event)
            if event.type is WatchEventType.DELETED and event.pod.ref.name == watched:
                return

    name = _unique("watched")
    watcher = asyncio.create_task(collect(name))
    await create_pod(kube, namespace, _unique("elsewhere"), other)
    created = await create_pod(kube, namespace, name, node)
    await kube.request(
        "PATCH",
        f"/api/v1/namespaces/{namespace}/pods/{name}",
        what="label patch",
        body={"metadata": {"labels": {"step": "two"}}},
        content_type="application/merge-patch+json",
    )
    await gateway.delete_pod(ref_of(created), grace_period_seconds=0)
    async with asyncio.timeout(20):
        await watcher

    assert {e.pod.node_name for e in seen} == {node}
    mine = [(e.type, e.pod.labels.get("step")) for e in seen if e.pod.ref == ref_of(created)]
    assert mine[0] == (WatchEventType.ADDED, None)
    assert (WatchEventType.MODIFIED, "two") in mine
    assert mine[-1][0] is WatchEventType.DELETED


async def test_status_patch_changes_status_only(
    kube: KubeClient, namespace: str, control_plane: LocalCluster
) -> None:
    node = _unique("vk")
    gateway = KubernetesPodGateway(kube, node_name=node)
    created = await create_pod(
        kube,
        namespace,
        _unique("status"),
        node,
        labels={"app": "web"},
        annotations={"note": "kept"},
        finalizers=["vkubelet.test/hold"],
    )
    ref = ref_of(created)
    status = {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True"}],
        "containerStatuses": [
            {
                "name": "main",
                "ready": True,
                "restartCount": 0,
                "image": "busybox",
                "imageID": "",
                "state": {"running": {"startedAt": "2024-01-01T00:00:00Z"}},
            }
        ],
    }
    patched = await gateway.patch_pod_status(ref, status)
    assert patched.ref == ref and patched.phase.value == "Running"

    # Someone else adds a condition; our next patch merges conditions by type.
    await kube.request(
        "PATCH",
        f"/api/v1/namespaces/{namespace}/pods/{ref.name}/status",
        what="foreign condition",
        body={"status": {"conditions": [{"type": "example.com/Gate", "status": "True"}]}},
        content_type="application/strategic-merge-patch+json",
    )
    await gateway.patch_pod_status(ref, {"conditions": [{"type": "Ready", "status": "False"}]})

    server = kubectl_json(control_plane, "get", "pod", "-n", namespace, ref.name)
    assert server["metadata"]["labels"] == {"app": "web"}
    assert server["metadata"]["annotations"] == {"note": "kept"}
    assert server["metadata"]["finalizers"] == ["vkubelet.test/hold"]
    conditions = {c["type"]: c["status"] for c in server["status"]["conditions"]}
    assert conditions == {"Ready": "False", "example.com/Gate": "True"}
    assert server["status"]["containerStatuses"][0]["state"]["running"]
    assert server["spec"]["containers"][0]["image"] == "busybox"

    control_plane.kubectl(
        "patch", "pod", "-n", namespace, ref.name, "--type=json",
        "-p", '[{"op": "remove", "path": "/metadata/finalizers"}]',
    )  # fmt: skip
    await gateway.delete_pod(ref, grace_period_seconds=0)


async def test_status_patch_and_delete_with_a_stale_uid_are_conflicts(
    kube: KubeClient, namespace: str
) -> None:
    node = _unique("vk")
    gateway = KubernetesPodGateway(kube, node_name=node)
    name = _unique("recreated")
    first = ref_of(await create_pod(kube, namespace, name, node))
    await gateway.delete_pod(first, grace_period_seconds=0)
    second = ref_of(await create_pod(kube, namespace, name, node))
    assert first.uid != second.uid

    with pytest.raises(Conflict) as patch_error:
        await gateway.patch_pod_status(first, {"phase": "Failed"})
    assert name in str(patch_error.value)
    with pytest.raises(Conflict, match=name):
        await gateway.delete_pod(first, grace_period_seconds=0)

    survivor = await gateway.get_pod(namespace, name)
    assert survivor.ref == second and survivor.phase.value == "Pending"

    await gateway.delete_pod(second, grace_period_seconds=0)
    with pytest.raises(NotFound, match=name):
        await gateway.get_pod(namespace, name)
    with pytest.raises(NotFound):
        await gateway.delete_pod(second, grace_period_seconds=0)
    with pytest.raises(NotFound):
        await gateway.patch_pod_status(second, {"phase": "Running"})


# -- nodes --------------------------------------------------------------------------------


async def test_node_create_patch_and_status_merge_keep_foreign_conditions(kube: KubeClient) -> None:
    gateway = KubernetesNodeGateway(kube)
    name = _unique("vk-node")
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def ready(status: str) -> dict[str, Any]:
        return {
            "type": "Ready", "status": status, "reason": "KubeletReady", "message": "ok",
            "lastHeartbeatTime": now, "lastTransitionTime": now,
        }  # fmt: skip

    manifest = {
        "metadata": {"name": name, "labels": {"type": "virtual-kubelet"}},
        "spec": {"taints": [{"key": "virtual-kubelet.io/provider", "value": "mock", "effect": "NoSchedule"}]},
        "status": {"capacity": {"cpu": "4", "pods": "110"}, "conditions": [ready("True")]},
    }
    try:
        created = await gateway.create_node(manifest)
        assert created["metadata"]["uid"]
        assert created["status"]["capacity"]["pods"] == "110"
        with pytest.raises(Conflict, match=name):
            await gateway.create_node(manifest)

        # Another actor owns a condition of its own on our node.
        await gateway.patch_node_status(
            name,
            {"status": {"conditions": [{"type": "example.com/Disk", "status": "False", "reason": "Fine"}]}},
        )
        patched = await gateway.patch_node_status(
            name, {"status": {"conditions": [ready("False")], "capacity": {"cpu": "8", "pods": "110"}}}
        )
        conditions = {c["type"]: c["status"] for c in patched["status"]["conditions"]}
        assert conditions == {"Ready": "False", "example.com/Disk": "False"}
        assert patched["status"]["capacity"]["cpu"] == "8"

        labelled = await gateway.patch_node(name, {"metadata": {"labels": {"extra": "yes"}}})
        assert labelled["metadata"]["labels"] == {"type": "virtual-kubelet", "extra": "yes"}
        fetched = await gateway.get_node(name)
        assert fetched["metadata"]["labels"]["extra"] == "yes"
        typed = await kube.lightkube.get(Node, name)  # the typed client: same credentials and rate limit
        assert typed.metadata is not None and typed.metadata.uid == created["metadata"]["uid"]
        assert {c["type"] for c in fetched["status"]["conditions"]} == {"Ready", "example.com/Disk"}
    finally:
        await kube.request("DELETE", f"/api/v1/nodes/{name}", what=f"node {name}")
    with pytest.raises(NotFound, match=name):
        await gateway.get_node(name)
    with pytest.raises(NotFound):
        await gateway.patch_node_status(name, {"status": {"conditions": [ready("True")]}})


# -- leases -------------------------------------------------------------------------------


async def test_lease_create_update_and_conflict(kube: KubeClient) -> None:
    gateway = KubernetesLeaseGateway(kube)
    name = _unique("vk-lease")
    owner = await KubernetesNodeGateway(kube).create_node({"metadata": {"name": name}})
    renew = datetime(2030, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    try:
        with pytest.raises(NotFound, match=name):
            await gateway.get_lease(name)
        created = await gateway.create_lease(
            Lease(name, name, 40, renew, owner_node_uid=owner["metadata"]["uid"])
        )
        assert created.renew_time == renew  # microseconds survive the round trip
        assert created.owner_node_uid == owner["metadata"]["uid"]
        assert created.resource_version
        raw = await kube.request(
            "GET", f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}", what="lease"
        )
        assert raw["spec"]["renewTime"] == "2030-01-02T03:04:05.123456Z"
        assert raw["metadata"]["ownerReferences"][0]["kind"] == "Node"
        with pytest.raises(Conflict, match=name):
            await gateway.create_lease(Lease(name, name, 40, renew))

        later = renew + timedelta(seconds=10)
        updated = await gateway.update_lease(
            Lease(name, name, 40, later, owner_node_uid=created.owner_node_uid,
                  resource_version=created.resource_version)
        )  # fmt: skip
        assert updated.renew_time == later and updated.resource_version != created.resource_version
        assert (await gateway.get_lease(name)).renew_time == later

        with pytest.raises(Conflict, match=name):  # the version we updated from is stale now
            await gateway.update_lease(
                Lease(
                    name, name, 40, later + timedelta(seconds=10), resource_version=created.resource_version
                )
            )
        assert (await gateway.get_lease(name)).renew_time == later
    finally:
        await kube.request("DELETE", f"/api/v1/nodes/{name}", what=f"node {name}")
        await kube.request(
            "DELETE", f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}", what="lease"
        )


# -- configmaps, secrets, services ----------------------------------------------------------


async def test_config_source_reads_and_caches(kube: KubeClient, namespace: str) -> None:
    source = KubernetesConfigSource(kube, ttl_seconds=30)
    cm, secret = _unique("cm"), _unique("secret")
    await kube.request(
        "POST", f"/api/v1/namespaces/{namespace}/configmaps", what="configmap",
        body={"metadata": {"name": cm}, "data": {"greeting": "hello"}},
    )  # fmt: skip
    await kube.request(
        "POST", f"/api/v1/namespaces/{namespace}/secrets", what="secret",
        body={"metadata": {"name": secret}, "data": {"token": base64.b64encode(b"\x00s3cr\xff").decode()}},
    )  # fmt: skip
    await kube.request(
        "POST", f"/api/v1/namespaces/{namespace}/services", what="service",
        body={"metadata": {"name": "web"}, "spec": {"ports": [{"name": "http", "port": 80}]}},
    )  # fmt: skip
    await kube.request(
        "POST", f"/api/v1/namespaces/{namespace}/services", what="service",
        body={"metadata": {"name": "headless"}, "spec": {"clusterIP": "None", "ports": [{"port": 53}]}},
    )  # fmt: skip

    # A burst of readers costs one GET.
    results = await asyncio.gather(*(source.get_config_map(namespace, cm) for _ in range(20)))
    assert all(r == {"greeting": "hello"} for r in results)
    assert await source.get_secret(namespace, secret) == {"token": b"\x00s3cr\xff"}
    services = await source.list_services(namespace)
    assert [(s.name, s.ports) for s in services] == [("web", (("http", 80, "TCP"),))]
    assert services[0].cluster_ip.startswith("10.")

    with pytest.raises(NotFound, match="missing-cm"):
        await source.get_config_map(namespace, "missing-cm")
    with pytest.raises(NotFound, match="missing-secret"):
        await source.get_secret(namespace, "missing-secret")

    # Within the TTL the cached answer stands even though the object changed...
    await kube.request(
        "PATCH", f"/api/v1/namespaces/{namespace}/configmaps/{cm}", what="configmap",
        body={"data": {"greeting": "changed"}}, content_type="application/merge-patch+json",
    )  # fmt: skip
    assert await source.get_config_map(namespace, cm) == {"greeting": "hello"}
    # ...and an uncached source sees the change at once.
    fresh = KubernetesConfigSource(kube, ttl_seconds=0)
    assert await fresh.get_config_map(namespace, cm) == {"greeting": "changed"}


# -- events -------------------------------------------------------------------------------


async def test_events_are_created_and_aggregated(kube: KubeClient, namespace: str) -> None:
    node = _unique("vk")
    created = await create_pod(kube, namespace, _unique("evented"), node)
    ref = ref_of(created)
    recorder = KubernetesEventRecorder(kube, component=f"{node}/pod-controller", host=node)
    recorder.start()
    obj = ObjectRef.for_pod(ref)
    for _ in range(3):
        recorder.record(obj, type=EventType.WARNING, reason="MandatoryConfigMapNotFound", message="cm x")
    recorder.record(obj, type=EventType.NORMAL, reason="Started", message="started")
    recorder.record(ObjectRef("Node", "", node, "node-uid"), type=EventType.NORMAL, reason="Hi", message="n")
    await recorder.close()
    assert recorder.dropped == 0

    listing = await kube.request(
        "GET", f"/api/v1/namespaces/{namespace}/events", what="events",
        params={"fieldSelector": f"involvedObject.uid={ref.uid}"},
    )  # fmt: skip
    events = {e["reason"]: e for e in listing["items"]}
    assert set(events) == {"MandatoryConfigMapNotFound", "Started"}
    warning = events["MandatoryConfigMapNotFound"]
    assert warning["count"] == 3 and warning["type"] == "Warning" and warning["message"] == "cm x"
    assert warning["involvedObject"] == {
        "kind": "Pod", "namespace": namespace, "name": ref.name, "uid": ref.uid, "apiVersion": "v1",
    }  # fmt: skip
    assert warning["source"] == {"component": f"{node}/pod-controller", "host": node}
    assert warning["reportingComponent"] == f"{node}/pod-controller"
    assert warning["firstTimestamp"] and warning["lastTimestamp"] >= warning["firstTimestamp"]
    assert events["Started"]["count"] == 1

    node_events = await kube.request(
        "GET", "/api/v1/namespaces/default/events", what="events",
        params={"fieldSelector": f"involvedObject.name={node},involvedObject.kind=Node"},
    )  # fmt: skip
    assert [e["reason"] for e in node_events["items"]] == ["Hi"]

    # Closed: recording is a counted no-op, never an error.
    recorder.record(obj, type=EventType.NORMAL, reason="Late", message="late")
    assert recorder.dropped == 1


# -- a watch from before the API server's watch cache -------------------------------------


async def test_watch_from_a_resource_version_older_than_the_cache_is_expired(
    kube: KubeClient, namespace: str, control_plane: LocalCluster
) -> None:
    # A restarted API server fills its watch cache from the current revision: any older
    # resourceVersion is then "too old" (410), sent as an ERROR event in a 200 stream.
    # (Runs last in this module: it restarts the shared API server, about two seconds.)
    node = _unique("vk")
    gateway = KubernetesPodGateway(kube, node_name=node)
    await create_pod(kube, namespace, _unique("old"), node)
    _, old_version = await gateway.list_node_pods()
    newer = await create_pod(kube, namespace, _unique("newer"), node)
    for step in range(3):  # a few revisions between the old version and the restart
        await kube.request(
            "PATCH", f"/api/v1/namespaces/{namespace}/pods/{newer['metadata']['name']}", what="label",
            body={"metadata": {"labels": {"step": str(step)}}}, content_type="application/merge-patch+json",
        )  # fmt: skip
    await kube.close()

    await asyncio.to_thread(control_plane.restart_apiserver)
    client = create_client(control_plane.kubeconfig_path, qps=0, burst=0)
    try:
        gateway = KubernetesPodGateway(client, node_name=node)
        with pytest.raises(Expired, match=f"resourceVersion '{old_version}'"):
            async with asyncio.timeout(20):
                async for _ in gateway.watch_node_pods(old_version):
                    pass
        pods, version = await gateway.list_node_pods()  # what a caller does next: relist
        assert len(pods) == 2 and int(version) > int(old_version)
    finally:
        await client.close()
