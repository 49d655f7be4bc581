"""The pure backoff policy: exponential, capped, never giving up (upstream bug 8)."""

from __future__ import annotations

import pytest

from vkubelet.domain.backoff import Backoff


def test_delays_grow_by_factor_from_base_until_the_cap() -> None:
    policy = Backoff(base=1.0, cap=10.0, factor=2.0)
    assert [policy.delay(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_no_failures_means_no_delay() -> None:
    assert Backoff(base=1.0, cap=10.0).delay(0) == 0.0


def test_other_factors() -> None:
    policy = Backoff(base=0.5, cap=100.0, factor=3.0)
    assert [policy.delay(n) for n in (1, 2, 3)] == [0.5, 1.5, 4.5]


def test_factor_one_is_a_constant_delay() -> None:
    policy = Backoff(base=2.0, cap=5.0, factor=1.0)
    assert {policy.delay(n) for n in range(1, 50)} == {2.0}


@pytest.mark.parametrize("failures", [50, 1_100, 10**6])
def test_huge_failure_counts_give_the_cap_without_overflow(failures: int) -> None:
    assert Backoff(base=0.01, cap=300.0).delay(failures) == 300.0


def test_defaults_are_usable_and_capped() -> None:
    policy = Backoff()
    assert policy.delay(1) == policy.base
    assert policy.delay(1000) == policy.cap


def test_is_frozen_and_hashable() -> None:
    policy = Backoff(base=1.0, cap=2.0)
    with pytest.raises(AttributeError):
        policy.base = 3.0  # type: ignore[misc]
    assert hash(policy) == hash(Backoff(base=1.0, cap=2.0))


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"base": 0.0}, "base must be > 0"),
        ({"base": -1.0}, "base must be > 0"),
        ({"base": 5.0, "cap": 1.0}, "cap (1.0) must be >= base (5.0)"),
        ({"factor": 0.5}, "factor must be >= 1"),
        ({"cap": float("inf")}, "cap must be a finite number"),
        ({"base": float("nan")}, "base must be a finite number"),
    ],
)
def test_invalid_parameters_are_rejected_with_the_value(kwargs: dict[str, float], fragment: str) -> None:
    with pytest.raises(ValueError) as caught:
        Backoff(**kwargs)
    assert fragment in str(caught.value)


def test_negative_failure_count_is_rejected() -> None:
    with pytest.raises(ValueError, match="-1"):
        Backoff().delay(-1)
