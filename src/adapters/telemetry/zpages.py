"""zpages for OpenTelemetry: a span processor that summarises spans, and ``/debug/tracez``.

OpenCensus had zpages; OpenTelemetry Python has none, so this is ours. Per span name it keeps
the number of running spans, counts of finished spans by latency bucket (OpenCensus's nine
bounds, 10us .. 100s), the error count, and the last few spans of each bucket and of the errors.
Only recorded (sampled) spans reach a span processor, so the page reflects the sample rate.
"""

from __future__ import annotations

import html
import logging
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiohttp import web
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import StatusCode, format_span_id, format_trace_id

log = logging.getLogger(__name__)

# Lower bounds in nanoseconds of the latency buckets, as OpenCensus's zpages.
LATENCY_BOUNDS_NS: tuple[int, ...] = (0, 10_000, 100_000, 10**6, 10**7, 10**8, 10**9, 10**10, 10**11)
LATENCY_LABELS: tuple[str, ...] = (
    ">0s",
    ">10µs",
    ">100µs",
    ">1ms",
    ">10ms",
    ">100ms",
    ">1s",
    ">10s",
    ">100s",
)
SAMPLES_PER_BUCKET = 10


def latency_bucket(duration_ns: int) -> int:
    index = 0
    for i, bound in enumerate(LATENCY_BOUNDS_NS):
        if duration_ns >= bound:
            index = i
    return index


@dataclass(frozen=True, slots=True)
class SpanSample:
    name: str
    trace_id: str
    span_id: str
    start_ns: int
    duration_ns: int | None
    status: str
    attributes: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class SpanNameSummary:
    name: str
    running: int
    latency_counts: tuple[int, ...]
    errors: int

    @property
    def finished(self) -> int:
        return sum(self.latency_counts)


@dataclass
class _PerName:
    latency_counts: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BOUNDS_NS))
    errors: int = 0
    latency_samples: list[deque[SpanSample]] = field(
        default_factory=lambda: [deque(maxlen=SAMPLES_PER_BUCKET) for _ in LATENCY_BOUNDS_NS]
    )
    error_samples: deque[SpanSample] = field(default_factory=lambda: deque(maxlen=SAMPLES_PER_BUCKET))


def _sample(span: ReadableSpan, *, finished: bool) -> SpanSample:
    context = span.get_span_context()
    start = span.start_time or 0
    duration = (span.end_time - start) if finished and span.end_time is not None else None
    return SpanSample(
        name=span.name,
        trace_id=format_trace_id(context.trace_id) if context else "",
        span_id=format_span_id(context.span_id) if context else "",
        start_ns=start,
        duration_ns=duration,
        status=span.status.status_code.name
        + (f": {span.status.description}" if span.status.description else ""),
        attributes=tuple((k, str(v)) for k, v in (span.attributes or {}).items()),
    )


