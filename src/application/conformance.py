"""The provider conformance kit: drives any provider through the Provider contract, case by case.

It is written against the ``Provider`` port only, so the same cases run against an in-process
provider and against a provider in another process (in any language) behind the gRPC client
adapter. ``vkubelet-provider-conformance`` wires it to an address; ``docs/conformance.md`` lists
what each case proves.

Design:

* A case is an ``async`` function ``(provider, ctx) -> None``. It raises :class:`CaseFailed`
  (expected vs got) or :class:`CaseSkipped`; returning means PASS. Any other exception is a FAIL
  that names the step the case was at (``ctx.step``), so the report says which call broke.
* Cases needing an optional capability declare it and are SKIPped (naming it) when the provider
  does not declare it; ``describe_consistent`` checks the other direction (undeclared ->
  NotSupported).
* Every wait is bounded by ``timeout`` seconds measured on the injected :class:`Clock`, and a
  whole case by :data:`CASE_BUDGET_FACTOR` times that, so a hung provider call becomes a FAIL
  instead of a hung run.
* Each case gets its own pod names (a per-run namespace, a per-case name prefix, fresh UIDs) and
  the runner deletes every pod the case created and did not delete itself, even when it failed.
  Cases run one after another: a provider's status stream may support a single consumer.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from vkubelet.application.ports.provider import Provider
from vkubelet.application.ports.runtime import Clock
from vkubelet.application.ports.streams import LogOptions, TerminalSize
from vkubelet.domain.errors import DomainError, InvalidInput, NotFound, NotSupported, classify, is_error
from vkubelet.domain.pod import Pod, PodPhase, PodRef, format_time
from vkubelet.domain.provider import Capability, MetricFamily, NodeTemplate
from vkubelet.domain.volumes import EmptyDirVolume, FileVolume, PodVolumes, VolumeFile, unknown_volume_kinds

T = TypeVar("T")

CASE_BUDGET_FACTOR = 4  # a case may take this many ``timeout``s in all (it waits several times)
POLL_INTERVAL = 0.1  # seconds between two polls of a condition
CONTAINER = "app"
CONTAINER_COMMAND = ("sh", "-c", "echo conformance; sleep 300")
LOG_MARKER = b"conformance"
MAX_LOG_BYTES = 1 << 20  # stop reading a log after this much
# How long the node status case listens (at most ``timeout``). The kit cannot make a provider's
# node change, so it only checks that the stream stays open and that what it sends is whole.
NODE_STREAM_LISTEN_SECONDS = 1.0


class Outcome(StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"
    SKIP = "SKIP"


class CaseFailed(Exception):
    """The provider broke the contract: ``what`` was expected to be ``expected`` but was ``got``."""

    def __init__(self, what: str, *, expected: str, got: str) -> None:
        super().__init__(f"{what}: expected {expected}, got {got}")


class CaseSkipped(Exception):
    """The case does not apply to this provider (a capability it does not declare)."""


@dataclass(frozen=True, slots=True)
class CaseResult:
    name: str
    outcome: Outcome
    reason: str = ""  # why it failed or was skipped; empty on PASS
    seconds: float = 0.0
    notes: tuple[str, ...] = ()  # things worth knowing that did not decide the outcome

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "outcome": self.outcome.value,
            "reason": self.reason,
            "seconds": round(self.seconds, 3),
            "notes": list(self.notes),
        }


@dataclass(frozen=True, slots=True)
class Report:
    target: str
    capabilities: frozenset[Capability]
    results: tuple[CaseResult, ...]

    def count(self, outcome: Outcome) -> int:
        return sum(1 for result in self.results if result.outcome is outcome)

    @property
    def ok(self) -> bool:
        """True when no case failed (skips are fine: the provider did not claim the capability)."""
        return self.count(Outcome.FAIL) == 0

    def result(self, name: str) -> CaseResult:
        for result in self.results:
            if result.name == name:
                return result
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "capabilities": sorted(c.value for c in self.capabilities),
            "ok": self.ok,
            "passed": self.count(Outcome.PASS),
            "failed": self.count(Outcome.FAIL),
            "skipped": self.count(Outcome.SKIP),
            "cases": [result.to_json() for result in self.results],
        }

    def render(self) -> str:
        """The human-readable report: one line per case, notes indented below it."""
        declared = ", ".join(sorted(c.value for c in self.capabilities)) or "none"
        width = max((len(r.name) for r in self.results), default=0)
        lines = [f"provider conformance: {self.target}", f"declared capabilities: {declared}", ""]
        for r in self.results:
            line = f"{r.outcome.value}  {r.name:<{width}}  {r.seconds:6.2f}s"
            lines.append(f"{line}  {r.reason}" if r.reason else line)
            lines.extend(f"      note: {note}" for note in r.notes)
        lines.append("")
        lines.append(
            f"{len(self.results)} cases: {self.count(Outcome.PASS)} passed, "
            f"{self.count(Outcome.FAIL)} failed, {self.count(Outcome.SKIP)} skipped"
        )
        return "\n".join(lines)


class _Expired(Exception):
    """A bounded wait ran out of time."""


async def _within(clock: Clock, seconds: float, work: Awaitable[T]) -> T:
    """Await ``work`` for at most ``seconds`` of ``clock`` time; raise _Expired after that.

    Time goes through the Clock port (not ``asyncio.timeout``) so the kit runs at fake speed in
    unit tests; the work is cancelled when time runs out.
    """
    task = asyncio.ensure_future(work)
    timer = asyncio.ensure_future(clock.sleep(seconds))
    try:
        await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        timer.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
    if task.cancelled():
        raise _Expired()
    return task.result()


def _describe_error(error: BaseException) -> str:
    kind = classify(error)
    name = kind.__name__ if kind is not None else type(error).__name__
    text = str(error)
    return f"{name}: {text}" if text else name


async def _aclose(stream: AsyncIterator[Any]) -> None:
    """Close an async generator (or a call object with ``aclose``) so its resources go now."""
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()


async def _first(stream: AsyncIterator[T]) -> T | None:
    """The first item of ``stream`` (None when it ends at once); the stream is closed after."""
    try:
        async for item in stream:
            return item
        return None
    finally:
        await _aclose(stream)


def is_running(status: Mapping[str, Any]) -> bool:
    return status.get("phase") == PodPhase.RUNNING.value


def is_terminal(status: Mapping[str, Any]) -> bool:
    """Succeeded/Failed, or every container reported terminated (what a deleted pod must show)."""
    if status.get("phase") in (PodPhase.SUCCEEDED.value, PodPhase.FAILED.value):
        return True
    containers = status.get("containerStatuses") or ()
    return bool(containers) and all("terminated" in (c.get("state") or {}) for c in containers)


def _phase(status: Mapping[str, Any]) -> str:
    return repr(status.get("phase")) if status else "an empty status"


class StatusWatch:
    """Reads a provider's status stream in the background so a case can wait on it with a deadline."""

    def __init__(self, provider: Provider, ctx: CaseContext) -> None:
        self._provider = provider
        self._ctx = ctx
        self._seen: asyncio.Queue[Pod | BaseException] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.history: dict[str, list[str]] = {}  # uid -> phases seen, for the failure message

    async def __aenter__(self) -> StatusWatch:
        self._task = asyncio.ensure_future(self._pump())
        # Make sure the subscription is under way before the case changes anything: one round
        # trip to the provider after the stream was opened.
        await asyncio.sleep(0)
        await self._provider.ping()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})

    async def _pump(self) -> None:
        try:
            async for pod in self._provider.pod_status_updates():
                self._seen.put_nowait(pod)
            self._seen.put_nowait(EOFError("the status stream ended"))
        except Exception as error:  # handed to the waiting case, which reports it
            self._seen.put_nowait(error)

    async def wait_for(
        self, ref: PodRef, predicate: Callable[[Mapping[str, Any]], bool], *, what: str
    ) -> Pod:
        """The first pod reported for ``ref.uid`` whose status satisfies ``predicate``."""
        deadline = self._ctx.clock.monotonic() + self._ctx.timeout
        history = self.history.setdefault(ref.uid, [])
        while True:
            remaining = deadline - self._ctx.clock.monotonic()
            try:
                if remaining <= 0:
                    raise _Expired()
                item = await _within(self._ctx.clock, remaining, self._seen.get())
            except _Expired:
                got = f"phases {', '.join(history)}" if history else "no report for this pod"
                raise CaseFailed(
                    f"status stream for {ref}", expected=f"{what} within {self._ctx.timeout:g}s", got=got
                ) from None
            if isinstance(item, BaseException):
                raise CaseFailed(
                    f"status stream for {ref}",
                    expected=what,
                    got=f"the stream failed: {_describe_error(item)}",
                )
            if item.ref.uid != ref.uid:
                continue  # another pod (an earlier case's, or another provider user's)
            history.append(_phase(item.status))
            if predicate(item.status):
                return item


