"""Tracing with the real OpenTelemetry SDK, aiohttp and thrift, in process.

The real Jaeger is in tests/e2e/test_tracing_jaeger.py; here the exporters' configuration, the
sampler, propagation, the request middleware, zpages, log lines, the library API and the CLI's
errors are checked against real libraries and local sockets.
"""

from __future__ import annotations

import asyncio
import base64
import http.server
import io
import logging
import math
import os
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode, format_span_id, format_trace_id

from vkubelet.adapters.telemetry import (
    DEFAULT_SAMPLE_RATE,
    ExporterRegistry,
    NodeIdentity,
    Telemetry,
    TraceIdFilter,
    available_exporters,
    extract_context,
    inject_context,
    register_exporter,
)
from vkubelet.adapters.telemetry.exporters import (
    DEFAULT_REGISTRY,
    ExporterContext,
    jaeger_collector_url,
    jaeger_factory,
)
from vkubelet.adapters.telemetry.zpages import ZPagesProcessor, ZPagesServer, latency_bucket
from vkubelet.application.settings import TraceSettings
from vkubelet.application.tracing import NullTracer
from vkubelet.domain.errors import InvalidInput, NotFound
from vkubelet.domain.sampling import ALWAYS, NEVER, parse_sample_rate

NODE = NodeIdentity(node_name="vk-trace", provider="mock", operating_system="linux")
TRACE_ID = "80f198ee56343ba864fe8b2a57d3eff7"
PARENT_SPAN_ID = "e457b5a2e4d86bd1"


