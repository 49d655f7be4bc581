"""Issue 14: the container image, built here by tools/build-image from deploy/image/Containerfile.

tools/build-image makes the base from Debian packages (this machine reaches no container
registry) and installs mmdebstrap/podman/runc when they are missing, so the test does not skip
for want of tools. It then checks that the image's ``virtual-kubelet version`` is this package's
version, and that the daemon in the container, as deployment.yaml runs it (user 65532, read-only
root, a writable /tmp), with the host network and a read-only kubeconfig mount, registers its
node and turns it Ready. It prints the image size and the start-up time (``podman run`` ->
node Ready), the figures docs/deploy.md quotes.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.vkubelet_process import (
    CLIENT_CA_NAME,
    REPO,
    free_port,
    node_is_ready,
    service_account_kubeconfig,
    wait_for,
)
from vkubelet import __version__

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="mmdebstrap's chroot mode and rootful podman need root"
)

BUILD_IMAGE = REPO / "tools" / "build-image"
CONFIG_MOUNT = "/etc/vkubelet"


@dataclass(frozen=True)
class BuiltImage:
    ref: str
    size_bytes: int


@pytest.fixture(scope="module")
def image() -> BuiltImage:
    """The image tools/build-image reports on stdout ("image: <ref>", "size: ... (<n> bytes)")."""
    result = subprocess.run([str(BUILD_IMAGE)], capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, f"tools/build-image failed:\n{result.stderr[-4000:]}"
    report = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    size = int(report["size"].rpartition("(")[2].split()[0])
    return BuiltImage(ref=report["image"], size_bytes=size)


def podman_run(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BUILD_IMAGE), "run", *args], capture_output=True, text=True, **kwargs)


def test_version_is_the_package_version(image: BuiltImage) -> None:
    result = podman_run("--rm", image.ref, "version", timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"Version: {__version__}, Built: unknown"
    inspected = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{json .Labels}}", image.ref],
        capture_output=True,
        text=True,
        check=True,
    )
    labels = json.loads(inspected.stdout)
    assert labels["org.opencontainers.image.version"] == __version__
    assert labels["org.opencontainers.image.base.name"].startswith("localhost/vkubelet-base:"), labels


class ContainerDaemon:
    """virtual-kubelet (mock provider) in the image: host network, ``config_dir`` mounted
    read-only; podman's output goes to a log file shown when the test fails."""

    def __init__(self, image: BuiltImage, *, config_dir: Path, node_name: str) -> None:
        self.name = f"vk-e2e-image-{uuid.uuid4().hex[:8]}"
        self.log_path = config_dir.parent / f"{self.name}.log"
        address = f"127.0.0.1:{free_port()}"
        self.args = [
            str(BUILD_IMAGE),
            "run",
            "--rm",
            "--name",
            self.name,
            "--network=host",
            "--read-only",
            "--tmpfs=/tmp",
            f"--volume={config_dir}:{CONFIG_MOUNT}:ro",
            "--env=VKUBELET_POD_IP=127.0.0.1",
            image.ref,
            "--provider",
            "mock",
            "--provider-config",
            f"{CONFIG_MOUNT}/mock.json",
            "--nodename",
            node_name,
            "--kubeconfig",
            f"{CONFIG_MOUNT}/vkubelet.kubeconfig",
            "--listen-address",
            address,
            "--client-ca-file",
            f"{CONFIG_MOUNT}/{CLIENT_CA_NAME}",
            "--authentication-token-webhook",
            "--startup-timeout",
            "60s",
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)

    def exited(self) -> bool:
        assert self.process is not None
        return self.process.poll() is not None

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> int | None:
        """SIGTERM through ``podman stop`` (10 s grace), then the exit code of ``podman run``."""
        subprocess.run(["podman", "stop", "--time", "10", self.name], capture_output=True, check=False)
        assert self.process is not None
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            subprocess.run(["podman", "rm", "--force", self.name], capture_output=True, check=False)
            self.process.kill()
            self.process.wait()
            return None


@pytest.fixture
def node_name(control_plane: Any) -> Iterator[str]:
    name = f"vk-e2e-image-{uuid.uuid4().hex[:6]}"
    yield name
    control_plane.kubectl("delete", "node", name, "--wait=false", check=False)


@pytest.fixture
def config_dir(control_plane: Any, tmp_path: Path, node_name: str) -> Path:
    """The kubeconfig (deploy/rbac.yaml's ServiceAccount), the cluster's client CA and the mock
    provider's config, readable by the image's user 65532 (pytest's tmp_path is 0700)."""
    directory = tmp_path / "config"
    directory.mkdir()
    service_account_kubeconfig(control_plane, directory)
    capacity = {"cpu": "8", "memory": "16Gi", "pods": "110"}
    (directory / "mock.json").write_text(json.dumps({node_name: capacity}))
    directory.chmod(0o755)
    for path in directory.iterdir():
        path.chmod(0o644)
    return directory


def test_daemon_in_the_image_registers_a_ready_node(
    image: BuiltImage, control_plane: Any, config_dir: Path, node_name: str
) -> None:
    daemon = ContainerDaemon(image, config_dir=config_dir, node_name=node_name)
    started = time.monotonic()
    daemon.start()
    try:
        wait_for(
            lambda: daemon.exited() or node_is_ready(control_plane, node_name),
            timeout=90,
            what=f"node {node_name} Ready",
            interval=0.05,
        )
        startup = time.monotonic() - started
        assert not daemon.exited(), f"the container exited:\n{daemon.log_tail()}"
        print(
            f"\nimage {image.ref}: {image.size_bytes / 1e6:.0f} MB; "
            f"start-up (podman run -> node Ready): {startup:.2f} s"
        )
    finally:
        code = daemon.stop()
        print(daemon.log_tail(30))
    assert code == 0, f"virtual-kubelet in the container exited with {code}:\n{daemon.log_tail()}"
