"""The probe rules of vkubelet.domain.probes: parsing, thresholds, status overlay, wording."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from vkubelet.domain.errors import InvalidInput
from vkubelet.domain.pod import Pod, PodRef
from vkubelet.domain.probes import (
    ContainerVerdicts,
    ExecHandler,
    GrpcHandler,
    HookKind,
    HttpGetHandler,
    Probe,
    ProbeKind,
    ProbeOutcome,
    ProbeResult,
    ProbeState,
    SleepHandler,
    TcpSocketHandler,
    apply_probe_results,
    container_hook,
    container_instance,
    container_probes,
    declares_probes_or_hooks,
    hook_failed_message,
    kill_grace_seconds,
    killing_message,
    observe,
    parse_probe,
    probe_failed_message,
)

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
OK = ProbeResult(ProbeOutcome.SUCCESS)
BAD = ProbeResult(ProbeOutcome.FAILURE, "nope")
ERR = ProbeResult(ProbeOutcome.ERROR, "cannot run")


def container(**fields: Any) -> dict[str, Any]:
    return {"name": "app", "ports": [{"name": "http", "containerPort": 8080}], **fields}


def pod(spec: dict[str, Any] | None = None) -> Pod:
    ref = PodRef("ns", "web", "uid-1")
    manifest = {"metadata": {"namespace": "ns", "name": "web", "uid": "uid-1"}, "spec": spec or {}}
    return Pod(ref, manifest)


# -- parsing ------------------------------------------------------------------------------


def test_defaults_are_the_apis() -> None:
    probe = parse_probe(ProbeKind.READINESS, {"exec": {"command": ["cat", "/ready"]}}, container())
    assert probe == Probe(kind=ProbeKind.READINESS, handler=ExecHandler(("cat", "/ready")))
    assert (
        probe.period_seconds,
        probe.timeout_seconds,
        probe.success_threshold,
        probe.failure_threshold,
    ) == (
        10,
        1,
        1,
        3,
    )


def test_every_field_is_read() -> None:
    spec = {
        "httpGet": {
            "port": "http",
            "path": "healthz",
            "scheme": "https",
            "httpHeaders": [{"name": "X", "value": "1"}],
        },
        "initialDelaySeconds": 4,
        "periodSeconds": 2,
        "timeoutSeconds": 3,
        "failureThreshold": 5,
        "terminationGracePeriodSeconds": 7,
    }
    probe = parse_probe(ProbeKind.LIVENESS, spec, container())
    assert probe.handler == HttpGetHandler(port=8080, path="/healthz", scheme="HTTPS", headers=(("X", "1"),))
    assert (probe.initial_delay_seconds, probe.period_seconds, probe.timeout_seconds) == (4, 2, 3)
    assert (probe.failure_threshold, probe.termination_grace_period_seconds) == (5, 7)


def test_tcp_and_grpc_handlers() -> None:
    tcp = parse_probe(ProbeKind.READINESS, {"tcpSocket": {"port": 9000}}, container())
    grpc = parse_probe(ProbeKind.READINESS, {"grpc": {"port": 9001, "service": "db"}}, container())
    assert tcp.handler == TcpSocketHandler(9000)
    assert grpc.handler == GrpcHandler(9001, "db")


def test_readiness_ignores_termination_grace() -> None:
    spec = {"exec": {"command": ["true"]}, "terminationGracePeriodSeconds": 3}
    assert parse_probe(ProbeKind.READINESS, spec, container()).termination_grace_period_seconds is None


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({}, "exactly one handler is required (found: none)"),
        ({"exec": {"command": ["a"]}, "tcpSocket": {"port": 1}}, "found: exec, tcpSocket"),
        ({"exec": {"command": []}}, "exec.command is empty"),
        ({"httpGet": {"port": "metrics"}}, "no port named 'metrics'"),
        ({"httpGet": {"port": 70000}}, "out of range"),
        ({"httpGet": {"port": 80, "scheme": "FTP"}}, "scheme 'FTP'"),
        ({"tcpSocket": {"port": True}}, "not a number"),
        ({"grpc": {"port": "http"}}, "grpc.port must be a number"),
        ({"exec": {"command": ["a"]}, "periodSeconds": -1}, "periodSeconds: -1"),
        ({"exec": {"command": ["a"]}, "successThreshold": 2}, "must be 1 for liveness"),
        ({"sleep": {"seconds": 1}}, "sleep is a lifecycle-hook handler"),
    ],
)
def test_bad_probes_name_the_container_and_field(spec: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        parse_probe(ProbeKind.LIVENESS, spec, container())
    assert "container 'app' livenessProbe" in str(raised.value)
    assert fragment in str(raised.value)


def test_container_probes_in_startup_readiness_liveness_order() -> None:
    probes = container_probes(
        container(
            livenessProbe={"exec": {"command": ["l"]}},
            startupProbe={"exec": {"command": ["s"]}},
            readinessProbe={"exec": {"command": ["r"]}},
        )
    )
    assert [p.kind for p in probes] == [ProbeKind.STARTUP, ProbeKind.READINESS, ProbeKind.LIVENESS]


def test_hooks() -> None:
    spec = container(
        lifecycle={"preStop": {"sleep": {"seconds": 2}}, "postStart": {"exec": {"command": ["x"]}}}
    )
    assert container_hook(spec, HookKind.PRE_STOP) == SleepHandler(2)
    assert container_hook(spec, HookKind.POST_START) == ExecHandler(("x",))
    assert container_hook(container(), HookKind.PRE_STOP) is None
    assert declares_probes_or_hooks(spec)
    assert not declares_probes_or_hooks(container(lifecycle={}))
    with pytest.raises(InvalidInput, match=r"lifecycle\.preStop"):
        container_hook(container(lifecycle={"preStop": {}}), HookKind.PRE_STOP)


# -- thresholds ---------------------------------------------------------------------------


def test_verdict_flips_only_at_the_threshold() -> None:
    probe = Probe(
        kind=ProbeKind.READINESS, handler=ExecHandler(("x",)), success_threshold=2, failure_threshold=3
    )
    state = ProbeState()
    state = observe(state, probe, OK)
    assert state.verdict is None
    state = observe(state, probe, OK)
    assert state.verdict is True
    state = observe(observe(state, probe, BAD), probe, BAD)
    assert state.verdict is True  # two failures: below the threshold of three
    state = observe(state, probe, OK)
    assert (state.verdict, state.run) == (True, 1)  # the run of failures is broken
    for _ in range(3):
        state = observe(state, probe, BAD)
    assert state.verdict is False


def test_errors_are_thrown_away() -> None:
    probe = Probe(kind=ProbeKind.LIVENESS, handler=ExecHandler(("x",)), failure_threshold=2)
    state = observe(ProbeState(), probe, BAD)
    assert observe(state, probe, ERR) == state
    assert observe(observe(state, probe, ERR), probe, BAD).verdict is False


# -- wording ------------------------------------------------------------------------------


def test_kubelet_wording() -> None:
    assert probe_failed_message(ProbeKind.READINESS, BAD) == "Readiness probe failed: nope"
    assert probe_failed_message(ProbeKind.LIVENESS, ERR) == "Liveness probe errored: cannot run"
    assert (
        killing_message("app", ProbeKind.LIVENESS) == "Container app failed liveness probe, will be restarted"
    )
    message = hook_failed_message(
        HookKind.PRE_STOP, ExecHandler(("stop", "now")), container="app", pod=pod(), message="exit 1"
    )
    assert (
        message
        == "Exec lifecycle hook (['stop', 'now']) for Container 'app' in Pod web_ns(uid-1) failed - error: "
        "exit 1"
    )
    assert HookKind.POST_START.failed_reason == "FailedPostStartHook"


def test_kill_grace_prefers_the_probes() -> None:
    handler = ExecHandler(("x",))
    assert (
        kill_grace_seconds(pod({"terminationGracePeriodSeconds": 9}), Probe(ProbeKind.LIVENESS, handler)) == 9
    )
    assert kill_grace_seconds(pod(), Probe(ProbeKind.LIVENESS, handler)) == 30
    probe = Probe(ProbeKind.LIVENESS, handler, termination_grace_period_seconds=2)
    assert kill_grace_seconds(pod({"terminationGracePeriodSeconds": 9}), probe) == 2


# -- status overlay -----------------------------------------------------------------------


def running(name: str, *, ready: bool = True, restarts: int = 0) -> dict[str, Any]:
    return {
        "name": name,
        "ready": ready,
        "started": True,
        "restartCount": restarts,
        "state": {"running": {"startedAt": "2026-01-02T03:00:00Z"}},
    }


def provider_status(*containers: dict[str, Any]) -> dict[str, Any]:
    ready = "True" if all(c["ready"] for c in containers) else "False"
    return {
        "phase": "Running",
        "conditions": [
            {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": ready},
            {"type": "Ready", "status": ready},
        ],
        "containerStatuses": list(containers),
    }


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == kind)


def test_unready_verdict_turns_the_pod_unready() -> None:
    status = provider_status(running("app"), running("side"))
    out = apply_probe_results(pod(), status, {"app": ContainerVerdicts(started=True, ready=False)}, now=NOW)
    assert [c["ready"] for c in out["containerStatuses"]] == [False, True]
    ready = condition(out, "Ready")
    assert ready["status"] == "False"
    assert ready["reason"] == "ContainersNotReady"
    assert ready["message"] == "containers with unready status: [app]"
    assert ready["lastTransitionTime"] == "2026-01-02T03:04:05Z"
    assert condition(out, "ContainersReady")["status"] == "False"
    assert condition(out, "Initialized") == {"type": "Initialized", "status": "True"}
    assert status["containerStatuses"][0]["ready"] is True  # the input is not changed


def test_ready_verdict_keeps_the_providers_status() -> None:
    status = provider_status(running("app"))
    assert apply_probe_results(pod(), status, {"app": ContainerVerdicts(True, True)}, now=NOW) == status


def test_a_ready_verdict_never_makes_an_unready_container_ready() -> None:
    status = provider_status(running("app", ready=False))
    out = apply_probe_results(pod(), status, {"app": ContainerVerdicts(True, True)}, now=NOW)
    assert out == status


def test_not_started_clears_started() -> None:
    out = apply_probe_results(
        pod(),
        provider_status(running("app")),
        {"app": ContainerVerdicts(started=False, ready=False)},
        now=NOW,
    )
    assert out["containerStatuses"][0]["started"] is False


def test_missing_conditions_are_added() -> None:
    status = {"phase": "Running", "containerStatuses": [running("app")]}
    out = apply_probe_results(pod(), status, {"app": ContainerVerdicts(True, False)}, now=NOW)
    assert {c["type"]: c["status"] for c in out["conditions"]} == {
        "ContainersReady": "False",
        "Ready": "False",
    }


def test_instances() -> None:
    assert container_instance(running("app", restarts=2)) == "2@2026-01-02T03:00:00Z"
    assert container_instance({**running("app"), "containerID": "process://7"}) == "process://7"
    assert container_instance({"name": "app", "state": {"waiting": {}}}) is None
