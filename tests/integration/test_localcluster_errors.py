"""A broken environment produces an error that says what is wrong and how to fix it.

Fast: no Go build and no real control plane; fake executables stand in for the real ones.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from vkubelet.entrypoints.localcluster import cluster as cluster_module
from vkubelet.entrypoints.localcluster.binaries import (
    CACHE_ENV,
    COMPONENTS,
    TOOLS_ENV,
    Binaries,
    BinaryCache,
    BuildFailedError,
    GoNotFoundError,
    ToolsDirNotFoundError,
)
from vkubelet.entrypoints.localcluster.cluster import ClusterStartError, LocalCluster, PortInUseError


def _path_without_go() -> str:
    """PATH minus every directory that holds a `go` executable."""
    keep = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d and not (Path(d) / "go").exists()]
    return os.pathsep.join(keep)


def _script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def fake_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A binary cache laid out like the real one, holding shell scripts."""
    root = tmp_path / "bincache"
    kube = root / COMPONENTS["kubernetes"].dir_name
    _script(kube / "kube-apiserver", 'echo "fake kube-apiserver: unexpected start" >&2; exit 1')
    for controller in ("kube-scheduler", "kube-controller-manager"):
        _script(kube / controller, f'echo "fake {controller}: unexpected start" >&2; exit 1')
    _script(kube / "kubectl", "exit 0")
    _script(root / COMPONENTS["etcd"].dir_name / "etcd", 'echo "fake etcd: should not run" >&2; exit 1')
    monkeypatch.setenv(CACHE_ENV, str(root))
    return root


@pytest.fixture
def listening_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_no_go_on_path_with_an_empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", _path_without_go())
    cache = BinaryCache(root=tmp_path / "empty")
    with pytest.raises(GoNotFoundError) as caught:
        cache.binaries()
    message = str(caught.value)
    assert "the Go toolchain (`go`) is not on PATH" in message
    assert "install Go" in message and "PATH" in message
    assert str(tmp_path / "empty" / "etcd-v3.6.16" / "etcd") in message  # names what is missing


