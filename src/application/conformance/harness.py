"""The machinery a conformance case runs on: the per-case context (unique pod names, steps, notes,
cleanup), bounded waits on the injected Clock, the status-stream watcher, the exec I/O stand-ins
and the pod manifest the kit creates."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from vkubelet.application.conformance.report import CaseFailed
from vkubelet.application.ports.provider import Provider
from vkubelet.application.ports.runtime import Clock
from vkubelet.application.ports.streams import TerminalSize
from vkubelet.application.waiting import finish_within
from vkubelet.domain.errors import DomainError, NotFound, classify, is_error
from vkubelet.domain.pod import Pod, PodPhase, PodRef, format_time
from vkubelet.domain.provider import Capability

T = TypeVar("T")

CASE_BUDGET_FACTOR = 4  # a case may take this many ``timeout``s in all (it waits several times)
POLL_INTERVAL = 0.1  # seconds between two polls of a condition
CONTAINER = "app"
CONTAINER_COMMAND = ("sh", "-c", "echo conformance; sleep 300")


class WaitExpired(Exception):
    """A bounded wait ran out of time."""


async def await_within(clock: Clock, seconds: float, work: Awaitable[T]) -> T:
    """Await ``work`` for at most ``seconds`` of ``clock`` time; raise WaitExpired after that.

    Time goes through the Clock port (not ``asyncio.timeout``) so the kit runs at fake speed in
    unit tests; the work is cancelled when time runs out.
    """
    task = asyncio.ensure_future(work)
    try:
        finished = await finish_within(clock, task, seconds=seconds)
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
    if not finished or task.cancelled():
        raise WaitExpired()
    return task.result()


def describe_error(error: BaseException) -> str:
    kind = classify(error)
    name = kind.__name__ if kind is not None else type(error).__name__
    text = str(error)
    return f"{name}: {text}" if text else name


async def aclose(stream: AsyncIterator[Any]) -> None:
    """Close an async generator (or a call object with ``aclose``) so its resources go now."""
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()


async def first_item(stream: AsyncIterator[T]) -> T | None:
    """The first item of ``stream`` (None when it ends at once); the stream is closed after."""
    try:
        async for item in stream:
            return item
        return None
    finally:
        await aclose(stream)


def is_running(status: Mapping[str, Any]) -> bool:
    return status.get("phase") == PodPhase.RUNNING.value


def is_terminal(status: Mapping[str, Any]) -> bool:
    """Succeeded/Failed, or every container reported terminated (what a deleted pod must show)."""
    if status.get("phase") in (PodPhase.SUCCEEDED.value, PodPhase.FAILED.value):
        return True
    containers = status.get("containerStatuses") or ()
    return bool(containers) and all("terminated" in (c.get("state") or {}) for c in containers)


def phase_text(status: Mapping[str, Any]) -> str:
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
                    raise WaitExpired()
                item = await await_within(self._ctx.clock, remaining, self._seen.get())
            except WaitExpired:
                got = f"phases {', '.join(history)}" if history else "no report for this pod"
                raise CaseFailed(
                    f"status stream for {ref}", expected=f"{what} within {self._ctx.timeout:g}s", got=got
                ) from None
            if isinstance(item, BaseException):
                raise CaseFailed(
                    f"status stream for {ref}",
                    expected=what,
                    got=f"the stream failed: {describe_error(item)}",
                )
            if item.ref.uid != ref.uid:
                continue  # another pod (an earlier case's, or another provider user's)
            history.append(phase_text(item.status))
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
            return is_running(status), f"phase {phase_text(status)}"

        self.step(f"get_pod_status {pod.ref} until Running")
        await self.eventually(probe, what=f"pod {pod.ref} Running (polled)")

    def watch(self) -> StatusWatch:
        return StatusWatch(self.provider, self)

    async def cleanup(self) -> None:
        """Delete what the case left behind; failures become notes (the case already decided)."""
        for pod in list(self._created.values()):
            try:
                await await_within(self.clock, self.timeout, self.provider.delete_pod(pod))
            except WaitExpired:
                self.note(f"cleanup: delete_pod {pod.ref} did not answer within {self.timeout:g}s")
            except Exception as error:
                if not is_error(error, NotFound):
                    self.note(f"cleanup: delete_pod {pod.ref} failed: {describe_error(error)}")
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
        await await_within(clock, within, work)
    except WaitExpired:
        raise CaseFailed(what, expected=names, got=f"no answer within {within:g}s") from None
    except Exception as error:
        kind = classify(error)
        if kind is not None and issubclass(kind, expected):
            return
        raise CaseFailed(what, expected=names, got=describe_error(error)) from None
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


class ClosedStream:
    """A port-forward connection that is closed from the start (for the NotSupported check)."""

    async def read(self) -> bytes:
        return b""

    async def write(self, data: bytes) -> None:
        return None

    async def close(self) -> None:
        return None


Case = Callable[[Provider, CaseContext], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class CaseSpec:
    name: str
    summary: str
    run: Case
    requires: Capability | None = None


def unknown_ref(ctx: CaseContext) -> PodRef:
    return PodRef(ctx.namespace, f"{ctx.prefix}-unknown", str(uuid.uuid4()))
