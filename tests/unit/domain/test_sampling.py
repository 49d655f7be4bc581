"""The trace sampling policy: --trace-sample-rate parsing and the parent-based decision."""

from __future__ import annotations

import math
import random

import pytest

from vkubelet.domain.errors import InvalidInput
from vkubelet.domain.sampling import ALWAYS, NEVER, SampleRate, parse_sample_rate, should_sample


@pytest.mark.parametrize(
    ("text", "probability"),
    [
        ("0", 0.0),
        ("1", 0.01),
        ("50", 0.5),
        ("100", 1.0),
        ("007", 0.07),
        (" 25 ", 0.25),
        ("always", 1.0),
        ("ALWAYS", 1.0),
        ("Always", 1.0),
        ("never", 0.0),
        ("NeVeR", 0.0),
    ],
)
def test_accepted_rates(text: str, probability: float) -> None:
    assert parse_sample_rate(text).probability == pytest.approx(probability)


# "\u0665" is ARABIC-INDIC DIGIT FIVE: str.isdigit() accepts it, the flag does not.
@pytest.mark.parametrize("text", ["150", "101", "-1", "12.5", "abc", "", "  ", "+50", "1e2", "50%", "\u0665"])
def test_rejected_rates_name_the_value_and_the_range(text: str) -> None:
    # Upstream silently ignored out-of-range integers (its bug 2): every one of these is an error.
    with pytest.raises(InvalidInput) as raised:
        parse_sample_rate(text)
    message = str(raised.value)
    assert repr(text) in message
    assert "0..100" in message
    assert "always" in message and "never" in message


def test_sample_rate_is_a_frozen_value() -> None:
    rate = parse_sample_rate("50")
    assert rate == SampleRate(0.5)
    with pytest.raises(AttributeError):
        rate.probability = 1.0  # type: ignore[misc]


@pytest.mark.parametrize("probability", [-0.1, 1.5, math.nan])
def test_sample_rate_rejects_probabilities_outside_the_unit_interval(probability: float) -> None:
    with pytest.raises(InvalidInput):
        SampleRate(probability)


def test_sample_rate_renders_like_the_flag() -> None:
    assert str(ALWAYS) == "always"
    assert str(NEVER) == "never"
    assert str(parse_sample_rate("25")) == "25%"
    assert parse_sample_rate("25").percent == pytest.approx(25.0)


@pytest.mark.parametrize("rate", [ALWAYS, NEVER, SampleRate(0.5)])
def test_a_parent_decision_is_honoured_whatever_the_rate(rate: SampleRate) -> None:
    for trace_id in (0, 1, 2**63, 2**128 - 1):
        assert should_sample(rate, trace_id=trace_id, parent_sampled=True) is True
        assert should_sample(rate, trace_id=trace_id, parent_sampled=False) is False


def test_always_and_never_at_the_extremes_of_the_id_space() -> None:
    for trace_id in (0, 1, 2**64 - 1, 2**64, 2**128 - 1):
        assert should_sample(ALWAYS, trace_id=trace_id, parent_sampled=None) is True
        assert should_sample(NEVER, trace_id=trace_id, parent_sampled=None) is False


def test_root_decision_uses_the_low_64_bits_like_trace_id_ratio_based() -> None:
    half = SampleRate(0.5)
    assert should_sample(half, trace_id=2**63 - 1, parent_sampled=None) is True
    assert should_sample(half, trace_id=2**63, parent_sampled=None) is False
    # The high 64 bits do not take part in the decision.
    assert should_sample(half, trace_id=(2**100) | (2**63 - 1), parent_sampled=None) is True
    assert should_sample(half, trace_id=(2**100) | 2**63, parent_sampled=None) is False


def test_the_decision_is_deterministic_per_trace_id() -> None:
    rate = SampleRate(0.3)
    rng = random.Random(7)
    ids = [rng.getrandbits(128) for _ in range(50)]
    first = [should_sample(rate, trace_id=i, parent_sampled=None) for i in ids]
    again = [should_sample(rate, trace_id=i, parent_sampled=None) for i in ids]
    assert first == again


def test_fifty_percent_of_random_root_traces_are_sampled_within_a_binomial_bound() -> None:
    trials = 2_000
    rate = parse_sample_rate("50")
    rng = random.Random(20240601)
    sampled = sum(
        should_sample(rate, trace_id=rng.getrandbits(128), parent_sampled=None) for _ in range(trials)
    )
    mean = trials * rate.probability
    sigma = math.sqrt(trials * rate.probability * (1 - rate.probability))  # ~22.4
    # Five standard deviations: a false failure about once in 1.7 million runs for any seed.
    assert abs(sampled - mean) <= 5 * sigma, sampled


@pytest.mark.parametrize("percent", [1, 10, 90, 99])
def test_other_rates_land_within_a_binomial_bound(percent: int) -> None:
    trials = 2_000
    rate = parse_sample_rate(str(percent))
    rng = random.Random(percent)
    sampled = sum(
        should_sample(rate, trace_id=rng.getrandbits(128), parent_sampled=None) for _ in range(trials)
    )
    mean = trials * rate.probability
    sigma = math.sqrt(trials * rate.probability * (1 - rate.probability))
    assert abs(sampled - mean) <= 5 * sigma + 1, sampled
