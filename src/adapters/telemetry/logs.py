"""Trace ids in log lines: a logging.Filter that stamps the current span on every record."""

from __future__ import annotations

import logging

from opentelemetry import trace


class TraceIdFilter(logging.Filter):
    """Adds ``trace_id``, ``span_id`` (hex, or ``""`` outside a recorded span) and
    ``trace_context`` (`` trace_id=<hex> span_id=<hex>`` or ``""``) to each record, so a format
    string can end with ``%(trace_context)s``. Never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        fields = record.__dict__
        if context.is_valid and context.trace_flags.sampled:
            trace_id, span_id = trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id)
            fields.update(
                trace_id=trace_id, span_id=span_id, trace_context=f" trace_id={trace_id} span_id={span_id}"
            )
        else:
            fields.update(trace_id="", span_id="", trace_context="")
        return True
