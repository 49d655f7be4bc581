"""The leader elector of ``--leader-elect``: one replica of a node writes, the others stand by.

:meth:`LeaderElector.run` reads the election Lease every ``retry_period`` and applies the rules
of :mod:`vkubelet.domain.leader`: a standby writes nothing until the holder's record has stayed
unchanged for its lease duration (as this replica's monotonic clock measures it), then writes
itself in (optimistically, on the read's resourceVersion: of two candidates only one wins, the
other gets Conflict and stands by). The leader renews every ``retry_period``.

The fence, :meth:`LeaderElector.check`, is what the write-side decorators of
:mod:`vkubelet.application.fencing` call before every API or provider write. It is computed
from the clock at the moment of the call, not from a flag the loop sets, so a process that was
frozen (SIGSTOP, a long GC pause, a suspended VM) and resumes after its deadline refuses its
first write, whichever of its tasks happens to run first.

When the leader misses its renew deadline (or reads another holder) :meth:`run` raises
:class:`~vkubelet.domain.leader.LeadershipLost` at once; the daemon then exits non-zero
without draining, and its supervisor restarts it as a standby (what kube components do: a
fresh process has no state left over from its term).

Each API call is bounded: while leading, by the time left before the deadline, so a hung
request cannot keep a leader writing past it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

from vkubelet.application.ports.cluster import Lease, LeaseGateway
from vkubelet.application.ports.runtime import Clock
from vkubelet.application.waiting import call_with_timeout
from vkubelet.domain.errors import Conflict, DomainError, NotFound
from vkubelet.domain.leader import (
    ElectionTiming,
    LeaderRecord,
    LeadershipLost,
    NotLeader,
    Observation,
    Verdict,
    claim,
    decide,
    is_leading,
    observe,
    release,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ElectionSettings:
    """Which Lease is the lock and who we are in it."""

    lease_name: str
    namespace: str
    identity: str
    timing: ElectionTiming = field(default_factory=ElectionTiming)


class LeaderElector:
    """Implements the ``Fence`` of :mod:`vkubelet.application.fencing`.

    Use: ``run()`` in a task (raises LeadershipLost when a term ends); ``leading`` is set when
    this replica acquires the lease; ``check()`` before each write; ``release()`` on a clean
    shutdown.
    """

    def __init__(self, *, leases: LeaseGateway, clock: Clock, settings: ElectionSettings) -> None:
        self._leases = leases
        self._clock = clock
        self._settings = settings
        self._observed: Observation | None = None
        self._lease: Lease | None = None  # the server's copy as last read or written
        self._renewed_at: float | None = None  # monotonic start of the last successful write
        self._acquired_at: float | None = None
        self.leading = asyncio.Event()

    @property
    def identity(self) -> str:
        return self._settings.identity

    @property
    def settings(self) -> ElectionSettings:
        return self._settings

    @property
    def holder(self) -> str:
        """The holder as last read ("" when none or unknown)."""
        return self._observed.record.holder if self._observed is not None else ""

    def is_leader(self) -> bool:
        return is_leading(self._renewed_at, now=self._clock.monotonic(), timing=self._settings.timing)

    def check(self, action: str) -> None:
        """Raise NotLeader unless this replica holds the lease now."""
        if not self.is_leader():
            raise NotLeader(f"not the leader ({self._describe()}): refusing to {action}")

    # -- the loop -----------------------------------------------------------------------------
    async def run(self) -> None:
        """Try to acquire, then keep renewing; raises LeadershipLost when the term ends."""
        timing = self._settings.timing
        log.info(
            "leader election: lease %s/%s as %s (duration %gs, renew deadline %gs, retry %gs)",
            self._settings.namespace,
            self._settings.lease_name,
            self.identity,
            timing.lease_duration,
            timing.renew_deadline,
            timing.retry_period,
        )
        while True:
            started = self._clock.monotonic()
            await self.attempt()
            now = self._clock.monotonic()
            delay = max(0.0, started + timing.retry_period - now)
            if self._renewed_at is not None:
                # Wake at the deadline at the latest, so a failing leader notices it on time.
                delay = min(delay, max(0.0, self._renewed_at + timing.renew_deadline - now))
            await self._clock.sleep(delay)

    async def attempt(self) -> Verdict:
        """One round: read the lease, decide, write if the rules say so. Raises
        LeadershipLost when this replica led and its term is over."""
        self._raise_if_lost()  # a process that was frozen past its deadline need not ask
        started = self._clock.monotonic()
        try:
            lease = await self._call(self._leases.get_lease(self._settings.lease_name))
        except NotFound:
            lease = None
        except DomainError as error:
            log.warning("leader election: reading lease %s failed: %s", self._describe_lease(), error)
            self._raise_if_lost()
            return Verdict.STAND_BY if self._renewed_at is None else Verdict.RENEW
        now = self._clock.monotonic()
        previous_holder = self.holder
        self._lease = lease
        self._observed = None if lease is None else observe(self._observed, _record(lease), now=now)
        verdict = decide(
            self._observed,
            identity=self.identity,
            renewed_at=self._renewed_at,
            now=now,
            timing=self._settings.timing,
        )
        if verdict is Verdict.LOST:
            self._raise_if_lost()  # the deadline passed
            self._lose(f"the lease is now held by {self.holder or 'nobody'}")
        if verdict is Verdict.STAND_BY:
            if self.holder != previous_holder:
                log.info("leader election: %s leads; standing by", self.holder)
            return verdict
        await self._write(verdict, started)
        return verdict

    async def _write(self, verdict: Verdict, started: float) -> None:
        record = claim(
            self._observed.record if self._observed is not None else None,
            identity=self.identity,
            timing=self._settings.timing,
            now=self._clock.now(),
        )
        try:
            if self._lease is None:
                written = await self._call(
                    self._leases.create_lease(_lease(self._settings.lease_name, record))
                )
            else:
                written = await self._call(
                    self._leases.update_lease(_lease(self._settings.lease_name, record, self._lease))
                )
        except (Conflict, NotFound) as error:
            # Someone else wrote first (or the lock vanished): the next read tells who.
            log.info("leader election: could not %s the lease: %s", verdict.value, error)
            self._raise_if_lost()
            return
        except DomainError as error:
            log.warning(
                "leader election: %s of lease %s failed: %s", verdict.value, self._describe_lease(), error
            )
            self._raise_if_lost()
            return
        self._lease = written
        self._observed = observe(self._observed, _record(written), now=self._clock.monotonic())
        newly = self._renewed_at is None
        self._renewed_at = started
        if newly:
            self._acquired_at = started
            log.info(
                "leader election: acquired lease %s as %s (transition %d)",
                self._describe_lease(),
                self.identity,
                record.transitions,
            )
            self.leading.set()

    async def release(self) -> bool:
        """Give the lease up (clean shutdown), so a standby need not wait for it to lapse.
        Only while still leading; True when the server took it."""
        if not self.is_leader() or self._lease is None or self._observed is None:
            return False
        record = release(self._observed.record, now=self._clock.now())
        try:
            await self._call(
                self._leases.update_lease(_lease(self._settings.lease_name, record, self._lease))
            )
        except DomainError as error:
            log.warning("leader election: releasing lease %s failed: %s", self._describe_lease(), error)
            return False
        self._renewed_at = None
        log.info("leader election: released lease %s", self._describe_lease())
        return True

    # -- helpers ------------------------------------------------------------------------------
    async def _call(self, call: Awaitable[T]) -> T:
        timing = self._settings.timing
        limit = timing.renew_deadline
        if self._renewed_at is not None:
            limit = max(0.0, self._renewed_at + timing.renew_deadline - self._clock.monotonic())
        return await call_with_timeout(self._clock, call, seconds=limit)

    def _raise_if_lost(self) -> None:
        if self._renewed_at is not None and not self.is_leader():
            deadline = self._settings.timing.renew_deadline
            self._lose(f"no successful renewal within the renew deadline of {deadline:g}s")

    def _lose(self, why: str) -> None:
        self._renewed_at = None
        self.leading.clear()
        raise LeadershipLost(f"lost the leader lease {self._describe_lease()}: {why}")

    def _describe_lease(self) -> str:
        return f"{self._settings.namespace}/{self._settings.lease_name}"

    def _describe(self) -> str:
        holder = self.holder
        return (
            f"lease {self._describe_lease()} held by {holder}"
            if holder
            else f"lease {self._describe_lease()}"
        )


def _record(lease: Lease) -> LeaderRecord:
    return LeaderRecord(
        holder=lease.holder_identity,
        renew_time=lease.renew_time,
        lease_duration_seconds=lease.duration_seconds,
        acquire_time=lease.acquire_time,
        transitions=lease.transitions or 0,
    )


def _lease(name: str, record: LeaderRecord, current: Lease | None = None) -> Lease:
    return Lease(
        name=name,
        holder_identity=record.holder,
        duration_seconds=record.lease_duration_seconds,
        renew_time=record.renew_time,
        resource_version=current.resource_version if current is not None else "",
        acquire_time=record.acquire_time,
        transitions=record.transitions,
    )


__all__ = ["ElectionSettings", "LeaderElector"]
