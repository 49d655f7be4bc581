"""The process provider: each container is a local process tree (docs/process-provider.md).

* **Images are ignored.** A container runs its ``command`` + ``args`` (``$(VAR)`` expanded
  against its env, like the kubelet); with no ``command`` there is no entrypoint to fall back
  on, so the container waits with reason ``CreateContainerConfigError`` and says why.
* **Environment.** ``PATH`` (the provider's), ``HOSTNAME`` (the pod name), then the
  container's ``env`` list, which vkubelet resolved before calling us; given ``api_server``,
  ``KUBERNETES_SERVICE_HOST``/``_PORT`` are set to it last, over the service-link values (the
  `kubernetes` Service's cluster IP does not route on the host network). ``workingDir`` or the
  pod's work dir ``<root>/pods/<uid>/work``.
* **Volumes** (when vkubelet hands their contents over: ``create_pod``/``update_pod`` with
  ``volumes``, ``set_pod_volumes``, ``update_volumes``) live in ``<root>/pods/<uid>/volumes/``,
  written atomically as the kubelet writes them (:mod:`.volumes`). A container with
  ``volumeMounts`` runs in a private mount namespace where they are bind-mounted on their
  ``mountPath`` (:mod:`.nsexec`); exec joins that namespace. That needs root: without it such a
  container waits with ``CreateContainerConfigError`` saying why, and nothing pretends.
* **Processes.** Each run leads its own session, so signals reach its whole tree; when the
  leader exits the rest of its group is killed (a container ends with its main process). The
  tree dies with the provider (PR_SET_PDEATHSIG): pods do not outlive it, and vkubelet
  recreates what ``list_pods`` no longer shows.
* **Restarts.** ``restartPolicy`` Always/OnFailure/Never with the kubelet's crash-loop back-off
  (``backoff_base`` doubling up to ``backoff_cap``, reset after a run of ten minutes); init
  containers run first, one at a time, and are restarted on failure unless the policy is Never.
  ``kill_container`` (a failed liveness probe) SIGTERMs one container's tree, SIGKILLs it after
  the grace period, and the exit goes through the same restart handling.
* **Ephemeral containers** (``kubectl debug``) new to the spec start on ``update_pod``, once,
  never restarted; a pty with ``tty: true``; ``ephemeralContainerStatuses`` (:mod:`.ephemeral`).
* **Logs** live in ``<root>/pods/<uid>/logs/<container>/<restartCount>.log`` (the CRI format,
  see :mod:`.logs`); the current and the previous run are kept.
* **Deletion** SIGTERMs every tree, SIGKILLs after the pod's grace period (capped by
  ``max_grace_seconds``), then reports the terminated states, forgets the pod and removes its
  directory. ``delete_pod`` returns at once; the status stream carries the end.
* **Networking.** Processes share the host network: podIP is the host IP, and port-forward
  connects to 127.0.0.1.
* **Node.** This host's node does not change while the provider runs: the node status stream
  sends the template once and stays open until ``close``.

Every method runs on one event loop; none awaits inside a read-modify-write of the tables.

This module owns the tables and the port methods; the parts live beside it: :mod:`.records`
(the tables' rows), :mod:`.supervisor` (spawning, reaping, restarts), :mod:`.streams` (logs,
exec, attach, port-forward) and :mod:`.status` (the statuses reported).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import signal
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from vkubelet.adapters.process import ephemeral, procfs, streams
from vkubelet.adapters.process.records import ROOT_MARKER, Container, PodEntry, new_container
from vkubelet.adapters.process.spawn import mount_namespace_problem, signal_tree
from vkubelet.adapters.process.status import pod_status, snapshot
from vkubelet.adapters.process.supervisor import Supervisor
from vkubelet.adapters.process.volumes import (
    MEMORY,
    check_volumes,
    materialise,
    parse_mounts,
    remove_directory,
)
from vkubelet.adapters.system import SystemClock, host_architecture
from vkubelet.application.ports.runtime import Clock
from vkubelet.application.ports.streams import ByteStream, LogOptions, StreamIO
from vkubelet.domain import stats
from vkubelet.domain.backoff import Backoff
from vkubelet.domain.errors import NotFound, Permanent, Transient
from vkubelet.domain.pod import Pod, PodRef, format_time
from vkubelet.domain.provider import Capability, MetricFamily, NodeAddress, NodeTemplate
from vkubelet.domain.volumes import PodVolumes

log = logging.getLogger(__name__)

_CAPABILITIES = frozenset(
    {
        Capability.POD_STATUS_STREAM,
        Capability.NODE_STATUS_STREAM,
        Capability.LOGS,
        Capability.EXEC,
        Capability.ATTACH,
        Capability.PORT_FORWARD,
        Capability.STATS_SUMMARY,
        Capability.METRICS_RESOURCE,
        Capability.VOLUMES,
        Capability.KILL_CONTAINER,
    }
)


class _Stop:
    """Queued by ``close`` to end the status stream."""


class ProcessProvider:
    """Implements ``vkubelet.application.ports.provider.Provider`` with local processes."""

    def __init__(
        self,
        *,
        root_dir: Path,
        node_name: str,
        host_ip: str = "127.0.0.1",
        cpu: str | None = None,
        memory: str | None = None,
        pods: str = "110",
        labels: Mapping[str, str] | None = None,
        backoff_base: float = 10.0,
        backoff_cap: float = 300.0,
        max_grace_seconds: float | None = None,
        clock: Clock | None = None,
        api_server: tuple[str, int] | None = None,
    ) -> None:
        """``api_server`` (host, port): given, every container gets ``KUBERNETES_SERVICE_HOST``
        and ``KUBERNETES_SERVICE_PORT`` pointing at it (over the service-link values), so in-cluster
        clients in the pod find the API server."""
        self._root = Path(root_dir)
        self._node_name = node_name
        self._host_ip = host_ip
        total_memory = procfs.total_memory_bytes()
        self._capacity = {
            "cpu": cpu or str(os.cpu_count() or 1),
            "memory": memory or (f"{total_memory // 1024}Ki" if total_memory else "1Gi"),
            "pods": pods,
        }
        self._labels = dict(labels or {})
        self._max_grace = max_grace_seconds
        self._clock: Clock = clock or SystemClock()
        self._started = self._clock.now()
        self._pods: dict[str, PodEntry] = {}
        self._updates: asyncio.Queue[Pod | _Stop] = asyncio.Queue()
        self._cpu_samples: dict[int, tuple[float, int]] = {}  # leader pid -> (monotonic, cpu ns)
        self._retired_cpu = 0
        self._closed = False
        self._closing = asyncio.Event()  # set by close(): ends the node status stream
        self._api_server = api_server
        self._pending_volumes: dict[str, PodVolumes] = {}  # set_pod_volumes before create_pod
        self._mount_problem: str | None = None  # None: not probed yet; "": mount namespaces work
        self._supervisor = Supervisor(
            clock=self._clock,
            backoff=Backoff(base=backoff_base, cap=backoff_cap),
            publish=self._publish,
            sync_volumes=self._sync_volumes,
            retire=self._retire_cpu,
        )

    def reap_orphans(self) -> int:
        """Kill every process a previous provider with this root dir left behind, and remove
        its pod directories (unmounting the tmpfs volumes it left first). Call once at startup,
        before serving. Returns how many were killed.

        Those processes cannot be adopted (their output pipes died with the old provider) and
        would hold ports and files the recreated pods need.
        """
        killed = 0
        for pid in procfs.processes_with_env(ROOT_MARKER, str(self._root.resolve())):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
        remove_directory(self._root / "pods")
        if killed:
            log.warning("process: killed %d processes left by a previous provider in %s", killed, self._root)
        return killed

    # -- PodLifecycle ---------------------------------------------------------------------
    async def create_pod(self, pod: Pod, volumes: PodVolumes | None = None) -> None:
        """Start the pod's processes; a UID already present is left alone.

        ``volumes`` (else what :meth:`set_pod_volumes` left for this UID) are written before
        the first container starts, and each container's ``volumeMounts`` are made; without
        them ``volumeMounts`` are ignored. InvalidInput for a volume path that would leave its
        directory.
        """
        if self._closed:
            raise Permanent("the process provider is closed")
        uid = pod.ref.uid
        if uid in self._pods:
            return
        pending = self._pending_volumes.pop(uid, None)
        volumes = pending if volumes is None else volumes
        if volumes is not None:
            check_volumes(volumes)
        directory = self._root / "pods" / uid
        work = directory / "work"
        entry = PodEntry(
            pod=Pod(pod.ref, copy.deepcopy(dict(pod.manifest))),
            directory=directory,
            containers={},
            start_time=format_time(self._clock.now()),
            volumes=volumes,
        )
        for init, specs in ((True, pod.spec.get("initContainers") or ()), (False, pod.containers)):
            for spec in specs:
                container = new_container(
                    spec,
                    init=init,
                    pod=pod,
                    work=work,
                    log_root=directory / "logs",
                    root=self._root,
                    api_server=self._api_server,
                )
                if volumes is not None and container.runnable and spec.get("volumeMounts"):
                    self._plan_mounts(container, volumes)
                entry.containers[container.name] = container
        entry.initialized = not entry.init_containers
        for container in entry.main_containers:
            if not entry.initialized and container.runnable:
                container.state = {"waiting": {"reason": "PodInitializing"}}
        self._pods[uid] = entry
        work.mkdir(parents=True, exist_ok=True)
        log.info("process: created pod %s", pod.ref)
        self._start_ephemeral(entry)
        self._publish(entry)
        entry.task = asyncio.create_task(self._supervisor.run_pod(entry), name=f"pod {pod.ref}")

    async def update_pod(self, pod: Pod, volumes: PodVolumes | None = None) -> None:
        """Keep the new metadata and spec. Running processes are not touched (images are ignored);
        ephemeral containers new to the spec (``kubectl debug``) are started (:mod:`.ephemeral`).
        With ``volumes``, their new contents are written as :meth:`update_volumes` does."""
        entry = self._lookup(pod.ref)
        if volumes is not None:
            check_volumes(volumes)
        entry.pod = Pod(pod.ref, copy.deepcopy(dict(pod.manifest)))
        self._start_ephemeral(entry)
        self._publish(entry)
        if volumes is not None:
            await self.update_volumes(pod.ref, volumes)

    async def update_volumes(self, ref: PodRef, volumes: PodVolumes) -> None:
        """New contents for the pod's volumes (an edited ConfigMap, a refreshed token): each
        changed file-backed volume is rewritten atomically (``..data`` swapped), so a container
        sees the old or the new files, never a mix; unchanged ones are not touched. Which
        volumes exist and where they are mounted stays as created; an emptyDir keeps its
        contents. A subPath mount of a file keeps showing the file it was started with.

        Returns once written. NotFound for an unknown pod, InvalidInput for a path that would
        leave its volume, Transient when writing failed (the old contents stay in place).
        """
        entry = self._lookup(ref)
        check_volumes(volumes)
        entry.volumes = volumes
        failed = await self._sync_volumes(entry)
        if failed:
            raise Transient(f"pod {ref}: " + "; ".join(failed.values()))

    async def set_pod_volumes(self, ref: PodRef, volumes: PodVolumes) -> None:
        """The Provider port's way in: before ``create_pod`` the contents wait for the create
        (keyed by UID); afterwards this is :meth:`update_volumes`. Idempotent."""
        if ref.uid in self._pods:
            await self.update_volumes(ref, volumes)
            return
        check_volumes(volumes)
        self._pending_volumes[ref.uid] = volumes

    async def delete_pod(self, pod: Pod) -> None:
        """Start stopping the pod (SIGTERM, SIGKILL after the grace period) and return.

        NotFound once the pod is gone; a second call while it stops is a no-op.
        """
        self._pending_volumes.pop(pod.ref.uid, None)
        entry = self._lookup(pod.ref)
        if entry.deleted:
            return
        entry.deleted = True
        grace = pod.deletion_grace_period_seconds
        if grace is None:
            configured = entry.pod.spec.get("terminationGracePeriodSeconds")
            grace = 30 if configured is None else int(configured)  # 0 is a valid "kill at once"
        seconds = float(grace) if self._max_grace is None else min(float(grace), self._max_grace)
        log.info("process: deleting pod %s (grace %.1fs)", pod.ref, seconds)
        entry.terminator = asyncio.create_task(self._terminate(entry, seconds), name=f"delete {pod.ref}")

    async def get_pod(self, ref: PodRef) -> Pod:
        return snapshot(self._lookup(ref))

    async def get_pod_status(self, ref: PodRef) -> Mapping[str, Any]:
        return copy.deepcopy(self._lookup(ref).status)

    async def list_pods(self) -> Sequence[Pod]:
        return [snapshot(entry) for entry in self._pods.values()]

    # -- ContainerControl -----------------------------------------------------------------
    async def kill_container(self, ref: PodRef, container: str, *, grace_period_seconds: int) -> None:
        """SIGTERM the container's process tree and SIGKILL it after ``grace_period_seconds``
        (capped by ``max_grace_seconds``); returns at once. Its exit (143, or 137 when the SIGKILL
        was needed; reason ``Error``) then goes through the restart handling of any exit:
        ``restartPolicy``, back-off, restartCount. Under OnFailure a killed container restarts even
        if it exited 0, as the kubelet restarts a container it killed unless the policy is Never.

        A container not running (exited, waiting to restart) or already being killed is left
        alone. NotFound for an unknown pod or container.
        """
        entry, target = self._container(ref, container)
        run = target.run
        if entry.deleted or run is None or run.code is not None or run.killed:
            return
        grace = max(0.0, float(grace_period_seconds))
        if self._max_grace is not None:
            grace = min(grace, self._max_grace)
        log.info("process: killing container %s of pod %s (grace %.1fs)", container, ref, grace)
        run.killed = True
        signal_tree(run.process.pid, signal.SIGTERM)
        run.killer = asyncio.create_task(
            self._supervisor.kill_after(run, grace), name=f"kill {ref} {container}"
        )

    # -- PodStatusSource ------------------------------------------------------------------
    async def pod_status_updates(self) -> AsyncIterator[Pod]:
        """Each change, in order. Ends after :meth:`close`. One consumer."""
        while True:
            item = await self._updates.get()
            if isinstance(item, _Stop):
                self._updates.put_nowait(item)
                return
            yield item

    # -- NodeHealth -----------------------------------------------------------------------
    async def ping(self) -> None:
        if self._closed:
            raise Permanent("the process provider is closed")

    async def node_template(self) -> NodeTemplate:
        return NodeTemplate(
            capacity=dict(self._capacity),
            labels=dict(self._labels),
            addresses=(
                NodeAddress(type="InternalIP", address=self._host_ip),
                NodeAddress(type="Hostname", address=self._node_name),
            ),
            operating_system="linux",
            architecture=host_architecture(),
        )

    # -- NodeStatusSource -----------------------------------------------------------------
    async def node_status_updates(self) -> AsyncIterator[NodeTemplate]:
        """The template once (this host's node does not change while the provider runs), then
        nothing until :meth:`close` ends the stream. Any number of readers."""
        if self._closed:
            return
        yield await self.node_template()
        await self._closing.wait()

    def capabilities(self) -> frozenset[Capability]:
        return _CAPABILITIES

    def native_volume_kinds(self) -> frozenset[str]:
        return frozenset()  # it mounts what vkubelet resolves, nothing of its own

    async def close(self) -> None:
        """Stop every pod (their processes cannot outlive the provider) and end the stream."""
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        grace = min(self._max_grace or 5.0, 5.0)
        stopping = []
        for entry in list(self._pods.values()):
            if entry.terminator is None:
                entry.deleted = True
                entry.terminator = asyncio.create_task(self._terminate(entry, grace))
            stopping.append(entry.terminator)
        await asyncio.gather(*stopping, return_exceptions=True)
        self._updates.put_nowait(_Stop())

    # -- ContainerStreams -----------------------------------------------------------------
    async def container_logs(self, ref: PodRef, container: str, options: LogOptions) -> AsyncIterator[bytes]:
        _, target = self._container(ref, container)
        async for chunk in streams.container_logs(ref, target, options, now=self._clock.now()):
            yield chunk

    async def exec_in_container(
        self, ref: PodRef, container: str, command: Sequence[str], io: StreamIO
    ) -> int:
        _, target = self._container(ref, container)
        return await streams.exec_in_container(ref, target, command, io)

    async def attach_to_container(self, ref: PodRef, container: str, io: StreamIO) -> int:
        _, target = self._container(ref, container)
        return await streams.attach_to_container(ref, target, io)

    async def port_forward(self, ref: PodRef, port: int, stream: ByteStream) -> None:
        self._lookup(ref)
        await streams.port_forward(ref, port, stream)

    # -- Stats ----------------------------------------------------------------------------
    async def stats_summary(self) -> Mapping[str, Any]:
        now = self._clock.now()
        node, pods = await self._usage()
        return stats.summary(node, pods, now=now)

    async def metrics_resource(self) -> Sequence[MetricFamily]:
        now = self._clock.now()
        node, pods = await self._usage()
        return stats.resource_metrics(node, pods, now=now)

    # -- running pods ---------------------------------------------------------------------
    def _start_ephemeral(self, entry: PodEntry) -> None:
        """Start each ephemeral container of the spec this pod has not seen; once, for good."""
        if entry.deleted or entry.stopping.is_set():
            return
        for spec in ephemeral.new_specs(entry.pod, entry.containers):
            container = new_container(
                spec,
                init=False,
                pod=entry.pod,
                work=entry.directory / "work",
                log_root=entry.directory / "logs",
                root=self._root,
                api_server=self._api_server,
            )
            container.ephemeral = True
            entry.containers[container.name] = container
            earlier = ephemeral.earlier_state(entry.pod, container.name)
            if earlier is not None:
                container.state = earlier
                continue
            if entry.volumes is not None and container.runnable and spec.get("volumeMounts"):
                self._plan_mounts(container, entry.volumes)
            if not container.runnable:
                continue  # its waiting state says why
            log.info("process: starting ephemeral container %s of pod %s", container.name, entry.pod.ref)
            name = f"{entry.pod.ref} {container.name}"
            entry.ephemeral_tasks.add(
                asyncio.create_task(self._supervisor.run_once(entry, container), name=name)
            )

    async def _terminate(self, entry: PodEntry, grace: float) -> None:
        entry.stopping.set()
        runs = [c.run for c in entry.containers.values() if c.run is not None and c.run.code is None]
        for run in runs:
            signal_tree(run.process.pid, signal.SIGTERM)
        assert entry.task is not None
        tasks = {entry.task, *entry.ephemeral_tasks}
        _, pending = await asyncio.wait(tasks, timeout=grace)
        if pending:
            for container in entry.containers.values():
                if container.run is not None and container.run.code is None:
                    signal_tree(container.run.process.pid, signal.SIGKILL)
            await asyncio.wait(tasks)
        for container in entry.containers.values():
            if "terminated" not in container.state:
                container.state = {
                    "terminated": {
                        "exitCode": 0,
                        "reason": "PodDeleted",
                        "message": "the pod was deleted before the container started",
                        "finishedAt": format_time(self._clock.now()),
                    }
                }
        self._pods.pop(entry.pod.ref.uid, None)
        self._publish(entry)
        log.info("process: pod %s stopped", entry.pod.ref)
        async with entry.volume_lock:  # no volume write is half done, and none comes after
            entry.volumes_removed = True
            await asyncio.to_thread(remove_directory, entry.directory)
        self._pending_volumes.pop(entry.pod.ref.uid, None)  # sent while it was stopping

    # -- volumes --------------------------------------------------------------------------
    def _plan_mounts(self, container: Container, volumes: PodVolumes) -> None:
        mounts, problem = parse_mounts(container.spec, env=container.env, volumes=volumes)
        if problem:
            container.block(f"container {container.name}: {problem}")
            return
        why = self._mount_namespaces()
        if why:
            container.block(
                f"container {container.name} has volumeMounts, which the process provider makes in a "
                f"private mount namespace per container, and it cannot create one here ({why}): that "
                "needs root (CAP_SYS_ADMIN). Run the provider as root, or remove the mounts "
                "(automountServiceAccountToken: false drops the service account token's)"
            )
            return
        container.mounts = mounts

    def _mount_namespaces(self) -> str:
        """Why this host does not let us make mount namespaces; empty when it does (probed once)."""
        if self._mount_problem is None:
            self._mount_problem = mount_namespace_problem()
            if self._mount_problem:
                log.warning("process: volume mounts are not possible here: %s", self._mount_problem)
        return self._mount_problem

    async def _sync_volumes(self, entry: PodEntry) -> dict[str, str]:
        """Write ``entry.volumes`` (the latest wanted) to disk; the volumes that failed, with why."""
        async with entry.volume_lock:
            wanted = entry.volumes
            if entry.volumes_removed or wanted is None:
                return {}
            memory = any(empty.medium == MEMORY for empty in wanted.empty_dirs)
            mount_tmpfs = memory and not self._mount_namespaces()
            try:
                return await asyncio.to_thread(
                    materialise, entry.volume_dir, wanted, moment=self._clock.now(), mount_tmpfs=mount_tmpfs
                )
            except OSError as error:
                names = [v.name for v in wanted.files] + [v.name for v in wanted.empty_dirs]
                return {name: f"volume {name!r}: {error}" for name in names}

    # -- status ---------------------------------------------------------------------------
    def _publish(self, entry: PodEntry) -> None:
        entry.status = pod_status(entry, host_ip=self._host_ip, now=self._clock.now())
        self._updates.put_nowait(snapshot(entry))

    def _lookup(self, ref: PodRef) -> PodEntry:
        entry = self._pods.get(ref.uid)
        if entry is None:
            raise NotFound(f"pod {ref} not found in the process provider")
        return entry

    def _container(self, ref: PodRef, name: str) -> tuple[PodEntry, Container]:
        entry = self._lookup(ref)
        container = entry.containers.get(name)
        if container is None:
            raise NotFound(f"container {name} not found in pod {ref}")
        return entry, container

    def _retire_cpu(self, pid: int) -> None:
        """The run led by ``pid`` ended: its last CPU sample moves to the node's retired total."""
        sample = self._cpu_samples.pop(pid, None)
        if sample is not None:
            self._retired_cpu += sample[1]

    # -- usage ----------------------------------------------------------------------------
    async def _usage(self) -> tuple[stats.NodeUsage, list[stats.PodUsage]]:
        live = {
            c.run.process.pid: c.run
            for e in self._pods.values()
            for c in e.containers.values()
            if c.run is not None and c.run.code is None
        }
        usage = await asyncio.to_thread(procfs.tree_usage, list(live))
        moment = self._clock.monotonic()
        pods = []
        for entry in self._pods.values():
            containers = []
            for c in entry.containers.values():
                run = c.run
                if run is None or run.code is not None or run.process.pid not in usage:
                    continue
                tree = usage[run.process.pid]
                previous = self._cpu_samples.get(run.process.pid, (run.started_monotonic, 0))
                elapsed = moment - previous[0]
                rate = (tree.cpu_nano_seconds - previous[1]) / elapsed if elapsed > 0 else 0.0
                self._cpu_samples[run.process.pid] = (moment, tree.cpu_nano_seconds)
                containers.append(
                    stats.ContainerUsage(
                        name=c.name,
                        start_time=run.started,
                        nano_cores=max(0, int(rate)),
                        core_nano_seconds=tree.cpu_nano_seconds,
                        working_set_bytes=tree.rss_bytes,
                        usage_bytes=tree.rss_bytes,
                    )
                )
            pod_start = datetime.fromisoformat(entry.start_time.replace("Z", "+00:00"))
            pods.append(stats.PodUsage(ref=entry.pod.ref, start_time=pod_start, containers=tuple(containers)))
        node = stats.node_usage(
            self._node_name, start_time=self._started, pods=pods, retired_core_nano_seconds=self._retired_cpu
        )
        return node, pods


__all__ = ["ROOT_MARKER", "ProcessProvider"]
