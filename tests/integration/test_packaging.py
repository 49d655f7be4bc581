"""The wheel holds only the ``vkubelet`` package, with every sub-package, and imports on its own."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath

import pytest

import vkubelet

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Build from a copy, so that build/ and *.egg-info never land in the shared working tree.
    tree = tmp_path_factory.mktemp("tree")
    shutil.copy2(REPO / "pyproject.toml", tree)
    shutil.copy2(REPO / "README.md", tree)
    shutil.copytree(SRC, tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: use this venv's setuptools instead of downloading one per run.
    result = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(tree)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (built,) = out.glob("vkubelet-*.whl")
    return built


def _names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def test_top_level_is_only_vkubelet_and_its_dist_info(wheel: Path) -> None:
    top = {PurePosixPath(name).parts[0] for name in _names(wheel)}
    dist_info = {name for name in top if name.endswith(".dist-info")}
    assert len(dist_info) == 1 and dist_info.pop().startswith("vkubelet-")
    assert top - {name for name in top if name.endswith(".dist-info")} == {"vkubelet"}


def test_every_package_under_src_is_in_the_wheel(wheel: Path) -> None:
    names = set(_names(wheel))
    packages = sorted(init.parent.relative_to(SRC) for init in SRC.rglob("__init__.py"))
    assert packages, "no package found under src/"
    missing = [
        str(package)
        for package in packages
        if str(PurePosixPath("vkubelet", *package.parts, "__init__.py")) not in names
    ]
    assert missing == [], (
        f"sub-packages missing from the wheel (add them to [tool.setuptools] packages): {missing}"
    )
    assert "vkubelet/py.typed" in names


def test_console_script_is_declared(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        (entry_points,) = [n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt")]
        text = archive.read(entry_points).decode()
    assert "virtual-kubelet = vkubelet.entrypoints.cli:main" in text


def test_the_unpacked_wheel_imports_without_the_source_tree(wheel: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path)
    # -S: no site-packages, so neither the editable install nor any dependency is visible;
    # the pure layers need only the standard library.
    probe = (
        "import vkubelet.domain, vkubelet.application, vkubelet.application.ports; print(vkubelet.__file__)"
    )
    result = subprocess.run(
        [sys.executable, "-S", "-c", probe],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == tmp_path / "vkubelet" / "__init__.py"


def test_the_editable_install_maps_vkubelet_to_src() -> None:
    assert Path(vkubelet.__file__).resolve() == SRC / "__init__.py"
