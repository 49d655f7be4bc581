"""The leader-election rules: who may write, decided from the Lease and the local clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from vkubelet.domain.errors import InvalidInput
from vkubelet.domain.leader import (
    ElectionTiming,
    LeaderRecord,
    Observation,
    Verdict,
    claim,
    decide,
    is_leading,
    observe,
    release,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)
TIMING = ElectionTiming(lease_duration=15, renew_deadline=10, retry_period=2)


def record(
    holder: str = "other", *, renewed: datetime = T0, duration: int = 15, transitions: int = 0
) -> LeaderRecord:
    return LeaderRecord(
        holder=holder,
        renew_time=renewed,
        lease_duration_seconds=duration,
        acquire_time=T0,
        transitions=transitions,
    )


def verdict(observation: Observation | None, *, now: float, renewed_at: float | None = None) -> Verdict:
    return decide(observation, identity="me", renewed_at=renewed_at, now=now, timing=TIMING)


def test_no_lease_is_acquired() -> None:
    assert verdict(None, now=0) is Verdict.ACQUIRE


def test_a_live_holder_is_left_alone_until_its_record_stayed_unchanged_a_whole_duration() -> None:
    seen = Observation(record(), since=100.0)
    assert verdict(seen, now=100.0) is Verdict.STAND_BY
    assert verdict(seen, now=114.9) is Verdict.STAND_BY
    assert verdict(seen, now=115.0) is Verdict.ACQUIRE


def test_expiry_is_measured_from_our_observation_not_the_records_wall_clock_time() -> None:
    # A record whose renewTime is an hour old (or the holder's clock is behind) is still live
    # until we have watched it unchanged for its duration: skew cannot depose a live leader.
    stale = record(renewed=T0 - timedelta(hours=1))
    first = observe(None, stale, now=50.0)
    assert verdict(first, now=50.0) is Verdict.STAND_BY


def test_a_renewal_restarts_the_observation() -> None:
    first = observe(None, record(), now=0.0)
    same = observe(first, record(), now=14.0)
    assert same.since == 0.0
    renewed = observe(same, record(renewed=T0 + timedelta(seconds=2)), now=14.0)
    assert renewed.since == 14.0
    assert verdict(renewed, now=20.0) is Verdict.STAND_BY


def test_the_records_own_duration_decides() -> None:
    seen = Observation(record(duration=40), since=0.0)
    assert verdict(seen, now=30.0) is Verdict.STAND_BY
    assert verdict(seen, now=40.0) is Verdict.ACQUIRE


def test_a_released_lease_is_acquired_at_once() -> None:
    assert verdict(Observation(record(holder=""), since=0.0), now=0.0) is Verdict.ACQUIRE


def test_our_own_record_is_renewed() -> None:
    assert verdict(Observation(record(holder="me"), since=0.0), now=1.0, renewed_at=0.0) is Verdict.RENEW


def test_the_leader_is_lost_once_the_renew_deadline_passed_without_a_renewal() -> None:
    mine = Observation(record(holder="me"), since=0.0)
    assert verdict(mine, now=9.9, renewed_at=0.0) is Verdict.RENEW
    assert verdict(mine, now=10.0, renewed_at=0.0) is Verdict.LOST


def test_the_leader_is_lost_when_another_holder_wrote_itself_in() -> None:
    assert verdict(Observation(record(holder="other"), since=1.0), now=1.0, renewed_at=0.0) is Verdict.LOST
    assert verdict(None, now=1.0, renewed_at=0.0) is Verdict.LOST


def test_the_fence_closes_at_the_renew_deadline() -> None:
    assert not is_leading(None, now=0.0, timing=TIMING)
    assert is_leading(5.0, now=14.99, timing=TIMING)
    assert not is_leading(5.0, now=15.0, timing=TIMING)


def test_the_fence_closes_before_any_candidate_may_take_over() -> None:
    # The leader renewed at 0 (its observation by a candidate can only start later).
    candidate = Observation(record(), since=0.0)
    first_takeover = next(t / 10 for t in range(400) if verdict(candidate, now=t / 10) is Verdict.ACQUIRE)
    last_write = max(t / 10 for t in range(400) if is_leading(0.0, now=t / 10, timing=TIMING))
    assert last_write < first_takeover


def test_taking_over_counts_a_transition_and_renewing_keeps_the_term() -> None:
    now = T0 + timedelta(seconds=30)
    taken = claim(record(transitions=3), identity="me", timing=TIMING, now=now)
    assert (taken.holder, taken.acquire_time, taken.renew_time, taken.transitions) == ("me", now, now, 4)
    assert taken.lease_duration_seconds == 15
    later = now + timedelta(seconds=2)
    renewed = claim(taken, identity="me", timing=TIMING, now=later)
    assert (renewed.acquire_time, renewed.renew_time, renewed.transitions) == (now, later, 4)
    first = claim(None, identity="me", timing=TIMING, now=now)
    assert first.transitions == 0


def test_release_empties_the_holder() -> None:
    released = release(record(holder="me", transitions=2), now=T0)
    assert (released.holder, released.transitions, released.lease_duration_seconds) == ("", 2, 1)


@pytest.mark.parametrize(
    ("lease", "deadline", "retry", "complaint"),
    [
        (10, 10, 2, "renew deadline (10 s) must be shorter than the lease duration (10 s)"),
        (15, 10, 10, "retry period (10 s) must be shorter than the renew deadline (10 s)"),
        (15, 10, 0, "retry period must be positive"),
        (0.5, 0.4, 0.1, "at least 1 s"),
    ],
)
def test_timing_is_validated(lease: float, deadline: float, retry: float, complaint: str) -> None:
    with pytest.raises(InvalidInput, match=complaint.replace("(", r"\(").replace(")", r"\)")):
        ElectionTiming(lease_duration=lease, renew_deadline=deadline, retry_period=retry)


def test_a_fractional_duration_is_rounded_up_in_the_record() -> None:
    assert ElectionTiming(lease_duration=1.5, renew_deadline=1, retry_period=0.5).lease_duration_seconds == 2
