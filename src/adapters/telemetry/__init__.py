"""OpenTelemetry behind vkubelet's Tracer port: sampling, exporters, zpages, propagation.

Library use (docs/tracing.md has the full example)::

    from vkubelet.adapters.telemetry import Telemetry, register_exporter

    register_exporter("console", lambda ctx: ConsoleSpanExporter())   # by name, for --trace-exporter
    telemetry = Telemetry(settings.trace, node=NodeIdentity(...), exporters=[my_span_exporter])
    telemetry = Telemetry(settings.trace, node=..., tracer_provider=my_tracer_provider)

``Telemetry.tracer`` is the Tracer port the controllers take; ``Telemetry.middlewares`` traces
kubelet API requests; ``await Telemetry.shutdown()`` flushes pending spans.
"""

from vkubelet.adapters.telemetry.exporters import (
    DEFAULT_REGISTRY,
    ExporterContext,
    ExporterFactory,
    ExporterRegistry,
    ExporterSetup,
    available_exporters,
    register_exporter,
)
from vkubelet.adapters.telemetry.logs import TraceIdFilter
from vkubelet.adapters.telemetry.propagation import extract_context, inject_context
from vkubelet.adapters.telemetry.sampler import RateSampler
from vkubelet.adapters.telemetry.setup import DEFAULT_SAMPLE_RATE, NodeIdentity, Telemetry, build_resource
from vkubelet.adapters.telemetry.tracer import OtelTracer

__all__ = [
    "DEFAULT_REGISTRY",
    "DEFAULT_SAMPLE_RATE",
    "ExporterContext",
    "ExporterFactory",
    "ExporterRegistry",
    "ExporterSetup",
    "NodeIdentity",
    "OtelTracer",
    "RateSampler",
    "Telemetry",
    "TraceIdFilter",
    "available_exporters",
    "build_resource",
    "extract_context",
    "inject_context",
    "register_exporter",
]
