"""Probes and lifecycle hooks run by vkubelet for providers that do not run their own.

The pod controller calls :meth:`ProbeManager.watch` after each sync of a pod: every running
container instance (see :func:`~vkubelet.domain.probes.container_instance`) that declares probes
or hooks gets one worker, which runs its postStart hook, then its startup probe, then its
readiness and liveness probes, each on its own period. Verdicts live here and are laid over the
provider's status by the controller (:meth:`verdicts`); a verdict change calls ``on_change``
with the pod's UID so the controller writes the status at once. A liveness or startup failure
kills the container through the provider (capability KILL_CONTAINER); the provider's restart
policy then brings a new instance, which gets a new worker with fresh verdicts.

Only instances that started after this manager was created run postStart: an instance that was
already running when vkubelet (re)started had its hook run back then, as on a real node.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from vkubelet.application.ports.cluster import EventRecorder, EventType, ObjectRef
from vkubelet.application.ports.probes import ContainerProber
from vkubelet.application.ports.provider import ContainerControl
from vkubelet.application.ports.runtime import Clock
from vkubelet.domain.errors import DomainError, InvalidInput
from vkubelet.domain.pod import Manifest, Pod, parse_time
from vkubelet.domain.probes import (
    ContainerVerdicts,
    Handler,
    HookKind,
    Probe,
    ProbeKind,
    ProbeOutcome,
    ProbeState,
    SleepHandler,
    container_hook,
    container_instance,
    container_probes,
    declares_probes_or_hooks,
    hook_failed_message,
    kill_grace_seconds,
    killing_message,
    observe,
    probe_failed_message,
)

log = logging.getLogger(__name__)

# A hook's httpGet/exec gets this long when the grace period does not bound it (postStart).
_POST_START_TIMEOUT_SECONDS = 30.0
# postStart runs only for instances that started after the manager, give or take this much.
_START_SLACK_SECONDS = 5.0


@dataclass(slots=True)
class _Worker:
    """One running container instance's probes and hooks."""

    pod: Pod
    container: Manifest
    instance: str
    probes: tuple[Probe, ...]
    states: dict[ProbeKind, ProbeState] = field(default_factory=dict)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    broken: bool = False  # a probe could not be parsed: never ready, never killed

    @property
    def name(self) -> str:
        return str(self.container.get("name"))

    def verdicts(self) -> ContainerVerdicts:
        if self.broken:
            return ContainerVerdicts(started=False, ready=False)
        kinds = {probe.kind for probe in self.probes}
        started = ProbeKind.STARTUP not in kinds or self.states[ProbeKind.STARTUP].verdict is True
        ready = started and (
            ProbeKind.READINESS not in kinds or self.states[ProbeKind.READINESS].verdict is True
        )
        return ContainerVerdicts(started=started, ready=ready)


