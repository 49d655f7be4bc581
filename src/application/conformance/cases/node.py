"""Conformance cases about the provider as a whole: its declared capabilities against what its
methods do, its node template, its node status stream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from vkubelet.application.conformance.harness import (
    CONTAINER,
    CaseContext,
    ClosedStream,
    ScriptedIO,
    WaitExpired,
    aclose,
    await_within,
    describe_error,
    expect_error,
    first_item,
    unknown_ref,
)
from vkubelet.application.conformance.report import CaseFailed
from vkubelet.application.ports.provider import Provider
from vkubelet.application.ports.streams import LogOptions
from vkubelet.domain.errors import NotSupported
from vkubelet.domain.provider import Capability, MetricFamily, NodeTemplate
from vkubelet.domain.volumes import PodVolumes, unknown_volume_kinds

# How long the node status case listens (at most ``timeout``). The kit cannot make a provider's
# node change, so it only checks that the stream stays open and that what it sends is whole.
NODE_STREAM_LISTEN_SECONDS = 1.0


async def describe_consistent(provider: Provider, ctx: CaseContext) -> None:
    """The node template is usable; the native volume kinds are volume kinds; each undeclared
    capability's method answers NotSupported and each declared stats capability works."""
    ctx.step("capabilities")
    declared = provider.capabilities()
    odd = [c for c in declared if not isinstance(c, Capability)]
    if odd:
        raise CaseFailed("capabilities()", expected="Capability values", got=repr(odd))
    ctx.step("native_volume_kinds")
    native = provider.native_volume_kinds()
    strange = sorted(repr(kind) for kind in native if not isinstance(kind, str))
    strange += [repr(kind) for kind in unknown_volume_kinds(k for k in native if isinstance(k, str))]
    if strange:
        raise CaseFailed(
            "native_volume_kinds()",
            expected='v1.Volume source field names such as "persistentVolumeClaim" or "hostPath"',
            got=", ".join(strange),
        )
    ctx.step("node_template")
    _check_template("node_template()", await provider.node_template())

    ref = unknown_ref(ctx)
    undeclared: dict[Capability, Callable[[], Awaitable[object]]] = {
        Capability.POD_STATUS_STREAM: lambda: first_item(provider.pod_status_updates()),
        Capability.NODE_STATUS_STREAM: lambda: first_item(provider.node_status_updates()),
        Capability.LOGS: lambda: first_item(provider.container_logs(ref, CONTAINER, LogOptions())),
        Capability.EXEC: lambda: provider.exec_in_container(ref, CONTAINER, ["true"], ScriptedIO()),
        Capability.ATTACH: lambda: provider.attach_to_container(ref, CONTAINER, ScriptedIO()),
        Capability.PORT_FORWARD: lambda: provider.port_forward(ref, 80, ClosedStream()),
        Capability.STATS_SUMMARY: provider.stats_summary,
        Capability.METRICS_RESOURCE: provider.metrics_resource,
        Capability.VOLUMES: lambda: provider.set_pod_volumes(ref, PodVolumes()),
        Capability.KILL_CONTAINER: lambda: provider.kill_container(ref, CONTAINER, grace_period_seconds=0),
    }
    for capability, call in undeclared.items():
        if capability in declared:
            continue
        ctx.step(f"call of the undeclared capability {capability.value}")
        await expect_error(
            f"undeclared capability {capability.value!r}",
            call(),
            (NotSupported,),
            clock=ctx.clock,
            within=ctx.timeout,
        )
    if Capability.STATS_SUMMARY in declared:
        ctx.step("stats_summary (declared)")
        summary = await provider.stats_summary()
        if not isinstance(summary, Mapping):
            raise CaseFailed("stats_summary()", expected="a JSON object", got=type(summary).__name__)
    if Capability.METRICS_RESOURCE in declared:
        ctx.step("metrics_resource (declared)")
        families = await provider.metrics_resource()
        if not all(isinstance(f, MetricFamily) for f in families):
            raise CaseFailed("metrics_resource()", expected="metric families", got=repr(families)[:200])
    untested = sorted(c.value for c in declared & {Capability.ATTACH, Capability.PORT_FORWARD})
    if untested:
        ctx.note(f"declared but not exercised by this kit: {', '.join(untested)}")


def _check_template(what: str, template: object) -> None:
    """Fail unless ``template`` is a whole node template: cpu, memory and pods capacity, an OS
    and an architecture."""
    if not isinstance(template, NodeTemplate):
        raise CaseFailed(what, expected="a node template", got=type(template).__name__)
    if not template.capacity:
        raise CaseFailed(f"{what}.capacity", expected="a non-empty mapping", got="nothing")
    missing = [key for key in ("cpu", "memory", "pods") if key not in template.capacity]
    if missing:
        raise CaseFailed(f"{what}.capacity", expected="cpu, memory and pods", got=f"no {', '.join(missing)}")
    if not template.operating_system or not template.architecture:
        raise CaseFailed(
            what,
            expected="an operating system and an architecture",
            got=f"{template.operating_system!r}/{template.architecture!r}",
        )


async def node_status_stream(provider: Provider, ctx: CaseContext) -> None:
    """The node status stream opens and stays open while the kit listens, and every template it
    sends is whole (cpu, memory and pods capacity, an OS and an architecture)."""
    listen = min(ctx.timeout, NODE_STREAM_LISTEN_SECONDS)
    received = 0

    async def listen_to(stream: AsyncIterator[NodeTemplate]) -> None:
        nonlocal received
        try:
            async for template in stream:
                received += 1
                _check_template(f"node_status_updates() template {received}", template)
        except CaseFailed:
            raise
        except Exception as error:
            raise CaseFailed(
                "node_status_updates()",
                expected=f"an open stream for {listen:g}s",
                got=f"after {received} template(s), {describe_error(error)}",
            ) from None
        raise CaseFailed(
            "node_status_updates()",
            expected=f"an open stream for {listen:g}s",
            got=f"its end after {received} template(s)",
        )

    ctx.step("node_status_updates")
    stream = provider.node_status_updates()
    try:
        await await_within(ctx.clock, listen, listen_to(stream))
    except WaitExpired:
        pass  # still open: what the case wants
    finally:
        await aclose(stream)
    if received == 0:
        ctx.note(
            f"no template within {listen:g}s; the kit cannot change the node, so pushed changes "
            "were not exercised (sending the current template first lets it check one)"
        )
