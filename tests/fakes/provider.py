"""A hand-written fake of the Provider port, with call counts and failure injection."""

from __future__ import annotations

import asyncio
import copy
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from vkubelet.application.ports.streams import ByteStream, LogOptions, StreamIO
from vkubelet.domain.errors import NotFound, NotSupported
from vkubelet.domain.pod import Pod, PodRef
from vkubelet.domain.provider import Capability, MetricFamily, NodeTemplate
from vkubelet.domain.volumes import PodVolumes

RUNNING = {
    "phase": "Running",
    "podIP": "10.1.0.1",
    "startTime": "2025-01-01T00:00:00Z",
    "conditions": [{"type": "Ready", "status": "True"}],
}


class FakeProvider:
    """Stores pods by UID. ``streaming=False`` makes it a provider that must be polled."""

    def __init__(
        self,
        *,
        streaming: bool = True,
        auto_run: bool = True,
        volumes: bool = False,
        kills: bool = False,
        native_volume_kinds: frozenset[str] = frozenset(),
    ) -> None:
        self.streaming = streaming
        self.native_kinds = native_volume_kinds  # what native_volume_kinds() declares
        self.takes_kills = kills  # capability KILL_CONTAINER: kill_container records into .kills
        self.kills: list[tuple[PodRef, str, int]] = []  # (pod, container, grace period seconds)
        self.takes_volumes = volumes  # capability VOLUMES: set_pod_volumes records into .volumes
        self.volumes: dict[str, PodVolumes] = {}
        self.auto_run = auto_run  # report Running right after create
        self.pods: dict[str, Pod] = {}
        self.calls: Counter[str] = Counter()
        self.created: list[PodRef] = []
        self._failures: dict[str, list[BaseException]] = defaultdict(list)
        self._updates: asyncio.Queue[Pod] = asyncio.Queue()
        self.block: dict[str, asyncio.Event] = {}  # method -> released when set

    # -- test helpers -----------------------------------------------------------------------
    def inject_failure(self, method: str, error: BaseException, *, times: int = 1) -> None:
        self._failures[method].extend([error] * times)

    async def _enter(self, method: str) -> None:
        self.calls[method] += 1
        gate = self.block.get(method)
        if gate is not None:
            await gate.wait()
        if self._failures[method]:
            raise self._failures[method].pop(0)

    def report(self, uid: str, status: Mapping[str, Any]) -> None:
        """Change a pod's status as the remote system would, and push it."""
        pod = self.pods[uid]
        manifest = copy.deepcopy(dict(pod.manifest))
        manifest["status"] = dict(status)
        self.pods[uid] = Pod(pod.ref, manifest)
        self._updates.put_nowait(self.pods[uid])

    def seed(self, pod: Pod, status: Mapping[str, Any] | None = None) -> None:
        """The remote system already runs ``pod`` (say, from before a restart); not logged."""
        manifest = copy.deepcopy(dict(pod.manifest))
        manifest["status"] = dict(RUNNING if status is None else status)
        self.pods[pod.ref.uid] = Pod(pod.ref, manifest)

    def clear_failures(self, method: str | None = None) -> None:
        """Drop the failures still queued for ``method`` (all methods when None)."""
        if method is None:
            self._failures.clear()
        else:
            self._failures.pop(method, None)

    def lose(self, uid: str) -> None:
        """The remote system forgets a pod without telling anyone."""
        del self.pods[uid]

    # -- Provider port ----------------------------------------------------------------------
    async def create_pod(self, pod: Pod) -> None:
        await self._enter("create_pod")
        if pod.ref.uid in self.pods:
            return
        self.created.append(pod.ref)
        self.pods[pod.ref.uid] = Pod(pod.ref, copy.deepcopy(dict(pod.manifest)))
        if self.auto_run:
            self.report(pod.ref.uid, RUNNING)

    async def update_pod(self, pod: Pod) -> None:
        await self._enter("update_pod")
        status = self.pods[pod.ref.uid].status
        manifest = copy.deepcopy(dict(pod.manifest))
        manifest["status"] = dict(status)
        self.pods[pod.ref.uid] = Pod(pod.ref, manifest)

    async def delete_pod(self, pod: Pod) -> None:
        await self._enter("delete_pod")
        stored = self.pods.pop(pod.ref.uid, None)
        if stored is None:
            raise NotFound(f"pod {pod.ref} not found")
        manifest = copy.deepcopy(dict(stored.manifest))
        manifest["status"] = {
            "phase": "Succeeded",
            "containerStatuses": [{"name": "c", "state": {"terminated": {"exitCode": 0}}}],
        }
        if self.streaming:
            self._updates.put_nowait(Pod(pod.ref, manifest))

    async def get_pod(self, ref: PodRef) -> Pod:
        await self._enter("get_pod")
        if ref.uid not in self.pods:
            raise NotFound(f"pod {ref} not found")
        return self.pods[ref.uid]

    async def get_pod_status(self, ref: PodRef) -> Mapping[str, Any]:
        await self._enter("get_pod_status")
        if ref.uid not in self.pods:
            raise NotFound(f"pod {ref} not found")
        return dict(self.pods[ref.uid].status)

    async def list_pods(self) -> Sequence[Pod]:
        await self._enter("list_pods")
        return list(self.pods.values())

    async def pod_status_updates(self) -> AsyncIterator[Pod]:
        if not self.streaming:
            raise NotSupported("no status stream")
        while True:
            yield await self._updates.get()

    async def node_status_updates(self) -> AsyncIterator[NodeTemplate]:
        raise NotSupported("no node status stream")
        yield  # pragma: no cover - makes this an async generator

    async def ping(self) -> None:
        await self._enter("ping")

    async def node_template(self) -> NodeTemplate:
        return NodeTemplate(capacity={"cpu": "4", "memory": "8Gi", "pods": "110"})

    async def stats_summary(self) -> Mapping[str, Any]:
        raise NotSupported("no stats")

    async def metrics_resource(self) -> Sequence[MetricFamily]:
        raise NotSupported("no metrics")

    async def container_logs(self, ref: PodRef, container: str, options: LogOptions) -> AsyncIterator[bytes]:
        raise NotSupported("no logs")
        yield b""

    async def exec_in_container(
        self, ref: PodRef, container: str, command: Sequence[str], io: StreamIO
    ) -> int:
        raise NotSupported("no exec")

    async def attach_to_container(self, ref: PodRef, container: str, io: StreamIO) -> int:
        raise NotSupported("no attach")

    async def port_forward(self, ref: PodRef, port: int, stream: ByteStream) -> None:
        raise NotSupported("no port-forward")

    async def set_pod_volumes(self, ref: PodRef, volumes: PodVolumes) -> None:
        if not self.takes_volumes:
            raise NotSupported("no volumes")
        await self._enter("set_pod_volumes")
        self.volumes[ref.uid] = volumes

    async def kill_container(self, ref: PodRef, container: str, *, grace_period_seconds: int) -> None:
        """Records the kill; the status is the test's to change (``report``), as the remote
        system's would. NotFound for an unknown pod or a container not in its spec."""
        if Capability.KILL_CONTAINER not in self.capabilities():
            raise NotSupported("no kill-container")
        await self._enter("kill_container")
        pod = self.pods.get(ref.uid)
        if pod is None:
            raise NotFound(f"pod {ref} not found")
        specs = [*pod.containers, *(pod.spec.get("initContainers") or ())]
        if container not in {str(c.get("name")) for c in specs}:
            raise NotFound(f"container {container} not found in pod {ref}")
        self.kills.append((ref, container, grace_period_seconds))

    def capabilities(self) -> frozenset[Capability]:
        found = {Capability.POD_STATUS_STREAM} if self.streaming else set()
        found |= {Capability.VOLUMES} if self.takes_volumes else set()
        return frozenset(found | ({Capability.KILL_CONTAINER} if self.takes_kills else set()))

    def native_volume_kinds(self) -> frozenset[str]:
        return self.native_kinds

    async def close(self) -> None:
        pass
