"""Bad surroundings at startup: a clear message naming the problem, a non-zero exit, and no
process left behind (the local control plane included)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.vkubelet_process import leftovers, service_account_kubeconfig
from vkubelet.entrypoints.localcluster.binaries import CACHE_ENV, default_cache_root


def run_cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vkubelet", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.fixture
def bare_env(tmp_path: Path) -> dict[str, str]:
    """No kubeconfig anywhere (HOME is empty), the binaries from the real cache."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "VKUBELET_LOCAL_CLUSTER_DIR")}
    return env | {"HOME": str(home), CACHE_ENV: str(default_cache_root())}


def test_a_taken_kubelet_port_is_named(control_plane: Any, tmp_path: Path, taken_port: int) -> None:
    kubeconfig = service_account_kubeconfig(control_plane, tmp_path)
    result = run_cli(
        "--provider", "mock", "--nodename", "vk-taken", "--kubeconfig", str(kubeconfig),
        "--listen-address", f"127.0.0.1:{taken_port}",
        "--client-ca-file", str(control_plane.client_ca_cert_path),
        env=dict(os.environ),
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert f"cannot listen on 127.0.0.1:{taken_port}" in result.stderr
    assert "--listen-address" in result.stderr and "Traceback" not in result.stderr


def test_a_taken_port_with_the_local_control_plane_leaves_nothing_running(
    bare_env: dict[str, str], taken_port: int
) -> None:
    result = run_cli("--provider", "process", "--listen-address", f"127.0.0.1:{taken_port}", env=bare_env)
    assert result.returncode == 1, result.stderr
    assert f"cannot listen on 127.0.0.1:{taken_port}" in result.stderr
    cluster_dir = Path(bare_env["HOME"]) / ".cache" / "vkubelet" / "local-cluster"
    assert (cluster_dir / "admin.kubeconfig").exists()  # the control plane did start ...
    assert leftovers([str(cluster_dir)]) == []  # ... and was stopped


def test_missing_binaries_without_go_are_named(bare_env: dict[str, str], tmp_path: Path) -> None:
    no_go = os.pathsep.join(
        d for d in bare_env["PATH"].split(os.pathsep) if d and not (Path(d) / "go").exists()
    )
    env = bare_env | {CACHE_ENV: str(tmp_path / "empty-cache"), "PATH": no_go}
    result = run_cli("--provider", "process", env=env)
    assert result.returncode == 1, result.stderr
    assert "the local control plane did not start" in result.stderr
    assert "the Go toolchain (`go`) is not on PATH" in result.stderr
    assert str(tmp_path / "empty-cache" / "etcd-v3.6.16" / "etcd") in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreachable_api_server_is_named(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = int(sock.getsockname()[1])
    kubeconfig = tmp_path / "dead.kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{dead}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        kubelet_port = int(sock.getsockname()[1])
    result = run_cli(
        "--provider", "mock", "--kubeconfig", str(kubeconfig), "--anonymous-auth",
        "--listen-address", f"127.0.0.1:{kubelet_port}", "--startup-timeout", "3s",
        env=dict(os.environ), timeout=60,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert f"cannot reach the Kubernetes API server https://127.0.0.1:{dead} within 3s" in result.stderr
    assert "Traceback" not in result.stderr