@dataclass
class CaseContext:
    """What a case gets besides the provider: unique names, time, cleanup of what it created."""

    provider: Provider
    clock: Clock
    timeout: float  # seconds any single condition may take
    namespace: str  # unique per run
    prefix: str  # unique per case within the run
    node_name: str = "vkubelet-conformance"
    notes: list[str] = field(default_factory=list)
    current_step: str = "starting"
    _created: dict[str, Pod] = field(default_factory=dict)
    _names: int = 0

    def step(self, text: str) -> None:
        """Say what the case does now; an unexpected error is reported against this step."""
        self.current_step = text

    def note(self, text: str) -> None:
        self.notes.append(text)

    def new_pod(self, *, name: str | None = None, uid: str | None = None) -> Pod:
        """A fresh v1 Pod with one container running :data:`CONTAINER_COMMAND` (process-like
        providers run it; others ignore it)."""
        if name is None:
            self._names += 1
            name = f"{self.prefix}-{self._names}"
        manifest = pod_manifest(
            namespace=self.namespace,
            name=name,
            uid=uid or str(uuid.uuid4()),
            node_name=self.node_name,
            created=format_time(self.clock.now()),
        )
        return Pod.from_manifest(manifest)

    async def create(self, pod: Pod) -> None:
        """``create_pod``, remembering the pod so the runner deletes it if the case does not."""
        self.step(f"create_pod {pod.ref}")
        self._created[pod.ref.uid] = pod
        await self.provider.create_pod(pod)

    def deleted(self, pod: Pod) -> None:
        """The case deleted ``pod`` itself: no cleanup needed."""
        self._created.pop(pod.ref.uid, None)

    async def eventually(self, probe: Callable[[], Awaitable[tuple[bool, str]]], *, what: str) -> None:
        """Poll ``probe`` (returning (done, what it saw)) until done or ``timeout`` passes."""
        deadline = self.clock.monotonic() + self.timeout
        while True:
            done, seen = await probe()
            if done:
                return
            if self.clock.monotonic() >= deadline:
                raise CaseFailed(what, expected=f"within {self.timeout:g}s", got=seen)
            await self.clock.sleep(POLL_INTERVAL)

    async def wait_running(self, pod: Pod) -> None:
        """Poll ``get_pod_status`` until the pod is Running."""

        async def probe() -> tuple[bool, str]:
            status = await self.provider.get_pod_status(pod.ref)
            return is_running(status), f"phase {_phase(status)}"

        self.step(f"get_pod_status {pod.ref} until Running")
        await self.eventually(probe, what=f"pod {pod.ref} Running (polled)")

    def watch(self) -> StatusWatch:
        return StatusWatch(self.provider, self)

    async def cleanup(self) -> None:
        """Delete what the case left behind; failures become notes (the case already decided)."""
        for pod in list(self._created.values()):
            try:
                await _within(self.clock, self.timeout, self.provider.delete_pod(pod))
            except _Expired:
                self.note(f"cleanup: delete_pod {pod.ref} did not answer within {self.timeout:g}s")
            except Exception as error:
                if not is_error(error, NotFound):
                    self.note(f"cleanup: delete_pod {pod.ref} failed: {_describe_error(error)}")
        self._created.clear()


