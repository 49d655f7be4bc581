"""tests/conftest.py fails a VKUBELET_REQUIRE_E2E=1 run whose e2e tier executed nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT_CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"


def _run(tmp_path: Path, e2e_body: str, require: str | None) -> subprocess.CompletedProcess[str]:
    tests = tmp_path / "tests"
    for tier in ("unit", "e2e"):
        (tests / tier).mkdir(parents=True)
    shutil.copy2(ROOT_CONFTEST, tests / "conftest.py")
    (tests / "unit" / "test_u.py").write_text("def test_unit():\n    pass\n")
    (tests / "e2e" / "test_e.py").write_text(f"import pytest\n\n{e2e_body}\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {k: v for k, v in os.environ.items() if k != "VKUBELET_REQUIRE_E2E"}
    if require is not None:
        env["VKUBELET_REQUIRE_E2E"] = require
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "tests"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


SKIPPED = "@pytest.mark.skip(reason='no control plane')\ndef test_e2e():\n    pass\n"
SKIPPED_INSIDE = "def test_e2e():\n    pytest.skip('no control plane')\n"
EXECUTED = "def test_e2e():\n    pass\n"


@pytest.mark.parametrize("body", [SKIPPED, SKIPPED_INSIDE, "# no tests\n"])
def test_required_e2e_with_nothing_executed_fails(tmp_path: Path, body: str) -> None:
    result = _run(tmp_path, body, "1")
    assert result.returncode == 1, result.stdout
    assert "e2e tier (tests/e2e) executed no test" in result.stdout
    assert "tests executed per tier: unit=1, integration=0, e2e=0" in result.stdout


def test_required_e2e_with_an_executed_test_passes(tmp_path: Path) -> None:
    result = _run(tmp_path, EXECUTED, "1")
    assert result.returncode == 0, result.stdout
    assert "tests executed per tier: unit=1, integration=0, e2e=1" in result.stdout


def test_without_the_requirement_skipped_e2e_is_fine(tmp_path: Path) -> None:
    result = _run(tmp_path, SKIPPED, None)
    assert result.returncode == 0, result.stdout
