"""Session-wide test plumbing: count executed tests per tier, and require e2e when asked.

``VKUBELET_REQUIRE_E2E=1`` (set by tools/test) makes the session fail when the e2e tier executed
no test at all: skipped or deselected tests do not count, so a CI run whose control plane silently
went missing cannot pass.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import PurePosixPath

import pytest

TIERS = ("unit", "integration", "e2e")
REQUIRE_E2E_ENV = "VKUBELET_REQUIRE_E2E"
_executed: Counter[str] = Counter()
_failure: list[str] = []


def tier_of(nodeid: str) -> str | None:
    """``tests/<tier>/...`` -> tier, from a node id relative to the root directory."""
    parts = PurePosixPath(nodeid.split("::", 1)[0]).parts
    for index, part in enumerate(parts[:-1]):
        if part == "tests" and parts[index + 1] in TIERS:
            return parts[index + 1]
    return None


def pytest_sessionstart(session: pytest.Session) -> None:
    _executed.clear()
    _failure.clear()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # The call phase runs only when setup passed; a skip inside the test reports "skipped".
    if report.when != "call" or report.skipped:
        return
    tier = tier_of(report.nodeid)
    if tier is not None:
        _executed[tier] += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get(REQUIRE_E2E_ENV) != "1" or _executed["e2e"] > 0:
        return
    _failure.append(
        f"{REQUIRE_E2E_ENV}=1 but the e2e tier (tests/e2e) executed no test: every e2e test was "
        "skipped, deselected or not collected. The control plane tests must run in CI."
    )
    if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    summary = ", ".join(f"{tier}={_executed[tier]}" for tier in TIERS)
    terminalreporter.write_line(f"tests executed per tier: {summary}")
    for failure in _failure:
        terminalreporter.write_line(f"FAILED: {failure}", red=True, bold=True)