def pod_manifest(*, namespace: str, name: str, uid: str, node_name: str, created: str) -> dict[str, Any]:
    """The v1 Pod the kit creates: one container, ``sh -c 'echo conformance; sleep 300'``."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "namespace": namespace,
            "name": name,
            "uid": uid,
            "creationTimestamp": created,
            "labels": {"app.kubernetes.io/managed-by": "vkubelet-provider-conformance"},
        },
        "spec": {
            "nodeName": node_name,
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": CONTAINER,
                    "image": "busybox:1.36",
                    "command": list(CONTAINER_COMMAND[:1]),
                    "args": list(CONTAINER_COMMAND[1:]),
                }
            ],
        },
        "status": {"phase": "Pending"},
    }


async def expect_error(
    what: str,
    work: Awaitable[object],
    expected: tuple[type[DomainError], ...],
    *,
    success_ok: bool = False,
    clock: Clock,
    within: float,
) -> None:
    """Fail unless ``work`` raises one of ``expected`` (or succeeds, when ``success_ok``)."""
    names = " or ".join(kind.__name__ for kind in expected) + (" or success" if success_ok else "")
    try:
        await _within(clock, within, work)
    except _Expired:
        raise CaseFailed(what, expected=names, got=f"no answer within {within:g}s") from None
    except Exception as error:
        kind = classify(error)
        if kind is not None and issubclass(kind, expected):
            return
        raise CaseFailed(what, expected=names, got=_describe_error(error)) from None
    if not success_ok:
        raise CaseFailed(what, expected=names, got="success")


# -- exec I/O ----------------------------------------------------------------------------------


class ScriptedIO:
    """A non-tty exec session with canned stdin that collects stdout and stderr."""

    def __init__(self, stdin_chunks: Sequence[bytes] = ()) -> None:
        self.stdin = bool(stdin_chunks)
        self.stdout = True
        self.stderr = True
        self.tty = False
        self._chunks = list(stdin_chunks)
        self.out = bytearray()
        self.err = bytearray()

    async def read_stdin(self) -> bytes:
        return self._chunks.pop(0) if self._chunks else b""

    async def write_stdout(self, data: bytes) -> None:
        self.out += data

    async def write_stderr(self, data: bytes) -> None:
        self.err += data

    async def resizes(self) -> AsyncIterator[TerminalSize]:
        return  # no tty, no resizes: ends at once
        yield  # pragma: no cover - makes this an async generator


class _ClosedStream:
    """A port-forward connection that is closed from the start (for the NotSupported check)."""

    async def read(self) -> bytes:
        return b""

    async def write(self, data: bytes) -> None:
        return None

    async def close(self) -> None:
        return None


# -- the cases ---------------------------------------------------------------------------------

Case = Callable[[Provider, CaseContext], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class CaseSpec:
    name: str
    summary: str
    run: Case
    requires: Capability | None = None


def _unknown_ref(ctx: CaseContext) -> PodRef:
    return PodRef(ctx.namespace, f"{ctx.prefix}-unknown", str(uuid.uuid4()))


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

    ref = _unknown_ref(ctx)
    undeclared: dict[Capability, Callable[[], Awaitable[object]]] = {
        Capability.POD_STATUS_STREAM: lambda: _first(provider.pod_status_updates()),
        Capability.NODE_STATUS_STREAM: lambda: _first(provider.node_status_updates()),
        Capability.LOGS: lambda: _first(provider.container_logs(ref, CONTAINER, LogOptions())),
        Capability.EXEC: lambda: provider.exec_in_container(ref, CONTAINER, ["true"], ScriptedIO()),
        Capability.ATTACH: lambda: provider.attach_to_container(ref, CONTAINER, ScriptedIO()),
        Capability.PORT_FORWARD: lambda: provider.port_forward(ref, 80, _ClosedStream()),
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
                got=f"after {received} template(s), {_describe_error(error)}",
            ) from None
        raise CaseFailed(
            "node_status_updates()",
            expected=f"an open stream for {listen:g}s",
            got=f"its end after {received} template(s)",
        )

    ctx.step("node_status_updates")
    stream = provider.node_status_updates()
    try:
        await _within(ctx.clock, listen, listen_to(stream))
    except _Expired:
        pass  # still open: what the case wants
    finally:
        await _aclose(stream)
    if received == 0:
        ctx.note(
            f"no template within {listen:g}s; the kit cannot change the node, so pushed changes "
            "were not exercised (sending the current template first lets it check one)"
        )


async def ping(provider: Provider, ctx: CaseContext) -> None:
    """``ping`` answers."""
    ctx.step("ping")
    await provider.ping()


async def create_and_get(provider: Provider, ctx: CaseContext) -> None:
    """A created pod is seen by get_pod, get_pod_status and list_pods, under its own UID."""
    pod = ctx.new_pod()
    await ctx.create(pod)
    ctx.step(f"get_pod {pod.ref}")
    got = await provider.get_pod(pod.ref)
    if got.ref != pod.ref:
        raise CaseFailed(f"get_pod {pod.ref}", expected=f"the pod {pod.ref}", got=f"the pod {got.ref}")
    ctx.step(f"get_pod_status {pod.ref}")
    status = await provider.get_pod_status(pod.ref)
    if not isinstance(status, Mapping) or not status.get("phase"):
        raise CaseFailed(
            f"get_pod_status {pod.ref}", expected="a PodStatus with a phase", got=repr(status)[:200]
        )
    ctx.step("list_pods")
    uids = [p.ref.uid for p in await provider.list_pods()]
    if pod.ref.uid not in uids:
        raise CaseFailed("list_pods", expected=f"to contain UID {pod.ref.uid}", got=f"{len(uids)} other pods")


async def create_idempotent(provider: Provider, ctx: CaseContext) -> None:
    """Creating the same UID twice succeeds and leaves one pod."""
    pod = ctx.new_pod()
    await ctx.create(pod)
    ctx.step(f"second create_pod {pod.ref}")
    try:
        await provider.create_pod(pod)
    except Exception as error:
        raise CaseFailed(
            f"second create_pod of {pod.ref}", expected="success (a no-op)", got=_describe_error(error)
        ) from None
    ctx.step("list_pods")
    copies = sum(1 for p in await provider.list_pods() if p.ref.uid == pod.ref.uid)
    if copies != 1:
        raise CaseFailed(f"list_pods after two creates of {pod.ref}", expected="1 pod", got=f"{copies}")


async def status_reaches_running(provider: Provider, ctx: CaseContext) -> None:
    """Polled with get_pod_status, a created pod becomes Running (how vkubelet follows a provider
    without a status stream, and its periodic reconcile of any provider)."""
    pod = ctx.new_pod()
    await ctx.create(pod)
    await ctx.wait_running(pod)


async def status_stream_running(provider: Provider, ctx: CaseContext) -> None:
    """The status stream reports the created pod Running."""
    pod = ctx.new_pod()
    ctx.step("open pod_status_updates")
    async with ctx.watch() as watch:
        await ctx.create(pod)
        ctx.step(f"wait for {pod.ref} Running on the status stream")
        await watch.wait_for(pod.ref, is_running, what="phase 'Running'")


async def update_accepted(provider: Provider, ctx: CaseContext) -> None:
    """update_pod of a running pod (a changed label) is accepted and the pod stays."""
    pod = ctx.new_pod()
    await ctx.create(pod)
    await ctx.wait_running(pod)
    manifest = dict(pod.manifest)
    metadata = dict(pod.metadata)
    metadata["labels"] = {**pod.labels, "conformance/updated": "true"}
    manifest["metadata"] = metadata
    ctx.step(f"update_pod {pod.ref}")
    await provider.update_pod(Pod(pod.ref, manifest))
    ctx.step(f"get_pod {pod.ref} after update")
    got = await provider.get_pod(pod.ref)
    if got.ref.uid != pod.ref.uid:
        raise CaseFailed(f"get_pod {pod.ref} after update", expected="the same pod", got=str(got.ref))


async def delete_removes(provider: Provider, ctx: CaseContext) -> None:
    """After delete_pod, get_pod answers NotFound, list_pods omits the pod and (with a status
    stream) a terminal status is reported."""
    pod = ctx.new_pod()
    await ctx.create(pod)
    await ctx.wait_running(pod)
    streaming = Capability.POD_STATUS_STREAM in provider.capabilities()
    if streaming:
        ctx.step("open pod_status_updates")
        async with ctx.watch() as watch:
            await _delete_and_vanish(provider, ctx, pod)
            ctx.step(f"wait for a terminal status of {pod.ref} on the status stream")
            await watch.wait_for(
                pod.ref, is_terminal, what="a terminal status (Succeeded/Failed or containers terminated)"
            )
    else:
        await _delete_and_vanish(provider, ctx, pod)
        ctx.note("no status stream: the terminal status was not checked")


async def _delete_and_vanish(provider: Provider, ctx: CaseContext, pod: Pod) -> None:
    ctx.step(f"delete_pod {pod.ref}")
    await provider.delete_pod(pod)
    ctx.deleted(pod)

    async def gone() -> tuple[bool, str]:
        try:
            got = await provider.get_pod(pod.ref)
        except Exception as error:
            if is_error(error, NotFound):
                return True, "NotFound"
            raise CaseFailed(
                f"get_pod {pod.ref} after delete_pod", expected="NotFound", got=_describe_error(error)
            ) from None
        return False, f"the pod, phase {_phase(got.status)}"

    ctx.step(f"get_pod {pod.ref} after delete")
    await ctx.eventually(gone, what=f"get_pod {pod.ref} after delete_pod: NotFound")
    ctx.step("list_pods after delete")
    if any(p.ref.uid == pod.ref.uid for p in await provider.list_pods()):
        raise CaseFailed(f"list_pods after delete_pod {pod.ref}", expected="no such UID", got="the pod")


async def delete_idempotent(provider: Provider, ctx: CaseContext) -> None:
    """A second delete_pod answers NotFound or succeeds, never another error."""
    pod = ctx.new_pod()
    await ctx.create(pod)
    ctx.step(f"delete_pod {pod.ref}")
    await provider.delete_pod(pod)
    ctx.deleted(pod)
    ctx.step(f"second delete_pod {pod.ref}")
    await expect_error(
        f"second delete_pod of {pod.ref}",
        provider.delete_pod(pod),
        (NotFound,),
        success_ok=True,
        clock=ctx.clock,
        within=ctx.timeout,
    )


async def unknown_not_found(provider: Provider, ctx: CaseContext) -> None:
    """get_pod and get_pod_status of a UID the provider never saw answer NotFound."""
    ref = _unknown_ref(ctx)
    ctx.step(f"get_pod {ref}")
    await expect_error(
        f"get_pod of unknown {ref}", provider.get_pod(ref), (NotFound,), clock=ctx.clock, within=ctx.timeout
    )
    ctx.step(f"get_pod_status {ref}")
    await expect_error(
        f"get_pod_status of unknown {ref}",
        provider.get_pod_status(ref),
        (NotFound,),
        clock=ctx.clock,
        within=ctx.timeout,
    )


async def same_name_distinct_uids(provider: Provider, ctx: CaseContext) -> None:
    """Two pods with one namespace/name but different UIDs are two pods; deleting one keeps the
    other (a recreated pod is a new pod)."""
    first = ctx.new_pod(name=f"{ctx.prefix}-twin")
    second = ctx.new_pod(name=f"{ctx.prefix}-twin")
    await ctx.create(first)
    await ctx.create(second)
    ctx.step("list_pods")
    uids = {p.ref.uid for p in await provider.list_pods()}
    for pod in (first, second):
        if pod.ref.uid not in uids:
            raise CaseFailed(
                "list_pods with two pods of one name", expected=f"UID {pod.ref.uid}", got="it missing"
            )
        ctx.step(f"get_pod {pod.ref}")
        got = await provider.get_pod(pod.ref)
        if got.ref.uid != pod.ref.uid:
            raise CaseFailed(f"get_pod {pod.ref}", expected=f"UID {pod.ref.uid}", got=f"UID {got.ref.uid}")
    ctx.step(f"delete_pod {first.ref}")
    await provider.delete_pod(first)
    ctx.deleted(first)
    ctx.step(f"get_pod {second.ref} after deleting its namesake")
    try:
        await provider.get_pod(second.ref)
    except NotFound:
        raise CaseFailed(
            f"get_pod {second.ref} after deleting {first.ref}", expected="the pod", got="NotFound"
        ) from None


async def stats_summary_has_pod(provider: Provider, ctx: CaseContext) -> None:
    """The kubelet Summary lists the running pod with its podRef, container, CPU and memory."""
    pod = ctx.new_pod()
    await ctx.create(pod)
    await ctx.wait_running(pod)
    last: list[Mapping[str, Any]] = []

    async def listed() -> tuple[bool, str]:
        summary = await provider.stats_summary()
        last[:] = [summary]
        entries = [p for p in summary.get("pods") or () if (p.get("podRef") or {}).get("uid") == pod.ref.uid]
        return bool(entries), f"{len(summary.get('pods') or ())} pods, none with UID {pod.ref.uid}"

    ctx.step("stats_summary until it lists the pod")
    await ctx.eventually(listed, what=f"stats_summary listing {pod.ref}")
    summary = last[0]
    node = summary.get("node")
    if not isinstance(node, Mapping):
        raise CaseFailed("stats_summary().node", expected="an object", got=repr(node))
    entry = next(p for p in summary["pods"] if p["podRef"]["uid"] == pod.ref.uid)
    pod_ref = entry["podRef"]
    if (pod_ref.get("namespace"), pod_ref.get("name")) != (pod.ref.namespace, pod.ref.name):
        raise CaseFailed(
            "stats_summary podRef",
            expected=f"{pod.ref.namespace}/{pod.ref.name}",
            got=f"{pod_ref.get('namespace')}/{pod_ref.get('name')}",
        )
    containers = {c.get("name"): c for c in entry.get("containers") or ()}
    if CONTAINER not in containers:
        raise CaseFailed(
            f"stats_summary containers of {pod.ref}",
            expected=f"container {CONTAINER!r}",
            got=f"containers {sorted(map(str, containers))}",
        )
    container = containers[CONTAINER]
    for section, key in (("cpu", "usageCoreNanoSeconds"), ("memory", "workingSetBytes")):
        value = (container.get(section) or {}).get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise CaseFailed(
                f"stats_summary container {CONTAINER!r} {section}.{key}",
                expected="a non-negative integer",
                got=repr(value),
            )
        if section not in entry:
            raise CaseFailed(f"stats_summary pod {pod.ref}", expected=f"a {section!r} object", got="none")


_POD_FAMILIES = {
    "pod_cpu_usage_seconds_total": "counter",
    "pod_memory_working_set_bytes": "gauge",
}
_CONTAINER_FAMILIES = {
    "container_cpu_usage_seconds_total": "counter",
    "container_memory_working_set_bytes": "gauge",
}
_NODE_FAMILIES = {
    "node_cpu_usage_seconds_total": "counter",
    "node_memory_working_set_bytes": "gauge",
}


async def metrics_resource_has_pod(provider: Provider, ctx: CaseContext) -> None:
    """/metrics/resource families with the kubelet's names, types and container/namespace/pod
    labels, including the running pod."""
    pod = ctx.new_pod()
    await ctx.create(pod)
    await ctx.wait_running(pod)
    want_pod = {"namespace": pod.ref.namespace, "pod": pod.ref.name}
    want_container = {**want_pod, "container": CONTAINER}
    families: dict[str, MetricFamily] = {}

    def has(name: str, labels: Mapping[str, str]) -> bool:
        family = families.get(name)
        return family is not None and any(
            all(s.labels.get(k) == v for k, v in labels.items()) for s in family.samples
        )

    async def listed() -> tuple[bool, str]:
        families.clear()
        families.update({f.name: f for f in await provider.metrics_resource()})
        missing = [n for n in _POD_FAMILIES if not has(n, want_pod)]
        missing += [n for n in _CONTAINER_FAMILIES if not has(n, want_container)]
        return not missing, f"no sample for the pod in {', '.join(missing)}"

    ctx.step("metrics_resource until it has the pod")
    await ctx.eventually(listed, what=f"metrics_resource samples labelled with {pod.ref}")
    for name, kind in {**_NODE_FAMILIES, **_POD_FAMILIES, **_CONTAINER_FAMILIES}.items():
        family = families.get(name)
        if family is None:
            raise CaseFailed("metrics_resource", expected=f"family {name}", got="none")
        if family.type != kind:
            raise CaseFailed(f"metrics_resource family {name}", expected=f"type {kind}", got=family.type)


async def logs_contain_output(provider: Provider, ctx: CaseContext) -> None:
    """The running container's log contains what its command printed ("conformance")."""
    pod = ctx.new_pod()
    await ctx.create(pod)
    await ctx.wait_running(pod)

    async def read_log() -> tuple[bool, str]:
        data = bytearray()
        stream = provider.container_logs(pod.ref, CONTAINER, LogOptions())
        try:
            async for chunk in stream:
                data += chunk
                if LOG_MARKER in data or len(data) >= MAX_LOG_BYTES:
                    break
        finally:
            await _aclose(stream)
        return LOG_MARKER in data, repr(bytes(data[:200])) if data else "an empty log"

    async def probe() -> tuple[bool, str]:
        try:
            return await _within(ctx.clock, ctx.timeout, read_log())
        except _Expired:
            return False, f"the non-follow log read did not end within {ctx.timeout:g}s"

    ctx.step(f"container_logs {pod.ref} {CONTAINER}")
    await ctx.eventually(probe, what=f"log of {pod.ref} container {CONTAINER!r} containing 'conformance'")


