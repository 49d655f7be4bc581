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
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import errno
import logging
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from vkubelet.adapters.mock.config import host_architecture
from vkubelet.adapters.process import ephemeral, procfs
from vkubelet.adapters.process.logs import LogWriter, read_log, remove_quietly
from vkubelet.adapters.process.spawn import Pty, mount_namespace_problem, resolvable, signal_tree, spawn
from vkubelet.adapters.process.volumes import (
    MEMORY,
    VolumeMount,
    bind_mounts,
    check_volumes,
    materialise,
    parse_mounts,
    remove_directory,
)
from vkubelet.adapters.system import SystemClock
from vkubelet.application.ports.runtime import Clock
from vkubelet.application.ports.streams import ByteStream, LogOptions, StreamIO
from vkubelet.domain import stats
from vkubelet.domain.container_status import exit_code, final_phase, pod_phase, terminated_reason
from vkubelet.domain.env import expand
from vkubelet.domain.errors import InvalidInput, NotFound, Permanent, Transient
from vkubelet.domain.pod import Pod, PodPhase, PodRef, format_time
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
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_BACKOFF_RESET_SECONDS = 600.0  # the kubelet forgets a container's back-off after 10 quiet minutes
_DRAIN_SECONDS = 1.0  # output still buffered when a process exits
_FIRST_RESIZE_WAIT_SECONDS = 1.0  # how long a tty exec waits for the client's terminal size
# Every process we start carries this (value: the root dir), so a restarted provider can find
# and kill what a crashed one left behind (grandchildren escape PR_SET_PDEATHSIG).
ROOT_MARKER = "VKUBELET_PROCESS_PROVIDER_ROOT"


@dataclass(eq=False)
class _Run:
    """One start of a container's main process."""

    process: asyncio.subprocess.Process
    log: LogWriter
    started: datetime
    started_monotonic: float
    subscribers: set[asyncio.Queue[tuple[str, bytes] | None]] = field(default_factory=set)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    code: int | None = None
    killed: bool = False  # stopped by kill_container: restarted even after a clean exit (OnFailure)
    killer: asyncio.Task[None] | None = None  # the SIGKILL after the grace period
    terminal: Pty | None = None  # tty: true (ephemeral containers): stdin and output go through it


@dataclass(eq=False)
class _Container:
    spec: Mapping[str, Any]
    init: bool
    env: dict[str, str]
    argv: list[str] | None  # None: no command, cannot run
    cwd: Path
    log_dir: Path
    restart_count: int = 0
    runs: int = 0
    crashes: int = 0
    state: dict[str, Any] = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: dict[str, Any] = field(default_factory=dict)
    container_id: str = ""
    run: _Run | None = None
    started_event: asyncio.Event = field(default_factory=asyncio.Event)
    mounts: tuple[VolumeMount, ...] = ()  # non-empty: runs in its own mount namespace
    blocked: str = ""  # why it cannot run (its waiting state says so)
    ephemeral: bool = False  # kubectl debug's: started once, never restarted (:mod:`.ephemeral`)
    entered: bool = False  # runs in another container's mount namespace (an ephemeral's target)

    @property
    def name(self) -> str:
        return str(self.spec.get("name") or "")

    @property
    def runnable(self) -> bool:
        return self.argv is not None and not self.blocked

    def block(self, message: str) -> None:
        self.blocked = message
        self.state = {"waiting": {"reason": "CreateContainerConfigError", "message": message}}

    @property
    def sidecar(self) -> bool:
        return self.init and self.spec.get("restartPolicy") == "Always"

    def log_path(self, index: int) -> Path:
        return self.log_dir / f"{index}.log"


