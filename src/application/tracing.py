"""Defaults for the cross-cutting ports when nothing is configured."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from vkubelet.application.ports.runtime import AttributeValue, Span


class _NullSpan:
    def set_attribute(self, key: str, value: AttributeValue) -> None:
        pass

    def record_error(self, error: BaseException) -> None:
        pass


class NullTracer:
    """A Tracer that records nothing (tracing not configured)."""

    @contextmanager
    def span(self, name: str, attributes: Mapping[str, AttributeValue] | None = None) -> Iterator[Span]:
        yield _NullSpan()


class NullMetrics:
    """The Metrics port's default: vkubelet's own metrics are not implemented, on purpose
    (as the debugging document says). Swap in a real adapter in the container."""

    def observe_sync(self, *, outcome: str, seconds: float) -> None:
        pass

    def set_queue_depth(self, depth: int) -> None:
        pass