async def exec_exit_code_and_stdin(provider: Provider, ctx: CaseContext) -> None:
    """exec returns the command's exit code (``sh -c 'exit 7'`` -> 7) and passes stdin through
    (``cat`` echoes it)."""
    pod = ctx.new_pod()
    await ctx.create(pod)
    await ctx.wait_running(pod)
    command = ["sh", "-c", "exit 7"]
    ctx.step(f"exec {command} in {pod.ref}")
    code = await provider.exec_in_container(pod.ref, CONTAINER, command, ScriptedIO())
    if code != 7:
        raise CaseFailed(f"exec of {command!r}", expected="exit code 7", got=f"exit code {code!r}")
    payload = b"conformance stdin\n"
    io = ScriptedIO([payload])
    ctx.step(f"exec ['cat'] with stdin in {pod.ref}")
    code = await provider.exec_in_container(pod.ref, CONTAINER, ["cat"], io)
    if code != 0 or bytes(io.out) != payload:
        raise CaseFailed(
            "exec of ['cat'] with stdin",
            expected=f"exit code 0 and stdout {payload!r}",
            got=f"exit code {code!r} and stdout {bytes(io.out[:200])!r}",
        )


def _greeting_volumes(text: bytes) -> PodVolumes:
    return PodVolumes(
        files=(
            FileVolume(name="greeting", kind="configMap", files=(VolumeFile(path="hello.txt", data=text),)),
        ),
        empty_dirs=(EmptyDirVolume(name="scratch"),),
    )