def telemetry_with_memory(
    rate: str | None = "100", **settings: object
) -> tuple[Telemetry, InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    trace_settings = TraceSettings(
        sample_rate=None if rate is None else parse_sample_rate(rate),
        **settings,  # type: ignore[arg-type]
    )
    return Telemetry(trace_settings, node=NODE, exporters=[SimpleSpanProcessor(memory)]), memory


# -- sampling ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("rate", "expected"), [("0", 0), ("never", 0), ("100", 2000), ("always", 2000)])
def test_rate_0_exports_nothing_and_100_everything(rate: str, expected: int) -> None:
    telemetry, memory = telemetry_with_memory(rate)
    for i in range(2000):
        with telemetry.tracer.span("root", {"i": i}):
            pass
    assert len(memory.get_finished_spans()) == expected


def test_rate_50_exports_about_half_of_2000_roots() -> None:
    telemetry, memory = telemetry_with_memory("50")
    n, p = 2000, 0.5
    for _ in range(n):
        with telemetry.tracer.span("root"):
            pass
    exported = len(memory.get_finished_spans())
    sigma = math.sqrt(n * p * (1 - p))  # 22.4: random trace ids make the count Binomial(n, p)
    assert abs(exported - n * p) <= 4 * sigma, exported
    assert 0 < exported < n


def test_children_follow_the_root_decision() -> None:
    telemetry, memory = telemetry_with_memory("50")
    for _ in range(200):
        with telemetry.tracer.span("root"), telemetry.tracer.span("child"):
            pass
    spans = memory.get_finished_spans()
    roots = [s for s in spans if s.name == "root"]
    children = [s for s in spans if s.name == "child"]
    assert len(roots) == len(children)  # never a child without its root, or the reverse
    assert {c.parent.span_id for c in children if c.parent} == {r.context.span_id for r in roots}


def test_unset_rate_with_exporters_is_the_documented_default() -> None:
    telemetry, memory = telemetry_with_memory(rate=None)
    assert telemetry.sample_rate == DEFAULT_SAMPLE_RATE == ALWAYS
    with telemetry.tracer.span("root"):
        pass
    assert len(memory.get_finished_spans()) == 1


@pytest.mark.parametrize(
    ("headers", "rate", "sampled"),
    [
        # a sampled parent is honoured even at rate 0 (B3 multi, mixed case; B3 single; W3C)
        ({"X-B3-TraceId": TRACE_ID, "X-B3-SpanId": PARENT_SPAN_ID, "X-B3-Sampled": "1"}, NEVER, True),
        ({"b3": f"{TRACE_ID}-{PARENT_SPAN_ID}-1"}, NEVER, True),
        ({"traceparent": f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"}, NEVER, True),
        # an unsampled parent is honoured even at rate 100
        ({"X-B3-TraceId": TRACE_ID, "X-B3-SpanId": PARENT_SPAN_ID, "X-B3-Sampled": "0"}, ALWAYS, False),
        ({"traceparent": f"00-{TRACE_ID}-{PARENT_SPAN_ID}-00"}, ALWAYS, False),
        # B3 without a decision defers to us
        ({"X-B3-TraceId": TRACE_ID, "X-B3-SpanId": PARENT_SPAN_ID}, ALWAYS, True),
        ({"b3": f"{TRACE_ID}-{PARENT_SPAN_ID}"}, ALWAYS, True),
        ({"b3": f"{TRACE_ID}-{PARENT_SPAN_ID}"}, NEVER, False),
    ],
)
def test_remote_parents_are_honoured(headers: dict[str, str], rate: object, sampled: bool) -> None:
    memory = InMemorySpanExporter()
    settings = TraceSettings(sample_rate=rate)  # type: ignore[arg-type]
    telemetry = Telemetry(settings, node=NODE, exporters=[SimpleSpanProcessor(memory)])
    assert telemetry.tracer_provider is not None
    tracer = telemetry.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("request", context=extract_context(headers)):
        pass
    spans = memory.get_finished_spans()
    assert len(spans) == (1 if sampled else 0)
    if sampled:
        assert format_trace_id(spans[0].context.trace_id) == TRACE_ID
        assert spans[0].parent is not None and format_span_id(spans[0].parent.span_id) == PARENT_SPAN_ID


def test_inject_writes_w3c_and_both_b3_formats() -> None:
    telemetry, _ = telemetry_with_memory()
    carrier: dict[str, str] = {}
    with telemetry.tracer.span("outgoing"):
        inject_context(carrier)
    trace_id = carrier["x-b3-traceid"]
    assert carrier["x-b3-sampled"] == "1"
    assert carrier["b3"].startswith(f"{trace_id}-{carrier['x-b3-spanid']}-1")
    assert carrier["traceparent"].split("-")[1] == trace_id


# -- the Tracer port -----------------------------------------------------------------------------
def test_tracer_port_records_attributes_errors_and_nesting() -> None:
    telemetry, memory = telemetry_with_memory()
    tracer = telemetry.tracer
    with pytest.raises(NotFound), tracer.span("PodController.sync", {"pod.name": "p"}):
        with tracer.span("Provider.create_pod") as span:
            span.set_attribute("pod.uid", "u1")
        raise NotFound("pod default/p")
    child, parent = memory.get_finished_spans()
    assert child.parent is not None and child.parent.span_id == parent.context.span_id
    assert child.attributes == {"pod.uid": "u1"}
    assert parent.attributes is not None and parent.attributes["pod.name"] == "p"
    assert parent.status.status_code is StatusCode.ERROR
    assert parent.status.description == "NotFound: pod default/p"
    assert parent.attributes["error.type"] == "NotFound"
    assert [e.name for e in parent.events] == ["exception"]


def test_cancellation_is_not_an_error() -> None:
    telemetry, memory = telemetry_with_memory()
    with pytest.raises(asyncio.CancelledError), telemetry.tracer.span("loop"):
        raise asyncio.CancelledError
    (span,) = memory.get_finished_spans()
    assert span.status.status_code is StatusCode.UNSET


def test_no_exporter_means_null_tracer_and_no_middleware() -> None:
    telemetry = Telemetry(TraceSettings(), node=NODE)
    assert not telemetry.enabled
    assert isinstance(telemetry.tracer, NullTracer)
    assert telemetry.middlewares == ()


def test_resource_has_service_name_tags_and_node_identity() -> None:
    telemetry, memory = telemetry_with_memory(service_name="vk-svc", tags={"team": "infra"})
    with telemetry.tracer.span("x"):
        pass
    (span,) = memory.get_finished_spans()
    attributes = dict(span.resource.attributes)
    assert attributes["service.name"] == "vk-svc"
    assert attributes["team"] == "infra"
    assert (attributes["nodeName"], attributes["provider"], attributes["operatingSystem"]) == (
        "vk-trace",
        "mock",
        "linux",
    )


def test_reserved_tags_are_rejected() -> None:
    with pytest.raises(InvalidInput, match="nodeName"):
        Telemetry(TraceSettings(exporters=("zpages",), tags={"nodeName": "x"}), node=NODE, env={})


# -- request middleware -------------------------------------------------------------------------------
@pytest.fixture
async def traced_app() -> AsyncIterator[tuple[str, InMemorySpanExporter]]:
    telemetry, memory = telemetry_with_memory("0")  # only propagated decisions record

    async def logs(request: web.Request) -> web.Response:
        return web.Response(text="log")

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("boom")

    app = web.Application(middlewares=list(telemetry.middlewares))
    app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", logs)
    app.router.add_get("/broken", broken)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", memory
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    "headers",
    [
        {"X-B3-TraceId": TRACE_ID, "X-B3-SpanId": PARENT_SPAN_ID, "X-B3-Sampled": "1"},
        {"B3": f"{TRACE_ID}-{PARENT_SPAN_ID}-1"},
        {"Traceparent": f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"},
    ],
    ids=["b3-multi", "b3-single", "w3c"],
)
async def test_request_span_is_named_after_the_route_and_parented_on_the_caller(
    traced_app: tuple[str, InMemorySpanExporter], headers: dict[str, str]
) -> None:
    url, memory = traced_app
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{url}/containerLogs/ns/p/c", headers=headers) as r,
    ):
        assert r.status == 200
    (span,) = memory.get_finished_spans()
    assert span.name == "GET /containerLogs/{namespace}/{pod}/{container}"
    assert format_trace_id(span.context.trace_id) == TRACE_ID
    assert span.parent is not None and format_span_id(span.parent.span_id) == PARENT_SPAN_ID
    assert span.attributes is not None
    assert span.attributes["url.path"] == "/containerLogs/ns/p/c"
    assert span.attributes["http.response.status_code"] == 200


async def test_request_failures_mark_the_span(traced_app: tuple[str, InMemorySpanExporter]) -> None:
    url, memory = traced_app
    headers = {"b3": f"{TRACE_ID}-{PARENT_SPAN_ID}-1"}
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/broken", headers=headers) as r:
            assert r.status == 500
        async with session.get(f"{url}/nowhere", headers=headers) as r:
            assert r.status == 404
    broken, nowhere = memory.get_finished_spans()
    assert broken.status.status_code is StatusCode.ERROR
    assert nowhere.name == "GET unmatched route"
    assert nowhere.attributes is not None and nowhere.attributes["http.response.status_code"] == 404


# -- zpages ---------------------------------------------------------------------------------------------
def test_latency_buckets() -> None:
    assert [latency_bucket(ns) for ns in (0, 9_999, 10_000, 5 * 10**6, 2 * 10**11)] == [0, 0, 1, 3, 8]


async def test_tracez_lists_span_names_with_counts_and_errors() -> None:
    processor = ZPagesProcessor()
    telemetry = Telemetry(TraceSettings(sample_rate=ALWAYS), node=NODE, exporters=[processor])
    server = ZPagesServer(processor, host="127.0.0.1", port=0)
    await server.start()
    try:
        for _ in range(3):
            with telemetry.tracer.span("PodController.sync"):
                pass
        with pytest.raises(NotFound), telemetry.tracer.span("Provider.delete_pod"):
            raise NotFound("gone")
        with telemetry.tracer.span("NodeController.renew_lease"):
            async with aiohttp.ClientSession() as session:
                base = f"http://127.0.0.1:{server.port}/debug/tracez"
                async with session.get(base, params={"format": "json"}) as r:
                    rows = {row["name"]: row for row in await r.json()}
                async with session.get(base) as r:
                    page = await r.text()
                async with session.get(
                    base, params={"zspanname": "Provider.delete_pod", "ztype": "errors"}
                ) as r:
                    errors_page = await r.text()
    finally:
        await server.stop()
    assert rows["PodController.sync"]["finished"] == 3 and rows["PodController.sync"]["errors"] == 0
    assert rows["Provider.delete_pod"]["errors"] == 1
    assert rows["NodeController.renew_lease"]["running"] == 1
    assert 'data-span-name="PodController.sync"' in page and "Running" in page
    assert "NotFound: gone" in errors_page


# -- exporter configuration ---------------------------------------------------------------------------
def context(env: dict[str, str]) -> ExporterContext:
    telemetry = Telemetry(TraceSettings(), node=NODE)
    return ExporterContext(env=env, service_name="svc", resource=telemetry.resource)


def test_unknown_exporter_lists_the_available_ones() -> None:
    with pytest.raises(InvalidInput, match=r"'nope' not found \(available: jaeger, otlp, zpages"):
        DEFAULT_REGISTRY.build("nope", context({}))


def test_jaeger_needs_an_endpoint() -> None:
    with pytest.raises(InvalidInput, match=r"JAEGER_ENDPOINT .* or JAEGER_AGENT_ENDPOINT"):
        jaeger_factory(context({}))


def test_zpages_needs_zpages_port() -> None:
    with pytest.raises(InvalidInput, match="needs ZPAGES_PORT"):
        Telemetry(TraceSettings(exporters=("zpages",)), node=NODE, env={})


@pytest.mark.parametrize(
    ("value", "url"),
    [
        ("http://localhost:14268", "http://localhost:14268/api/traces"),
        ("http://localhost:14268/", "http://localhost:14268/api/traces"),
        (
            "https://j.example/api/traces?format=jaeger.thrift",
            "https://j.example/api/traces?format=jaeger.thrift",
        ),
    ],
)
def test_collector_url(value: str, url: str) -> None:
    assert jaeger_collector_url(value) == url


def test_collector_url_must_be_http() -> None:
    with pytest.raises(InvalidInput, match="JAEGER_ENDPOINT='localhost:14268'"):
        jaeger_collector_url("localhost:14268")


class _Collector(http.server.BaseHTTPRequestHandler):
    received: list[tuple[str, dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, dict(self.headers), body))
        self.send_response(202)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[tuple[int, list[tuple[str, dict[str, str], bytes]]]]:
    received: list[tuple[str, dict[str, str], bytes]] = []
    handler = type("Handler", (_Collector,), {"received": received})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], received
    finally:
        server.shutdown()
        server.server_close()


async def test_jaeger_collector_with_basic_auth_and_flush_on_shutdown(
    collector: tuple[int, list[tuple[str, dict[str, str], bytes]]],
) -> None:
    port, received = collector
    env = {"JAEGER_ENDPOINT": f"http://127.0.0.1:{port}", "JAEGER_USER": "u", "JAEGER_PASSWORD": "p"}
    telemetry = Telemetry(
        TraceSettings(exporters=("jaeger",), service_name="vk-http", sample_rate=ALWAYS), node=NODE, env=env
    )
    await telemetry.start()
    with telemetry.tracer.span("PodController.sync", {"pod.name": "nginx"}):
        pass
    assert received == []  # batched: nothing is sent before the flush
    await telemetry.shutdown()
    ((path, headers, body),) = received
    assert path == "/api/traces"
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"u:p").decode()
    assert headers["Content-Type"] == "application/x-thrift"
    assert b"vk-http" in body and b"PodController.sync" in body and b"nginx" in body


