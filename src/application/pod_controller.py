"""The pod controller: keeps the provider's pods in line with the API server's.

Design
------
Everything about one pod happens in one place, :meth:`PodController._sync`, keyed by the pod's
UID and run by a :class:`KeyedWorkQueue` (one sync per UID at a time, ``workers`` UIDs in
parallel, per-UID exponential backoff, never abandoned). Three feeds only *enqueue* UIDs:

- the API watch (``spec.nodeName=<node>``), which keeps ``_api`` current, resumes from its
  last resourceVersion and lists again after a 410;
- the provider's status stream (or, for providers without one, a poll of ``get_pod_status``),
  which keeps ``_provider`` current;
- a periodic full reconcile, which lists the provider, catches anything the feeds missed
  (dangling pods, pods the provider lost) and re-enqueues every pod.

A sync reads both copies, asks the pure :func:`vkubelet.domain.sync.decide` what to do, does
it, then writes the provider's status to the API server if it differs.

Volumes, for a provider with the VOLUMES capability: before a create the pod's volumes are
resolved (ConfigMaps, Secrets, bound service-account tokens) and handed over with
``set_pod_volumes``; a missing mandatory source is a FailedMount event and the sync retries with
backoff, as the kubelet's mounts do. Every ``volume_refresh_period`` each running pod is queued
for a volume check: the contents are resolved again (tokens only when due for refresh) and sent
when they changed. Volumes of the kinds the provider declares native (``native_volume_kinds``)
are left to it. A provider without VOLUMES gets no contents: each other volume is an
UnsupportedVolume warning, once per pod, before its create. Because the decision
looks only at state, a duplicated or lost event cannot leave a pod behind.

Probes and lifecycle hooks, unless the provider runs them itself (capability PROBES): after each
sync the :class:`~vkubelet.application.probes.ProbeManager` learns which container instances run,
and its verdicts are laid over the provider's status before it is written (a container is ready
only when its readiness probe says so). Before a pod is deleted in the provider, its preStop
hooks run within the grace period.

The provider being unreachable (a Transient error) stops nothing and changes nothing in the
API: syncs back off and retry, the reconcile skips its pass, pods are neither deleted nor
recreated until the provider answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from vkubelet.application.environment import EnvironmentResolver
from vkubelet.application.ports.cluster import (
    EventRecorder,
    EventType,
    ObjectRef,
    PodEvent,
    PodGateway,
    WatchEventType,
)
from vkubelet.application.ports.probes import ContainerProber
from vkubelet.application.ports.provider import Provider
from vkubelet.application.ports.runtime import Clock, Metrics, Tracer
from vkubelet.application.probes import ProbeManager
from vkubelet.application.tracing import NullMetrics, NullTracer
from vkubelet.application.volumes import VolumeResolver
from vkubelet.application.waiting import retry_until_done
from vkubelet.application.workqueue import KeyedWorkQueue
from vkubelet.domain.backoff import Backoff
from vkubelet.domain.errors import (
    Conflict,
    DomainError,
    Expired,
    InvalidInput,
    NotFound,
    classify,
    is_error,
)
from vkubelet.domain.pod import Pod, sharing_unchanged
from vkubelet.domain.probes import apply_probe_results
from vkubelet.domain.provider import Capability
from vkubelet.domain.sync import (
    Action,
    config_failure_status,
    decide,
    lost_pod_status,
    provider_failure,
    spec_key,
    specs_equal,
    status_patch,
)
from vkubelet.domain.volumes import dropped_volume_events

log = logging.getLogger(__name__)
T = TypeVar("T")

VOLUME_REFRESH_PERIOD = 2.0  # seconds between checks of running pods' volume contents


@dataclass(frozen=True, slots=True)
class PodControllerSettings:
    node_name: str
    workers: int = 10
    full_resync_period: float = 60.0
    status_poll_interval: float = 5.0
    backoff: Backoff = field(default_factory=lambda: Backoff(base=0.05, cap=60.0))
    watch_retry: Backoff = field(default_factory=lambda: Backoff(base=0.2, cap=10.0))
    # How often running pods' volume contents are checked for changes (edited ConfigMaps and
    # Secrets, tokens due for refresh). Reads are GETs behind the config source's TTL cache.
    volume_refresh_period: float = VOLUME_REFRESH_PERIOD
    # At most this many pods are checked per period (None: all), rotating through them, so the
    # checks of many pods do not eat the client's rate limit that creates and status patches need.
    volume_refresh_batch: int | None = None


class _RetryLater(Exception):
    """The sync did what it could; back off and run again (the reason was already reported)."""


class PodController:
    def __init__(
        self,
        *,
        pods: PodGateway,
        provider: Provider,
        environment: EnvironmentResolver,
        events: EventRecorder,
        clock: Clock,
        settings: PodControllerSettings,
        tracer: Tracer | None = None,
        metrics: Metrics | None = None,
        volumes: VolumeResolver | None = None,
        prober: ContainerProber | None = None,
        sync_gate: asyncio.Event | None = None,
    ) -> None:
        """``sync_gate`` (``--leader-elect``): the sync workers, the only code that writes to
        the provider or the pod API, start once it is set, after a fresh reconcile; the feeds run
        from the start, so a standby replica's caches are warm when it takes over."""
        self._sync_gate = sync_gate
        self._pods = pods
        self._provider = provider
        self._environment = environment
        # Only a provider that takes volume contents gets them resolved.
        self._volumes = volumes if Capability.VOLUMES in provider.capabilities() else None
        self._events = events
        self._clock = clock
        self._settings = settings
        self._tracer = tracer or NullTracer()
        self._metrics = metrics or NullMetrics()
        self._capabilities = provider.capabilities()
        self._native_volume_kinds = provider.native_volume_kinds()
        self._dropped_warned: set[str] = set()  # pods told their volumes are not mounted
        # Per-UID state. _api/_provider hold the latest copy from each side.
        self._api: dict[str, Pod] = {}
        self._provider_pods: dict[str, Pod] = {}
        self._provider_seen: dict[str, float] = {}  # monotonic time of the last provider news
        self._applied: dict[str, str] = {}  # spec_key last created/updated in the provider
        self._deleted_in_provider: set[str] = set()
        self._volume_digests: dict[str, str] = {}  # digest of the volumes the provider has
        self._volumes_due: set[str] = set()  # running pods whose volumes are to be checked
        self._queue: KeyedWorkQueue[str] = KeyedWorkQueue(
            clock=clock,
            handler=self._sync,
            workers=settings.workers,
            backoff=settings.backoff,
            name="pods",
            on_error=self._log_sync_error,
        )
        # Probes and hooks run here unless the provider runs them itself (capability PROBES).
        self._probes = (
            ProbeManager(
                prober=prober,
                control=provider if Capability.KILL_CONTAINER in self._capabilities else None,
                events=events,
                clock=clock,
                on_change=self._queue.add,
            )
            if prober is not None and Capability.PROBES not in self._capabilities
            else None
        )
        self.ready = asyncio.Event()

    # -- views ------------------------------------------------------------------------------
    def node_pods(self) -> Sequence[Pod]:
        """The API server's pods bound to this node, as last seen (for the kubelet /pods route)."""
        return list(self._api.values())

    @property
    def queue(self) -> KeyedWorkQueue[str]:
        return self._queue

    # -- lifecycle --------------------------------------------------------------------------
    async def run(self) -> None:
        """Sync until cancelled. ``ready`` is set once the first list has been enqueued."""
        resource_version = await self._relist()
        await self._adopt_provider_pods()
        tasks = [
            asyncio.create_task(self._run_workers(), name="pod-queue"),
            asyncio.create_task(self._watch(resource_version), name="pod-watch"),
            asyncio.create_task(self._follow_provider(), name="provider-status"),
            asyncio.create_task(self._reconcile_periodically(), name="pod-reconcile"),
        ]
        if self._volumes is not None:
            tasks.append(asyncio.create_task(self._refresh_volumes_periodically(), name="pod-volumes"))
        self.ready.set()
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # a crashed feed is a bug: surface it
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._probes is not None:
                await self._probes.close()

    async def _run_workers(self) -> None:
        if self._sync_gate is not None:
            await self._sync_gate.wait()
            # What the provider runs now, not what its stream said while nobody acted on it.
            await self.reconcile()
        await self._queue.run()

    # -- API feed ---------------------------------------------------------------------------
    async def _relist(self) -> str:
        """List the node's pods (retrying transient errors) and enqueue what changed."""
        pods, resource_version = await self._retrying("listing pods", self._pods.list_node_pods)
        listed = {pod.ref.uid: pod for pod in pods}
        for uid in set(self._api) - set(listed):  # deleted while we were not watching
            del self._api[uid]
            self._queue.add(uid)
        for uid, pod in listed.items():
            self._api[uid] = sharing_unchanged(pod, self._api.get(uid))
            self._queue.add(uid)
        return resource_version

    async def _retrying(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt`` until it succeeds; domain errors are retried with the watch back-off."""
        return await retry_until_done(
            attempt,
            clock=self._clock,
            backoff=self._settings.watch_retry,
            what=what,
            retryable=lambda error: isinstance(error, DomainError),
            log=log,
        )

    async def _watch(self, resource_version: str) -> None:
        failures = 0
        while True:
            try:
                async for event in self._pods.watch_node_pods(resource_version):
                    failures = 0
                    resource_version = event.pod.resource_version or resource_version
                    self._on_api_event(event)
            except Expired:
                log.info("watch resourceVersion %s expired; listing again", resource_version)
                resource_version = await self._relist()
                continue
            except DomainError as error:
                failures += 1
                log.warning("pod watch failed (attempt %d): %s", failures, error)
                await self._clock.sleep(self._settings.watch_retry.delay(failures))
                continue
            # The server ended the watch (its timeout): resume from where we are.

    def _on_api_event(self, event: PodEvent) -> None:
        uid = event.pod.ref.uid
        if event.type is WatchEventType.DELETED:
            self._api.pop(uid, None)
        else:
            previous = self._api.get(uid)
            if previous is not None and previous.resource_version == event.pod.resource_version:
                return
            # The spec is kept once, not once per status change.
            self._api[uid] = sharing_unchanged(event.pod, previous)
        self._queue.add(uid)

    # -- provider feed ----------------------------------------------------------------------
    async def _adopt_provider_pods(self) -> None:
        """Learn what the provider already runs (a restart must not create pods twice)."""
        pods = await self._retrying("listing provider pods", self._provider.list_pods)
        now = self._clock.monotonic()
        for pod in pods:
            uid = pod.ref.uid
            self._provider_pods[uid] = pod
            self._provider_seen[uid] = now
            # No applied spec is recorded: the first sync resolves the API pod and compares it
            # with this copy, so a spec changed while we were down still reaches the provider,
            # and an unchanged one costs no provider call.
            self._queue.add(uid)  # dangling pods (not in the API) get deleted by the sync

    def _on_provider_pod(self, pod: Pod) -> None:
        uid = pod.ref.uid
        if uid not in self._api and uid not in self._provider_pods:
            log.warning("provider reported a status for unknown pod %s; ignoring it", pod.ref)
            return
        self._provider_pods[uid] = pod
        self._provider_seen[uid] = self._clock.monotonic()
        self._queue.add(uid)

    async def _follow_provider(self) -> None:
        if Capability.POD_STATUS_STREAM in self._capabilities:
            await self._stream_statuses()
        else:
            await self._poll_statuses()

    async def _stream_statuses(self) -> None:
        failures = 0
        while True:
            try:
                async for pod in self._provider.pod_status_updates():
                    failures = 0
                    self._on_provider_pod(pod)
            except DomainError as error:
                log.warning("provider status stream broke: %s", error)
            failures += 1
            await self._clock.sleep(self._settings.watch_retry.delay(failures))
            # Changes made while we were not subscribed are not replayed: list them.
            await self.reconcile()

    async def _poll_statuses(self) -> None:
        limit = asyncio.Semaphore(self._settings.workers)

        async def poll(uid: str, pod: Pod) -> None:
            async with limit:
                try:
                    status = await self._provider.get_pod_status(pod.ref)
                except NotFound:
                    if self._provider_pods.pop(uid, None) is not None:
                        self._queue.add(uid)
                    return
                except InvalidInput as error:
                    # A garbled reply is the provider's bug, not an outage: make it visible.
                    log.warning("provider returned an invalid status for pod %s: %s", pod.ref, error)
                    self._record(pod, EventType.WARNING, "ProviderStatusInvalid", str(error))
                    return
                except DomainError as error:
                    log.debug("status poll of %s failed: %s", pod.ref, error)
                    return
                known = self._provider_pods.get(uid)
                if known is None or known.status != status:
                    self._on_provider_pod(_with_status(known or pod, status))

        while True:
            await self._clock.sleep(self._settings.status_poll_interval)
            targets = [
                (uid, pod)
                for uid, pod in self._api.items()
                if uid in self._provider_pods and not pod.is_terminal
            ]
            await asyncio.gather(*(poll(uid, pod) for uid, pod in targets))

    async def _reconcile_periodically(self) -> None:
        while True:
            await self._clock.sleep(self._settings.full_resync_period)
            await self.reconcile()

    async def _refresh_volumes_periodically(self) -> None:
        waiting: list[str] = []  # this rotation's pods not checked yet
        batch = self._settings.volume_refresh_batch
        while True:
            await self._clock.sleep(self._settings.volume_refresh_period)
            if not waiting:
                waiting = list(self._volume_digests)
            due, waiting = (waiting, []) if batch is None else (waiting[:batch], waiting[batch:])
            for uid in due:
                if uid in self._volume_digests:
                    self._volumes_due.add(uid)
                    self._queue.add(uid)

    async def reconcile(self) -> None:
        """Compare the provider's pod list with what we know and re-enqueue every pod."""
        started = self._clock.monotonic()
        try:
            listed = {pod.ref.uid: pod for pod in await self._provider.list_pods()}
        except DomainError as error:
            log.warning("full reconcile skipped: listing provider pods failed: %s", error)
            return
        for uid, pod in listed.items():
            # Take the listed copy unless the provider told us something newer meanwhile: a
            # status change missed while the status stream was down is picked up here.
            if uid not in self._provider_pods or self._provider_seen.get(uid, started) < started:
                self._provider_pods[uid] = pod
                self._provider_seen[uid] = started
        for uid in list(self._provider_pods):
            # Only forget pods the provider had time to report: one created during the list
            # call is not in the list but is not lost either.
            if uid not in listed and self._provider_seen.get(uid, started) < started:
                del self._provider_pods[uid]
        for uid in set(self._api) | set(self._provider_pods):
            self._queue.add(uid)

    # -- the sync ---------------------------------------------------------------------------
    async def _sync(self, uid: str) -> float | None:
        started = self._clock.monotonic()
        outcome = "ok"
        try:
            return await self._sync_traced(uid)
        except _RetryLater:
            outcome = "retry"  # already reported; the queue backs off and runs it again
            raise
        except BaseException as error:
            outcome = type(error).__name__
            raise
        finally:
            self._metrics.observe_sync(outcome=outcome, seconds=self._clock.monotonic() - started)
            self._metrics.set_queue_depth(len(self._queue))

    async def _sync_traced(self, uid: str) -> float | None:
        api_pod = self._api.get(uid)
        provider_pod = self._provider_pods.get(uid)
        decision = decide(
            api_pod=api_pod,
            provider_pod=provider_pod,
            applied_spec_key=self._applied.get(uid),
            deleted_in_provider=uid in self._deleted_in_provider,
            now=self._clock.now(),
        )
        pod = api_pod or provider_pod
        attributes = {
            "node.name": self._settings.node_name,
            "pod.uid": uid,
            "sync.action": decision.action.value,
        }
        if pod is not None:
            attributes.update({"pod.namespace": pod.ref.namespace, "pod.name": pod.ref.name})
        with self._tracer.span("PodController.sync", attributes):
            handler = self._handlers[decision.action]
            await handler(self, api_pod, provider_pod)
            if uid in self._volumes_due:
                await self._refresh_volumes(uid)
            if self._probes is not None and uid in self._api:
                self._probes.watch(self._api[uid], self._provider_pods.get(uid))
            await self._write_status(uid)
        if api_pod is None and decision.action is Action.NOTHING:
            self._forget(uid)
        return decision.recheck_after

    def _forget(self, uid: str) -> None:
        if self._probes is not None:
            self._probes.forget(uid)
        self._volume_digests.pop(uid, None)
        self._volumes_due.discard(uid)
        self._dropped_warned.discard(uid)
        if self._volumes is not None:
            self._volumes.forget(uid)
        self._provider_pods.pop(uid, None)
        self._provider_seen.pop(uid, None)
        self._applied.pop(uid, None)
        self._deleted_in_provider.discard(uid)

    async def _nothing(self, api_pod: Pod | None, provider_pod: Pod | None) -> None:
        return None

    async def _create(self, api_pod: Pod | None, provider_pod: Pod | None) -> None:
        assert api_pod is not None
        # Read past the config cache, as the kubelet does for a pod it registers: a pod created
        # just after its configmap changed must not start with the old data.
        resolved = await self._resolve(api_pod, fresh=True)
        # A (re)create always sends the volumes: a provider that lost the pod lost them too.
        self._volume_digests.pop(api_pod.ref.uid, None)
        if not await self._hand_volumes(api_pod, fresh=True):
            return
        try:
            with self._tracer.span("Provider.create_pod", self._pod_attributes(api_pod)):
                await self._provider.create_pod(resolved)
        except Exception as error:
            await self._provider_call_failed(api_pod, error, reason="ProviderCreateFailed")
            return
        self._record(
            api_pod, EventType.NORMAL, "ProviderCreateSuccess", "Create pod in provider successfully"
        )
        self._applied[api_pod.ref.uid] = spec_key(api_pod)
        # Until the provider reports a status, its copy is what we gave it.
        self._provider_pods.setdefault(api_pod.ref.uid, resolved)
        self._provider_seen[api_pod.ref.uid] = self._clock.monotonic()

    async def _check_update(self, api_pod: Pod | None, provider_pod: Pod | None) -> None:
        assert api_pod is not None and provider_pod is not None
        resolved = await self._resolve(api_pod)
        if not specs_equal(resolved, provider_pod):
            try:
                with self._tracer.span("Provider.update_pod", self._pod_attributes(api_pod)):
                    await self._provider.update_pod(resolved)
            except Exception as error:
                await self._provider_call_failed(api_pod, error, reason="ProviderUpdateFailed")
                return
            self._record(
                api_pod, EventType.NORMAL, "ProviderUpdateSuccess", "Update pod in provider successfully"
            )
        self._applied[api_pod.ref.uid] = spec_key(api_pod)

    async def _delete_in_provider(self, api_pod: Pod | None, provider_pod: Pod | None) -> None:
        pod = provider_pod or api_pod
        assert pod is not None
        if self._probes is not None and api_pod is not None:
            await self._probes.pre_stop(api_pod, grace_period_seconds=_grace_seconds(api_pod))
        try:
            with self._tracer.span("Provider.delete_pod", self._pod_attributes(pod)):
                await self._provider.delete_pod(pod)
        except Exception as error:
            if not is_error(error, NotFound):
                if api_pod is not None:
                    self._record(api_pod, EventType.WARNING, "ProviderDeleteFailed", str(error))
                raise
        else:
            if api_pod is not None:
                self._record(
                    api_pod, EventType.NORMAL, "ProviderDeleteSuccess", "Delete pod in provider successfully"
                )
        uid = pod.ref.uid
        self._deleted_in_provider.add(uid)
        if Capability.POD_STATUS_STREAM not in self._capabilities:
            # Nobody will report the end of this pod: say it ourselves, as upstream's poller did.
            self._provider_pods.pop(uid, None)
        if api_pod is None:
            self._forget(uid)
        else:
            self._queue.add(uid)  # the API object may go as soon as the containers stopped

    async def _delete_in_api(self, api_pod: Pod | None, provider_pod: Pod | None) -> None:
        assert api_pod is not None
        try:
            with self._tracer.span("PodGateway.delete_pod", self._pod_attributes(api_pod)):
                await self._pods.delete_pod(api_pod.ref, grace_period_seconds=0)
        except NotFound:
            pass
        except Conflict:
            log.info("pod %s was recreated under the same name; leaving the new one alone", api_pod.ref)
        self._api.pop(api_pod.ref.uid, None)

    async def _wait(self, api_pod: Pod | None, provider_pod: Pod | None) -> None:
        return None

    async def _mark_lost(self, api_pod: Pod | None, provider_pod: Pod | None) -> None:
        assert api_pod is not None
        self._record(
            api_pod,
            EventType.WARNING,
            "ProviderPodLost",
            "The provider no longer has this pod; marking it Failed",
        )
        await self._patch_status(api_pod, lost_pod_status(api_pod, now=self._clock.now()))

    _handlers: Mapping[Action, Callable[[PodController, Pod | None, Pod | None], Awaitable[None]]] = {
        Action.NOTHING: _nothing,
        Action.CREATE: _create,
        Action.CHECK_UPDATE: _check_update,
        Action.DELETE_IN_PROVIDER: _delete_in_provider,
        Action.DELETE_IN_API: _delete_in_api,
        Action.WAIT_FOR_TERMINATION: _wait,
        Action.MARK_LOST: _mark_lost,
    }

    # -- helpers ----------------------------------------------------------------------------
    async def _resolve(self, api_pod: Pod, *, fresh: bool = False) -> Pod:
        """Resolve env/downward API; a missing mandatory reference shows on the pod and retries."""
        outcome = await self._environment.resolve(api_pod, fresh=fresh)
        for event in outcome.events:
            self._record(api_pod, EventType(event.type), event.reason, event.message)
        if outcome.failure is not None:
            self._record(api_pod, EventType.WARNING, outcome.failure.reason, outcome.failure.message)
            await self._patch_status(
                api_pod,
                config_failure_status(
                    api_pod, reason=outcome.failure.reason, message=outcome.failure.message
                ),
            )
            raise _RetryLater(outcome.failure.message)
        assert outcome.pod is not None
        return outcome.pod

    async def _hand_volumes(self, api_pod: Pod, *, fresh: bool = False) -> bool:
        """Resolve the pod's volumes and send them when they changed (always before a create).
        A missing mandatory source is a FailedMount event, and the sync retries later. False
        when the provider refused them for good (the pod is then marked failed)."""
        if self._volumes is None:
            # Once per pod, not on every create retry.
            if Capability.VOLUMES not in self._capabilities and api_pod.ref.uid not in self._dropped_warned:
                self._dropped_warned.add(api_pod.ref.uid)
                for event in dropped_volume_events(api_pod, native_kinds=self._native_volume_kinds):
                    self._record(api_pod, EventType(event.type), event.reason, event.message)
            return True
        outcome = await self._volumes.resolve(api_pod, native_kinds=self._native_volume_kinds, fresh=fresh)
        if outcome.failure is not None:
            for event in outcome.events:
                self._record(api_pod, EventType(event.type), event.reason, event.message)
            self._record(api_pod, EventType.WARNING, outcome.failure.reason, outcome.failure.message)
            raise _RetryLater(outcome.failure.message)
        assert outcome.volumes is not None
        uid, digest = api_pod.ref.uid, outcome.volumes.digest()
        if self._volume_digests.get(uid) == digest:
            return True  # unchanged: its warnings were recorded when these contents were sent
        for event in outcome.events:
            self._record(api_pod, EventType(event.type), event.reason, event.message)
        try:
            with self._tracer.span("Provider.set_pod_volumes", self._pod_attributes(api_pod)):
                await self._provider.set_pod_volumes(api_pod.ref, outcome.volumes)
        except Exception as error:
            await self._provider_call_failed(api_pod, error, reason="ProviderVolumesFailed")
            return False  # (a retryable error raised _RetryLater above)
        self._volume_digests[uid] = digest
        return True

    async def _refresh_volumes(self, uid: str) -> None:
        """The periodic check of a running pod's volumes (not of one being created or deleted)."""
        self._volumes_due.discard(uid)
        api_pod = self._api.get(uid)
        if api_pod is None or api_pod.deletion_timestamp is not None or uid in self._deleted_in_provider:
            return
        if uid not in self._provider_pods or uid not in self._volume_digests:
            return
        # A failure was reported as an event; the provider keeps the old contents until the next check.
        with contextlib.suppress(_RetryLater):
            await self._hand_volumes(api_pod)

    async def _provider_call_failed(self, api_pod: Pod, error: Exception, *, reason: str) -> None:
        kind = classify(error)
        domain_error = error if isinstance(error, DomainError) else (kind(str(error)) if kind else None)
        self._record(api_pod, EventType.WARNING, reason, str(error))
        policy = provider_failure(api_pod, domain_error, message=str(error))
        await self._patch_status(api_pod, policy.status)
        if policy.retry:
            raise _RetryLater(str(error)) from error
        # Failed for good: remember the spec so only a new spec tries again.
        self._applied[api_pod.ref.uid] = spec_key(api_pod)

    async def _write_status(self, uid: str) -> None:
        api_pod = self._api.get(uid)
        provider_pod = self._provider_pods.get(uid)
        if api_pod is None or provider_pod is None or not provider_pod.status:
            return
        status = provider_pod.status
        if self._probes is not None:
            status = apply_probe_results(api_pod, status, self._probes.verdicts(uid), now=self._clock.now())
        patch = status_patch(api_pod, status)
        if patch is not None:
            await self._patch_status(api_pod, patch)

    async def _patch_status(self, api_pod: Pod, status: Mapping[str, Any]) -> None:
        try:
            with self._tracer.span("PodGateway.patch_pod_status", self._pod_attributes(api_pod)):
                updated = await self._pods.patch_pod_status(api_pod.ref, status)
        except (NotFound, Conflict):
            return  # deleted or replaced meanwhile; the watch will tell us
        current = self._api.get(api_pod.ref.uid)
        if current is not None and _newer(updated, current):
            self._api[api_pod.ref.uid] = sharing_unchanged(updated, current)

    def _pod_attributes(self, pod: Pod) -> dict[str, str | int | float | bool]:
        return {
            "node.name": self._settings.node_name,
            "pod.namespace": pod.ref.namespace,
            "pod.name": pod.ref.name,
            "pod.uid": pod.ref.uid,
        }

    def _record(self, pod: Pod, type_: EventType, reason: str, message: str) -> None:
        self._events.record(ObjectRef.for_pod(pod.ref), type=type_, reason=reason, message=message)

    def _log_sync_error(self, uid: str, error: BaseException, attempt: int) -> None:
        pod = self._api.get(uid) or self._provider_pods.get(uid)
        name = str(pod.ref) if pod else uid
        level = logging.INFO if isinstance(error, _RetryLater) else logging.WARNING
        log.log(level, "sync of pod %s failed (attempt %d), retrying with backoff: %s", name, attempt, error)


def _with_status(pod: Pod, status: Mapping[str, Any]) -> Pod:
    manifest = dict(pod.manifest)
    manifest["status"] = dict(status)
    return Pod(pod.ref, manifest)


def _grace_seconds(pod: Pod) -> int:
    """How long the pod's containers get to stop: the deletion's grace period, else the spec's."""
    if pod.deletion_grace_period_seconds is not None:
        return pod.deletion_grace_period_seconds
    value = pod.spec.get("terminationGracePeriodSeconds")
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 30


def _newer(candidate: Pod, current: Pod) -> bool:
    try:
        return int(candidate.resource_version) >= int(current.resource_version)
    except ValueError:
        return True
