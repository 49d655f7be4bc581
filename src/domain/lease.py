"""Node lease timing: how often the Lease is renewed, how long it is valid, how errors back off.

The Lease in ``kube-node-lease`` is the node's heartbeat: the node lifecycle controller marks the
node Unknown when ``renewTime + leaseDurationSeconds`` passes. vkubelet renews every
``renew_interval`` seconds (a quarter of the duration, as the kubelet does) and, when the API
server refuses, retries after a short exponential backoff that is capped well below the
duration, so one slow request does not cost the node its heartbeat.

Pure: the application owns the sleeping (cancellable, through the Clock port).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from vkubelet.domain.backoff import Backoff
from vkubelet.domain.errors import InvalidInput

DEFAULT_LEASE_DURATION_SECONDS = 40
LEASE_NAMESPACE = "kube-node-lease"

#: the largest share by which a renewal interval is stretched at random (the kubelet's 0.04)
RENEW_JITTER = 0.04

# Backoff after a failed renewal: 200 ms, 400 ms, 800 ms, ... capped at 7 s.
LEASE_ERROR_BACKOFF = Backoff(base=0.2, cap=7.0)


@dataclass(frozen=True, slots=True)
class LeaseTiming:
    """How long a renewal is valid and how often it is made.

    ``renew_interval`` must be positive and shorter than the duration, or the lease would lapse
    between two successful renewals.
    """

    duration_seconds: int = DEFAULT_LEASE_DURATION_SECONDS
    renew_interval: float = DEFAULT_LEASE_DURATION_SECONDS * 0.25

    def __post_init__(self) -> None:
        if self.renew_interval <= 0:
            raise InvalidInput(f"lease renew interval must be positive, not {self.renew_interval}")
        if self.duration_seconds <= self.renew_interval:
            raise InvalidInput(
                f"lease duration ({self.duration_seconds} s) must be longer than the renew "
                f"interval ({self.renew_interval} s)"
            )

    @classmethod
    def from_duration(cls, duration_seconds: int) -> LeaseTiming:
        """The kubelet's rule: renew every quarter of the duration."""
        return cls(duration_seconds=duration_seconds, renew_interval=duration_seconds * 0.25)


def next_renewal(timing: LeaseTiming, *, attempt_started: float, now: float, jitter: float = 0.0) -> float:
    """Seconds to wait before the next renewal, given when (monotonic) the last one started.

    The cadence is measured from the start of the previous attempt, so a renewal that took a
    while does not push every later one back; a renewal slower than the interval is followed
    at once. ``jitter`` (a draw from [0, 1); the domain has no randomness of its own) stretches
    the interval by up to :data:`RENEW_JITTER`, as the kubelet's lease controller does, so nodes
    started together (several in one process) drift apart instead of renewing in the same
    instant; never by more than half the margin left before the lease would lapse.
    """
    margin = timing.duration_seconds - timing.renew_interval
    stretch = min(timing.renew_interval * RENEW_JITTER * jitter, margin / 2)
    return max(0.0, attempt_started + timing.renew_interval + stretch - now)


def lease_backoff(failures: int) -> float:
    """Delay before retrying after ``failures`` consecutive failed renewals (0 when none).

    200 ms, doubling, capped at 7 s: the cap keeps several retries inside one lease duration,
    so a recovered API server sees a renewal before the lease lapses.
    """
    return LEASE_ERROR_BACKOFF.delay(failures)


def is_expired(*, renew_time: datetime, duration_seconds: float, now: datetime) -> bool:
    """True when a lease renewed at ``renew_time`` has lapsed by ``now``."""
    return now >= renew_time + timedelta(seconds=duration_seconds)
