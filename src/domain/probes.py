"""Probes and lifecycle hooks, decided the way the kubelet decides them. Pure: the application
runs the handlers (through the provider's exec and port-forward streams) and feeds the results
to :func:`observe`; :func:`apply_probe_results` then lays the verdicts over the provider's status.

Semantics (kubelet's prober worker):

* A result counts only after ``successThreshold`` equal successes or ``failureThreshold`` equal
  failures in a row; until then the previous verdict stands. An *error* (the probe could not be
  run at all) is thrown away and changes nothing.
* Before its first verdict a readiness probe says "not ready", a liveness probe "alive", a
  startup probe "not started". While a container has not started, its liveness and readiness
  probes do not run; a started container's startup probe stops.
* A liveness or startup failure kills the container (its probe's
  ``terminationGracePeriodSeconds`` over the pod's); the provider's restart policy takes over
  and the new container instance starts with fresh verdicts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from vkubelet.domain.errors import InvalidInput
from vkubelet.domain.pod import Manifest, Pod, format_time

# -- handlers -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExecHandler:
    command: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class HttpGetHandler:
    port: int
    path: str = "/"
    scheme: str = "HTTP"  # or HTTPS (certificates are not verified, as the kubelet does)
    host: str = ""  # empty: the pod
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class TcpSocketHandler:
    port: int
    host: str = ""


@dataclass(frozen=True, slots=True)
class GrpcHandler:
    port: int
    service: str = ""  # the grpc.health.v1 service name; empty: the server as a whole


@dataclass(frozen=True, slots=True)
class SleepHandler:
    """Lifecycle hooks only: wait, then succeed."""

    seconds: int


Handler = ExecHandler | HttpGetHandler | TcpSocketHandler | GrpcHandler | SleepHandler


def describe_handler(handler: Handler) -> str:
    """A short human description for messages: the command, URL path, port."""
    match handler:
        case ExecHandler(command=command):
            return str(list(command))
        case HttpGetHandler(path=path, port=port):
            return f"{path} on port {port}"
        case TcpSocketHandler(port=port):
            return f"tcp port {port}"
        case GrpcHandler(port=port, service=service):
            return f"grpc port {port}" + (f" service {service!r}" if service else "")
        case SleepHandler(seconds=seconds):
            return f"sleep {seconds}s"


def _port(value: Any, container: Manifest, *, where: str) -> int:
    """An int port, or a named one looked up in the container's ports (the kubelet's rule)."""
    if isinstance(value, bool):
        raise InvalidInput(f"{where}: port {value!r} is not a number or a port name")
    if isinstance(value, int):
        port = value
    elif isinstance(value, str) and value.isdigit():
        port = int(value)
    elif isinstance(value, str) and value:
        for declared in container.get("ports") or ():
            if declared.get("name") == value:
                port = int(declared.get("containerPort") or 0)
                break
        else:
            raise InvalidInput(f"{where}: no port named {value!r} in the container's ports")
    else:
        raise InvalidInput(f"{where}: port {value!r} is not a number or a port name")
    if not 0 < port < 65536:
        raise InvalidInput(f"{where}: port {port} is out of range 1-65535")
    return port


def parse_handler(spec: Manifest, container: Manifest, *, where: str, allow_sleep: bool = False) -> Handler:
    """The one handler of a probe or hook. Raises InvalidInput naming ``where`` when there is
    none, several, or a bad one."""
    kinds = [key for key in ("exec", "httpGet", "tcpSocket", "grpc", "sleep") if spec.get(key) is not None]
    if len(kinds) != 1:
        found = ", ".join(kinds) or "none"
        raise InvalidInput(f"{where}: exactly one handler is required (found: {found})")
    kind = kinds[0]
    body: Manifest = spec[kind]
    if kind == "exec":
        command = tuple(str(part) for part in body.get("command") or ())
        if not command:
            raise InvalidInput(f"{where}: exec.command is empty")
        return ExecHandler(command)
    if kind == "httpGet":
        scheme = str(body.get("scheme") or "HTTP").upper()
        if scheme not in ("HTTP", "HTTPS"):
            raise InvalidInput(f"{where}: httpGet.scheme {scheme!r} is not HTTP or HTTPS")
        path = str(body.get("path") or "/")
        headers = tuple(
            (str(header.get("name") or ""), str(header.get("value") or ""))
            for header in body.get("httpHeaders") or ()
        )
        return HttpGetHandler(
            port=_port(body.get("port"), container, where=f"{where}.httpGet"),
            path=path if path.startswith("/") else f"/{path}",
            scheme=scheme,
            host=str(body.get("host") or ""),
            headers=headers,
        )
    if kind == "tcpSocket":
        return TcpSocketHandler(
            port=_port(body.get("port"), container, where=f"{where}.tcpSocket"),
            host=str(body.get("host") or ""),
        )
    if kind == "grpc":
        port = body.get("port")
        if not isinstance(port, int) or isinstance(port, bool):
            raise InvalidInput(f"{where}: grpc.port must be a number, got {port!r}")
        return GrpcHandler(
            port=_port(port, container, where=f"{where}.grpc"), service=str(body.get("service") or "")
        )
    if not allow_sleep:
        raise InvalidInput(f"{where}: sleep is a lifecycle-hook handler, not a probe")
    seconds = body.get("seconds")
    if not isinstance(seconds, int) or isinstance(seconds, bool) or seconds < 0:
        raise InvalidInput(f"{where}: sleep.seconds must be a non-negative number, got {seconds!r}")
    return SleepHandler(seconds)


# -- probes -------------------------------------------------------------------------------


class ProbeKind(StrEnum):
    STARTUP = "Startup"
    READINESS = "Readiness"
    LIVENESS = "Liveness"

    @property
    def field(self) -> str:
        return f"{self.value.lower()}Probe"


@dataclass(frozen=True, slots=True)
class Probe:
    """One probe of one container, with the API's defaults applied."""

    kind: ProbeKind
    handler: Handler
    initial_delay_seconds: int = 0
    period_seconds: int = 10
    timeout_seconds: int = 1
    success_threshold: int = 1
    failure_threshold: int = 3
    termination_grace_period_seconds: int | None = None


