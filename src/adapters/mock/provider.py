"""The in-process mock provider: pods "run" the moment they are created.

It implements the ``Provider`` port for demos, tests and the e2e suite, following upstream's mock
(``cmd/virtual-kubelet/internal/provider/mock``) without its bugs (upstream's bug 20):

* **Keyed by UID.** Upstream keyed pods by ``<namespace>-<name>``, so ``a-b/c`` and ``a/b-c``
  collided and a recreated pod overwrote its predecessor.
* **Concurrency.** Every method runs on the event loop and never awaits between reading and
  writing the pod table, so each call is atomic with respect to the others (no lock needed; the
  invariant is: no ``await`` inside a read-modify-write). The class is not thread-safe: call it
  from one event loop only.
* **Copies in and out.** Pods are deep-copied when stored and when returned or queued, so no
  caller ever holds an object the provider later changes (upstream returned ``&pod.Status``).
* **Status stream.** Every change (create, update, delete) puts a snapshot on an unbounded
  ``asyncio.Queue`` read by :meth:`MockProvider.pod_status_updates`, in order. One consumer is
  supported (vkubelet's pod controller); with no consumer the queue grows by one entry per
  change, which is the price of never dropping a status (a terminal status must not be lost).
* **Deletion** always produces a terminal status: phase ``Succeeded``, reason
  ``MockProviderPodDeleted``, every container ``Terminated`` with reason
  ``MockProviderPodContainerDeleted``, exit code 0 and the original start time when the
  container was running (upstream dereferenced the running state and crashed otherwise).
* **Node status stream.** The node template starts as the config file says; tests and demos
  change it at run time with :meth:`MockProvider.update_node` (capacity, allocatable, conditions,
  addresses, labels, taints). :meth:`MockProvider.node_status_updates` sends the current template
  at once and then the whole template after each change. It keeps only the latest value, so a
  slow reader skips intermediate templates (each one is whole, nothing is lost) and no queue
  grows; any number of readers may follow it. It ends after ``close``.
* **Capabilities.** Pod and node status streams, stats summary, resource metrics and
  kill-container only. No logs, exec, attach or port-forward: those answer 501 on the kubelet API
  instead of upstream's fake success.
* **Killing a container** (:meth:`MockProvider.kill_container`) ends its run at once as SIGTERM
  would (exit code 143, reason ``Error``) and applies the pod's ``restartPolicy`` the way the
  mock models restarts (as for a changed image): Always and OnFailure restart it at once,
  ``lastState`` holding the killed run and ``restartCount`` one higher (no back-off: nothing
  runs, so nothing crash-loops); Never leaves it terminated, and the pod Failed once none runs.
* **Volumes** only with the config key ``"volumes": true`` (a benchmarking and testing aid, see
  :mod:`vkubelet.adapters.node_config`): the mock then declares VOLUMES, so vkubelet resolves
  every pod's volumes and calls :meth:`MockProvider.set_pod_volumes`, and it keeps the last
  contents per UID (:meth:`MockProvider.pod_volumes`) until the pod is deleted. Nothing is
  mounted anywhere. Without the key ``set_pod_volumes`` raises NotSupported. The config key
  ``nativeVolumeKinds`` lists the volume kinds the mock claims to handle itself
  (:meth:`MockProvider.native_volume_kinds`), as a cloud provider with its own storage would.
* **Deterministic usage.** Stats and metrics derive from a stable hash of ``uid/container``
  instead of random numbers: each container uses a constant 1-100 millicores and
  8-136 MiB of working set; its cumulative CPU time is that rate times the time since it
  started (read from the injected :class:`Clock`), so the counter only grows. The node's figures
  are the sums over its pods, and the node's CPU counter also keeps the CPU time of deleted
  pods so it never goes backwards. The summary and the metrics share one computation.

Pod addresses: ``hostIP`` is the node's InternalIP given at construction (default
``127.0.0.1``). ``podIP`` comes from a pool (default ``10.200.0.0/16``): the start index is a
stable hash of the pod UID, probing forward past addresses in use, so the same pod gets the same
address in every run and two live pods never share one. A ``hostNetwork`` pod gets the host IP.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import hashlib
import ipaddress
import logging
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from vkubelet.adapters.node_config import MockNodeConfig
from vkubelet.adapters.system import SystemClock
from vkubelet.application.ports.runtime import Clock
from vkubelet.application.ports.streams import ByteStream, LogOptions, StreamIO
from vkubelet.domain import stats
from vkubelet.domain.errors import InvalidInput, NotFound, NotSupported, Permanent
from vkubelet.domain.pod import Pod, PodPhase, PodRef, format_time, parse_time
from vkubelet.domain.provider import (
    Capability,
    MetricFamily,
    NodeAddress,
    NodeCondition,
    NodeTemplate,
    Taint,
)
from vkubelet.domain.stats import ContainerUsage, PodUsage
from vkubelet.domain.volumes import PodVolumes

log = logging.getLogger(__name__)

DEFAULT_POD_CIDR = "10.200.0.0/16"

POD_DELETED_REASON = "MockProviderPodDeleted"
POD_DELETED_MESSAGE = "Mock provider deleted the pod"
CONTAINER_DELETED_REASON = "MockProviderPodContainerDeleted"
CONTAINER_DELETED_MESSAGE = "Mock provider terminated container upon deletion"

_CAPABILITIES = frozenset(
    {
        Capability.POD_STATUS_STREAM,
        Capability.NODE_STATUS_STREAM,
        Capability.STATS_SUMMARY,
        Capability.METRICS_RESOURCE,
        Capability.KILL_CONTAINER,
    }
)
_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class _Stop:
    """Queued by ``close`` to end the status stream."""


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def container_rates(uid: str, container: str) -> tuple[int, int, int]:
    """(nanocores, working-set bytes, page-cache bytes) for one container; stable across runs."""
    seed = _stable_int(f"{uid}/{container}")
    nano_cores = (1 + seed % 100) * 1_000_000  # 1m .. 100m
    working_set = (8 + (seed >> 8) % 128) * _MIB  # 8 MiB .. 135 MiB
    cache = ((seed >> 16) % 16) * _MIB  # 0 .. 15 MiB
    return nano_cores, working_set, cache


def _image_id(image: str) -> str:
    if "@sha256:" in image:
        return image
    return f"{image}@sha256:{hashlib.sha256(image.encode('utf-8')).hexdigest()}"


def _condition(kind: str, status: str, now: str, reason: str | None = None) -> dict[str, Any]:
    condition: dict[str, Any] = {
        "type": kind,
        "status": status,
        "lastProbeTime": None,
        "lastTransitionTime": now,
    }
    if reason:
        condition["reason"] = reason
    return condition


class MockProvider:
    """Implements ``vkubelet.application.ports.provider.Provider`` in memory (see module doc)."""

    def __init__(
        self,
        *,
        node_name: str,
        config: MockNodeConfig | None = None,
        internal_ip: str = "127.0.0.1",
        pod_cidr: str = DEFAULT_POD_CIDR,
        clock: Clock | None = None,
    ) -> None:
        self._node_name = node_name
        self._config = config or MockNodeConfig()
        self._internal_ip = internal_ip
        self._clock: Clock = clock or SystemClock()
        self._started = self._clock.now()
        network = ipaddress.ip_network(pod_cidr)
        if network.num_addresses < 4:
            raise InvalidInput(f"mock pod CIDR {pod_cidr} is too small")
        self._pool = network
        self._pods: dict[str, Pod] = {}  # uid -> stored pod, never handed out
        self._ips: dict[str, str] = {}  # uid -> pod IP taken from the pool
        self._ips_in_use: set[str] = set()
        self._retired_core_nano_seconds = 0  # CPU time of deleted pods, so the node counter grows
        self._updates: asyncio.Queue[Pod | _Stop] = asyncio.Queue()
        # uid -> the last volume contents handed over (only with the "volumes" config key)
        self._volumes: dict[str, PodVolumes] = {}
        self._capabilities = _CAPABILITIES | {Capability.VOLUMES} if self._config.volumes else _CAPABILITIES
        self._closed = False
        self._template = self._initial_template()
        self._template_version = 0  # bumped by every update_node
        self._template_changed = asyncio.Event()  # set (and replaced) by every update_node and close

    # -- PodLifecycle ---------------------------------------------------------------------
    async def create_pod(self, pod: Pod) -> None:
        """Store ``pod`` as Running and report it; a UID already present is left alone."""
        self._check_open()
        Pod.from_manifest(pod.manifest)  # InvalidInput for a manifest without its identity
        uid = pod.ref.uid
        if uid in self._pods:
            log.debug("mock: pod %s already exists; create is a no-op", pod.ref)
            return
        # A shallow copy: manifests are immutable (domain rule), only the top-level status is new.
        manifest = dict(pod.manifest)
        manifest["status"] = self._running_status(manifest, self._assign_ip(uid, manifest))
        stored = Pod(pod.ref, manifest)
        self._pods[uid] = stored
        log.info("mock: created pod %s", pod.ref)
        self._publish(stored)

    async def set_pod_volumes(self, ref: PodRef, volumes: PodVolumes) -> None:
        """Keep ``volumes`` for ``ref``'s UID (the pod need not exist yet: this comes before the
        create). NotSupported unless the config has ``"volumes": true``."""
        if Capability.VOLUMES not in self._capabilities:
            raise NotSupported(
                "the mock provider takes no volumes: it runs no processes to mount them in "
                '(its config key "volumes": true keeps them, for benchmarks and tests)'
            )
        self._check_open()
        self._volumes[ref.uid] = volumes
        log.debug("mock: kept the volumes of pod %s (%d with files)", ref, len(volumes.files))

    def pod_volumes(self, ref: PodRef) -> PodVolumes | None:
        """The last contents :meth:`set_pod_volumes` kept for ``ref``'s UID, if any."""
        return self._volumes.get(ref.uid)

    async def update_pod(self, pod: Pod) -> None:
        """Take the new metadata and spec, keep the status; a changed image restarts that container."""
        self._check_open()
        current = self._lookup(pod.ref)
        manifest = copy.deepcopy(dict(pod.manifest))
        status = copy.deepcopy(dict(current.status))
        self._restart_changed_containers(manifest, status)
        manifest["status"] = status
        stored = Pod(pod.ref, manifest)
        self._pods[pod.ref.uid] = stored
        log.info("mock: updated pod %s", pod.ref)
        self._publish(stored)

    async def delete_pod(self, pod: Pod) -> None:
        """Forget the pod and report it terminated. NotFound when it is unknown (already gone)."""
        self._volumes.pop(pod.ref.uid, None)  # also when only the volumes arrived
        current = self._lookup(pod.ref)
        del self._pods[pod.ref.uid]
        ip = self._ips.pop(pod.ref.uid, None)
        if ip is not None:
            self._ips_in_use.discard(ip)
        now = self._clock.now()
        self._retired_core_nano_seconds += self._pod_usage(current, now).core_nano_seconds
        manifest = dict(current.manifest)  # shallow: only the status is new (manifests are immutable)
        manifest["status"] = self._terminated_status(manifest.get("status") or {}, format_time(now))
        log.info("mock: deleted pod %s", pod.ref)
        self._publish(Pod(current.ref, manifest))

    async def get_pod(self, ref: PodRef) -> Pod:
        return self._lookup(ref)

    async def get_pod_status(self, ref: PodRef) -> Mapping[str, Any]:
        return self._lookup(ref).status

    async def list_pods(self) -> Sequence[Pod]:
        # The stored pods themselves: never changed in place, and callers treat them as
        # immutable. Copying all of them at every full reconcile (each minute) was measurable.
        return list(self._pods.values())

    # -- ContainerControl -----------------------------------------------------------------
    async def kill_container(self, ref: PodRef, container: str, *, grace_period_seconds: int) -> None:
        """End ``container``'s run as SIGTERM would and apply the restart policy (module doc).
        Nothing runs, so the grace period is not waited. A container not running is left
        alone. NotFound for an unknown pod or container."""
        self._check_open()
        current = self._lookup(ref)
        status = copy.deepcopy(dict(current.status))
        entry = next(
            (
                (key, e)
                for key in ("containerStatuses", "initContainerStatuses")
                for e in status.get(key) or ()
                if e.get("name") == container
            ),
            None,
        )
        if entry is None:
            raise NotFound(f"container {container} not found in pod {ref} in the mock provider")
        key, container_status = entry
        running = (container_status.get("state") or {}).get("running")
        if running is None:
            return  # exited already (a completed init container): nothing to kill
        now = format_time(self._clock.now())
        terminated = {
            "exitCode": 143,  # 128 + SIGTERM: the mock's containers always obey it
            "reason": "Error",
            "startedAt": running.get("startedAt"),
            "finishedAt": now,
            "containerID": container_status.get("containerID"),
        }
        # A sidecar (init container with restartPolicy Always) restarts whatever the pod's policy.
        sidecar = key == "initContainerStatuses"
        if sidecar or current.restart_policy != "Never":
            container_status["lastState"] = {"terminated": terminated}
            container_status["restartCount"] = int(container_status.get("restartCount") or 0) + 1
            container_status["state"] = {"running": {"startedAt": now}}
        else:
            container_status.update({"state": {"terminated": terminated}, "ready": False, "started": False})
            self._not_ready(status, now)
        manifest = dict(current.manifest)  # shallow: only the status is new (manifests are immutable)
        manifest["status"] = status
        stored = Pod(current.ref, manifest)
        self._pods[ref.uid] = stored
        log.info("mock: killed container %s of pod %s", container, ref)
        self._publish(stored)

    @staticmethod
    def _not_ready(status: dict[str, Any], now: str) -> None:
        """A regular container stopped for good: the pod is not ready, and Failed once none runs."""
        containers = status.get("containerStatuses") or ()
        if not any("running" in (c.get("state") or {}) for c in containers):
            status["phase"] = PodPhase.FAILED.value
        conditions = []
        for condition in status.get("conditions") or ():
            condition = dict(condition)
            if condition.get("type") in ("Ready", "ContainersReady") and condition.get("status") != "False":
                condition.update(
                    {"status": "False", "reason": "ContainersNotReady", "lastTransitionTime": now}
                )
            conditions.append(condition)
        status["conditions"] = conditions

    # -- PodStatusSource ------------------------------------------------------------------
    async def pod_status_updates(self) -> AsyncIterator[Pod]:
        """Each change, in order, as a private snapshot. Ends after :meth:`close`. One consumer."""
        while True:
            item = await self._updates.get()
            if isinstance(item, _Stop):
                self._updates.put_nowait(item)  # a later caller ends at once too
                return
            yield item

    # -- NodeHealth -----------------------------------------------------------------------
    async def ping(self) -> None:
        self._check_open()

    async def node_template(self) -> NodeTemplate:
        return self._template

    def _initial_template(self) -> NodeTemplate:
        config = self._config
        return NodeTemplate(
            capacity=dict(config.capacity),
            allocatable=None,
            labels=dict(config.labels),
            taints=tuple(config.taints),
            addresses=(NodeAddress(type="InternalIP", address=self._internal_ip),),
            conditions=(),
            operating_system=config.operating_system,
            architecture=config.architecture,
            provider_id=config.provider_id,
        )

    # -- NodeStatusSource -----------------------------------------------------------------
    def update_node(
        self,
        *,
        capacity: Mapping[str, str] | None = None,
        allocatable: Mapping[str, str] | None = None,
        conditions: Iterable[NodeCondition] | None = None,
        addresses: Iterable[NodeAddress] | None = None,
        labels: Mapping[str, str] | None = None,
        taints: Iterable[Taint] | None = None,
    ) -> NodeTemplate:
        """Change the node as the backing system would (None keeps a part as it is) and push
        the new whole template to the node status stream; returns it.

        ``capacity`` replaces the whole capacity map; ``allocatable`` set to a map stops it
        following the capacity. Raises InvalidInput for an empty capacity.
        """
        self._check_open()
        changes: dict[str, Any] = {}
        if capacity is not None:
            if not capacity:
                raise InvalidInput("the mock node's capacity cannot be empty")
            changes["capacity"] = dict(capacity)
        if allocatable is not None:
            changes["allocatable"] = dict(allocatable)
        if conditions is not None:
            changes["conditions"] = tuple(conditions)
        if addresses is not None:
            changes["addresses"] = tuple(addresses)
        if labels is not None:
            changes["labels"] = dict(labels)
        if taints is not None:
            changes["taints"] = tuple(taints)
        self._template = dataclasses.replace(self._template, **changes)
        self._template_version += 1
        self._wake_node_readers()
        log.info("mock: node template changed: %s", ", ".join(sorted(changes)) or "nothing")
        return self._template

    async def node_status_updates(self) -> AsyncIterator[NodeTemplate]:
        """The current template at once, then the latest one after each :meth:`update_node`.
        Ends after :meth:`close`. Any number of readers."""
        sent: int | None = None
        while not self._closed:
            if sent == self._template_version:
                await self._template_changed.wait()
                continue
            sent = self._template_version
            yield self._template

    def _wake_node_readers(self) -> None:
        changed, self._template_changed = self._template_changed, asyncio.Event()
        changed.set()

    # -- capabilities and lifecycle -------------------------------------------------------
    def capabilities(self) -> frozenset[Capability]:
        return self._capabilities

    def native_volume_kinds(self) -> frozenset[str]:
        return self._config.native_volume_kinds

    async def close(self) -> None:
        """End the status streams. Pods are kept (they "keep running")."""
        if not self._closed:
            self._closed = True
            self._updates.put_nowait(_Stop())
            self._wake_node_readers()

    # -- ContainerStreams: the mock runs no processes, so it says so (upstream faked success) --
    async def container_logs(self, ref: PodRef, container: str, options: LogOptions) -> AsyncIterator[bytes]:
        raise NotSupported("the mock provider keeps no container logs")
        yield b""  # pragma: no cover - makes this an async generator

    async def exec_in_container(
        self, ref: PodRef, container: str, command: Sequence[str], io: StreamIO
    ) -> int:
        raise NotSupported("the mock provider cannot exec: it runs no processes")

    async def attach_to_container(self, ref: PodRef, container: str, io: StreamIO) -> int:
        raise NotSupported("the mock provider cannot attach: it runs no processes")

    async def port_forward(self, ref: PodRef, port: int, stream: ByteStream) -> None:
        raise NotSupported("the mock provider cannot port-forward: it runs no processes")

    # -- Stats ----------------------------------------------------------------------------
    async def stats_summary(self) -> Mapping[str, Any]:
        """A kubelet stats/v1alpha1 Summary of the node and every running pod."""
        now = self._clock.now()
        pods = self._usage(now)
        return stats.summary(self._node_usage(pods), pods, now=now)

    async def metrics_resource(self) -> Sequence[MetricFamily]:
        """The kubelet's /metrics/resource families, consistent with :meth:`stats_summary`."""
        now = self._clock.now()
        pods = self._usage(now)
        return stats.resource_metrics(self._node_usage(pods), pods, now=now)

    # -- internals ------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise Permanent("the mock provider is closed")

    def _lookup(self, ref: PodRef) -> Pod:
        pod = self._pods.get(ref.uid)
        if pod is None:
            raise NotFound(f"pod {ref} not found in the mock provider")
        return pod

    def _publish(self, stored: Pod) -> None:
        # No copy: stored pods are never changed in place (every change stores a new manifest)
        # and consumers treat pods as immutable, the domain's rule. A deep copy per status change
        # was 10 % of vkubelet's CPU in the 5,000-pod profile (docs/benchmarks.md).
        self._updates.put_nowait(stored)

    def _assign_ip(self, uid: str, manifest: Mapping[str, Any]) -> str:
        if (manifest.get("spec") or {}).get("hostNetwork"):
            return self._internal_ip
        # Hosts only (skip the network and broadcast addresses); probe past addresses in use.
        hosts = self._pool.num_addresses - 2
        if len(self._ips_in_use) >= hosts:
            raise Permanent(f"mock pod CIDR {self._pool} has no free address")
        index = _stable_int(uid) % hosts
        while True:
            ip = str(self._pool.network_address + 1 + index)
            if ip not in self._ips_in_use:
                break
            index = (index + 1) % hosts
        self._ips[uid] = ip
        self._ips_in_use.add(ip)
        return ip

    def _running_status(self, manifest: Mapping[str, Any], pod_ip: str) -> dict[str, Any]:
        now = format_time(self._clock.now())
        uid = str(manifest["metadata"]["uid"])
        spec = manifest.get("spec") or {}
        # Start from what the API server already set (qosClass, ...) and overwrite the rest.
        status = copy.deepcopy(dict(manifest.get("status") or {}))
        status.update(
            {
                "phase": PodPhase.RUNNING.value,
                "hostIP": self._internal_ip,
                "hostIPs": [{"ip": self._internal_ip}],
                "podIP": pod_ip,
                "podIPs": [{"ip": pod_ip}],
                "startTime": now,
                "conditions": [
                    _condition("PodScheduled", "True", now),
                    _condition("Initialized", "True", now),
                    _condition("ContainersReady", "True", now),
                    _condition("Ready", "True", now),
                ],
                "containerStatuses": [
                    self._running_container(uid, container, now) for container in spec.get("containers") or ()
                ],
            }
        )
        init_containers = spec.get("initContainers") or ()
        if init_containers:
            status["initContainerStatuses"] = [
                # A restartable init container is a sidecar: it keeps running beside the others.
                self._running_container(uid, c, now)
                if c.get("restartPolicy") == "Always"
                else self._completed_init_container(uid, c, now)
                for c in init_containers
            ]
        return status

    @staticmethod
    def _base_container(uid: str, container: Mapping[str, Any]) -> dict[str, Any]:
        name = str(container.get("name") or "")
        image = str(container.get("image") or "")
        return {
            "name": name,
            "image": image,
            "imageID": _image_id(image),
            "containerID": f"mock://{uid}/{name}",
            "restartCount": 0,
            "lastState": {},
        }

    def _running_container(self, uid: str, container: Mapping[str, Any], now: str) -> dict[str, Any]:
        status = self._base_container(uid, container)
        status.update({"ready": True, "started": True, "state": {"running": {"startedAt": now}}})
        return status

    def _completed_init_container(self, uid: str, container: Mapping[str, Any], now: str) -> dict[str, Any]:
        status = self._base_container(uid, container)
        status.update(
            {
                "ready": True,
                "started": False,
                "state": {
                    "terminated": {
                        "exitCode": 0,
                        "reason": "Completed",
                        "startedAt": now,
                        "finishedAt": now,
                        "containerID": status["containerID"],
                    }
                },
            }
        )
        return status

    def _restart_changed_containers(self, manifest: Mapping[str, Any], status: dict[str, Any]) -> None:
        """A running container whose image changed is restarted with the new image."""
        images = {
            str(c.get("name")): str(c.get("image") or "")
            for c in (manifest.get("spec") or {}).get("containers") or ()
        }
        now = format_time(self._clock.now())
        for entry in status.get("containerStatuses") or ():
            image = images.get(str(entry.get("name")))
            if image is None or image == entry.get("image"):
                continue
            previous = (entry.get("state") or {}).get("running") or {}
            entry["lastState"] = {
                "terminated": {
                    "exitCode": 0,
                    "reason": "Completed",
                    "startedAt": previous.get("startedAt"),
                    "finishedAt": now,
                    "containerID": entry.get("containerID"),
                }
            }
            entry.update(
                {
                    "image": image,
                    "imageID": _image_id(image),
                    "restartCount": int(entry.get("restartCount") or 0) + 1,
                    "state": {"running": {"startedAt": now}},
                }
            )

    @staticmethod
    def _terminated_status(previous: Mapping[str, Any], now: str) -> dict[str, Any]:
        status = copy.deepcopy(dict(previous))
        status["phase"] = PodPhase.SUCCEEDED.value
        status["reason"] = POD_DELETED_REASON
        status["message"] = POD_DELETED_MESSAGE
        conditions = []
        for condition in status.get("conditions") or ():
            condition = dict(condition)
            if condition.get("type") in ("Ready", "ContainersReady") and condition.get("status") != "False":
                condition.update({"status": "False", "reason": "PodCompleted", "lastTransitionTime": now})
            conditions.append(condition)
        status["conditions"] = conditions
        for key in ("containerStatuses", "initContainerStatuses"):
            entries = []
            for entry in status.get(key) or ():
                entry = dict(entry)
                state = entry.get("state") or {}
                if "terminated" not in state:
                    # The start time of the running state when there is one; never assume it.
                    started_at = (state.get("running") or {}).get("startedAt")
                    terminated: dict[str, Any] = {
                        "exitCode": 0,
                        "reason": CONTAINER_DELETED_REASON,
                        "message": CONTAINER_DELETED_MESSAGE,
                        "finishedAt": now,
                    }
                    if started_at:
                        terminated["startedAt"] = started_at
                    if entry.get("containerID"):
                        terminated["containerID"] = entry["containerID"]
                    entry["state"] = {"terminated": terminated}
                entry["ready"] = False
                entry["started"] = False
                entries.append(entry)
            if key in status:
                status[key] = entries
        return status

    def _pod_usage(self, pod: Pod, now: datetime) -> PodUsage:
        pod_start = parse_time(pod.status.get("startTime")) or self._started
        started: dict[str, datetime] = {}
        for entry in pod.status.get("containerStatuses") or ():
            running = (entry.get("state") or {}).get("running")
            if running:
                started[str(entry.get("name"))] = parse_time(running.get("startedAt")) or pod_start
        containers = []
        for container in pod.containers:
            name = str(container.get("name") or "")
            if name not in started:
                continue  # not running: no usage, as the kubelet reports only live containers
            start = started[name]
            nano_cores, working_set, cache = container_rates(pod.ref.uid, name)
            elapsed = max(0.0, (now - start).total_seconds())
            containers.append(
                ContainerUsage(
                    name=name,
                    start_time=start,
                    nano_cores=nano_cores,
                    core_nano_seconds=int(nano_cores * elapsed),
                    working_set_bytes=working_set,
                    usage_bytes=working_set + cache,
                )
            )
        return PodUsage(ref=pod.ref, start_time=pod_start, containers=tuple(containers))

    def _usage(self, now: datetime) -> list[PodUsage]:
        return [self._pod_usage(pod, now) for pod in self._pods.values()]

    def _node_usage(self, pods: Sequence[PodUsage]) -> stats.NodeUsage:
        return stats.node_usage(
            self._node_name,
            start_time=self._started,
            pods=pods,
            retired_core_nano_seconds=self._retired_core_nano_seconds,
        )


__all__ = [
    "CONTAINER_DELETED_REASON",
    "DEFAULT_POD_CIDR",
    "POD_DELETED_REASON",
    "MockProvider",
    "container_rates",
]
