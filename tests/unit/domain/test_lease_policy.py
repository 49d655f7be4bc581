"""Lease timing policy (upstream §3.5: 40 s duration, 10 s renewals; bug 16's backoff)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from vkubelet.domain.errors import InvalidInput
from vkubelet.domain.lease import LeaseTiming, is_expired, lease_backoff, next_renewal

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def test_default_timing_is_the_kubelets() -> None:
    timing = LeaseTiming()
    assert (timing.duration_seconds, timing.renew_interval) == (40, 10.0)
    assert LeaseTiming.from_duration(60).renew_interval == 15.0


@pytest.mark.parametrize(("duration", "interval"), [(40, 0), (40, -1), (10, 10), (5, 10)])
def test_invalid_timing_is_rejected(duration: int, interval: float) -> None:
    with pytest.raises(InvalidInput):
        LeaseTiming(duration_seconds=duration, renew_interval=interval)


def test_next_renewal_keeps_the_cadence_from_the_attempt_start() -> None:
    timing = LeaseTiming()
    assert next_renewal(timing, attempt_started=100.0, now=100.0) == 10.0
    assert next_renewal(timing, attempt_started=100.0, now=103.5) == 6.5
    assert next_renewal(timing, attempt_started=100.0, now=125.0) == 0.0  # slow renewal: at once


def test_jitter_stretches_the_interval_by_up_to_four_percent() -> None:
    timing = LeaseTiming()
    assert next_renewal(timing, attempt_started=100.0, now=100.0, jitter=0.0) == 10.0
    assert next_renewal(timing, attempt_started=100.0, now=100.0, jitter=0.5) == pytest.approx(10.2)
    assert next_renewal(timing, attempt_started=100.0, now=100.0, jitter=0.999) == pytest.approx(10.3996)


def test_jitter_never_takes_a_renewal_past_half_the_margin_before_the_lease_lapses() -> None:
    tight = LeaseTiming(duration_seconds=40, renew_interval=39.5)  # 0.5 s of margin
    assert next_renewal(tight, attempt_started=0.0, now=0.0, jitter=0.999) == pytest.approx(39.75)


def test_lease_error_backoff_starts_at_200ms_doubles_and_caps_at_7s() -> None:
    assert [lease_backoff(n) for n in range(1, 8)] == [0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 7.0]
    assert lease_backoff(10_000) == 7.0
    assert lease_backoff(0) == 0.0


def test_lease_expiry() -> None:
    assert not is_expired(renew_time=NOW, duration_seconds=40, now=NOW + timedelta(seconds=39))
    assert is_expired(renew_time=NOW, duration_seconds=40, now=NOW + timedelta(seconds=40))