def _positive(spec: Manifest, key: str, default: int, *, where: str, minimum: int = 1) -> int:
    value = spec.get(key)
    if value is None or (value == 0 and minimum > 0):
        return default  # the API server defaults zero to the default for these fields
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise InvalidInput(f"{where}.{key}: {value!r} is not a number >= {minimum}")
    return value


def parse_probe(kind: ProbeKind, spec: Manifest, container: Manifest) -> Probe:
    """A container's ``<kind>Probe``. Raises InvalidInput naming the container and field."""
    where = f"container {container.get('name')!r} {kind.field}"
    handler = parse_handler(spec, container, where=where)
    success = _positive(spec, "successThreshold", 1, where=where)
    if kind is not ProbeKind.READINESS and success != 1:
        raise InvalidInput(
            f"{where}.successThreshold: must be 1 for {kind.value.lower()} probes, got {success}"
        )
    grace = spec.get("terminationGracePeriodSeconds")
    if grace is not None and (not isinstance(grace, int) or isinstance(grace, bool) or grace < 1):
        raise InvalidInput(f"{where}.terminationGracePeriodSeconds: {grace!r} is not a number >= 1")
    return Probe(
        kind=kind,
        handler=handler,
        initial_delay_seconds=_positive(spec, "initialDelaySeconds", 0, where=where, minimum=0),
        period_seconds=_positive(spec, "periodSeconds", 10, where=where),
        timeout_seconds=_positive(spec, "timeoutSeconds", 1, where=where),
        success_threshold=success,
        failure_threshold=_positive(spec, "failureThreshold", 3, where=where),
        termination_grace_period_seconds=grace if kind is not ProbeKind.READINESS else None,
    )


