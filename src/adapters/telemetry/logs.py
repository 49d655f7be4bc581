"""Log line context: filters that stamp the current span, and the node of a multi-node process."""

from __future__ import annotations

import contextvars
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


#: The node the running task works for in a process serving several (``--nodename a,b``). Set
#: once in each node's top task; every task started below it inherits it (asyncio copies the
#: context into a new task), so no call site has to pass the name to its logger.
current_node: contextvars.ContextVar[str] = contextvars.ContextVar("vkubelet_node", default="")


class NodeNameFilter(logging.Filter):
    """Adds ``node`` (the :data:`current_node`, or ``""``) and ``node_context`` (`` node=<name>``
    or ``""``) to each record, so a single-node process logs exactly as before. Never drops a
    record."""

    def filter(self, record: logging.LogRecord) -> bool:
        node = current_node.get()
        record.__dict__.update(node=node, node_context=f" node={node}" if node else "")
        return True
