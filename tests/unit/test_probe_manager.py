"""ProbeManager: probe loops, startup gating, kills and hooks, on a fake clock."""

from __future__ import annotations

from typing import Any

from tests.fakes.clock import FakeClock
from tests.fakes.cluster import FakeEventRecorder
from tests.fakes.probes import RecordingKiller, ScriptedProber
from vkubelet.application.probes import ProbeManager
from vkubelet.domain.pod import Pod, PodRef, format_time
from vkubelet.domain.probes import ContainerVerdicts, ExecHandler

UID = "uid-1"


def exec_probe(word: str, **fields: Any) -> dict[str, Any]:
    return {"exec": {"command": [word]}, **fields}


def api_pod(*containers: dict[str, Any], **spec: Any) -> Pod:
    manifest = {
        "metadata": {"namespace": "ns", "name": "web", "uid": UID},
        "spec": {"containers": list(containers), **spec},
    }
    return Pod(PodRef("ns", "web", UID), manifest)


def provider_pod(pod: Pod, clock: FakeClock, *, restarts: int = 0, state: str = "running") -> Pod:
    statuses = [
        {
            "name": c["name"],
            "ready": True,
            "restartCount": restarts,
            "state": {state: {"startedAt": format_time(clock.now())}},
        }
        for c in pod.containers
    ]
    return Pod(pod.ref, {**pod.manifest, "status": {"phase": "Running", "containerStatuses": statuses}})


class Harness:
    def __init__(self, *, killer: RecordingKiller | None = None) -> None:
        self.clock = FakeClock()
        self.prober = ScriptedProber()
        self.killer = killer if killer is not None else RecordingKiller()
        self.events = FakeEventRecorder()
        self.changes: list[str] = []
        self.manager = ProbeManager(
            prober=self.prober,
            control=self.killer,
            events=self.events,
            clock=self.clock,
            on_change=self.changes.append,
        )

    def messages(self, reason: str) -> list[str]:
        return [e.message for e in self.events.events if e.reason == reason]


async def test_readiness_turns_ready_at_the_next_period_after_success() -> None:
    h = Harness()
    h.prober.fail("ready", "cat: /tmp/ready: No such file or directory")
    pod = api_pod({"name": "app", "readinessProbe": exec_probe("ready", periodSeconds=2)})
    h.manager.watch(pod, provider_pod(pod, h.clock))
    await h.clock.settle()
    assert h.manager.verdicts(UID) == {"app": ContainerVerdicts(started=True, ready=False)}
    assert h.messages("Unhealthy") == ["Readiness probe failed: cat: /tmp/ready: No such file or directory"]
    await h.clock.advance(6)
    assert h.changes == []  # still unready: no status write is asked for
    h.prober.succeed("ready")
    await h.clock.advance(2)
    assert h.manager.verdicts(UID) == {"app": ContainerVerdicts(started=True, ready=True)}
    assert h.changes == [UID]
    await h.manager.close()


async def test_liveness_failures_kill_the_container_with_the_probes_grace() -> None:
    h = Harness()
    pod = api_pod(
        {
            "name": "app",
            "livenessProbe": exec_probe("alive", periodSeconds=1, terminationGracePeriodSeconds=4),
        }
    )
    h.manager.watch(pod, provider_pod(pod, h.clock))
    await h.clock.advance(3)
    assert h.killer.kills == []
    h.prober.fail("alive", "exit 1")
    await h.clock.advance(3)
    assert h.killer.kills == [(UID, "app", 4)]
    assert h.messages("Unhealthy") == ["Liveness probe failed: exit 1"] * 3
    assert h.messages("Killing") == ["Container app failed liveness probe, will be restarted"]
    calls = h.prober.count("alive")
    await h.clock.advance(10)
    assert h.prober.count("alive") == calls  # the killed instance is not probed again
    # The provider restarts it: a new instance, probed afresh (and alive again).
    h.prober.succeed("alive")
    h.manager.watch(pod, provider_pod(pod, h.clock, restarts=1))
    await h.clock.advance(5)
    assert h.prober.count("alive") > calls
    assert len(h.killer.kills) == 1
    await h.manager.close()