class ProbeManager:
    def __init__(
        self,
        *,
        prober: ContainerProber,
        control: ContainerControl | None,
        events: EventRecorder,
        clock: Clock,
        on_change: Callable[[str], None],
    ) -> None:
        """``control`` None: the provider cannot kill containers; a failed liveness probe is
        then reported (event) but nothing restarts."""
        self._prober = prober
        self._control = control
        self._events = events
        self._clock = clock
        self._on_change = on_change
        self._created = clock.now()
        self._workers: dict[str, dict[str, _Worker]] = {}  # pod UID -> container name -> worker

    # -- the controller's side --------------------------------------------------------------
    def watch(self, api_pod: Pod, provider_pod: Pod | None) -> None:
        """Start workers for container instances that run now; stop those that no longer do."""
        uid = api_pod.ref.uid
        current = self._workers.get(uid, {})
        running: dict[str, str] = {}
        if provider_pod is not None and api_pod.deletion_timestamp is None and not api_pod.is_terminal:
            for status in provider_pod.status.get("containerStatuses") or ():
                instance = container_instance(status)
                if instance is not None:
                    running[str(status.get("name"))] = instance
        wanted: dict[str, _Worker] = {}
        for container in api_pod.containers:
            name = str(container.get("name"))
            if name not in running or not declares_probes_or_hooks(container):
                continue
            worker = current.get(name)
            if worker is None or worker.instance != running[name]:
                started_at = _started_at(provider_pod, name)
                worker = self._start(api_pod, container, running[name], started_at=started_at)
            wanted[name] = worker
        for name, worker in current.items():
            if wanted.get(name) is not worker:
                _cancel(worker)
        if wanted:
            self._workers[uid] = wanted
        else:
            self._workers.pop(uid, None)

    def verdicts(self, uid: str) -> Mapping[str, ContainerVerdicts]:
        """The probes' verdicts for the pod's running, probed containers."""
        return {name: worker.verdicts() for name, worker in self._workers.get(uid, {}).items()}

    def forget(self, uid: str) -> None:
        for worker in self._workers.pop(uid, {}).values():
            _cancel(worker)

    async def pre_stop(self, pod: Pod, *, grace_period_seconds: float) -> None:
        """Run the preStop hooks of the pod's running containers (in parallel), each bounded by
        the grace period; stop probing them. Failures are events, never errors."""
        workers = self._workers.pop(pod.ref.uid, {})
        for worker in workers.values():
            _cancel(worker)
        await asyncio.gather(
            *(self._pre_stop(worker, limit_seconds=grace_period_seconds) for worker in workers.values())
        )

    async def close(self) -> None:
        workers = [w for by_name in self._workers.values() for w in by_name.values()]
        self._workers.clear()
        for worker in workers:
            _cancel(worker)
        await asyncio.gather(*(t for w in workers for t in w.tasks), return_exceptions=True)

    # -- workers ----------------------------------------------------------------------------
    def _start(self, pod: Pod, container: Manifest, instance: str, *, started_at: float | None) -> _Worker:
        try:
            probes = container_probes(container)
        except InvalidInput as error:
            worker = _Worker(pod=pod, container=container, instance=instance, probes=(), broken=True)
            self._record(pod, EventType.WARNING, "Unhealthy", f"Probe errored: {error}")
            return worker
        worker = _Worker(pod=pod, container=container, instance=instance, probes=probes)
        worker.states = {probe.kind: ProbeState() for probe in probes}
        since_start = 0.0 if started_at is None else max(0.0, self._clock.now().timestamp() - started_at)
        fresh = started_at is None or started_at >= self._created.timestamp() - _START_SLACK_SECONDS
        worker.tasks.append(asyncio.create_task(self._run(worker, since_start=since_start, post_start=fresh)))
        return worker

    async def _run(self, worker: _Worker, *, since_start: float, post_start: bool) -> None:
        try:
            if post_start and not await self._post_start(worker):
                return
            if not any(p.kind is ProbeKind.STARTUP for p in worker.probes):
                worker.started.set()
            loops = [
                asyncio.create_task(self._probe_loop(worker, probe, since_start=since_start))
                for probe in worker.probes
            ]
            worker.tasks.extend(loops)
            await asyncio.gather(*loops)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must not take the controller down
            log.exception("probe worker of %s/%s failed", worker.pod.ref, worker.name)

    async def _probe_loop(self, worker: _Worker, probe: Probe, *, since_start: float) -> None:
        await self._clock.sleep(max(0.0, probe.initial_delay_seconds - since_start))
        if probe.kind is not ProbeKind.STARTUP:
            await worker.started.wait()
        while True:
            result = await self._prober.run(
                worker.pod.ref, worker.name, probe.handler, timeout_seconds=probe.timeout_seconds
            )
            if result.outcome is not ProbeOutcome.SUCCESS:
                self._record(
                    worker.pod, EventType.WARNING, "Unhealthy", probe_failed_message(probe.kind, result)
                )
            before = worker.verdicts()
            state = observe(worker.states[probe.kind], probe, result)
            worker.states[probe.kind] = state
            if probe.kind is ProbeKind.STARTUP and state.verdict is True:
                worker.started.set()
            if worker.verdicts() != before:
                self._on_change(worker.pod.ref.uid)
            if probe.kind is ProbeKind.STARTUP and state.verdict is True:
                return  # a started container is not startup-probed again
            if probe.kind is not ProbeKind.READINESS and state.verdict is False:
                await self._kill(worker, probe)
                return
            await self._clock.sleep(probe.period_seconds)

    async def _kill(self, worker: _Worker, probe: Probe) -> None:
        grace = kill_grace_seconds(worker.pod, probe)
        if self._control is None:
            self._record(
                worker.pod,
                EventType.WARNING,
                "Unhealthy",
                f"{probe.kind.value} probe failed, but the provider cannot restart containers "
                "(it lacks the kill-container capability)",
            )
            return
        self._record(worker.pod, EventType.NORMAL, "Killing", killing_message(worker.name, probe.kind))
        await self._pre_stop(worker, limit_seconds=grace)
        try:
            await self._control.kill_container(worker.pod.ref, worker.name, grace_period_seconds=grace)
        except DomainError as error:
            self._record(
                worker.pod,
                EventType.WARNING,
                "FailedKillPod",
                f"error killing container {worker.name}: {error}",
            )

    # -- hooks ------------------------------------------------------------------------------
    async def _post_start(self, worker: _Worker) -> bool:
        """True when the container may go on (no hook, or it succeeded)."""
        message = await self._hook(worker, HookKind.POST_START, limit_seconds=_POST_START_TIMEOUT_SECONDS)
        if message is None:
            return True
        if self._control is not None:
            # The kubelet kills a container whose postStart failed; restartPolicy decides the rest.
            grace = kill_grace_seconds(worker.pod, Probe(kind=ProbeKind.LIVENESS, handler=SleepHandler(0)))
            try:
                await self._control.kill_container(worker.pod.ref, worker.name, grace_period_seconds=grace)
            except DomainError as error:
                log.info("killing %s/%s after its postStart failed: %s", worker.pod.ref, worker.name, error)
        return False

    async def _pre_stop(self, worker: _Worker, *, limit_seconds: float) -> None:
        await self._hook(worker, HookKind.PRE_STOP, limit_seconds=limit_seconds)

    async def _hook(self, worker: _Worker, kind: HookKind, *, limit_seconds: float) -> str | None:
        """Run the container's ``kind`` hook; the failure message (also an event), or None."""
        try:
            handler = container_hook(worker.container, kind)
        except InvalidInput as error:
            return self._hook_failed(worker, kind, None, str(error))
        if handler is None:
            return None
        if isinstance(handler, SleepHandler):
            await self._clock.sleep(min(float(handler.seconds), limit_seconds))
            return None
        result = await self._prober.run(
            worker.pod.ref, worker.name, handler, timeout_seconds=max(limit_seconds, 1.0)
        )
        if result.outcome is ProbeOutcome.SUCCESS:
            return None
        return self._hook_failed(worker, kind, handler, result.message)

    def _hook_failed(self, worker: _Worker, kind: HookKind, handler: Handler | None, message: str) -> str:
        text = (
            hook_failed_message(kind, handler, container=worker.name, pod=worker.pod, message=message)
            if handler is not None
            else message
        )
        self._record(worker.pod, EventType.WARNING, kind.failed_reason, text)
        return text

    def _record(self, pod: Pod, type_: EventType, reason: str, message: str) -> None:
        self._events.record(ObjectRef.for_pod(pod.ref), type=type_, reason=reason, message=message)


def _started_at(pod: Pod | None, name: str) -> float | None:
    """When the container's current run started (POSIX seconds), if the provider says."""
    if pod is None:
        return None
    for status in pod.status.get("containerStatuses") or ():
        if status.get("name") == name:
            running = (status.get("state") or {}).get("running") or {}
            started = parse_time(running.get("startedAt"))
            return started.timestamp() if started else None
    return None


def _cancel(worker: _Worker) -> None:
    for task in worker.tasks:
        task.cancel()
