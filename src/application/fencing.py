"""Write fences for ``--leader-elect``: decorators of the write-side ports.

The composition root wraps the pod, node and node-lease gateways, the event recorder and the
provider handed to the pod controller in these classes when leader election is on, so the
controllers stay unaware of it. Reads pass through untouched (a standby keeps its caches warm);
every write first asks the fence, synchronously and right before the call, and a replica that
does not hold the leader lease gets :class:`~vkubelet.domain.leader.NotLeader` instead of a
write. Events are best effort: a fenced one is dropped, never raised.

What is *not* fenced: calls that change nothing the other replica could conflict with (exec,
attach, logs and port-forward of ``kubectl``, stats, probes' exec and HTTP checks) and the
election's own Lease, which has its own gateway.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Protocol

from vkubelet.application.ports.cluster import (
    EventRecorder,
    EventType,
    Lease,
    LeaseGateway,
    NodeGateway,
    ObjectRef,
    PodEvent,
    PodGateway,
)
from vkubelet.application.ports.provider import Provider
from vkubelet.application.ports.streams import ByteStream, LogOptions, StreamIO
from vkubelet.domain.errors import DomainError
from vkubelet.domain.pod import Pod, PodRef
from vkubelet.domain.provider import Capability, MetricFamily, NodeTemplate
from vkubelet.domain.volumes import PodVolumes

log = logging.getLogger(__name__)


class Fence(Protocol):
    def check(self, action: str) -> None:
        """Return when this replica may write now; raise NotLeader when it may not."""
        ...


class FencedPodGateway:
    def __init__(self, inner: PodGateway, fence: Fence) -> None:
        self._inner = inner
        self._fence = fence

    async def list_node_pods(self) -> tuple[Sequence[Pod], str]:
        return await self._inner.list_node_pods()

    def watch_node_pods(self, resource_version: str) -> AsyncIterator[PodEvent]:
        return self._inner.watch_node_pods(resource_version)

    async def get_pod(self, namespace: str, name: str) -> Pod:
        return await self._inner.get_pod(namespace, name)

    async def patch_pod_status(self, ref: PodRef, status: Mapping[str, Any]) -> Pod:
        self._fence.check(f"patch the status of pod {ref}")
        return await self._inner.patch_pod_status(ref, status)

    async def delete_pod(self, ref: PodRef, *, grace_period_seconds: int) -> None:
        self._fence.check(f"delete pod {ref}")
        await self._inner.delete_pod(ref, grace_period_seconds=grace_period_seconds)


class FencedNodeGateway:
    def __init__(self, inner: NodeGateway, fence: Fence) -> None:
        self._inner = inner
        self._fence = fence

    async def get_node(self, name: str) -> Mapping[str, Any]:
        return await self._inner.get_node(name)

    async def create_node(self, node: Mapping[str, Any]) -> Mapping[str, Any]:
        self._fence.check("create the node")
        return await self._inner.create_node(node)

    async def patch_node(self, name: str, patch: Mapping[str, Any]) -> Mapping[str, Any]:
        self._fence.check(f"patch node {name}")
        return await self._inner.patch_node(name, patch)

    async def patch_node_status(self, name: str, patch: Mapping[str, Any]) -> Mapping[str, Any]:
        self._fence.check(f"patch the status of node {name}")
        return await self._inner.patch_node_status(name, patch)


class FencedLeaseGateway:
    """For the node's heartbeat Lease (not the election's own)."""

    def __init__(self, inner: LeaseGateway, fence: Fence) -> None:
        self._inner = inner
        self._fence = fence

    async def get_lease(self, name: str) -> Lease:
        return await self._inner.get_lease(name)

    async def create_lease(self, lease: Lease) -> Lease:
        self._fence.check(f"create node lease {lease.name}")
        return await self._inner.create_lease(lease)

    async def update_lease(self, lease: Lease) -> Lease:
        self._fence.check(f"renew node lease {lease.name}")
        return await self._inner.update_lease(lease)


class FencedEventRecorder:
    def __init__(self, inner: EventRecorder, fence: Fence) -> None:
        self._inner = inner
        self._fence = fence

    def record(self, obj: ObjectRef, *, type: EventType, reason: str, message: str) -> None:
        try:
            self._fence.check(f"record event {reason}")
        except DomainError as error:
            log.debug("dropping event %s for %s %s/%s: %s", reason, obj.kind, obj.namespace, obj.name, error)
            return
        self._inner.record(obj, type=type, reason=reason, message=message)


class FencedProvider:
    """The provider as the pod controller sees it: pod writes fenced, the rest passed through."""

    def __init__(self, inner: Provider, fence: Fence) -> None:
        self._inner = inner
        self._fence = fence

    # -- fenced writes ------------------------------------------------------------------------
    async def create_pod(self, pod: Pod) -> None:
        self._fence.check(f"create pod {pod.ref} in the provider")
        await self._inner.create_pod(pod)

    async def update_pod(self, pod: Pod) -> None:
        self._fence.check(f"update pod {pod.ref} in the provider")
        await self._inner.update_pod(pod)

    async def delete_pod(self, pod: Pod) -> None:
        self._fence.check(f"delete pod {pod.ref} in the provider")
        await self._inner.delete_pod(pod)

    async def set_pod_volumes(self, ref: PodRef, volumes: PodVolumes) -> None:
        self._fence.check(f"set the volumes of pod {ref} in the provider")
        await self._inner.set_pod_volumes(ref, volumes)

    async def kill_container(self, ref: PodRef, container: str, *, grace_period_seconds: int) -> None:
        self._fence.check(f"kill container {container} of pod {ref}")
        await self._inner.kill_container(ref, container, grace_period_seconds=grace_period_seconds)

    # -- reads and streams, passed through ----------------------------------------------------
    async def get_pod(self, ref: PodRef) -> Pod:
        return await self._inner.get_pod(ref)

    async def get_pod_status(self, ref: PodRef) -> Mapping[str, Any]:
        return await self._inner.get_pod_status(ref)

    async def list_pods(self) -> Sequence[Pod]:
        return await self._inner.list_pods()

    def pod_status_updates(self) -> AsyncIterator[Pod]:
        return self._inner.pod_status_updates()

    async def ping(self) -> None:
        await self._inner.ping()

    async def node_template(self) -> NodeTemplate:
        return await self._inner.node_template()

    def node_status_updates(self) -> AsyncIterator[NodeTemplate]:
        return self._inner.node_status_updates()

    def capabilities(self) -> frozenset[Capability]:
        return self._inner.capabilities()

    def native_volume_kinds(self) -> frozenset[str]:
        return self._inner.native_volume_kinds()

    async def stats_summary(self) -> Mapping[str, Any]:
        return await self._inner.stats_summary()

    async def metrics_resource(self) -> Sequence[MetricFamily]:
        return await self._inner.metrics_resource()

    def container_logs(self, ref: PodRef, container: str, options: LogOptions) -> AsyncIterator[bytes]:
        return self._inner.container_logs(ref, container, options)

    async def exec_in_container(
        self, ref: PodRef, container: str, command: Sequence[str], io: StreamIO
    ) -> int:
        return await self._inner.exec_in_container(ref, container, command, io)

    async def attach_to_container(self, ref: PodRef, container: str, io: StreamIO) -> int:
        return await self._inner.attach_to_container(ref, container, io)

    async def port_forward(self, ref: PodRef, port: int, stream: ByteStream) -> None:
        await self._inner.port_forward(ref, port, stream)

    async def close(self) -> None:
        await self._inner.close()


__all__ = [
    "Fence",
    "FencedEventRecorder",
    "FencedLeaseGateway",
    "FencedNodeGateway",
    "FencedPodGateway",
    "FencedProvider",
]
