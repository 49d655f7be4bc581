"""An aiohttp middleware: one server span per kubelet API request, parented on the caller's
B3 (single or multi header) or W3C ``traceparent`` context."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from vkubelet import __version__
from vkubelet.adapters.telemetry.propagation import extract_context
from vkubelet.adapters.telemetry.tracer import INSTRUMENTATION_NAME, record_error


def route_name(request: web.Request) -> str:
    """The route template (``/containerLogs/{namespace}/{pod}/{container}``), not the path, so
    span names do not multiply per pod. Unmatched requests share one name."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched route"


def tracing_middleware(tracer_provider: trace.TracerProvider) -> Middleware:
    tracer = tracer_provider.get_tracer(INSTRUMENTATION_NAME, __version__)

    @web.middleware
    async def trace_request(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = route_name(request)
        attributes = {
            "http.request.method": request.method,
            "http.route": route,
            "url.path": request.path,
            "user_agent.original": request.headers.get("User-Agent", ""),
        }
        with tracer.start_as_current_span(
            f"{request.method} {route}",
            context=extract_context(request.headers),
            kind=SpanKind.SERVER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                response = await handler(request)
            except web.HTTPException as error:
                _set_status(span, error.status)
                raise
            except Exception as error:
                record_error(span, error)
                raise
            _set_status(span, response.status)
            return response

    return trace_request


def _set_status(span: trace.Span, status: int) -> None:
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))