@dataclass(eq=False)
class _PodEntry:
    pod: Pod
    directory: Path
    containers: dict[str, _Container]
    start_time: str
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    initialized: bool = False
    init_failed: bool = False
    deleted: bool = False
    transitions: dict[str, tuple[str, str]] = field(default_factory=dict)  # type -> (status, time)
    task: asyncio.Task[None] | None = None
    terminator: asyncio.Task[None] | None = None
    status: dict[str, Any] = field(default_factory=dict)
    volumes: PodVolumes | None = None  # None: not handed over, volumeMounts are not made
    volume_lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one writer of the volume dirs
    volumes_removed: bool = False
    ephemeral_tasks: set[asyncio.Task[Any]] = field(default_factory=set)  # their single runs

    @property
    def volume_dir(self) -> Path:
        return self.directory / "volumes"

    @property
    def init_containers(self) -> list[_Container]:
        return [c for c in self.containers.values() if c.init]

    @property
    def main_containers(self) -> list[_Container]:
        return [c for c in self.containers.values() if not c.init and not c.ephemeral]

    @property
    def ephemeral_containers(self) -> list[_Container]:
        return [c for c in self.containers.values() if c.ephemeral]


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
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._max_grace = max_grace_seconds
        self._clock: Clock = clock or SystemClock()
        self._started = self._clock.now()
        self._pods: dict[str, _PodEntry] = {}
        self._updates: asyncio.Queue[Pod | _Stop] = asyncio.Queue()
        self._cpu_samples: dict[int, tuple[float, int]] = {}  # leader pid -> (monotonic, cpu ns)
        self._retired_cpu = 0
        self._closed = False
        self._closing = asyncio.Event()  # set by close(): ends the node status stream
        self._api_server = api_server
        self._pending_volumes: dict[str, PodVolumes] = {}  # set_pod_volumes before create_pod
        self._mount_problem: str | None = None  # None: not probed yet; "": mount namespaces work

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
        entry = _PodEntry(
            pod=Pod(pod.ref, copy.deepcopy(dict(pod.manifest))),
            directory=directory,
            containers={},
            start_time=format_time(self._clock.now()),
            volumes=volumes,
        )
        for init, specs in ((True, pod.spec.get("initContainers") or ()), (False, pod.containers)):
            for spec in specs:
                container = _container(
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
        entry.task = asyncio.create_task(self._run_pod(entry), name=f"pod {pod.ref}")

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
        return self._snapshot(self._lookup(ref))

    async def get_pod_status(self, ref: PodRef) -> Mapping[str, Any]:
        return copy.deepcopy(self._lookup(ref).status)

    async def list_pods(self) -> Sequence[Pod]:
        return [self._snapshot(entry) for entry in self._pods.values()]

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
        run.killer = asyncio.create_task(self._kill_after(run, grace), name=f"kill {ref} {container}")

    async def _kill_after(self, run: _Run, grace: float) -> None:
        """SIGKILL ``run``'s tree unless it ended within ``grace`` seconds of its SIGTERM."""
        await self._until_ended(run, self._clock.sleep(grace))
        if run.code is None and run.process.returncode is None:
            signal_tree(run.process.pid, signal.SIGKILL)

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
        index = target.runs - 1
        if options.previous:
            index -= 1
            if index < 0 or not target.log_path(index).exists():
                raise NotFound(f'previous terminated container "{container}" in pod "{ref.name}" not found')
        writer = None
        if not options.previous and target.run is not None and target.run.code is None:
            writer = target.run.log
        if index < 0:
            raise InvalidInput(f'container "{container}" in pod "{ref.name}" is waiting to start')
        async for chunk in read_log(target.log_path(index), writer, options, now=self._clock.now()):
            yield chunk

    async def exec_in_container(
        self, ref: PodRef, container: str, command: Sequence[str], io: StreamIO
    ) -> int:
        """Run ``command`` with the container's env and working directory, in its mount
        namespace when it has volume mounts (it must be running then); its exit code."""
        _, target = self._container(ref, container)
        if not command:
            raise InvalidInput("exec needs a command")
        namespace_of = None
        if target.mounts or target.entered:
            run = target.run
            if run is None or run.code is not None or run.process.returncode is not None:
                raise InvalidInput(
                    f"container {container} of pod {ref} is not running: an exec joins its mount namespace"
                )
            namespace_of = run.process.pid  # the command is looked up in there
        elif not resolvable(command[0], env=target.env, cwd=target.cwd):
            return await _spawn_failed(
                io, command, FileNotFoundError(errno.ENOENT, "executable file not found")
            )
        if io.tty:
            return await self._exec_tty(target, list(command), io, namespace_of=namespace_of)
        pipe, null = subprocess.PIPE, subprocess.DEVNULL
        try:
            process = await spawn(
                command,
                env=target.env,
                cwd=target.cwd,
                stdin=pipe if io.stdin else null,
                stdout=pipe if io.stdout else null,
                stderr=pipe if io.stderr else null,
                namespace_of=namespace_of,
            )
        except OSError as error:
            return await _spawn_failed(io, command, error)
        outputs = []
        if process.stdout is not None:
            outputs.append(asyncio.create_task(_copy_out(process.stdout, io.write_stdout)))
        if process.stderr is not None:
            outputs.append(asyncio.create_task(_copy_out(process.stderr, io.write_stderr)))
        feeder = asyncio.create_task(_feed_stdin(io, process.stdin, close_at_eof=True))
        try:
            code = await process.wait()
            await _drain(outputs)
        finally:
            feeder.cancel()
            signal_tree(process.pid, signal.SIGKILL)
            if process.returncode is None:
                process.kill()
                await process.wait()
        return exit_code(code)

    async def attach_to_container(self, ref: PodRef, container: str, io: StreamIO) -> int:
        """Stream the running process's output from now on and feed it stdin (when the spec has
        ``stdin: true``); returns its exit code when it ends."""
        _, target = self._container(ref, container)
        run = target.run
        if run is None or run.code is not None:
            raise InvalidInput(f"container {container} of pod {ref} is not running")
        queue: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue()
        run.subscribers.add(queue)
        if run.terminal is not None:  # tty: stdin and resizes go to its terminal
            wants_stdin = io.stdin and bool(target.spec.get("stdin"))
            feeder = asyncio.create_task(ephemeral.feed_terminal(io, run.terminal, stdin=wants_stdin))
        else:
            stdin = run.process.stdin if io.stdin else None
            close_at_eof = bool(target.spec.get("stdinOnce"))
            feeder = asyncio.create_task(_feed_stdin(io, stdin, close_at_eof=close_at_eof))
        try:
            while (item := await queue.get()) is not None:
                stream, data = item
                if stream == "stderr" and not io.tty:
                    if io.stderr:
                        await io.write_stderr(data)
                elif io.stdout:
                    await io.write_stdout(data)
        finally:
            feeder.cancel()
            run.subscribers.discard(queue)
        await run.ended.wait()
        assert run.code is not None
        return run.code

    async def port_forward(self, ref: PodRef, port: int, stream: ByteStream) -> None:
        """Pump bytes between ``stream`` and 127.0.0.1:``port`` until the process side closes."""
        self._lookup(ref)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError as error:
            raise InvalidInput(f"pod {ref}: nothing accepts connections on port {port}: {error}") from error

        async def upstream() -> None:
            while data := await stream.read():
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()  # half-close: the server may still answer

        sender = asyncio.create_task(upstream())
        try:
            while data := await reader.read(65536):
                await stream.write(data)
        finally:
            sender.cancel()
            writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await sender
            await stream.close()

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
    async def _run_pod(self, entry: _PodEntry) -> None:
        if entry.volumes is not None:
            failed = await self._sync_volumes(entry)
            if failed:
                for container in entry.containers.values():
                    problems = [failed[m.volume] for m in container.mounts if m.volume in failed]
                    if problems and container.runnable:
                        container.block("; ".join(dict.fromkeys(problems)))
                self._publish(entry)
        sidecars: list[asyncio.Task[bool]] = []
        try:
            for container in entry.init_containers:
                if entry.stopping.is_set():
                    return
                if container.sidecar:
                    sidecars.append(asyncio.create_task(self._supervise(entry, container, "Always")))
                    await self._until_stopped(entry, container.started_event.wait())
                    continue
                policy = "Never" if entry.pod.restart_policy == "Never" else "OnFailure"
                if not await self._supervise(entry, container, policy):
                    if not entry.stopping.is_set():
                        entry.init_failed = True
                        self._publish(entry)
                    return
            entry.initialized = True
            self._publish(entry)
            await asyncio.gather(
                *(self._supervise(entry, c, entry.pod.restart_policy) for c in entry.main_containers)
            )
        finally:
            if sidecars and not entry.stopping.is_set():
                # The regular containers are done for good: sidecars stop (and stay stopped).
                entry.stopping.set()
                for container in entry.init_containers:
                    if container.run is not None and container.run.code is None:
                        signal_tree(container.run.process.pid, signal.SIGTERM)
            await asyncio.gather(*sidecars, return_exceptions=True)

    def _start_ephemeral(self, entry: _PodEntry) -> None:
        """Start each ephemeral container of the spec this pod has not seen; once, for good."""
        if entry.deleted or entry.stopping.is_set():
            return
        for spec in ephemeral.new_specs(entry.pod, entry.containers):
            container = _container(
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
            entry.ephemeral_tasks.add(asyncio.create_task(self._run_once(entry, container), name=name))

    def _target_namespace(self, entry: _PodEntry, container: _Container) -> int | None:
        """The pid whose mount namespace an ephemeral container joins: its target's, when that
        container has one (volume mounts); None to run in the host's. OSError when the target
        has one but is not running."""
        target = entry.containers.get(str(container.spec.get("targetContainerName") or ""))
        if not container.ephemeral or container.mounts or target is None or not target.mounts:
            return None
        run = target.run
        if run is None or run.code is not None or run.process.returncode is not None:
            raise OSError(errno.ESRCH, f"target container {target.name} is not running")
        return run.process.pid

    async def _supervise(self, entry: _PodEntry, container: _Container, policy: str) -> bool:
        """Run ``container`` until it will not be restarted; True when it last exited 0."""
        if not container.runnable:
            await entry.stopping.wait()  # the waiting state set at creation says why
            return False
        while True:
            code, ran_for = await self._run_once(entry, container)
            if entry.stopping.is_set():
                return code == 0
            # The run that just ended (a failed start keeps an older one, but exits 128 anyway).
            killed = container.run is not None and container.run.killed
            if policy == "Never" or (policy == "OnFailure" and code == 0 and not killed):
                return code == 0
            if ran_for >= _BACKOFF_RESET_SECONDS:
                container.crashes = 0
            delay = min(self._backoff_base * 2**container.crashes, self._backoff_cap)
            container.crashes += 1
            container.last_state = container.state
            container.state = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off {delay:g}s restarting failed container={container.name} "
                    f"pod={entry.pod.ref.name}_{entry.pod.ref.namespace}({entry.pod.ref.uid})",
                }
            }
            self._publish(entry)
            if not await self._until_stopped(entry, self._clock.sleep(delay)):
                return code == 0
            container.restart_count += 1

    async def _run_once(self, entry: _PodEntry, container: _Container) -> tuple[int, float]:
        """Start one run and wait for its end: (exit code, seconds it ran)."""
        assert container.argv is not None
        index = container.runs
        container.runs += 1
        remove_quietly(container.log_path(index - 2))  # keep the current and the previous run
        writer = LogWriter(container.log_path(index))
        started, started_monotonic = self._clock.now(), self._clock.monotonic()
        terminal = None
        try:
            binds = None
            namespace_of = self._target_namespace(entry, container)
            container.entered = namespace_of is not None
            if container.mounts:
                # Resolved now, on this host; the working dir and the command are looked up
                # inside the new namespace, where the volumes are.
                assert entry.volumes is not None
                binds = bind_mounts(container.mounts, root=entry.volume_dir, volumes=entry.volumes)
            elif namespace_of is None:  # else they are looked up in the namespace it joins
                container.cwd.mkdir(parents=True, exist_ok=True)
                if not resolvable(container.argv[0], env=container.env, cwd=container.cwd):
                    raise FileNotFoundError(errno.ENOENT, "executable file not found", container.argv[0])
            if container.ephemeral and container.spec.get("tty"):
                terminal = Pty()
            stdin, stdout, stderr = ephemeral.stdio(container.spec, terminal)
            process = await spawn(
                container.argv,
                env={"TERM": "xterm", **container.env} if terminal else container.env,
                cwd=container.cwd,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                controlling_tty=terminal is not None,
                mounts=binds,
                namespace_of=namespace_of,
            )
        except OSError as error:
            if terminal is not None:
                terminal.close()
            message = f"failed to start {container.argv[0]!r}: {error}"
            writer.write("stderr", message.encode(), complete=True, moment=started)
            writer.close()
            self._terminated(container, 128, started, reason="StartError", message=message)
            self._publish(entry)
            return 128, 0.0
        run = _Run(process=process, log=writer, started=started, started_monotonic=started_monotonic)
        run.terminal = terminal
        container.run = run
        if entry.stopping.is_set():
            signal_tree(process.pid, signal.SIGTERM)  # deleted while it was starting
        container.container_id = f"process://{process.pid}"
        container.state = {"running": {"startedAt": format_time(started)}}
        container.started_event.set()
        self._publish(entry)
        if terminal is not None:
            terminal.close_slave()  # the process holds it now: its exit ends the output
            pumps = [asyncio.create_task(self._pump(run, ephemeral.TerminalReader(terminal), "stdout"))]
        else:
            assert process.stdout is not None and process.stderr is not None
            pumps = [
                asyncio.create_task(self._pump(run, process.stdout, "stdout")),
                asyncio.create_task(self._pump(run, process.stderr, "stderr")),
            ]
        returncode = await process.wait()
        signal_tree(process.pid, signal.SIGKILL)  # the container ends with its main process
        await _drain(pumps)
        if terminal is not None:
            terminal.close()
        code = exit_code(returncode)
        run.code = code
        writer.close()
        for queue in run.subscribers:
            queue.put_nowait(None)
        run.ended.set()
        sample = self._cpu_samples.pop(process.pid, None)
        if sample is not None:
            self._retired_cpu += sample[1]
        self._terminated(container, code, started, reason=terminated_reason(code))
        self._publish(entry)
        return code, self._clock.monotonic() - started_monotonic

    async def _pump(
        self, run: _Run, reader: asyncio.StreamReader | ephemeral.TerminalReader, stream: str
    ) -> None:
        pending = b""
        while chunk := await reader.read(65536):
            for queue in run.subscribers:
                queue.put_nowait((stream, chunk))
            *lines, pending = (pending + chunk).split(b"\n")
            now = self._clock.now()
            for line in lines:
                run.log.write(stream, line, complete=True, moment=now)
            if len(pending) >= 16 * 1024:
                run.log.write(stream, pending, complete=False, moment=now)
                pending = b""
        if pending:
            run.log.write(stream, pending, complete=False, moment=self._clock.now())

    def _terminated(
        self, container: _Container, code: int, started: datetime, *, reason: str, message: str = ""
    ) -> None:
        terminated: dict[str, Any] = {
            "exitCode": code,
            "reason": reason,
            "startedAt": format_time(started),
            "finishedAt": format_time(self._clock.now()),
        }
        if message:
            terminated["message"] = message
        if container.container_id:
            terminated["containerID"] = container.container_id
        container.state = {"terminated": terminated}

    async def _until_stopped(self, entry: _PodEntry, awaitable: Any) -> bool:
        """Await ``awaitable`` unless the pod starts stopping first; True when it completed."""
        work = asyncio.ensure_future(awaitable)
        stop = asyncio.create_task(entry.stopping.wait())
        try:
            await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (work, stop):
                task.cancel()
        return work.done() and not work.cancelled()

    async def _until_ended(self, run: _Run, awaitable: Any) -> None:
        """Await ``awaitable`` unless ``run`` ends first."""
        work = asyncio.ensure_future(awaitable)
        ended = asyncio.create_task(run.ended.wait())
        try:
            await asyncio.wait({work, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (work, ended):
                task.cancel()

    async def _terminate(self, entry: _PodEntry, grace: float) -> None:
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
    def _plan_mounts(self, container: _Container, volumes: PodVolumes) -> None:
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

    async def _sync_volumes(self, entry: _PodEntry) -> dict[str, str]:
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
    def _publish(self, entry: _PodEntry) -> None:
        entry.status = self._status(entry)
        self._updates.put_nowait(self._snapshot(entry))

    def _status(self, entry: _PodEntry) -> dict[str, Any]:
        now = format_time(self._clock.now())
        mains = [_container_status(c) for c in entry.main_containers]
        inits = [_container_status(c) for c in entry.init_containers]
        if entry.stopping.is_set() and all("terminated" in (s["state"]) for s in mains):
            phase = final_phase(mains)
        else:
            phase = pod_phase(
                mains,
                restart_policy=entry.pod.restart_policy,
                initialized=entry.initialized,
                init_failed=entry.init_failed,
            )
        ready = phase is PodPhase.RUNNING and all(s["ready"] for s in mains)
        not_ready_reason = "PodCompleted" if phase.is_terminal else "ContainersNotReady"
        wanted = [
            ("PodScheduled", True, ""),
            ("Initialized", entry.initialized, "ContainersNotInitialized"),
            ("ContainersReady", ready, not_ready_reason),
            ("Ready", ready, not_ready_reason),
        ]
        conditions = []
        for kind, ok, reason in wanted:
            value = "True" if ok else "False"
            previous = entry.transitions.get(kind)
            if previous is None or previous[0] != value:
                entry.transitions[kind] = (value, now)
            condition: dict[str, Any] = {
                "type": kind,
                "status": value,
                "lastProbeTime": None,
                "lastTransitionTime": entry.transitions[kind][1],
            }
            if not ok and reason:
                condition["reason"] = reason
            conditions.append(condition)
        status = copy.deepcopy(dict(entry.pod.status))
        status.update(
            {
                "phase": phase.value,
                "hostIP": self._host_ip,
                "hostIPs": [{"ip": self._host_ip}],
                "podIP": self._host_ip,
                "podIPs": [{"ip": self._host_ip}],
                "startTime": entry.start_time,
                "conditions": conditions,
                "containerStatuses": mains,
            }
        )
        if inits:
            status["initContainerStatuses"] = inits
        if entry.ephemeral_containers:
            status["ephemeralContainerStatuses"] = [
                ephemeral.status(_container_status(c)) for c in entry.ephemeral_containers
            ]
        return status

    def _snapshot(self, entry: _PodEntry) -> Pod:
        manifest = copy.deepcopy(dict(entry.pod.manifest))
        manifest["status"] = copy.deepcopy(entry.status)
        return Pod(entry.pod.ref, manifest)

    def _lookup(self, ref: PodRef) -> _PodEntry:
        entry = self._pods.get(ref.uid)
        if entry is None:
            raise NotFound(f"pod {ref} not found in the process provider")
        return entry

    def _container(self, ref: PodRef, name: str) -> tuple[_PodEntry, _Container]:
        entry = self._lookup(ref)
        container = entry.containers.get(name)
        if container is None:
            raise NotFound(f"container {name} not found in pod {ref}")
        return entry, container

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

    async def _exec_tty(
        self, target: _Container, argv: list[str], io: StreamIO, *, namespace_of: int | None = None
    ) -> int:
        terminal = Pty()
        sized = asyncio.Event()

        async def resize() -> None:
            try:
                async for size in io.resizes():
                    terminal.resize(width=size.width, height=size.height)
                    sized.set()
            finally:
                sized.set()

        # kubectl sends the terminal's size right after the stream opens; a command spawned before
        # it arrives (`stty size`, a shell laying out its prompt) would see 0x0.
        resizer = asyncio.create_task(resize())
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sized.wait(), _FIRST_RESIZE_WAIT_SECONDS)
            try:
                process = await spawn(
                    argv,
                    env={"TERM": "xterm", **target.env},
                    cwd=target.cwd,
                    stdin=terminal.slave,
                    stdout=terminal.slave,
                    stderr=terminal.slave,
                    controlling_tty=True,
                    namespace_of=namespace_of,
                )
            except OSError as error:
                return await _spawn_failed(io, argv, error)
            terminal.close_slave()

            async def output() -> None:
                while data := await terminal.read():
                    await io.write_stdout(data)

            async def feed() -> None:
                if io.stdin:
                    while data := await io.read_stdin():
                        await terminal.write(data)

            helpers = [asyncio.create_task(feed()), resizer]
            reader = asyncio.create_task(output())
            try:
                code = await process.wait()
                await _drain([reader])
            finally:
                for task in helpers:
                    task.cancel()
                signal_tree(process.pid, signal.SIGKILL)
                if process.returncode is None:
                    process.kill()
                    await process.wait()
            return exit_code(code)
        finally:
            resizer.cancel()
            terminal.close()


def _container(
    spec: Mapping[str, Any],
    *,
    init: bool,
    pod: Pod,
    work: Path,
    log_root: Path,
    root: Path,
    api_server: tuple[str, int] | None,
) -> _Container:
    env = {
        "PATH": os.environ.get("PATH") or _DEFAULT_PATH,
        "HOSTNAME": pod.ref.name,
        ROOT_MARKER: str(root.resolve()),
    }
    for variable in spec.get("env") or ():
        if "value" in variable or "valueFrom" not in variable:
            env[str(variable["name"])] = str(variable.get("value") or "")
    if api_server is not None:
        # After the pod's env: vkubelet's service links put the `kubernetes` Service's cluster IP
        # here, which does not route on this host network (no kube-proxy); the real address does.
        env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"] = api_server[0], str(api_server[1])
    command = [str(part) for part in spec.get("command") or ()]
    args = [str(part) for part in spec.get("args") or ()]
    argv = [expand(part, env.get) for part in command + args] if command else None
    name = str(spec.get("name") or "")
    cwd = Path(str(spec["workingDir"])) if spec.get("workingDir") else work
    container = _Container(spec=spec, init=init, env=env, argv=argv, cwd=cwd, log_dir=log_root / name)
    if argv is None:
        container.state = {
            "waiting": {
                "reason": "CreateContainerConfigError",
                "message": f"container {name} has no command: the process provider ignores images, "
                "so there is no entrypoint to run; set command (and args)",
            }
        }
    return container


def _container_status(container: _Container) -> dict[str, Any]:
    running = "running" in container.state
    return {
        "name": container.name,
        "image": str(container.spec.get("image") or ""),
        "imageID": "",
        "containerID": container.container_id,
        "restartCount": container.restart_count,
        "ready": running,
        "started": running,
        "state": copy.deepcopy(container.state),
        "lastState": copy.deepcopy(container.last_state),
    }


async def _copy_out(reader: asyncio.StreamReader, write: Any) -> None:
    while data := await reader.read(65536):
        await write(data)


async def _feed_stdin(io: StreamIO, writer: asyncio.StreamWriter | None, *, close_at_eof: bool) -> None:
    if writer is None or not io.stdin:
        return
    try:
        while data := await io.read_stdin():
            writer.write(data)
            await writer.drain()
        if close_at_eof:
            writer.close()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the process stopped reading: its exit ends the session


async def _drain(tasks: Sequence[asyncio.Task[None]]) -> None:
    """Let output pumps finish; one held open by an escaped grandchild is cut off."""
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=_DRAIN_SECONDS)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _spawn_failed(io: StreamIO, argv: Sequence[str], error: OSError) -> int:
    message = f"exec {argv[0]!r} failed: {error.strerror or error}\n".encode()
    if io.stderr and not io.tty:
        await io.write_stderr(message)
    elif io.stdout:
        await io.write_stdout(message)
    return 127 if isinstance(error, FileNotFoundError) else 126


__all__ = ["ProcessProvider"]
