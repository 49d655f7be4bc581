"""The reconcile loop's spans through the Tracer port: names, pod/node attributes, errors.

Uses the pod controller harness of test_pod_controller.py with a recording fake tracer.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from tests.unit.application.test_pod_controller import NODE, Harness

from vkubelet.application.environment import EnvironmentResolver
from vkubelet.application.pod_controller import PodController, PodControllerSettings
from vkubelet.application.ports.runtime import AttributeValue, Span
from vkubelet.domain.backoff import Backoff
from vkubelet.domain.errors import Transient


@dataclass
class RecordedSpan:
    name: str
    attributes: dict[str, AttributeValue]
    errors: list[BaseException] = field(default_factory=list)

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        self.attributes[key] = value

    def record_error(self, error: BaseException) -> None:
        self.errors.append(error)


class RecordingTracer:
    """Keeps every span; an exception leaving a span is recorded on it (the port's contract)."""

    def __init__(self) -> None:
        self.spans: list[RecordedSpan] = []

    @contextmanager
    def span(self, name: str, attributes: Mapping[str, AttributeValue] | None = None) -> Iterator[Span]:
        span = RecordedSpan(name, dict(attributes or {}))
        self.spans.append(span)
        try:
            yield span
        except Exception as error:
            span.record_error(error)
            raise

    def named(self, name: str) -> list[RecordedSpan]:
        return [s for s in self.spans if s.name == name]


def traced_harness() -> tuple[Harness, RecordingTracer]:
    harness = Harness(streaming=True)
    tracer = RecordingTracer()
    harness.controller = PodController(
        pods=harness.pods,
        provider=harness.provider,
        environment=EnvironmentResolver(
            configs=harness.configs, provider=harness.provider, host_ip="10.0.0.1"
        ),
        events=harness.events,
        clock=harness.clock,
        settings=PodControllerSettings(
            node_name=NODE,
            workers=4,
            full_resync_period=60,
            status_poll_interval=5,
            backoff=Backoff(base=0.05, cap=5),
        ),
        tracer=tracer,
    )
    return harness, tracer


async def test_reconcile_steps_carry_pod_and_node_attributes() -> None:
    harness, tracer = traced_harness()
    await harness.start()
    try:
        pod = await harness.run_pod("web")
    finally:
        await harness.stop()
    expected = {"pod.namespace": "default", "pod.name": "web", "pod.uid": pod.ref.uid, "node.name": NODE}
    for name in ("PodController.sync", "Provider.create_pod", "PodGateway.patch_pod_status"):
        spans = tracer.named(name)
        assert spans, f"no {name} span"
        for span in spans:
            assert expected.items() <= span.attributes.items(), (name, span.attributes)


async def test_a_failed_provider_call_is_recorded_on_its_span() -> None:
    harness, tracer = traced_harness()
    harness.provider.inject_failure("create_pod", Transient("provider busy"))
    await harness.start()
    try:
        await harness.run_pod("web")
    finally:
        await harness.stop()
    creates = tracer.named("Provider.create_pod")
    assert [str(e) for e in creates[0].errors] == ["provider busy"]
    assert creates[-1].errors == []  # the retry succeeded
