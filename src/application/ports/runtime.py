"""Cross-cutting ports: time, tracing, metrics."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Protocol


class Clock(Protocol):
    """All time and sleeping go through this, so loops run at fake speed in tests."""

    def now(self) -> datetime:
        """Wall-clock time, timezone-aware UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin; never goes backwards."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Suspend the calling task. Cancellable."""
        ...


AttributeValue = str | int | float | bool


class Span(Protocol):
    def set_attribute(self, key: str, value: AttributeValue) -> None: ...

    def record_error(self, error: BaseException) -> None:
        """Mark the span failed with ``error``; the domain class becomes the status message."""
        ...


class Tracer(Protocol):
    def span(
        self, name: str, attributes: Mapping[str, AttributeValue] | None = None
    ) -> AbstractContextManager[Span]:
        """Start a child of the current span (or a root). Exceptions raised inside are recorded."""
        ...


class Metrics(Protocol):
    """vkubelet's own metrics. The default adapter is explicitly empty: "Not implemented".

    The pod controller records through it, so a real adapter needs no other change: one
    ``observe_sync`` per pod sync, ``outcome`` being ``"ok"``, ``"retry"`` (backing off after a
    problem it reported) or the class name of the error the sync raised, ``seconds`` measured on
    the ``Clock``; then ``set_queue_depth`` with the number of pods waiting.
    Calls are synchronous and must not block or raise.
    """

    def observe_sync(self, *, outcome: str, seconds: float) -> None: ...

    def set_queue_depth(self, depth: int) -> None: ...
