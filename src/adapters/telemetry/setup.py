"""Tracing for one process: the TracerProvider from TraceSettings, its lifecycle and its parts."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aiohttp.typedefs import Middleware
from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from vkubelet.adapters.telemetry.exporters import (
    DEFAULT_REGISTRY,
    ExporterContext,
    ExporterRegistry,
    ExporterSetup,
)
from vkubelet.adapters.telemetry.http import tracing_middleware
from vkubelet.adapters.telemetry.sampler import RateSampler
from vkubelet.adapters.telemetry.tracer import OtelTracer
from vkubelet.application.ports.runtime import Tracer
from vkubelet.application.settings import TraceSettings
from vkubelet.application.tracing import NullTracer
from vkubelet.domain.errors import InvalidInput
from vkubelet.domain.sampling import ALWAYS, SampleRate

log = logging.getLogger(__name__)

# Exporters set, --trace-sample-rate unset: record every trace. Whoever names an exporter wants to
# see traces; upstream's 1-in-10,000 default exported next to nothing and looked broken. A
# virtual kubelet makes a few spans per pod change, so "always" is affordable (docs/benchmarks.md).
DEFAULT_SAMPLE_RATE: SampleRate = ALWAYS

RESERVED_TAGS = ("operatingSystem", "provider", "nodeName")


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    """The resource attributes every trace carries, set from the node's settings."""

    node_name: str
    provider: str
    operating_system: str


def build_resource(*, service_name: str, tags: Mapping[str, str], node: NodeIdentity) -> Resource:
    """``service.name`` plus the ``--trace-tag`` tags plus the three automatic ones."""
    reserved = sorted(set(tags) & set(RESERVED_TAGS))
    if reserved:
        raise InvalidInput(f"trace tag(s) {', '.join(reserved)} are reserved and set automatically")
    return Resource.create(
        {
            **tags,
            SERVICE_NAME: service_name,
            "operatingSystem": node.operating_system,
            "provider": node.provider,
            "nodeName": node.node_name,
        }
    )


class Telemetry:
    """Builds tracing from :class:`TraceSettings` and owns its lifecycle.

    * No exporter names, no ``exporters`` and no ``tracer_provider``: tracing is off; ``tracer`` is
      the :class:`NullTracer` and there is no request middleware.
    * ``settings.exporters`` are built from ``registry`` (default: jaeger, otlp, zpages and anything
      added with :func:`register_exporter`); ``exporters`` are SpanExporters or SpanProcessors
      handed in by a library user. Both go to a TracerProvider built here with the rate sampler and
      the resource of :func:`build_resource`.
    * ``tracer_provider``: a provider configured by the library user, used as is (its sampler,
      resource and processors are theirs); named and handed-in exporters are added to it when it
      is an SDK one, and are an error otherwise.

    Configuration errors raise :class:`InvalidInput` from the constructor. :meth:`start` starts
    exporter servers (zpages); :meth:`shutdown` stops them and flushes pending spans.
    """

    def __init__(
        self,
        settings: TraceSettings,
        *,
        node: NodeIdentity,
        env: Mapping[str, str] | None = None,
        registry: ExporterRegistry = DEFAULT_REGISTRY,
        exporters: Sequence[SpanExporter | SpanProcessor] = (),
        tracer_provider: trace.TracerProvider | None = None,
        install_global: bool = False,
    ) -> None:
        self._setups: list[ExporterSetup] = []
        self._owned: TracerProvider | None = None
        self._started: list[ExporterSetup] = []
        self.sample_rate = settings.sample_rate or DEFAULT_SAMPLE_RATE
        self.resource = build_resource(service_name=settings.service_name, tags=settings.tags, node=node)
        if tracer_provider is None and (settings.exporters or exporters):
            tracer_provider = self._owned = TracerProvider(
                resource=self.resource, sampler=RateSampler(self.sample_rate)
            )
        if install_global and tracer_provider is not None:
            # Before any exporter is built: the Jaeger exporter reads service.name from it.
            trace.set_tracer_provider(tracer_provider)
        context = ExporterContext(
            env=dict(os.environ if env is None else env),
            service_name=settings.service_name,
            resource=self.resource,
        )
        for name in dict.fromkeys(settings.exporters):  # each once, in order
            self._setups.append(registry.build(name, context))
        for exporter in exporters:
            self._setups.append(
                ExporterSetup(
                    exporter if isinstance(exporter, SpanProcessor) else BatchSpanProcessor(exporter)
                )
            )
        if self._setups and not isinstance(tracer_provider, TracerProvider):
            raise InvalidInput("exporters can only be added to an opentelemetry-sdk TracerProvider")
        for setup in self._setups:
            assert isinstance(tracer_provider, TracerProvider)
            tracer_provider.add_span_processor(setup.processor)
        self.tracer_provider = tracer_provider
        if tracer_provider is not None:
            log.info(
                "tracing: exporters %s, sample rate %s",
                ", ".join(settings.exporters) or "(library-provided)",
                self.sample_rate,
            )

    @property
    def enabled(self) -> bool:
        return self.tracer_provider is not None

    @property
    def tracer(self) -> Tracer:
        if self.tracer_provider is None:
            return NullTracer()
        return OtelTracer(self.tracer_provider)

    @property
    def middlewares(self) -> tuple[Middleware, ...]:
        if self.tracer_provider is None:
            return ()
        return (tracing_middleware(self.tracer_provider),)

    async def start(self) -> None:
        for setup in self._setups:
            if setup.start is not None:
                await setup.start()
            self._started.append(setup)

    async def shutdown(self) -> None:
        """Stop exporter servers, then flush and shut down the provider built here (a provider
        handed in is only flushed: its owner shuts it down)."""
        for setup in reversed(self._started):
            if setup.stop is not None:
                try:
                    await setup.stop()
                except Exception as error:
                    log.warning("tracing: stopping an exporter failed: %s", error)
        self._started.clear()
        provider = self.tracer_provider
        # Exports block on the network: keep them off the event loop.
        if self._owned is not None:
            await asyncio.to_thread(self._owned.shutdown)
        elif provider is not None and callable(flush := getattr(provider, "force_flush", None)):
            await asyncio.to_thread(flush)
