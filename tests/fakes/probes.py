"""Hand-written fakes of the probe ports: a scripted prober and a recording container killer."""

from __future__ import annotations

from dataclasses import dataclass, field

from vkubelet.domain.errors import NotFound
from vkubelet.domain.pod import PodRef
from vkubelet.domain.probes import ExecHandler, Handler, ProbeOutcome, ProbeResult


@dataclass
class ScriptedProber:
    """``ContainerProber`` whose exec handlers answer from ``answers`` (keyed by the command's
    first word; default: success). Other handlers answer ``default``. Every call is kept."""

    answers: dict[str, ProbeResult] = field(default_factory=dict)
    default: ProbeResult = field(default_factory=lambda: ProbeResult(ProbeOutcome.SUCCESS))
    calls: list[tuple[str, str, Handler, float]] = field(default_factory=list)

    async def run(
        self, ref: PodRef, container: str, handler: Handler, *, timeout_seconds: float
    ) -> ProbeResult:
        self.calls.append((ref.uid, container, handler, timeout_seconds))
        if isinstance(handler, ExecHandler):
            return self.answers.get(handler.command[0], self.default)
        return self.default

    def fail(self, word: str, message: str = "boom") -> None:
        self.answers[word] = ProbeResult(ProbeOutcome.FAILURE, message)

    def succeed(self, word: str) -> None:
        self.answers[word] = ProbeResult(ProbeOutcome.SUCCESS)

    def count(self, word: str) -> int:
        return sum(1 for _, _, h, _ in self.calls if isinstance(h, ExecHandler) and h.command[0] == word)


@dataclass
class RecordingKiller:
    """``ContainerControl`` that records kills; ``missing`` containers raise NotFound."""

    kills: list[tuple[str, str, int]] = field(default_factory=list)
    missing: set[str] = field(default_factory=set)

    async def kill_container(self, ref: PodRef, container: str, *, grace_period_seconds: int) -> None:
        if container in self.missing:
            raise NotFound(f"no container {container}")
        self.kills.append((ref.uid, container, grace_period_seconds))
