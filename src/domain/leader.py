"""Leader election among replicas of one virtual node: the rules, decided from a Lease record.

Several vkubelet processes may serve the same node (``--leader-elect``); one of them, the
leader, writes to the API server and the provider, the others stand by. Who leads is recorded
in a coordination.k8s.io Lease: its holder renews it every ``retry_period``; a candidate takes
it over once it has watched the same record (holder and renewTime) stay unchanged for the
record's ``leaseDurationSeconds``.

The rules follow client-go's leaderelection package, for the same reasons:

* Expiry is judged by the candidate's own monotonic clock, from when *it* first saw the record
  in its current form, never by comparing the record's renewTime with the local wall clock, so
  clock skew between hosts cannot make a live leader look dead.
* A leader stops leading when ``renew_deadline`` has passed since the start of its last
  successful renewal, without waiting to learn that someone else took over. Because
  ``renew_deadline < lease_duration`` and a candidate's observation starts no earlier than that
  renewal, the old leader has stopped writing before any candidate may start.

Pure: times are passed in (monotonic seconds for local observations, aware datetimes for what
is written into the record).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from vkubelet.domain.errors import InvalidInput, Transient

DEFAULT_LEASE_DURATION = 15.0
DEFAULT_RENEW_DEADLINE = 10.0
DEFAULT_RETRY_PERIOD = 2.0
# What a released record claims: a candidate takes a record with no holder at once anyway.
RELEASED_LEASE_SECONDS = 1


class NotLeader(Transient):
    """A write was refused because this replica does not (or no longer) hold the leader lease.

    Transient: retrying is right for a replica that may lead later; one that lost the lease
    exits instead (see the daemon).
    """


class LeadershipLost(NotLeader):
    """The leader could not renew its lease within the renew deadline, or saw another holder."""


@dataclass(frozen=True, slots=True)
class ElectionTiming:
    """``--leader-elect-lease-duration``, ``-renew-deadline`` and ``-retry-period``, in seconds.

    retry_period < renew_deadline < lease_duration: several renewals fit in one deadline, and
    the leader gives up before a candidate may take over.
    """

    lease_duration: float = DEFAULT_LEASE_DURATION
    renew_deadline: float = DEFAULT_RENEW_DEADLINE
    retry_period: float = DEFAULT_RETRY_PERIOD

    def __post_init__(self) -> None:
        if self.lease_duration < 1:
            raise InvalidInput(
                f"the leader lease duration must be at least 1 s, not {self.lease_duration:g} s"
            )
        if self.retry_period <= 0:
            raise InvalidInput(f"the leader retry period must be positive, not {self.retry_period:g} s")
        if self.renew_deadline >= self.lease_duration:
            raise InvalidInput(
                f"the leader renew deadline ({self.renew_deadline:g} s) must be shorter than the "
                f"lease duration ({self.lease_duration:g} s)"
            )
        if self.retry_period >= self.renew_deadline:
            raise InvalidInput(
                f"the leader retry period ({self.retry_period:g} s) must be shorter than the "
                f"renew deadline ({self.renew_deadline:g} s)"
            )

    @property
    def lease_duration_seconds(self) -> int:
        """What the record says (whole seconds, rounded up: never shorter than the promise)."""
        return math.ceil(self.lease_duration)


@dataclass(frozen=True, slots=True)
class LeaderRecord:
    """The election's fields of the Lease: holderIdentity, renewTime, leaseDurationSeconds,
    acquireTime and leaseTransitions. An empty holder means the lease was released."""

    holder: str
    renew_time: datetime
    lease_duration_seconds: int
    acquire_time: datetime | None = None
    transitions: int = 0


@dataclass(frozen=True, slots=True)
class Observation:
    """A record as this replica last read it, and when (monotonic) it first read it so."""

    record: LeaderRecord
    since: float


class Verdict(StrEnum):
    ACQUIRE = "acquire"  # no holder, or the holder's record has lapsed: write ourselves in
    RENEW = "renew"  # we hold it: write a fresh renewTime
    STAND_BY = "stand-by"  # someone else holds a live record: write nothing
    LOST = "lost"  # we led, but the renew deadline passed or someone else holds it now


def observe(previous: Observation | None, record: LeaderRecord, *, now: float) -> Observation:
    """The observation after reading ``record`` at ``now``: its clock restarts whenever the
    holder or the renewTime changed (a renewal), and keeps running while they stay the same."""
    if previous is not None and _same_term(previous.record, record):
        return replace(previous, record=record)
    return Observation(record=record, since=now)


def _same_term(a: LeaderRecord, b: LeaderRecord) -> bool:
    return (a.holder, a.renew_time, a.lease_duration_seconds) == (
        b.holder,
        b.renew_time,
        b.lease_duration_seconds,
    )


def is_leading(renewed_at: float | None, *, now: float, timing: ElectionTiming) -> bool:
    """The fence: True while less than ``renew_deadline`` has passed since the start
    (monotonic) of the last successful renewal. None: we never acquired the lease."""
    return renewed_at is not None and now < renewed_at + timing.renew_deadline


def decide(
    observation: Observation | None,
    *,
    identity: str,
    renewed_at: float | None,
    now: float,
    timing: ElectionTiming,
) -> Verdict:
    """What this replica should do after reading the lease (``observation`` None: there is no
    Lease object). ``renewed_at``: start of our last successful renewal, None if we never led."""
    led = renewed_at is not None
    if led and not is_leading(renewed_at, now=now, timing=timing):
        return Verdict.LOST
    if observation is None:
        return Verdict.LOST if led else Verdict.ACQUIRE  # deleted underneath the leader
    record = observation.record
    if record.holder == identity:
        return Verdict.RENEW
    if led:
        return Verdict.LOST  # someone else wrote themselves in: our term is over
    if not record.holder:
        return Verdict.ACQUIRE
    if now >= observation.since + record.lease_duration_seconds:
        return Verdict.ACQUIRE
    return Verdict.STAND_BY


def claim(
    previous: LeaderRecord | None, *, identity: str, timing: ElectionTiming, now: datetime
) -> LeaderRecord:
    """The record to write to acquire or renew: a renewal keeps acquireTime and the
    transitions count; taking over from another holder (or a released lease) counts a
    transition and starts a new acquireTime."""
    duration = timing.lease_duration_seconds
    if previous is not None and previous.holder == identity:
        return replace(previous, renew_time=now, lease_duration_seconds=duration)
    transitions = previous.transitions + 1 if previous is not None else 0
    return LeaderRecord(
        holder=identity,
        renew_time=now,
        lease_duration_seconds=duration,
        acquire_time=now,
        transitions=transitions,
    )


def release(record: LeaderRecord, *, now: datetime) -> LeaderRecord:
    """The record a leader writes on a clean shutdown so a standby takes over at once."""
    return replace(record, holder="", renew_time=now, lease_duration_seconds=RELEASED_LEASE_SECONDS)
