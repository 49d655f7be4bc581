"""Issue 13 in the sync core: readiness from vkubelet's probes reaches the API pod's status,
a provider that probes natively is left alone, and preStop runs before the provider delete."""

from __future__ import annotations

from typing import Any

from tests.fakes.probes import ScriptedProber
from tests.fakes.provider import FakeProvider
from tests.unit.application.test_pod_controller import NS, Harness

from vkubelet.application.pod_controller import PodController, PodControllerSettings
from vkubelet.domain.backoff import Backoff
from vkubelet.domain.pod import Pod, format_time
from vkubelet.domain.probes import ExecHandler
from vkubelet.domain.provider import Capability


class NativeProbingProvider(FakeProvider):
    def capabilities(self) -> frozenset[Capability]:
        return super().capabilities() | {Capability.PROBES}


class ProbeHarness(Harness):
    def __init__(self, *, provider: FakeProvider | None = None) -> None:
        super().__init__(streaming=True)
        self.provider = provider or FakeProvider(streaming=True)
        self.prober = ScriptedProber()
        self.controller = PodController(
            pods=self.pods,
            provider=self.provider,
            environment=self.controller._environment,
            events=self.events,
            clock=self.clock,
            settings=PodControllerSettings(node_name="vk-node", workers=4, backoff=Backoff(base=0.05, cap=5)),
            prober=self.prober,
        )

    def run_container(self, pod: Pod) -> None:
        """The provider reports the container running and (as far as it knows) ready."""
        self.provider.report(
            pod.ref.uid,
            {
                "phase": "Running",
                "podIP": "10.1.0.1",
                "conditions": [
                    {"type": "ContainersReady", "status": "True"},
                    {"type": "Ready", "status": "True"},
                ],
                "containerStatuses": [
                    {
                        "name": "c",
                        "ready": True,
                        "restartCount": 0,
                        "state": {"running": {"startedAt": format_time(self.clock.now())}},
                    }
                ],
            },
        )

    def ready(self, pod: Pod) -> str | None:
        api = self.pods.get(NS, pod.ref.name)
        conditions = (api.status.get("conditions") if api else None) or []
        return next((c.get("status") for c in conditions if c.get("type") == "Ready"), None)


def probed(name: str, **container: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": NS},
        "spec": {"containers": [{"name": "c", "image": "nginx", **container}]},
    }


READINESS = {"readinessProbe": {"exec": {"command": ["ready"]}, "periodSeconds": 2}}


async def test_readiness_probe_holds_ready_until_it_passes() -> None:
    h = ProbeHarness()
    await h.start()
    h.prober.fail("ready", "not yet")
    pod = h.pods.create(probed("web", **READINESS))
    await h.eventually(lambda: h.creates_of(pod.ref.uid) == 1, what="created")
    h.run_container(pod)
    await h.eventually(lambda: h.ready(pod) == "False", what="Ready False while the probe fails")
    await h.advance(10)
    assert h.ready(pod) == "False"
    api = h.pods.get(NS, "web")
    assert api is not None and api.status["containerStatuses"][0]["ready"] is False
    assert "Unhealthy" in h.events.reasons_for(pod.ref.uid)

    h.prober.succeed("ready")
    await h.eventually(lambda: h.ready(pod) == "True", within=2.5, step=0.1, what="Ready within one period")
    api = h.pods.get(NS, "web")
    assert api is not None
    ready = next(c for c in api.status["conditions"] if c["type"] == "Ready")
    assert "reason" not in ready and "message" not in ready  # not Ready=True/ContainersNotReady
    patches = len(h.status_patches(pod.ref.uid))
    await h.advance(70)  # probes keep passing, a full resync passes: nothing new to write
    assert len(h.status_patches(pod.ref.uid)) == patches
    await h.stop()


async def test_a_provider_that_probes_natively_is_not_probed() -> None:
    h = ProbeHarness(provider=NativeProbingProvider(streaming=True))
    await h.start()
    h.prober.fail("ready")
    pod = h.pods.create(probed("web", **READINESS))
    await h.eventually(lambda: h.creates_of(pod.ref.uid) == 1, what="created")
    h.run_container(pod)
    await h.eventually(lambda: h.ready(pod) == "True", what="the provider's Ready")
    await h.advance(10)
    assert h.prober.calls == []
    await h.stop()


async def test_pre_stop_runs_before_the_provider_delete() -> None:
    h = ProbeHarness()
    await h.start()
    pod = h.pods.create(probed("web", lifecycle={"preStop": {"exec": {"command": ["drain"]}}}))
    await h.eventually(lambda: h.creates_of(pod.ref.uid) == 1, what="created")
    h.run_container(pod)
    await h.advance(1)
    h.pods.graceful_delete(NS, "web", grace_period_seconds=20)
    await h.eventually(lambda: h.provider.calls["delete_pod"] == 1, what="provider delete")
    drains = [call for call in h.prober.calls if call[2] == ExecHandler(("drain",))]
    assert drains == [(pod.ref.uid, "c", ExecHandler(("drain",)), 20)]
    await h.stop()
