"""Exporters by name: the registry ``--trace-exporter`` picks from, and the built-in three.

* ``jaeger`` — Thrift over HTTP to a collector (``JAEGER_ENDPOINT`` or ``JAEGER_COLLECTOR_ENDPOINT``,
  basic auth from ``JAEGER_USER``/``JAEGER_PASSWORD``) or compact Thrift over UDP to an agent
  (``JAEGER_AGENT_ENDPOINT`` or the debugging document's ``JAGER_AGENT_ENDPOINT``). Neither set is
  an error (upstream silently ignored ``JAEGER_ENDPOINT``, its bug).
* ``otlp`` — OTLP/HTTP protobuf, configured by the standard ``OTEL_EXPORTER_OTLP_*`` variables.
* ``zpages`` — in-process span summaries served at ``/debug/tracez`` on ``ZPAGES_PORT``.

A factory receives an :class:`ExporterContext` and returns a ``SpanExporter`` (batched for it),
a ``SpanProcessor`` (used as is) or an :class:`ExporterSetup` (a processor plus async
start/stop hooks, e.g. for a server). Configuration errors are
:class:`~vkubelet.domain.errors.InvalidInput` naming the variable.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from vkubelet.application.settings import TRACE_EXPORTERS
from vkubelet.domain.errors import InvalidInput

log = logging.getLogger(__name__)

JAEGER_COLLECTOR_VARIABLES = ("JAEGER_ENDPOINT", "JAEGER_COLLECTOR_ENDPOINT")
JAEGER_AGENT_VARIABLES = ("JAEGER_AGENT_ENDPOINT", "JAGER_AGENT_ENDPOINT")
JAEGER_COLLECTOR_PATH = "/api/traces"


@dataclass(frozen=True, slots=True)
class ExporterContext:
    """What a factory may use: the environment it reads its settings from and the resource."""

    env: Mapping[str, str]
    service_name: str
    resource: Resource


@dataclass(frozen=True, slots=True)
class ExporterSetup:
    processor: SpanProcessor
    start: Callable[[], Awaitable[None]] | None = None
    stop: Callable[[], Awaitable[None]] | None = None


ExporterFactory = Callable[[ExporterContext], "SpanExporter | SpanProcessor | ExporterSetup"]


class ExporterRegistry:
    """Exporter factories by name. Building an unknown name is an error listing the known ones."""

    def __init__(self, factories: Mapping[str, ExporterFactory] | None = None) -> None:
        self._factories: dict[str, ExporterFactory] = dict(factories or {})

    def register(self, name: str, factory: ExporterFactory, *, replace: bool = False) -> None:
        if not name or "," in name:
            raise InvalidInput(f"invalid exporter name {name!r}")
        if name in self._factories and not replace:
            raise InvalidInput(f"tracing exporter {name!r} is already registered")
        self._factories[name] = factory

    def unregister(self, name: str) -> None:
        """Forget ``name``; unknown names are ignored."""
        self._factories.pop(name, None)

    def names(self) -> tuple[str, ...]:
        return tuple(self._factories)

    def copy(self) -> ExporterRegistry:
        return ExporterRegistry(self._factories)

    def build(self, name: str, context: ExporterContext) -> ExporterSetup:
        factory = self._factories.get(name)
        if factory is None:
            raise InvalidInput(
                f"tracing exporter {name!r} not found (available: {', '.join(self.names()) or 'none'})"
            )
        built = factory(context)
        if isinstance(built, ExporterSetup):
            return built
        if isinstance(built, SpanProcessor):
            return ExporterSetup(built)
        if isinstance(built, SpanExporter):
            return ExporterSetup(BatchSpanProcessor(built))
        raise TypeError(f"exporter factory {name!r} returned {type(built).__name__}")


# -- jaeger ---------------------------------------------------------------------------------------
_JAEGER_SHIM_NAMES = (
    "OTEL_EXPORTER_JAEGER_AGENT_HOST",
    "OTEL_EXPORTER_JAEGER_AGENT_PORT",
    "OTEL_EXPORTER_JAEGER_AGENT_SPLIT_OVERSIZED_BATCHES",
    "OTEL_EXPORTER_JAEGER_ENDPOINT",
    "OTEL_EXPORTER_JAEGER_PASSWORD",
    "OTEL_EXPORTER_JAEGER_TIMEOUT",
    "OTEL_EXPORTER_JAEGER_USER",
)


def _jaeger_exporter_class() -> Callable[..., SpanExporter]:
    # The exporter imports constants that opentelemetry-sdk removed in 1.40; their value was the
    # variable's own name, so defining them restores the old behaviour exactly.
    import opentelemetry.sdk.environment_variables as variables

    for name in _JAEGER_SHIM_NAMES:
        if not hasattr(variables, name):
            setattr(variables, name, name)
    from opentelemetry.exporter.jaeger.thrift import JaegerExporter

    exporter_class: Callable[..., SpanExporter] = JaegerExporter
    return exporter_class


def _first(env: Mapping[str, str], names: tuple[str, ...]) -> tuple[str, str] | None:
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return name, value
    return None


def jaeger_collector_url(value: str, *, variable: str = "JAEGER_ENDPOINT") -> str:
    """``http://host:14268`` -> ``http://host:14268/api/traces``; a URL with a path is kept."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(
            f"{variable}={value!r} is not an HTTP(S) URL; expected e.g. http://localhost:14268"
        )
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError as error:
        raise InvalidInput(f"{variable}={value!r}: {error}") from None
    path = parts.path if parts.path not in ("", "/") else JAEGER_COLLECTOR_PATH
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def parse_host_port(value: str, *, variable: str, default_host: str = "") -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or ``:port`` (``default_host``)."""
    host, sep, port_text = value.strip().rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise InvalidInput(f"{variable}={value!r} is not an address; expected host:port, e.g. localhost:8080")
    host = host.removeprefix("[").removesuffix("]") or default_host
    return host, int(port_text)


def jaeger_factory(context: ExporterContext) -> SpanExporter:
    env = context.env
    collector = _first(env, JAEGER_COLLECTOR_VARIABLES)
    agent = _first(env, JAEGER_AGENT_VARIABLES)
    if collector is None and agent is None:
        raise InvalidInput(
            "the jaeger trace exporter needs JAEGER_ENDPOINT (the HTTP Thrift collector, e.g. "
            "http://localhost:14268) or JAEGER_AGENT_ENDPOINT (the UDP agent, e.g. localhost:6831)"
        )
    user, password = env.get("JAEGER_USER") or None, env.get("JAEGER_PASSWORD") or None
    if (user is None) != (password is None):
        raise InvalidInput("JAEGER_USER and JAEGER_PASSWORD must be set together")
    exporter_class = _jaeger_exporter_class()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "use OTLP": we offer that as well
        if collector is not None:
            variable, value = collector
            url = jaeger_collector_url(value, variable=variable)
            if agent is not None:
                log.info("jaeger: %s is set, so %s is ignored", variable, agent[0])
            log.info("jaeger: exporting to the collector at %s", url)
            return exporter_class(collector_endpoint=url, username=user, password=password)
        assert agent is not None
        variable, value = agent
        host, port = parse_host_port(value, variable=variable, default_host="localhost")
        log.info("jaeger: exporting to the agent at %s:%d (UDP)", host, port)
        # A batch may not fit one datagram; the exporter splits it when asked to.
        return exporter_class(agent_host_name=host, agent_port=port, udp_split_oversized_batches=True)


# -- otlp -----------------------------------------------------------------------------------------
def otlp_factory(context: ExporterContext) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    env = context.env
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or None
    if endpoint is None and env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        endpoint = env["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"
    # Headers, timeout, certificates and compression: the exporter reads OTEL_EXPORTER_OTLP_*.
    return OTLPSpanExporter(endpoint=endpoint)


# -- zpages ---------------------------------------------------------------------------------------
def zpages_factory(context: ExporterContext) -> ExporterSetup:
    from vkubelet.adapters.telemetry.zpages import ZPagesProcessor, ZPagesServer

    value = context.env.get("ZPAGES_PORT", "").strip()
    if not value:
        raise InvalidInput(
            "the zpages trace exporter needs ZPAGES_PORT, the listen address of /debug/tracez "
            "(e.g. localhost:8080)"
        )
    host, port = parse_host_port(value, variable="ZPAGES_PORT")
    processor = ZPagesProcessor()
    server = ZPagesServer(processor, host=host, port=port)
    return ExporterSetup(processor, start=server.start, stop=server.stop)


_BUILTIN_FACTORIES: Mapping[str, ExporterFactory] = {
    "jaeger": jaeger_factory,
    "otlp": otlp_factory,
    "zpages": zpages_factory,
}
# Which exporters are built in, and their order, is TRACE_EXPORTERS' (the settings' list): a name
# there without a factory here fails at import, not when a user picks it.
DEFAULT_REGISTRY = ExporterRegistry({name: _BUILTIN_FACTORIES[name] for name in TRACE_EXPORTERS})


def register_exporter(name: str, factory: ExporterFactory, *, replace: bool = False) -> None:
    """Make ``name`` selectable in :class:`~vkubelet.adapters.telemetry.Telemetry`'s exporters."""
    DEFAULT_REGISTRY.register(name, factory, replace=replace)


def available_exporters() -> tuple[str, ...]:
    return DEFAULT_REGISTRY.names()