class ZPagesProcessor(SpanProcessor):
    """Keeps running spans and per-name summaries. Thread-safe (spans end on any thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[int, Span] = {}
        self._by_name: dict[str, _PerName] = {}

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        context = span.get_span_context()
        with self._lock:
            self._running[context.span_id] = span
            self._by_name.setdefault(span.name, _PerName())

    def on_end(self, span: ReadableSpan) -> None:
        context = span.get_span_context()
        sample = _sample(span, finished=True)
        with self._lock:
            if context is not None:
                self._running.pop(context.span_id, None)
            entry = self._by_name.setdefault(span.name, _PerName())
            if span.status.status_code is StatusCode.ERROR:
                entry.errors += 1
                entry.error_samples.append(sample)
            else:
                bucket = latency_bucket(sample.duration_ns or 0)
                entry.latency_counts[bucket] += 1
                entry.latency_samples[bucket].append(sample)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    # -- reading -------------------------------------------------------------------------------
    def summaries(self) -> list[SpanNameSummary]:
        with self._lock:
            running: dict[str, int] = {}
            for span in self._running.values():
                running[span.name] = running.get(span.name, 0) + 1
            return [
                SpanNameSummary(
                    name=name,
                    running=running.get(name, 0),
                    latency_counts=tuple(entry.latency_counts),
                    errors=entry.errors,
                )
                for name, entry in sorted(self._by_name.items())
            ]

    def running_samples(self, name: str) -> list[SpanSample]:
        with self._lock:
            spans = [s for s in self._running.values() if s.name == name]
        return [_sample(span, finished=False) for span in spans]

    def latency_samples(self, name: str, bucket: int) -> list[SpanSample]:
        with self._lock:
            entry = self._by_name.get(name)
            return list(entry.latency_samples[bucket]) if entry else []

    def error_samples(self, name: str) -> list[SpanSample]:
        with self._lock:
            entry = self._by_name.get(name)
            return list(entry.error_samples) if entry else []


# -- the page --------------------------------------------------------------------------------------
_STYLE = "body{font-family:sans-serif}td,th{padding:2px 8px;text-align:right}td.name{text-align:left}"


def _link(name: str, kind: str, count: int, bucket: int | None = None) -> str:
    if count == 0:
        return "0"
    query = f"zspanname={html.escape(name, quote=True)}&amp;ztype={kind}"
    if bucket is not None:
        query += f"&amp;zlatencybucket={bucket}"
    return f'<a href="?{query}">{count}</a>'


def render_summary(summaries: Sequence[SpanNameSummary]) -> str:
    head = "".join(f"<th>{html.escape(label)}</th>" for label in LATENCY_LABELS)
    rows = []
    for s in summaries:
        buckets = "".join(
            f'<td class="latency">{_link(s.name, "latency", count, i)}</td>'
            for i, count in enumerate(s.latency_counts)
        )
        rows.append(
            f'<tr data-span-name="{html.escape(s.name, quote=True)}">'
            f'<td class="name">{html.escape(s.name)}</td>'
            f'<td class="running">{_link(s.name, "running", s.running)}</td>{buckets}'
            f'<td class="errors">{_link(s.name, "errors", s.errors)}</td></tr>'
        )
    return (
        f"<!DOCTYPE html><html><head><title>tracez</title><style>{_STYLE}</style></head><body>"
        "<h1>/debug/tracez</h1><table><tr><th>Span name</th><th>Running</th>"
        f"{head}<th>Errors</th></tr>{''.join(rows)}</table></body></html>"
    )


def render_samples(title: str, samples: Sequence[SpanSample]) -> str:
    rows = []
    for s in samples:
        duration = "running" if s.duration_ns is None else f"{s.duration_ns / 1e6:.3f} ms"
        attributes = ", ".join(f"{k}={v}" for k, v in s.attributes)
        rows.append(
            f"<tr><td>{s.trace_id}</td><td>{s.span_id}</td><td>{duration}</td>"
            f'<td class="name">{html.escape(s.status)}</td>'
            f'<td class="name">{html.escape(attributes)}</td></tr>'
        )
    return (
        f"<!DOCTYPE html><html><head><title>tracez</title><style>{_STYLE}</style></head><body>"
        f'<h1>{html.escape(title)}</h1><p><a href="?">back</a></p><table><tr><th>Trace id</th>'
        f"<th>Span id</th><th>Duration</th><th>Status</th><th>Attributes</th></tr>{''.join(rows)}"
        "</table></body></html>"
    )


class ZPagesServer:
    """Serves ``/debug/tracez`` for one :class:`ZPagesProcessor` (plain HTTP, debugging only).

    ``?format=json`` returns the summary table as JSON; ``?zspanname=N&ztype=running|latency|errors``
    (with ``zlatencybucket=i`` for latency) lists the kept spans of one cell."""

    def __init__(self, processor: ZPagesProcessor, *, host: str, port: int) -> None:
        self._processor = processor
        self._host = host
        self._requested_port = port
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        app = web.Application()
        app.router.add_get("/debug/tracez", self._tracez)
        self.app = app

    async def start(self) -> None:
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self._host or None, self._requested_port)
        try:
            await site.start()
        except OSError as error:
            await runner.cleanup()
            raise OSError(f"zpages: cannot listen on {self._host}:{self._requested_port}: {error}") from error
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        log.info("zpages: serving http://%s:%d/debug/tracez", self._host or "*", self.port)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _tracez(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        if query.get("format") == "json":
            return web.json_response(
                [
                    {
                        "name": s.name,
                        "running": s.running,
                        "latency": dict(zip(LATENCY_LABELS, s.latency_counts, strict=True)),
                        "errors": s.errors,
                        "finished": s.finished,
                    }
                    for s in self._processor.summaries()
                ]
            )
        name = query.get("zspanname")
        if name is None:
            return web.Response(text=render_summary(self._processor.summaries()), content_type="text/html")
        kind = query.get("ztype", "running")
        if kind == "running":
            samples = self._processor.running_samples(name)
        elif kind == "errors":
            samples = self._processor.error_samples(name)
        elif kind == "latency" and query.get("zlatencybucket", "").isdigit():
            bucket = int(query["zlatencybucket"])
            if bucket >= len(LATENCY_BOUNDS_NS):
                raise web.HTTPBadRequest(text="zlatencybucket out of range")
            samples = self._processor.latency_samples(name, bucket)
        else:
            raise web.HTTPBadRequest(text="ztype must be running, errors or latency (with zlatencybucket)")
        return web.Response(text=render_samples(f"{name}: {kind}", samples), content_type="text/html")