def container_probes(container: Manifest) -> tuple[Probe, ...]:
    """Every probe the container declares, startup first. Raises InvalidInput on a bad one."""
    return tuple(
        parse_probe(kind, container[kind.field], container)
        for kind in (ProbeKind.STARTUP, ProbeKind.READINESS, ProbeKind.LIVENESS)
        if container.get(kind.field) is not None
    )


class ProbeOutcome(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    ERROR = "error"  # the probe could not be run; thrown away, as the kubelet does


@dataclass(frozen=True, slots=True)
class ProbeResult:
    outcome: ProbeOutcome
    message: str = ""  # why it failed, in the kubelet's words (e.g. "HTTP probe failed with statuscode: 500")


@dataclass(frozen=True, slots=True)
class ProbeState:
    """One probe's verdict so far. ``verdict`` None: no verdict yet (see the module docstring)."""

    verdict: bool | None = None
    last: ProbeOutcome | None = None
    run: int = 0  # how many times in a row ``last`` came


def observe(state: ProbeState, probe: Probe, result: ProbeResult) -> ProbeState:
    """The state after one more result: the verdict flips only at the threshold."""
    if result.outcome is ProbeOutcome.ERROR:
        return state
    run = state.run + 1 if result.outcome is state.last else 1
    threshold = probe.success_threshold if result.outcome is ProbeOutcome.SUCCESS else probe.failure_threshold
    verdict = state.verdict
    if run >= threshold:
        verdict = result.outcome is ProbeOutcome.SUCCESS
    return ProbeState(verdict=verdict, last=result.outcome, run=run)


def after_kill(state: ProbeState) -> ProbeState:
    """A killed container's probe starts counting again (its next instance probes afresh)."""
    return replace(state, last=None, run=0)


def probe_failed_message(kind: ProbeKind, result: ProbeResult) -> str:
    """The kubelet's ``Unhealthy`` event message for a failed or errored probe."""
    verb = "errored" if result.outcome is ProbeOutcome.ERROR else "failed"
    return f"{kind.value} probe {verb}: {result.message}"


def killing_message(container: str, kind: ProbeKind) -> str:
    """The kubelet's ``Killing`` event message when a probe's failure restarts a container."""
    return f"Container {container} failed {kind.value.lower()} probe, will be restarted"


def kill_grace_seconds(pod: Pod, probe: Probe) -> int:
    """A probe's own termination grace period wins over the pod's (default 30 s)."""
    if probe.termination_grace_period_seconds is not None:
        return probe.termination_grace_period_seconds
    value = pod.spec.get("terminationGracePeriodSeconds")
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 30


# -- lifecycle hooks ----------------------------------------------------------------------


class HookKind(StrEnum):
    POST_START = "PostStart"
    PRE_STOP = "PreStop"

    @property
    def field(self) -> str:
        return "postStart" if self is HookKind.POST_START else "preStop"

    @property
    def failed_reason(self) -> str:
        """The kubelet's event reason when the hook fails."""
        return f"Failed{self.value}Hook"


def container_hook(container: Manifest, kind: HookKind) -> Handler | None:
    """The container's ``lifecycle.<hook>`` handler, if any. Raises InvalidInput on a bad one."""
    spec = (container.get("lifecycle") or {}).get(kind.field)
    if spec is None:
        return None
    return parse_handler(
        spec, container, where=f"container {container.get('name')!r} lifecycle.{kind.field}", allow_sleep=True
    )


def hook_failed_message(kind: HookKind, handler: Handler, *, container: str, pod: Pod, message: str) -> str:
    """The kubelet's wording: which handler, for which container of which pod, and why."""
    what = (
        "Exec"
        if isinstance(handler, ExecHandler)
        else "HTTP"
        if isinstance(handler, HttpGetHandler)
        else "Sleep"
    )
    target = describe_handler(handler) if not isinstance(handler, HttpGetHandler) else handler.path
    return (
        f"{what} lifecycle hook ({target}) for Container {container!r} in Pod "
        f"{pod.ref.name}_{pod.ref.namespace}({pod.ref.uid}) failed - error: {message}"
    )


# -- status -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContainerVerdicts:
    """What vkubelet's probes say of one running container instance."""

    started: bool  # its startup probe passed (or it has none)
    ready: bool  # started, and its readiness probe passed (or it has none)


def container_instance(status: Manifest) -> str | None:
    """An id for one run of a container, or None when it is not running: the containerID when
    the provider sets one, else the restart count and start time."""
    running = (status.get("state") or {}).get("running")
    if running is None:
        return None
    return str(status.get("containerID") or f"{status.get('restartCount', 0)}@{running.get('startedAt', '')}")


def apply_probe_results(
    pod: Pod, status: Manifest, verdicts: Mapping[str, ContainerVerdicts], *, now: datetime
) -> dict[str, Any]:
    """The provider's ``status`` with the probes' verdicts laid over it: a container is ready
    only when the provider says so *and* its probes do; ``ContainersReady`` and ``Ready`` follow
    (``Ready`` also waits for the pod's readiness gates). Containers without verdicts keep the
    provider's flags. Returns ``status`` itself (as a dict) when nothing changes."""
    if not verdicts:
        return dict(status)
    statuses: list[Any] = []
    changed = False
    for container in status.get("containerStatuses") or ():
        verdict = verdicts.get(str(container.get("name")))
        if verdict is not None:
            ready = bool(container.get("ready")) and verdict.ready
            started = bool(container.get("started", True)) and verdict.started
            if ready != bool(container.get("ready")) or started != container.get("started"):
                container = {**container, "ready": ready, "started": started}
                changed = True
        statuses.append(container)
    if not changed:
        return dict(status)
    unready = sorted(str(c.get("name")) for c in statuses if not c.get("ready"))
    containers_ready = not unready
    gates_open = all(
        _condition_true(status, str(gate.get("conditionType")))
        for gate in pod.spec.get("readinessGates") or ()
    )
    message = f"containers with unready status: [{' '.join(unready)}]" if unready else ""
    wanted = {
        "ContainersReady": (containers_ready, "ContainersNotReady", message),
        "Ready": (
            containers_ready and gates_open,
            "ContainersNotReady" if unready else "ReadinessGatesNotReady",
            message,
        ),
    }
    conditions = [_with_verdict(c, wanted, now) for c in status.get("conditions") or ()]
    present = {c.get("type") for c in conditions}
    for kind in ("ContainersReady", "Ready"):
        if kind not in present:
            conditions.append(_with_verdict({"type": kind}, wanted, now))
    return {**status, "containerStatuses": statuses, "conditions": conditions}


def _condition_true(status: Manifest, kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True" for c in status.get("conditions") or ())


def _with_verdict(
    condition: Manifest, wanted: Mapping[str, tuple[bool, str, str]], now: datetime
) -> Mapping[str, Any]:
    kind = condition.get("type")
    if kind not in wanted:
        return condition
    ok, reason, message = wanted[str(kind)]
    value = "True" if ok else "False"
    if condition.get("status") == value and (ok or condition.get("reason") == reason):
        return condition
    updated: dict[str, Any] = {"type": kind, "status": value, "lastTransitionTime": format_time(now)}
    if condition.get("lastProbeTime") is not None:
        updated["lastProbeTime"] = condition["lastProbeTime"]
    if not ok:
        updated.update(reason=reason, message=message)
    return updated


def declares_probes_or_hooks(container: Manifest) -> bool:
    """Whether vkubelet's core has anything to run for this container."""
    lifecycle = container.get("lifecycle") or {}
    return any(container.get(kind.field) is not None for kind in ProbeKind) or any(
        lifecycle.get(kind.field) is not None for kind in HookKind
    )
