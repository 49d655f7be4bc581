"""The Tracer port on an OpenTelemetry TracerProvider."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from vkubelet import __version__
from vkubelet.application.ports.runtime import AttributeValue, Span
from vkubelet.domain.errors import classify

INSTRUMENTATION_NAME = "vkubelet"


def error_description(error: BaseException) -> str:
    """``<DomainClass>: message`` — the classified domain error names the status."""
    kind = classify(error)
    name = kind.__name__ if kind is not None else type(error).__name__
    return f"{name}: {error}"


class _OtelSpan:
    def __init__(self, span: trace.Span) -> None:
        self._span = span

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        self._span.set_attribute(key, value)

    def record_error(self, error: BaseException) -> None:
        record_error(self._span, error)


def record_error(span: trace.Span, error: BaseException) -> None:
    if not span.is_recording():
        return
    span.record_exception(error)
    kind = classify(error)
    span.set_attribute("error.type", kind.__name__ if kind is not None else type(error).__name__)
    span.set_status(Status(StatusCode.ERROR, error_description(error)))


class OtelTracer:
    """Implements :class:`~vkubelet.application.ports.runtime.Tracer`. Spans become current for
    the enclosed code (so log lines and child spans see them); an exception leaving the block is
    recorded on the span and re-raised. Cancellation is not an error."""

    def __init__(self, tracer_provider: trace.TracerProvider) -> None:
        self._tracer = tracer_provider.get_tracer(INSTRUMENTATION_NAME, __version__)

    @contextmanager
    def span(self, name: str, attributes: Mapping[str, AttributeValue] | None = None) -> Iterator[Span]:
        with self._tracer.start_as_current_span(
            name, attributes=attributes, record_exception=False, set_status_on_exception=False
        ) as otel_span:
            try:
                yield _OtelSpan(otel_span)
            except (asyncio.CancelledError, GeneratorExit):
                raise
            except BaseException as error:
                record_error(otel_span, error)
                raise
