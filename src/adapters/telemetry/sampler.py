"""An OpenTelemetry sampler that delegates to the domain policy (vkubelet.domain.sampling)."""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from vkubelet.adapters.telemetry.propagation import decision_deferred
from vkubelet.domain.sampling import SampleRate, should_sample


class RateSampler(Sampler):
    """Parent-based ``--trace-sample-rate``: a parent's decision (local, or remote from B3/W3C)
    wins; roots are decided by trace id. A remote B3 parent that carried no decision (no
    ``X-B3-Sampled``/flags) counts as a root, as B3 defines "defer"."""

    def __init__(self, rate: SampleRate) -> None:
        self._rate = rate

    @property
    def rate(self) -> SampleRate:
        return self._rate

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        parent_sampled: bool | None = None
        if parent.is_valid and not (parent.is_remote and decision_deferred(parent_context)):
            parent_sampled = parent.trace_flags.sampled
        sampled = should_sample(self._rate, trace_id=trace_id, parent_sampled=parent_sampled)
        return SamplingResult(
            Decision.RECORD_AND_SAMPLE if sampled else Decision.DROP,
            attributes if sampled else None,
            parent.trace_state if parent.is_valid else None,
        )

    def get_description(self) -> str:
        return f"ParentBased{{vkubelet.RateSampler{{{self._rate}}}}}"