async def volumes_accepted(provider: Provider, ctx: CaseContext) -> None:
    """set_pod_volumes before create_pod is taken; a path leaving the volume is InvalidInput.
    With EXEC too: the container reads the file at its mountPath, and a second
    set_pod_volumes with new contents shows in the running container (swapped in place)."""
    pod = ctx.new_pod()
    mount_path = f"/tmp/vkubelet-conformance-{pod.ref.uid}"
    manifest = dict(pod.manifest)
    spec = dict(manifest["spec"])
    container = dict(spec["containers"][0])
    container["volumeMounts"] = [
        {"name": "greeting", "mountPath": mount_path, "readOnly": True},
        {"name": "scratch", "mountPath": f"{mount_path}-scratch"},
    ]
    spec["containers"] = [container]
    spec["volumes"] = [
        {"name": "greeting", "configMap": {"name": "greeting"}},
        {"name": "scratch", "emptyDir": {}},
    ]
    manifest["spec"] = spec
    pod = Pod(pod.ref, manifest)
    ctx.step(f"set_pod_volumes {pod.ref} with a path that leaves the volume")
    escaping = PodVolumes(
        files=(FileVolume("greeting", "configMap", (VolumeFile(path="../escape", data=b"x"),)),)
    )
    await expect_error(
        "set_pod_volumes with the file path '../escape'",
        provider.set_pod_volumes(pod.ref, escaping),
        (InvalidInput,),
        clock=ctx.clock,
        within=ctx.timeout,
    )
    ctx.step(f"set_pod_volumes {pod.ref}")
    await _within(ctx.clock, ctx.timeout, provider.set_pod_volumes(pod.ref, _greeting_volumes(b"hello")))
    await ctx.create(pod)
    await ctx.wait_running(pod)
    if Capability.EXEC not in provider.capabilities():
        ctx.note("no EXEC: the mounted contents are not checked")
        return

    async def reads(expected: bytes) -> tuple[bool, str]:
        io = ScriptedIO()
        code = await provider.exec_in_container(pod.ref, CONTAINER, ["cat", f"{mount_path}/hello.txt"], io)
        return code == 0 and bytes(io.out) == expected, f"exit code {code}, stdout {bytes(io.out[:100])!r}"

    ctx.step(f"exec cat {mount_path}/hello.txt")
    await ctx.eventually(lambda: reads(b"hello"), what=f"{mount_path}/hello.txt reading 'hello'")
    ctx.step(f"set_pod_volumes {pod.ref} with new contents")
    await _within(ctx.clock, ctx.timeout, provider.set_pod_volumes(pod.ref, _greeting_volumes(b"changed")))
    await ctx.eventually(lambda: reads(b"changed"), what=f"{mount_path}/hello.txt reading 'changed' in place")


