"""Context propagation: W3C ``traceparent``, Zipkin B3 multi (``X-B3-*``) and single (``b3``).

Extraction is case-insensitive whatever the carrier (a plain dict's ``X-B3-TraceId`` is found;
OpenTelemetry's default getter would miss it). Injection writes all three formats, for outgoing
calls such as gRPC metadata.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.propagators.b3 import B3MultiFormat, B3SingleFormat
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

PROPAGATOR = CompositePropagator([TraceContextTextMapPropagator(), B3MultiFormat(), B3SingleFormat()])

# Set in the extracted context when a B3 parent carried no sampling decision ("defer").
_DEFERRED = otel_context.create_key("vkubelet-b3-deferred")


class _CaseInsensitiveGetter(Getter[Mapping[str, str]]):
    """Reads a carrier whose keys were lower-cased by :func:`extract_context`."""

    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        value = carrier.get(key.lower())
        return None if value is None else [value]

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        return list(carrier)


_GETTER = _CaseInsensitiveGetter()


def _b3_without_decision(headers: Mapping[str, str]) -> bool:
    single = headers.get("b3")
    if single is not None:
        # traceid-spanid[-sampled[-parentspanid]]; "0"/"1"/"d" alone is a bare decision
        return single.count("-") == 1
    return (
        "x-b3-traceid" in headers
        and "x-b3-sampled" not in headers
        and headers.get("x-b3-flags") != "1"
        and "traceparent" not in headers
    )


def extract_context(headers: Mapping[str, str]) -> Context:
    """The remote parent carried by ``headers`` (any key case), as an OpenTelemetry Context.

    Several values under one name (aiohttp's CIMultiDict) keep the first."""
    lowered: dict[str, str] = {}
    for key, value in headers.items():
        lowered.setdefault(key.lower(), value)
    extracted = PROPAGATOR.extract(lowered, getter=_GETTER)
    if _b3_without_decision(lowered):
        extracted = otel_context.set_value(_DEFERRED, True, extracted)
    return extracted


def decision_deferred(parent_context: Context | None) -> bool:
    """True when the remote parent in ``parent_context`` left the sampling decision to us."""
    return bool(otel_context.get_value(_DEFERRED, parent_context))


def inject_context(carrier: MutableMapping[str, str], context: Context | None = None) -> None:
    """Write the current (or given) span context into ``carrier`` in W3C, B3 multi and B3 single."""
    PROPAGATOR.inject(carrier, context=context)
