"""The node controller: registers the Node, keeps its status and its Lease current.

Design
------
:meth:`NodeController.register` builds the Node from the provider's template and creates it, or
adopts an existing one (its labels, taints and providerID are brought in line, conditions and
annotations added by others are kept). It does not give up when the provider's first ping fails
(upstream's bug 14): the node registers with Ready False and a reason, and transient API errors
are retried with a cancellable backoff until the caller's startup timeout.

:meth:`NodeController.run` then runs independent loops, so that none can stall another:

* **ping**: every ``ping_interval`` the provider is pinged, raced against ``ping_timeout`` on
  the Clock. There is never more than one ping in flight: a ping that outlives its timeout is
  cancelled, and if the provider ignores that, later ticks wait on the same call instead of
  piling up new ones. A change of the Ready state wakes the status loop at once.
* **status**: every ``status_interval``, or when woken, the status subresource is patched
  (strategic merge, only what vkubelet owns, see :mod:`vkubelet.domain.node`). If the node has
  been deleted the patch fails with NotFound and the node is recreated from the full manifest
  (upstream's CLI never did, bug 15). Failed patches are retried after a short backoff. When the
  template's labels, annotations or taints changed, the node's metadata and spec are brought in
  line too (:func:`~vkubelet.domain.node.adoption_patch`: others' taints and labels are kept).
* **node status stream**, only for a provider with the NODE_STATUS_STREAM capability: every
  template the provider pushes goes through :meth:`NodeController.update_template`, which wakes
  the status loop, so capacity, conditions, addresses and taints reach the Node within one patch.
  Each subscription (the first one and every one after a break) also reads ``node_template()``
  again, because the stream does not replay what changed while nobody listened; a template the
  stream sends while that read is in flight wins over the read's answer (it is at least as new).
  When the stream ends or fails it is opened again after a backoff (reset once a subscription
  delivered something or stayed up longer than the backoff's cap). It never stops the
  controller: every error is logged and retried.
* **lease**: every ``renew_interval`` (10 s) the Lease in ``kube-node-lease`` is renewed
  (optimistic update; on Conflict re-read and retry; on other errors one cancellable backoff
  sleep per attempt, never two, bug 16). Its ownerReference follows the node's latest UID, so
  after a recreate the garbage collector ties the Lease to the new node.

Why the lease does not depend on the ping: the Lease means "the kubelet process is alive and
talking to the API server"; provider health is in the Ready condition. Upstream stopped renewing
when a ping failed, so a provider blip of a few seconds made the node lifecycle controller mark
the node Unknown and, after the toleration period, evict its pods. Here a sick provider makes
the node NotReady with a reason (the node lifecycle controller then taints it ``not-ready``),
while a dead vkubelet still lapses its lease as before.

Every wait goes through the Clock port, so the loops run at fake speed in tests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from vkubelet import __version__
from vkubelet.application.ports.cluster import (
    EventRecorder,
    EventType,
    Lease,
    LeaseGateway,
    NodeGateway,
    ObjectRef,
)
from vkubelet.application.ports.provider import NodeProvider
from vkubelet.application.ports.runtime import Clock, Tracer
from vkubelet.application.tracing import NullTracer
from vkubelet.application.waiting import call_with_timeout, consume_outcome, finish_within, retry_until_done
from vkubelet.domain.backoff import Backoff
from vkubelet.domain.errors import Conflict, InvalidInput, NotFound, Transient, classify
from vkubelet.domain.lease import LeaseTiming, is_expired, lease_backoff, next_renewal
from vkubelet.domain.node import (
    REASON_SHUTTING_DOWN,
    PingResult,
    ReadyState,
    adoption_patch,
    build_node,
    conditions_of,
    kubelet_version,
    node_uid,
    ready_state,
    status_patch,
)
from vkubelet.domain.provider import Capability, NodeTemplate, Taint

log = logging.getLogger(__name__)

T = TypeVar("T")

# How many read-and-update rounds one renewal makes after Conflicts before the loop backs off.
_LEASE_CONFLICT_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class NodeControllerSettings:
    """The node's identity and the controller's timing (all durations in seconds)."""

    name: str
    provider: str
    kubelet_port: int = 10250
    taint: Taint | None = None
    internal_ip: str | None = None
    kubelet_version: str = kubelet_version(__version__)
    lease: LeaseTiming = field(default_factory=LeaseTiming)
    status_interval: float = 60.0
    ping_interval: float = 10.0
    ping_timeout: float = 5.0
    # Bound on any one API call made by the loops (a hung request must not stall a loop).
    api_timeout: float = 10.0
    # Retry policy for registration and failed status patches.
    retry: Backoff = field(default_factory=lambda: Backoff(base=0.2, cap=10.0))

    def __post_init__(self) -> None:
        if not self.name:
            raise InvalidInput("the node needs a name")
        for name in ("status_interval", "ping_interval", "ping_timeout", "api_timeout"):
            if getattr(self, name) <= 0:
                raise InvalidInput(f"{name} must be positive, not {getattr(self, name)}")
        if not 0 < self.kubelet_port < 65536:
            raise InvalidInput(f"kubelet port {self.kubelet_port} is not a TCP port")

    @property
    def ping_stale_after(self) -> float:
        """A ping result older than this means the next ping is hanging (see ready_state).

        With at most one ping per interval and every ping bounded by its timeout, a fresh result
        always arrives within ``ping_interval + ping_timeout``; the second timeout is slack.
        """
        return self.ping_interval + 2 * self.ping_timeout


class NodeController:
    """One node's registration and liveness; see the module docstring for the design.

    Use: ``await register()`` (bounded by the caller), then ``run()`` until ``stop()`` or
    cancellation; ``mark_not_ready()`` at shutdown. ``ready`` is set once registered.
    """

    def __init__(
        self,
        *,
        nodes: NodeGateway,
        leases: LeaseGateway,
        provider: NodeProvider,
        clock: Clock,
        settings: NodeControllerSettings,
        events: EventRecorder | None = None,
        tracer: Tracer | None = None,
        lease_jitter: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self._nodes = nodes
        # Draws from [0, 1) that stretch each lease interval a little (random.random in the
        # daemon: nodes started together drift apart); none by default, so tests keep exact times.
        self._lease_jitter = lease_jitter
        self._leases = leases
        self._provider = provider
        self._clock = clock
        self._settings = settings
        self._events = events
        self._tracer = tracer or NullTracer()

        self._template: NodeTemplate | None = None
        self._node: Mapping[str, Any] | None = None  # the server's copy, as last returned
        self._uid = ""
        self._last_ping: PingResult | None = None
        self._ping_call: asyncio.Future[None] | None = None  # the one provider ping in flight
        self._reported: ReadyState | None = None  # the Ready state the server last accepted
        self._shutdown_state: ReadyState | None = None  # set by mark_not_ready; overrides pings
        self._lease: Lease | None = None
        self._lease_renewed_at: datetime | None = None
        self._status_wakeup = asyncio.Event()
        # Set when the template's labels, annotations or taints changed and the node's metadata
        # and spec have not been patched since (the status patch cannot carry them).
        self._spec_stale = False
        self._streamed_templates = 0  # templates received from the node status stream
        self._tasks: list[asyncio.Task[None]] = []
        # Set once register() has created or adopted the node.
        self.ready = asyncio.Event()

    # -- views --------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._settings.name

    @property
    def node_uid(self) -> str:
        """The UID of the node as last seen (changes when the node is recreated)."""
        return self._uid

    @property
    def last_ping(self) -> PingResult | None:
        return self._last_ping

    def ready_state(self) -> ReadyState:
        """What the Ready condition should say now."""
        if self._shutdown_state is not None:
            return self._shutdown_state
        return ready_state(
            self._last_ping,
            now_monotonic=self._clock.monotonic(),
            stale_after=self._settings.ping_stale_after,
        )

    # -- registration -------------------------------------------------------------------------
    async def register(self) -> str:
        """Create or adopt the node and return its UID; retries until it succeeds.

        Raises only for errors retrying cannot fix (InvalidInput, Permanent, NotSupported) and
        CancelledError: bound the startup time by cancelling (e.g. ``asyncio.wait_for``).
        """
        with self._tracer.span("NodeController.register", {"node.name": self.name}):
            self._template = await self._retrying("fetching the node template", self._fetch_template)
            await self._ping_once()
            node = await self._retrying("registering the node", self._register_once)
            self.ready.set()
            log.info("node %s registered (uid %s), %s", self.name, self._uid, _describe(self.ready_state()))
            return node_uid(node)

    async def _fetch_template(self) -> NodeTemplate:
        return await call_with_timeout(
            self._clock, self._provider.node_template(), seconds=self._settings.api_timeout
        )

    async def _retrying(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        return await retry_until_done(
            attempt,
            clock=self._clock,
            backoff=self._settings.retry,
            what=what,
            retryable=_retryable,
            log=log,
        )

    async def _register_once(self) -> Mapping[str, Any]:
        # After a long API outage the first ping result is stale; do not register as NotReady
        # because of our own retries.
        if (
            self._last_ping is None
            or self._clock.monotonic() - self._last_ping.at > self._settings.ping_interval
        ):
            await self._ping_once()
        return await self._ensure_node()

    async def _ensure_node(self) -> Mapping[str, Any]:
        """One attempt at create-or-adopt. Conflict (created meanwhile) and NotFound (deleted
        meanwhile) are left to the caller's retry, which then takes the other path."""
        state = self.ready_state()
        try:
            existing = await self._api(self._nodes.get_node(self.name))
        except NotFound:
            node = await self._api(self._nodes.create_node(self._desired_node(state, previous=None)))
            log.info("created node %s", self.name)
        else:
            node = await self._adopt(existing, state)
        self._remember(node, state)
        return node

    async def _adopt(self, existing: Mapping[str, Any], state: ReadyState) -> Mapping[str, Any]:
        desired = self._desired_node(state, previous=existing)
        patch = adoption_patch(existing, desired)
        if patch is not None:
            log.info("node %s exists; updating its labels/taints: %s", self.name, patch)
            existing = await self._api(self._nodes.patch_node(self.name, patch))
        previous = conditions_of(existing)
        return await self._api(self._nodes.patch_node_status(self.name, status_patch(previous, desired)))

    def _desired_node(self, state: ReadyState, *, previous: Mapping[str, Any] | None) -> dict[str, Any]:
        assert self._template is not None, "register() fetches the template first"
        s = self._settings
        return build_node(
            self._template,
            name=s.name,
            provider=s.provider,
            kubelet_port=s.kubelet_port,
            taint=s.taint,
            kubelet_version=s.kubelet_version,
            internal_ip=s.internal_ip,
            ready=state,
            now=self._clock.now(),
            previous_conditions=conditions_of(previous) if previous is not None else (),
        )

    def _remember(self, node: Mapping[str, Any], state: ReadyState) -> None:
        uid = node_uid(node)
        if self._uid and uid and uid != self._uid:
            log.warning("node %s has a new uid %s (was %s)", self.name, uid, self._uid)
        self._node = node
        self._uid = uid or self._uid
        previous, self._reported = self._reported, state
        if previous is not None and (previous.ready, previous.reason) != (state.ready, state.reason):
            self._record_event(
                EventType.NORMAL if state.ready else EventType.WARNING,
                "NodeReady" if state.ready else "NodeNotReady",
                f"Node {self.name} status is now: {_describe(state)}",
            )

    def update_template(self, template: NodeTemplate) -> None:
        """Take a new template from the provider (capacity, conditions, addresses, labels,
        taints) and patch the node soon. Does not block; a template equal to the current one
        changes nothing."""
        previous = self._template
        if template == previous:
            return
        self._template = template
        if previous is None or _spec_fields(previous) != _spec_fields(template):
            self._spec_stale = True
        log.info("node %s: the provider's node template changed", self.name)
        self._status_wakeup.set()

    # -- running ------------------------------------------------------------------------------
    async def run(self) -> None:
        """Keep the node alive until :meth:`stop` or cancellation; registers first if needed."""
        if not self.ready.is_set():
            await self.register()
        self._tasks = [
            asyncio.create_task(self._ping_loop(), name=f"node-ping:{self.name}"),
            asyncio.create_task(self._status_loop(), name=f"node-status:{self.name}"),
            asyncio.create_task(self._lease_loop(), name=f"node-lease:{self.name}"),
        ]
        if Capability.NODE_STATUS_STREAM in self._provider.capabilities():
            self._tasks.append(
                asyncio.create_task(self._node_status_loop(), name=f"node-status-stream:{self.name}")
            )
        try:
            done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if not task.cancelled():
                    task.result()  # a loop that crashed is a bug: surface it
        finally:
            await self._cancel_tasks()

    async def stop(self) -> None:
        """Stop the loops (run() returns). Idempotent."""
        await self._cancel_tasks()

    async def _cancel_tasks(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._ping_call is not None and not self._ping_call.done():
            self._ping_call.cancel()

    # -- ping ---------------------------------------------------------------------------------
    async def _ping_loop(self) -> None:
        while True:
            await self._clock.sleep(self._settings.ping_interval)
            await self._ping_once()

    async def _ping_once(self) -> PingResult:
        """Ping the provider (or keep waiting on the ping still in flight), bounded by the
        timeout, and record the result."""
        with self._tracer.span("NodeController.ping", {"node.name": self.name}) as span:
            call = self._ping_call
            if call is None or call.done():
                call = self._ping_call = asyncio.ensure_future(self._provider.ping())
                call.add_done_callback(consume_outcome)
            timeout = self._settings.ping_timeout
            finished = await finish_within(self._clock, call, seconds=timeout)
            now = self._clock.monotonic()
            if not finished:
                # Ask the call to stop; a provider that ignores this keeps it in flight, and the
                # next tick waits on it rather than starting a second one.
                call.cancel()
                result = PingResult.timed_out(at=now, timeout=timeout)
            elif call.cancelled():
                result = PingResult.failed(at=now, error=Transient("the ping was cancelled"))
            elif (error := call.exception()) is not None:
                result = PingResult.failed(at=now, error=error)
                span.record_error(error)
            else:
                result = PingResult.succeeded(at=now)
            if not result.ok:
                span.set_attribute("ping.outcome", result.outcome.value)
            self._record_ping(result)
            return result

    def _record_ping(self, result: PingResult) -> None:
        before = self.ready_state()
        self._last_ping = result
        after = self.ready_state()
        if (before.ready, before.reason) != (after.ready, after.reason):
            log.info("node %s: %s", self.name, _describe(after))
        reported = self._reported
        if reported is not None and (reported.ready, reported.reason) != (after.ready, after.reason):
            self._status_wakeup.set()

    # -- status -------------------------------------------------------------------------------
    async def _status_loop(self) -> None:
        failures = 0
        while True:
            interval = self._settings.status_interval
            delay = interval if failures == 0 else min(interval, self._settings.retry.delay(failures))
            await self._wait_for_wakeup(delay)
            self._status_wakeup.clear()  # a change during the patch wakes the loop again
            try:
                await self.patch_status()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as error:
                failures += 1
                log.warning(
                    "patching the status of node %s failed (attempt %d): %s", self.name, failures, error
                )

    async def _wait_for_wakeup(self, seconds: float) -> None:
        if self._status_wakeup.is_set():
            return
        waiter = asyncio.ensure_future(self._status_wakeup.wait())
        try:
            await finish_within(self._clock, waiter, seconds=seconds)
        finally:
            waiter.cancel()

    async def patch_status(self) -> None:
        """Patch the node's status once; recreate the node if it has been deleted."""
        with self._tracer.span("NodeController.patch_status", {"node.name": self.name}):
            template = self._template
            spec_stale = self._spec_stale
            state = self.ready_state()
            desired = self._desired_node(state, previous=self._node)
            patch = status_patch(conditions_of(self._node or {}), desired)
            try:
                node = await self._api(self._nodes.patch_node_status(self.name, patch))
            except NotFound:
                log.warning("node %s was deleted; recreating it", self.name)
                node = await self._ensure_node()  # the full manifest: spec and labels included
                self._spec_patched(template)
                self._record_event(
                    EventType.WARNING, "NodeRecreated", f"Node {self.name} was deleted; recreated"
                )
                return
            recreated = bool(self._uid) and node_uid(node) != self._uid
            if recreated or spec_stale:
                # Recreated by someone else between two patches, or the provider changed its
                # labels or taints: bring the node's metadata and spec in line, as at adoption.
                adopt = adoption_patch(node, desired)
                if adopt is not None:
                    if recreated:
                        log.warning(
                            "node %s was recreated by someone else; updating it: %s", self.name, adopt
                        )
                    else:
                        log.info("node %s: applying the provider's labels and taints: %s", self.name, adopt)
                    node = await self._api(self._nodes.patch_node(self.name, adopt))
            self._spec_patched(template)
            self._remember(node, state)

    def _spec_patched(self, template: NodeTemplate | None) -> None:
        """The node's metadata and spec now follow ``template``; still stale if it was replaced
        during the patch (the next patch takes the newer one)."""
        if self._template is template:
            self._spec_stale = False

    # -- node status stream -------------------------------------------------------------------
    async def _node_status_loop(self) -> None:
        """Follow the provider's node status stream until cancelled; see the module docstring."""
        failures = 0
        while True:
            if Capability.NODE_STATUS_STREAM not in self._provider.capabilities():
                # The provider behind the same address no longer declares it: do not ask, look
                # again later.
                failures = 0
                await self._clock.sleep(self._settings.status_interval)
                continue
            started = self._clock.monotonic()
            received = self._streamed_templates
            try:
                await self._follow_node_status()
                problem = "the provider ended the stream"
            except asyncio.CancelledError:
                raise
            except Exception as error:  # never let the stream stop the controller
                problem = f"{type(error).__name__}: {error}"
            lasted = self._clock.monotonic() - started
            if self._streamed_templates > received or lasted >= self._settings.retry.cap:
                failures = 0  # that subscription worked: start the backoff over
            failures += 1
            delay = self._settings.retry.delay(failures)
            log.warning(
                "node status stream of node %s: %s; subscribing again in %.1f s (attempt %d)",
                self.name,
                problem,
                delay,
                failures,
            )
            await self._clock.sleep(delay)

    async def _follow_node_status(self) -> None:
        """One subscription: open the stream, read the template again, then take every template
        the stream sends until it ends (returns) or breaks (raises)."""
        stream = asyncio.create_task(self._take_streamed_templates(), name=f"node-status-updates:{self.name}")
        try:
            before = self._streamed_templates
            template = await self._fetch_template()
            if self._streamed_templates == before:
                self.update_template(template)
            await stream
        finally:
            stream.cancel()
            await asyncio.gather(stream, return_exceptions=True)

    async def _take_streamed_templates(self) -> None:
        async for template in self._provider.node_status_updates():
            self._streamed_templates += 1
            self.update_template(template)

    # -- lease --------------------------------------------------------------------------------
    async def _lease_loop(self) -> None:
        timing = self._settings.lease
        failures = 0
        while True:
            started = self._clock.monotonic()
            try:
                await self._renew_lease()
                failures = 0
                delay = next_renewal(
                    timing, attempt_started=started, now=self._clock.monotonic(), jitter=self._lease_jitter()
                )
            except asyncio.CancelledError:
                raise
            except Exception as error:
                failures += 1
                delay = lease_backoff(failures)
                expired = self._lease_renewed_at is not None and is_expired(
                    renew_time=self._lease_renewed_at,
                    duration_seconds=timing.duration_seconds,
                    now=self._clock.now(),
                )
                log.log(
                    logging.ERROR if expired else logging.WARNING,
                    "renewing the lease of node %s failed (attempt %d, retrying in %.1f s)%s: %s",
                    self.name,
                    failures,
                    delay,
                    "; the lease has expired" if expired else "",
                    error,
                )
            await self._clock.sleep(delay)  # the only sleep per attempt (upstream slept twice)

    async def _renew_lease(self) -> None:
        with self._tracer.span("NodeController.renew_lease", {"node.name": self.name}):
            for _ in range(_LEASE_CONFLICT_ATTEMPTS):
                now = self._clock.now()
                lease = self._lease
                if lease is None:
                    try:
                        lease = await self._api(self._leases.get_lease(self.name))
                    except NotFound:
                        try:
                            self._lease = await self._api(self._leases.create_lease(self._new_lease(now)))
                        except Conflict:
                            continue  # created meanwhile: read it and update
                        self._lease_renewed_at = now
                        return
                renewed = dataclasses.replace(
                    lease,
                    holder_identity=self.name,
                    duration_seconds=self._settings.lease.duration_seconds,
                    renew_time=now,
                    owner_node_uid=self._uid,
                )
                try:
                    self._lease = await self._api(self._leases.update_lease(renewed))
                except (Conflict, NotFound):
                    self._lease = None  # changed or deleted underneath: read again
                    continue
                self._lease_renewed_at = now
                return
            raise Conflict(f"the lease of node {self.name} kept changing underneath the update")

    def _new_lease(self, now: datetime) -> Lease:
        return Lease(
            name=self.name,
            holder_identity=self.name,
            duration_seconds=self._settings.lease.duration_seconds,
            renew_time=now,
            owner_node_uid=self._uid,
        )

    # -- shutdown -----------------------------------------------------------------------------
    async def mark_not_ready(
        self,
        reason: str = REASON_SHUTTING_DOWN,
        message: str = "virtual-kubelet is shutting down",
        *,
        deadline: float = 5.0,
    ) -> bool:
        """Patch Ready False with ``reason`` (``--shutdown-node-not-ready``), best effort.

        Returns whether the API server took the patch within ``deadline`` seconds. The state
        sticks: if the loops are still running they keep reporting it. A deleted node is not
        recreated for this.
        """
        state = ReadyState.not_ready(reason=reason, message=message)
        self._shutdown_state = state
        if self._node is None or self._template is None:
            return False
        with self._tracer.span("NodeController.mark_not_ready", {"node.name": self.name}):
            desired = self._desired_node(state, previous=self._node)
            patch = status_patch(conditions_of(self._node), desired)
            try:
                node = await call_with_timeout(
                    self._clock, self._nodes.patch_node_status(self.name, patch), seconds=deadline
                )
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("could not mark node %s not ready: %s", self.name, error)
                return False
            self._remember(node, state)
            return True

    # -- helpers ------------------------------------------------------------------------------
    async def _api(self, call: Awaitable[T]) -> T:
        return await call_with_timeout(self._clock, call, seconds=self._settings.api_timeout)

    def _record_event(self, type: EventType, reason: str, message: str) -> None:
        if self._events is None:
            return
        self._events.record(
            ObjectRef("Node", "", self.name, self._uid), type=type, reason=reason, message=message
        )


def _spec_fields(template: NodeTemplate) -> tuple[object, ...]:
    """What of a template ends up in the node's metadata and spec rather than its status."""
    return (
        dict(template.labels),
        dict(template.annotations),
        template.taints,
        template.provider_id,
        template.operating_system,
        template.architecture,
    )


def _retryable(error: BaseException) -> bool:
    kind = classify(error)
    return kind is None or issubclass(kind, Transient | Conflict | NotFound)


def _describe(state: ReadyState) -> str:
    return "Ready" if state.ready else f"NotReady ({state.reason}: {state.message})"


__all__ = ["NodeController", "NodeControllerSettings"]