KILLED_EXIT_CODES = (137, 143)  # 128 + SIGKILL, 128 + SIGTERM


def _container_status(status: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    for entry in status.get("containerStatuses") or ():
        if isinstance(entry, Mapping) and entry.get("name") == name:
            return entry
    return {}


def _state_text(container: Mapping[str, Any]) -> str:
    state = ", ".join(sorted((container.get("state") or {}).keys())) or "no state"
    last = ", ".join(sorted((container.get("lastState") or {}).keys())) or "none"
    return f"state {state}, lastState {last}, restartCount {container.get('restartCount')!r}"


def _check_killed_run(ctx: CaseContext, what: str, terminated: Mapping[str, Any]) -> None:
    """A killed run must end non-zero; the contract's 137/143 and ``Error`` are noted when off."""
    code = terminated.get("exitCode")
    if not isinstance(code, int) or isinstance(code, bool) or code == 0:
        raise CaseFailed(f"{what} exitCode", expected="non-zero (137 or 143)", got=repr(code))
    if code not in KILLED_EXIT_CODES or terminated.get("reason") != "Error":
        ctx.note(
            f"{what}: exit code {code}, reason {terminated.get('reason')!r} (expected 137 or 143, 'Error')"
        )


async def kill_container_restarts(provider: Provider, ctx: CaseContext) -> None:
    """kill_container of an unknown pod or container is NotFound. With restartPolicy Never the
    killed container stays terminated (exit code non-zero) and the pod turns Failed; with Always
    ``lastState.terminated`` holds the killed run and the container runs again with restartCount
    1 (a back-off longer than the kit waits is noted, not failed)."""
    ctx.step("kill_container of an unknown pod")
    await expect_error(
        "kill_container of an unknown pod",
        provider.kill_container(_unknown_ref(ctx), CONTAINER, grace_period_seconds=1),
        (NotFound,),
        clock=ctx.clock,
        within=ctx.timeout,
    )
    always = ctx.new_pod()
    never = ctx.new_pod()
    manifest = dict(never.manifest)
    manifest["spec"] = {**manifest["spec"], "restartPolicy": "Never"}
    never = Pod(never.ref, manifest)
    await ctx.create(always)
    await ctx.create(never)
    await ctx.wait_running(always)
    await ctx.wait_running(never)
    ctx.step(f"kill_container {always.ref} of an unknown container")
    await expect_error(
        "kill_container of an unknown container",
        provider.kill_container(always.ref, f"{CONTAINER}-unknown", grace_period_seconds=1),
        (NotFound,),
        clock=ctx.clock,
        within=ctx.timeout,
    )
    for pod in (never, always):
        ctx.step(f"kill_container {pod.ref} {CONTAINER}")
        await _within(
            ctx.clock, ctx.timeout, provider.kill_container(pod.ref, CONTAINER, grace_period_seconds=1)
        )

    async def stopped() -> tuple[bool, str]:
        status = await provider.get_pod_status(never.ref)
        container = _container_status(status, CONTAINER)
        done = "terminated" in (container.get("state") or {}) and status.get("phase") == PodPhase.FAILED.value
        return done, f"phase {_phase(status)}, {_state_text(container)}"

    ctx.step(f"get_pod_status {never.ref} until Failed (restartPolicy Never)")
    await ctx.eventually(stopped, what=f"killed container of {never.ref} terminated and the pod Failed")
    container = _container_status(await provider.get_pod_status(never.ref), CONTAINER)
    _check_killed_run(ctx, f"{never.ref} state.terminated", container["state"]["terminated"])

    async def exited() -> tuple[bool, str]:
        container = _container_status(await provider.get_pod_status(always.ref), CONTAINER)
        return bool((container.get("lastState") or {}).get("terminated")), _state_text(container)

    ctx.step(f"get_pod_status {always.ref} until lastState.terminated (restartPolicy Always)")
    await ctx.eventually(exited, what=f"lastState.terminated of the killed container of {always.ref}")
    container = _container_status(await provider.get_pod_status(always.ref), CONTAINER)
    _check_killed_run(ctx, f"{always.ref} lastState.terminated", container["lastState"]["terminated"])
    if "terminated" in (container.get("state") or {}):
        raise CaseFailed(
            f"container {CONTAINER!r} of {always.ref} (restartPolicy Always)",
            expected="running again or waiting to restart",
            got=_state_text(container),
        )

    async def restarted() -> tuple[bool, str]:
        container = _container_status(await provider.get_pod_status(always.ref), CONTAINER)
        running = "running" in (container.get("state") or {})
        return running and container.get("restartCount") == 1, _state_text(container)

    ctx.step(f"get_pod_status {always.ref} until it runs again with restartCount 1")
    waiting = (container.get("state") or {}).get("waiting") or {}
    try:
        await ctx.eventually(
            restarted, what=f"the killed container of {always.ref} running with restartCount 1"
        )
    except CaseFailed:
        if waiting.get("reason") != "CrashLoopBackOff":
            raise
        ctx.note(
            f"{always.ref} was still in CrashLoopBackOff after {ctx.timeout:g}s: its restart was not seen"
        )


async def invalid_input_rejected(provider: Provider, ctx: CaseContext) -> None:
    """A pod without metadata.uid is refused with InvalidInput (over the wire: INVALID_ARGUMENT)."""
    valid = ctx.new_pod()
    manifest = dict(valid.manifest)
    manifest["metadata"] = {k: v for k, v in valid.metadata.items() if k != "uid"}
    # Bypasses Pod.from_manifest on purpose: the provider must validate what reaches it.
    broken = Pod(PodRef(valid.ref.namespace, valid.ref.name, ""), manifest)
    ctx.step("create_pod of a pod without metadata.uid")
    await expect_error(
        "create_pod of a pod without metadata.uid",
        provider.create_pod(broken),
        (InvalidInput,),
        clock=ctx.clock,
        within=ctx.timeout,
    )


CASES: tuple[CaseSpec, ...] = (
    CaseSpec("describe_consistent", "capabilities match what the methods do", describe_consistent),
    CaseSpec("ping", "ping answers", ping),
    CaseSpec("create_and_get", "a created pod is seen by get/get_status/list", create_and_get),
    CaseSpec("create_idempotent", "creating a UID twice leaves one pod", create_idempotent),
    CaseSpec("status_reaches_running", "polled status reaches Running", status_reaches_running),
    CaseSpec(
        "status_stream_running",
        "the status stream reports Running",
        status_stream_running,
        Capability.POD_STATUS_STREAM,
    ),
    CaseSpec(
        "node_status_stream",
        "the node status stream stays open and sends whole templates",
        node_status_stream,
        Capability.NODE_STATUS_STREAM,
    ),
    CaseSpec("update_accepted", "update_pod is accepted", update_accepted),
    CaseSpec("delete_removes", "a deleted pod is gone and reported terminal", delete_removes),
    CaseSpec("delete_idempotent", "a second delete is NotFound or success", delete_idempotent),
    CaseSpec("unknown_not_found", "an unknown UID is NotFound", unknown_not_found),
    CaseSpec("same_name_distinct_uids", "pods are keyed by UID", same_name_distinct_uids),
    CaseSpec(
        "stats_summary_has_pod", "the Summary lists the pod", stats_summary_has_pod, Capability.STATS_SUMMARY
    ),
    CaseSpec(
        "metrics_resource_has_pod",
        "resource metrics carry the pod",
        metrics_resource_has_pod,
        Capability.METRICS_RESOURCE,
    ),
    CaseSpec("logs_contain_output", "logs hold the container's output", logs_contain_output, Capability.LOGS),
    CaseSpec(
        "exec_exit_code_and_stdin",
        "exec returns exit codes and passes stdin",
        exec_exit_code_and_stdin,
        Capability.EXEC,
    ),
    CaseSpec(
        "volumes_accepted",
        "volume contents are taken before the create and swapped in place",
        volumes_accepted,
        Capability.VOLUMES,
    ),
    CaseSpec(
        "kill_container_restarts",
        "a killed container restarts per restartPolicy",
        kill_container_restarts,
        Capability.KILL_CONTAINER,
    ),
    CaseSpec("invalid_input_rejected", "a pod without a UID is InvalidInput", invalid_input_rejected),
)


def case_names() -> tuple[str, ...]:
    return tuple(spec.name for spec in CASES)


def select_cases(only: Iterable[str] | None) -> tuple[CaseSpec, ...]:
    """The cases named in ``only`` (all when None or empty), in the kit's order.

    Raises InvalidInput naming the unknown names and the known ones.
    """
    wanted = set(only or ())
    if not wanted:
        return CASES
    unknown = sorted(wanted - set(case_names()))
    if unknown:
        raise InvalidInput(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(case_names())}")
    return tuple(spec for spec in CASES if spec.name in wanted)


async def run_conformance(
    provider: Provider,
    *,
    clock: Clock,
    wait_seconds: float = 30.0,
    only: Iterable[str] | None = None,
    target: str = "in-process provider",
    run_id: str | None = None,
) -> Report:
    """Run the selected cases one after another and report each; never raises for a provider fault.

    ``wait_seconds`` bounds every wait for a condition and every single call the kit makes on its own
    (seconds of ``clock`` time); a case as a whole gets ``CASE_BUDGET_FACTOR`` times that.
    """
    specs = select_cases(only)
    run_id = run_id or uuid.uuid4().hex[:8]
    declared = frozenset(provider.capabilities())
    results = []
    for index, spec in enumerate(specs):
        ctx = CaseContext(
            provider=provider,
            clock=clock,
            timeout=wait_seconds,
            namespace=f"conformance-{run_id}",
            prefix=f"c{index:02d}",
        )
        results.append(await _run_case(spec, provider, ctx, declared))
    return Report(target=target, capabilities=declared, results=tuple(results))


async def _run_case(
    spec: CaseSpec, provider: Provider, ctx: CaseContext, declared: frozenset[Capability]
) -> CaseResult:
    if spec.requires is not None and spec.requires not in declared:
        return CaseResult(spec.name, Outcome.SKIP, f"capability {spec.requires.value!r} not declared")
    budget = ctx.timeout * CASE_BUDGET_FACTOR
    started = ctx.clock.monotonic()
    outcome, reason = Outcome.PASS, ""
    try:
        await _within(ctx.clock, budget, spec.run(provider, ctx))
    except CaseFailed as failure:
        outcome, reason = Outcome.FAIL, str(failure)
    except CaseSkipped as skip:
        outcome, reason = Outcome.SKIP, str(skip)
    except _Expired:
        outcome = Outcome.FAIL
        reason = f"{ctx.current_step}: no answer; the case did not finish within {budget:g}s"
    except Exception as error:
        outcome, reason = Outcome.FAIL, f"{ctx.current_step}: expected success, got {_describe_error(error)}"
    await ctx.cleanup()
    seconds = ctx.clock.monotonic() - started
    return CaseResult(spec.name, outcome, reason, seconds, tuple(ctx.notes))


__all__ = [
    "CASES",
    "CONTAINER_COMMAND",
    "CaseContext",
    "CaseFailed",
    "CaseResult",
    "CaseSkipped",
    "CaseSpec",
    "Outcome",
    "Report",
    "ScriptedIO",
    "case_names",
    "is_running",
    "is_terminal",
    "pod_manifest",
    "run_conformance",
    "select_cases",
]
