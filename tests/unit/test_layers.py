"""The layer rule holds, and the check that enforces it can fail.

import-linter runs on the real tree (must pass) and on copies of it with one forbidden import
injected (must fail). An AST scan also checks that the domain uses only the standard library and
no I/O modules, which import-linter cannot express as "stdlib only".
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
COPY = "vkcopy"  # the copy's package name, so it cannot be confused with the installed vkubelet

# Standard-library modules the domain must not use: they do I/O, talk to the OS or run things.
IO_MODULES = {
    "asyncio", "socket", "ssl", "select", "selectors", "subprocess", "multiprocessing", "threading",
    "concurrent", "os", "io", "pathlib", "shutil", "tempfile", "glob", "fcntl", "signal", "mmap",
    "urllib", "http", "ftplib", "smtplib", "socketserver", "sqlite3", "dbm", "shelve", "pickle",
    "logging", "time", "random", "secrets", "ctypes", "sys", "builtins", "importlib", "atexit",
}  # fmt: skip


def _lint_imports(root: Path, config: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(root))
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(config), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def copy_tree(tmp_path: Path) -> Path:
    """src/ copied as package ``vkcopy``, with the pyproject contracts renamed to match."""
    package = tmp_path / COPY
    shutil.copytree(SRC, package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for path in package.rglob("*.py"):
        path.write_text(re.sub(r"\bvkubelet\b", COPY, path.read_text()))
    config = re.sub(r"\bvkubelet\b", COPY, (REPO / "pyproject.toml").read_text())
    (tmp_path / "pyproject.toml").write_text(config)
    return tmp_path


def test_the_real_tree_keeps_every_contract() -> None:
    result = _lint_imports(REPO, REPO / "pyproject.toml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert " broken" in result.stdout and "0 broken" in result.stdout


def test_the_unmodified_copy_keeps_every_contract(copy_tree: Path) -> None:
    result = _lint_imports(copy_tree, copy_tree / "pyproject.toml")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("target", "line", "contract"),
    [
        ("domain/errors.py", "import grpc", "The domain imports only the standard library"),
        ("domain/pod.py", "import socket", "The domain imports only the standard library"),
        ("domain/pod.py", "import subprocess", "The domain imports only the standard library"),
        ("domain/pod.py", f"import {COPY}.adapters", "Layers: entrypoints > adapters > application > domain"),
        ("application/__init__.py", "import aiohttp", "The application layer imports no technology"),
        ("application/__init__.py", f"import {COPY}.entrypoints", "Layers: entrypoints > adapters"),
        (
            "application/pod_controller.py",
            f"from {COPY}.application import conformance",
            "Only the entrypoints and adapters import the conformance kit",
        ),
        (
            "adapters/process/provider.py",
            f"import {COPY}.adapters.mock.provider",
            "The adapter packages are independent of each other",
        ),
    ],
)
def test_an_injected_forbidden_import_breaks_a_contract(
    copy_tree: Path, target: str, line: str, contract: str
) -> None:
    path = copy_tree / COPY / target
    path.write_text(path.read_text() + f"\n{line}  # injected by test_layers\n")
    result = _lint_imports(copy_tree, copy_tree / "pyproject.toml")
    assert result.returncode != 0, result.stdout
    broken = [row for row in result.stdout.splitlines() if row.rstrip().endswith("BROKEN")]
    assert any(row.startswith(contract) for row in broken), result.stdout


def _imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "__import__":
            found.append((node.lineno, "__import__"))
    return found


def _domain_violations(domain: Path) -> list[str]:
    problems = []
    for path in sorted(domain.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        where = path.relative_to(domain.parent)
        for lineno, module in _imported_modules(tree):
            top = module.split(".")[0]
            if module.startswith("vkubelet.domain") or top == "__future__":
                continue
            if top not in sys.stdlib_module_names:
                problems.append(f"{where}:{lineno}: {module} is not in the standard library")
            elif top in IO_MODULES:
                problems.append(f"{where}:{lineno}: {module} does I/O or touches the OS")
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in {"open", "print"}
            ):
                problems.append(f"{where}:{node.lineno}: calls {node.func.id}()")
    return problems


def test_the_domain_uses_only_pure_standard_library_modules() -> None:
    assert _domain_violations(SRC / "domain") == []


@pytest.mark.parametrize(
    "line",
    ["import yaml", "import os.path", "from socket import create_connection", "print('x')", "open('f')"],
)
def test_the_domain_scan_catches_an_injected_violation(tmp_path: Path, line: str) -> None:
    domain = tmp_path / "domain"
    shutil.copytree(SRC / "domain", domain, ignore=shutil.ignore_patterns("__pycache__"))
    (domain / "injected.py").write_text(f"{line}\n")
    problems = _domain_violations(domain)
    assert len(problems) == 1 and problems[0].startswith("domain/injected.py:1:"), problems