async def test_jaeger_agent_over_udp_with_the_documented_misspelling() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as agent:
        agent.bind(("127.0.0.1", 0))
        agent.settimeout(10)
        env = {"JAGER_AGENT_ENDPOINT": f"127.0.0.1:{agent.getsockname()[1]}"}
        telemetry = Telemetry(
            TraceSettings(exporters=("jaeger",), service_name="vk-udp", sample_rate=ALWAYS),
            node=NODE,
            env=env,
        )
        with telemetry.tracer.span("NodeController.renew_lease"):
            pass
        await telemetry.shutdown()
        datagram = agent.recv(65535)
    assert b"emitBatch" in datagram and b"vk-udp" in datagram and b"NodeController.renew_lease" in datagram


# -- library API ----------------------------------------------------------------------------------------
class _ListExporter(SpanExporter):
    def __init__(self) -> None:
        self.names: list[str] = []

    def export(self, spans: object) -> SpanExportResult:
        self.names.extend(span.name for span in spans)  # type: ignore[attr-defined]
        return SpanExportResult.SUCCESS


async def test_register_an_exporter_by_name() -> None:
    registry = ExporterRegistry()
    exporter = _ListExporter()
    registry.register("list", lambda ctx: exporter)
    telemetry = Telemetry(TraceSettings(exporters=("list",)), node=NODE, registry=registry)
    with telemetry.tracer.span("a"):
        pass
    await telemetry.shutdown()  # the returned exporter was batched; shutdown flushes it
    assert exporter.names == ["a"]
    with pytest.raises(InvalidInput, match="already registered"):
        registry.register("list", lambda ctx: exporter)