async def test_startup_probe_gates_readiness_and_liveness() -> None:
    h = Harness()
    h.prober.fail("started")
    pod = api_pod(
        {
            "name": "app",
            "startupProbe": exec_probe("started", periodSeconds=1, failureThreshold=30),
            "readinessProbe": exec_probe("ready", periodSeconds=1),
            "livenessProbe": exec_probe("alive", periodSeconds=1),
        }
    )
    h.manager.watch(pod, provider_pod(pod, h.clock))
    await h.clock.advance(5)
    assert (h.prober.count("ready"), h.prober.count("alive")) == (0, 0)
    assert h.manager.verdicts(UID)["app"] == ContainerVerdicts(started=False, ready=False)
    h.prober.succeed("started")
    await h.clock.advance(1)
    assert h.manager.verdicts(UID)["app"] == ContainerVerdicts(started=True, ready=True)
    startup_calls = h.prober.count("started")
    await h.clock.advance(3)
    assert h.prober.count("started") == startup_calls  # started: no more startup probes
    assert h.prober.count("ready") >= 3
    assert h.prober.count("alive") >= 3
    await h.manager.close()


async def test_startup_failure_kills() -> None:
    h = Harness()
    h.prober.fail("started")
    pod = api_pod({"name": "app", "startupProbe": exec_probe("started", periodSeconds=1, failureThreshold=2)})
    h.manager.watch(pod, provider_pod(pod, h.clock))
    await h.clock.advance(2)
    assert h.killer.kills == [(UID, "app", 30)]
    assert h.messages("Killing") == ["Container app failed startup probe, will be restarted"]
    await h.manager.close()


async def test_initial_delay_counts_from_the_container_start() -> None:
    h = Harness()
    pod = api_pod(
        {"name": "app", "readinessProbe": exec_probe("ready", initialDelaySeconds=10, periodSeconds=5)}
    )
    started = provider_pod(pod, h.clock)
    await h.clock.advance(4)  # the container started 4 s before we first saw it
    h.manager.watch(pod, started)
    await h.clock.advance(5.5)
    assert h.prober.count("ready") == 0
    await h.clock.advance(1)
    assert h.prober.count("ready") == 1
    await h.manager.close()


async def test_the_timeout_is_passed_to_the_prober() -> None:
    h = Harness()
    pod = api_pod({"name": "app", "readinessProbe": exec_probe("ready", timeoutSeconds=7)})
    h.manager.watch(pod, provider_pod(pod, h.clock))
    await h.clock.settle()
    assert h.prober.calls == [(UID, "app", ExecHandler(("ready",)), 7)]
    await h.manager.close()


async def test_without_a_killer_a_failed_liveness_is_reported_not_faked() -> None:
    h = Harness()
    h.manager = ProbeManager(
        prober=h.prober, control=None, events=h.events, clock=h.clock, on_change=h.changes.append
    )
    h.prober.fail("alive")
    pod = api_pod({"name": "app", "livenessProbe": exec_probe("alive", periodSeconds=1, failureThreshold=1)})
    h.manager.watch(pod, provider_pod(pod, h.clock))
    await h.clock.settle()
    assert any("lacks the kill-container capability" in m for m in h.messages("Unhealthy"))
    assert h.messages("Killing") == []
    await h.manager.close()


async def test_a_bad_probe_is_an_event_and_never_ready() -> None:
    h = Harness()
    pod = api_pod({"name": "app", "readinessProbe": {"httpGet": {"port": "nope"}}})
    h.manager.watch(pod, provider_pod(pod, h.clock))
    await h.clock.advance(30)
    assert h.manager.verdicts(UID) == {"app": ContainerVerdicts(started=False, ready=False)}
    assert h.messages("Unhealthy") == [
        "Probe errored: container 'app' readinessProbe.httpGet: no port named 'nope' in the container's ports"
    ]
    assert h.prober.calls == []
    await h.manager.close()


async def test_containers_not_running_or_without_probes_get_no_worker() -> None:
    h = Harness()
    pod = api_pod({"name": "plain"}, {"name": "app", "readinessProbe": exec_probe("ready")})
    h.manager.watch(pod, provider_pod(pod, h.clock, state="waiting"))
    assert h.manager.verdicts(UID) == {}
    h.manager.watch(pod, provider_pod(pod, h.clock))
    assert set(h.manager.verdicts(UID)) == {"app"}
    h.manager.watch(pod, None)  # the provider lost it
    assert h.manager.verdicts(UID) == {}
    await h.manager.close()


