"""Trace sampling policy: the ``--trace-sample-rate`` value and the per-trace decision.

Both halves are pure so the tracing adapter only has to call them:

* :func:`parse_sample_rate` turns the flag text into a :class:`SampleRate`. It accepts an integer
  percentage 0..100, ``always`` or ``never`` (any case) and rejects everything else with
  :class:`~vkubelet.domain.errors.InvalidInput`. Upstream parsed with ``Atoi`` and silently
  dropped out-of-range integers because it wrapped a nil error (its bug 2); here 150, -1, 12.5
  and ``abc`` are all errors that name the value and the allowed range.
* :func:`should_sample` is parent-based: a decision already taken upstream of us (a sampled or
  unsampled B3/W3C parent) is honoured, and only root spans are decided by the trace id, with the
  same arithmetic as OpenTelemetry's ``TraceIdRatioBased`` sampler. Because the decision depends
  only on the trace id, every process that samples by ratio agrees on the same trace.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vkubelet.domain.errors import InvalidInput

_TRACE_ID_LOW_BITS = 2**64 - 1
_PERCENT = re.compile(r"[0-9]+")
ALLOWED_SAMPLE_RATES = 'an integer percentage 0..100, "always" or "never"'


@dataclass(frozen=True, slots=True)
class SampleRate:
    """The probability (0.0..1.0) that a root trace is recorded."""

    probability: float

    def __post_init__(self) -> None:
        # `not (0 <= p <= 1)` is also true for NaN, which would otherwise compare false everywhere.
        if not 0.0 <= self.probability <= 1.0:
            raise InvalidInput(f"sample probability {self.probability!r} is outside 0.0..1.0")

    @property
    def percent(self) -> float:
        return self.probability * 100.0

    def __str__(self) -> str:
        if self.probability == 1.0:
            return "always"
        if self.probability == 0.0:
            return "never"
        return f"{self.percent:g}%"


ALWAYS = SampleRate(1.0)
NEVER = SampleRate(0.0)


def parse_sample_rate(text: str) -> SampleRate:
    """Parse a ``--trace-sample-rate`` value.

    ``always`` and ``never`` are case-insensitive; a number must be a plain decimal integer in
    0..100 (surrounding blanks are ignored). Fractions are not accepted, as upstream.
    """
    value = text.strip()
    lowered = value.lower()
    if lowered == "always":
        return ALWAYS
    if lowered == "never":
        return NEVER
    if not _PERCENT.fullmatch(value):
        raise InvalidInput(f"unsupported trace sample rate {text!r}: expected {ALLOWED_SAMPLE_RATES}")
    percent = int(value)
    if percent > 100:
        raise InvalidInput(f"trace sample rate {text!r} is out of range: expected {ALLOWED_SAMPLE_RATES}")
    return SampleRate(percent / 100)


def should_sample(rate: SampleRate, *, trace_id: int, parent_sampled: bool | None) -> bool:
    """Decide whether a span is recorded.

    ``parent_sampled`` is the decision carried by the incoming context (``None`` for a root span,
    or when the propagated context carried no decision). A parent's decision always wins, so a
    trace is never cut in half between services. Root spans are sampled when the low 64 bits of
    ``trace_id`` fall below ``probability * 2**64``, exactly as OpenTelemetry's
    ``TraceIdRatioBased`` does: rate 0 never samples, rate 1 always does.
    """
    if parent_sampled is not None:
        return parent_sampled
    bound = round(rate.probability * 2**64)
    return (trace_id & _TRACE_ID_LOW_BITS) < bound