async def test_the_default_registry_can_be_extended() -> None:
    exporter = _ListExporter()
    register_exporter("test-list", lambda ctx: exporter)
    try:
        assert available_exporters()[-1] == "test-list"
        telemetry = Telemetry(TraceSettings(exporters=("test-list",)), node=NODE)
        with telemetry.tracer.span("b"):
            pass
        await telemetry.shutdown()
    finally:
        DEFAULT_REGISTRY.unregister("test-list")
    assert exporter.names == ["b"]
    assert "test-list" not in available_exporters()


async def test_hand_in_a_tracer_provider() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    telemetry = Telemetry(TraceSettings(), node=NODE, tracer_provider=provider)
    with telemetry.tracer.span("mine"):
        pass
    await telemetry.shutdown()
    assert [s.name for s in memory.get_finished_spans()] == ["mine"]


# -- logs -------------------------------------------------------------------------------------------------
def test_log_lines_inside_a_span_carry_its_trace_id() -> None:
    telemetry, memory = telemetry_with_memory()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(TraceIdFilter())
    handler.setFormatter(logging.Formatter("%(message)s%(trace_context)s"))
    logger = logging.getLogger("test-trace-logs")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("outside")
        with telemetry.tracer.span("sync"):
            logger.warning("inside")
    finally:
        logger.removeHandler(handler)
    (span,) = memory.get_finished_spans()
    outside, inside = stream.getvalue().splitlines()
    assert outside == "outside"
    trace_id, span_id = format_trace_id(span.context.trace_id), format_span_id(span.context.span_id)
    assert inside == f"inside trace_id={trace_id} span_id={span_id}"