async def test_post_start_runs_once_and_its_failure_kills() -> None:
    h = Harness()
    h.prober.fail("setup", "exit status 3")
    pod = api_pod({"name": "app", "lifecycle": {"postStart": {"exec": {"command": ["setup"]}}}})
    running = provider_pod(pod, h.clock)
    h.manager.watch(pod, running)
    h.manager.watch(pod, running)  # the same instance: not run twice
    await h.clock.settle()
    assert h.prober.count("setup") == 1
    assert h.messages("FailedPostStartHook") == [
        "Exec lifecycle hook (['setup']) for Container 'app' in Pod web_ns(uid-1) failed - "
        "error: exit status 3"
    ]
    assert h.killer.kills == [(UID, "app", 30)]
    await h.manager.close()


async def test_post_start_is_not_rerun_for_containers_that_ran_before_us() -> None:
    clock = FakeClock()
    pod = api_pod({"name": "app", "lifecycle": {"postStart": {"exec": {"command": ["setup"]}}}})
    old = provider_pod(pod, clock)
    await clock.advance(60)  # vkubelet restarted a minute after the container started
    h = Harness()
    h.clock = clock
    h.manager = ProbeManager(
        prober=h.prober, control=h.killer, events=h.events, clock=clock, on_change=h.changes.append
    )
    h.manager.watch(pod, old)
    await clock.settle()
    assert h.prober.count("setup") == 0
    await h.manager.close()


async def test_post_start_holds_the_probes_until_it_succeeds() -> None:
    h = Harness()
    pod = api_pod(
        {
            "name": "app",
            "lifecycle": {"postStart": {"sleep": {"seconds": 5}}},
            "readinessProbe": exec_probe("ready", periodSeconds=1),
        }
    )
    h.manager.watch(pod, provider_pod(pod, h.clock))
    await h.clock.advance(4)
    assert h.prober.count("ready") == 0
    await h.clock.advance(1.5)
    assert h.prober.count("ready") >= 1
    await h.manager.close()


async def test_pre_stop_runs_within_the_grace_period_and_stops_probing() -> None:
    h = Harness()
    pod = api_pod(
        {
            "name": "app",
            "readinessProbe": exec_probe("ready", periodSeconds=1),
            "lifecycle": {"preStop": {"exec": {"command": ["drain"]}}},
        }
    )
    h.manager.watch(pod, provider_pod(pod, h.clock))
    await h.clock.advance(2)
    await h.manager.pre_stop(pod, grace_period_seconds=12)
    assert [(c[2], c[3]) for c in h.prober.calls if c[2] == ExecHandler(("drain",))] == [
        (ExecHandler(("drain",)), 12)
    ]
    before = h.prober.count("ready")
    await h.clock.advance(5)
    assert h.prober.count("ready") == before
    assert h.manager.verdicts(UID) == {}


async def test_pre_stop_failure_is_an_event() -> None:
    h = Harness()
    h.prober.fail("drain", "exit 2")
    pod = api_pod({"name": "app", "lifecycle": {"preStop": {"exec": {"command": ["drain"]}}}})
    h.manager.watch(pod, provider_pod(pod, h.clock))
    await h.clock.settle()
    await h.manager.pre_stop(pod, grace_period_seconds=3)
    assert h.messages("FailedPreStopHook") == [
        "Exec lifecycle hook (['drain']) for Container 'app' in Pod web_ns(uid-1) failed - error: exit 2"
    ]


async def test_liveness_kill_runs_pre_stop_first() -> None:
    h = Harness()
    h.prober.fail("alive")
    pod = api_pod(
        {
            "name": "app",
            "livenessProbe": exec_probe("alive", periodSeconds=1, failureThreshold=1),
            "lifecycle": {"preStop": {"exec": {"command": ["drain"]}}},
        }
    )
    h.manager.watch(pod, provider_pod(pod, h.clock))
    await h.clock.settle()
    words = [c[2].command[0] for c in h.prober.calls if isinstance(c[2], ExecHandler)]
    assert words == ["alive", "drain"]
    assert h.killer.kills == [(UID, "app", 30)]
    await h.manager.close()