def test_no_go_on_path_from_the_command_line(tmp_path: Path) -> None:
    env = dict(os.environ, PATH=_path_without_go(), **{CACHE_ENV: str(tmp_path / "empty")})
    result = subprocess.run(
        [sys.executable, "-m", "vkubelet.entrypoints.localcluster.binaries"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "error: cannot build etcd v3.6.16: the Go toolchain (`go`) is not on PATH" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_cached_binary_needs_no_go(fake_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", _path_without_go())
    binaries = BinaryCache().binaries()
    assert binaries.etcd == fake_cache / "etcd-v3.6.16" / "etcd"
    assert binaries.kubectl == fake_cache / "kubernetes-v1.36.3" / "kubectl"


@pytest.mark.skipif(shutil.which("go") is None, reason="needs go on PATH to get past the Go check")
def test_missing_wrapper_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOOLS_ENV, str(tmp_path / "no-tools"))
    with pytest.raises(ToolsDirNotFoundError) as caught:
        BinaryCache(root=tmp_path / "empty").ensure("etcd")
    assert str(tmp_path / "no-tools" / "etcd" / "go.mod") in str(caught.value)
    assert TOOLS_ENV in str(caught.value)


@pytest.mark.skipif(shutil.which("go") is None, reason="needs go on PATH to run a failing build")
def test_a_failed_build_shows_its_log_tail(tmp_path: Path) -> None:
    tools = tmp_path / "tools"
    (tools / "etcd").mkdir(parents=True)
    # A wrapper module that does not require etcd: go fails at once, offline.
    (tools / "etcd" / "go.mod").write_text("module vkubelet.invalid/broken\n\ngo 1.26.0\n")
    root = tmp_path / "cache"
    cache = BinaryCache(root=root, tools_dir=tools)
    with pytest.raises(BuildFailedError) as caught:
        cache.ensure("etcd")
    message = str(caught.value)
    assert "building etcd v3.6.16 failed" in message
    assert "go.etcd.io/etcd/server/v3" in message  # go's own complaint, from the log tail
    assert caught.value.log_path.is_file()
    assert not (root / "etcd-v3.6.16").exists()  # nothing half-built is left in the cache
    assert [p.name for p in root.iterdir() if p.name.startswith(".etcd-v3.6.16.tmp")] == []


def test_a_port_already_taken_is_named(fake_cache: Path, listening_port: int, tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "work", apiserver_port=listening_port)
    with pytest.raises(PortInUseError) as caught:
        cluster.start()
    assert f"127.0.0.1:{listening_port}" in str(caught.value)
    assert "kube-apiserver secure port" in str(caught.value)
    assert caught.value.port == listening_port


def test_a_port_taken_after_the_check_is_named_from_the_log(fake_cache: Path, tmp_path: Path) -> None:
    # etcd loses the race for its port: it logs Go's bind error and exits.
    etcd = _script(
        tmp_path / "etcd",
        'for a in "$@"; do case "$a" in --listen-client-urls=*) url="${a#*=}";; esac; done\n'
        'echo "fatal: listen tcp ${url#http://}: bind: address already in use"\n'
        "exit 1",
    )
    cache = BinaryCache()
    binaries = Binaries(
        etcd=etcd,
        kube_apiserver=cache.path("kubernetes", "kube-apiserver"),
        kube_scheduler=cache.path("kubernetes", "kube-scheduler"),
        kube_controller_manager=cache.path("kubernetes", "kube-controller-manager"),
        kubectl=cache.path("kubernetes", "kubectl"),
    )
    with pytest.raises(PortInUseError) as caught:
        LocalCluster(tmp_path / "work", binaries=binaries, etcd_port=_free_port()).start()
    assert "etcd client URL" in str(caught.value)


def test_a_binary_that_exits_at_start_shows_its_log_tail(fake_cache: Path, tmp_path: Path) -> None:
    _script(
        fake_cache / "etcd-v3.6.16" / "etcd",
        'echo "starting fake etcd $1"\necho "fatal: the data directory is corrupt (fake)" >&2\nexit 3',
    )
    work = tmp_path / "work"
    with pytest.raises(ClusterStartError) as caught:
        LocalCluster(work).start()
    message = str(caught.value)
    assert "etcd exited with code 3" in message
    assert "fatal: the data directory is corrupt (fake)" in message  # the tail of its log
    assert str(work / "logs" / "etcd.log") in message
    assert (work / "logs" / "etcd.log").is_file()  # kept for reading


def test_a_binary_that_exits_leaves_its_temporary_work_dir(fake_cache: Path) -> None:
    cluster = LocalCluster()
    with pytest.raises(ClusterStartError) as caught:
        cluster.start()
    assert caught.value.log_path is not None and caught.value.log_path.is_file()
    shutil.rmtree(cluster.work_dir)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.skipif(not BinaryCache().is_cached("etcd"), reason="needs the real etcd in the cache")
def test_real_etcd_losing_its_port_is_named(
    listening_port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Skip the pre-check so the real etcd hits the taken port, as in a race with another process.
    monkeypatch.setattr(cluster_module, "port_is_free", lambda port, host="": True)
    cache = BinaryCache()
    binaries = Binaries(
        etcd=cache.path("etcd", "etcd"),
        kube_apiserver=cache.path("kubernetes", "kube-apiserver"),
        kube_scheduler=cache.path("kubernetes", "kube-scheduler"),
        kube_controller_manager=cache.path("kubernetes", "kube-controller-manager"),
        kubectl=cache.path("kubernetes", "kubectl"),
    )
    with pytest.raises(PortInUseError) as caught:
        LocalCluster(tmp_path / "work", binaries=binaries, etcd_port=listening_port).start()
    assert caught.value.port == listening_port
    assert "etcd client URL" in str(caught.value)


def test_a_second_cluster_on_the_same_work_dir_is_refused(fake_cache: Path, tmp_path: Path) -> None:
    work = tmp_path / "local-cluster"
    holder = work.with_name("local-cluster.lock").open("w")  # as a running cluster holds it
    fcntl.flock(holder, fcntl.LOCK_EX)
    holder.write("4242\n")
    holder.flush()
    (work / "pki").mkdir(parents=True)
    (work / "pki" / "keep.txt").write_text("the running cluster's files")
    try:
        with pytest.raises(ClusterStartError) as caught:
            LocalCluster(work, fresh=True).start()
    finally:
        holder.close()
    message = str(caught.value)
    assert f"another local control plane is running in {work} (process 4242)" in message
    assert "VKUBELET_LOCAL_CLUSTER_DIR" in message
    assert (work / "pki" / "keep.txt").exists()  # nothing of the running one was wiped


def test_a_fresh_cluster_starts_from_an_empty_work_dir(fake_cache: Path, tmp_path: Path) -> None:
    work = tmp_path / "local-cluster"
    (work / "etcd").mkdir(parents=True)
    (work / "stale.txt").write_text("from an earlier run")
    with pytest.raises(ClusterStartError):  # the fake etcd exits at once
        LocalCluster(work, fresh=True).start()
    assert not (work / "stale.txt").exists()
    assert (work / "pki" / "kubelet-serving-ca.crt").exists()  # the CSR signer's CA is generated
    # The lock is released on failure: the next start gets past it.
    with pytest.raises(ClusterStartError) as caught:
        LocalCluster(work, fresh=True).start()
    assert "another local control plane" not in str(caught.value)