# -- the CLI ----------------------------------------------------------------------------------------------
def run_cli(
    *args: str, env: dict[str, str] | None = None, tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("JAEGER", "JAGER", "ZPAGES"))}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "vkubelet",
            "--provider",
            "mock",
            "--anonymous-auth",
            "--kubeconfig",
            str(kubeconfig),
            *args,
        ],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("rate", ["150", "-1", "12.5", "sometimes"])
def test_cli_rejects_invalid_sample_rates(rate: str, tmp_path: Path) -> None:
    result = run_cli("--trace-exporter", "zpages", f"--trace-sample-rate={rate}", tmp_path=tmp_path)
    assert result.returncode != 0
    assert f"{rate!r}" in result.stderr and "0..100" in result.stderr, result.stderr


def test_cli_zpages_without_zpages_port_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli("--trace-exporter", "zpages", tmp_path=tmp_path)
    assert result.returncode == 1
    assert "the zpages trace exporter needs ZPAGES_PORT" in result.stderr, result.stderr


def test_cli_jaeger_without_endpoints_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli("--trace-exporter", "jaeger", tmp_path=tmp_path)
    assert result.returncode == 1
    assert "JAEGER_ENDPOINT" in result.stderr and "JAEGER_AGENT_ENDPOINT" in result.stderr, result.stderr


def test_cli_unknown_exporter_lists_the_available_ones(tmp_path: Path) -> None:
    result = run_cli("--trace-exporter", "ocagent", tmp_path=tmp_path)
    assert result.returncode != 0
    assert "jaeger" in result.stderr and "zpages" in result.stderr and "otlp" in result.stderr, result.stderr
