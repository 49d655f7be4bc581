"""How a conformance case ends and what the run reports: outcomes, per-case results, the report
(its JSON form and its human-readable rendering)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from vkubelet.domain.provider import Capability


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
