"""Run the real `virtual-kubelet` CLI as a subprocess against the test control plane.

The daemon authenticates as the `virtual-kubelet` ServiceAccount bound to deploy/rbac.yaml's
ClusterRole, so every e2e test also proves that RBAC is sufficient.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Self

import pytest
import yaml

from tests.e2e.network import TestNetwork
from tests.helpers import wait_for as wait_for  # re-exported: the e2e tests import it from here

REPO = Path(__file__).resolve().parents[2]
# Written next to the kubeconfig by service_account_kubeconfig: the CA of the API server's
# kubelet client certificate, which the daemon trusts through --client-ca-file.
CLIENT_CA_NAME = "client-ca.crt"
PROVIDER_SCRIPT = Path(sys.executable).with_name("vkubelet-process-provider")


def leftovers(markers: list[str]) -> list[str]:
    """Command lines of live processes whose command line or environment mentions a marker."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            text = (entry / "cmdline").read_bytes() + b"\0" + (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or a kernel thread
            continue
        if any(marker.encode() in text for marker in markers):
            found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_account_kubeconfig(control_plane: Any, work_dir: Path) -> Path:
    """Apply deploy/rbac.yaml and write a kubeconfig that uses the ServiceAccount's token (and,
    beside it, the cluster's client CA for the daemon's --client-ca-file)."""
    control_plane.kubectl("apply", "-f", str(REPO / "deploy" / "rbac.yaml"))
    token = control_plane.kubectl(
        "create", "token", "virtual-kubelet", "-n", "vkubelet-system", "--duration=6h"
    ).stdout.strip()
    ca = Path(control_plane.ca_cert_path).read_bytes()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "e2e",
                "cluster": {
                    "server": control_plane.server_url,
                    "certificate-authority-data": base64.b64encode(ca).decode(),
                },
            }
        ],
        "users": [{"name": "virtual-kubelet", "user": {"token": token}}],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "virtual-kubelet"}}],
        "current-context": "e2e",
    }
    path = work_dir / "vkubelet.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    (work_dir / CLIENT_CA_NAME).write_bytes(Path(control_plane.client_ca_cert_path).read_bytes())
    return path


class VkubeletProcess:
    """One `virtual-kubelet` daemon; logs go to a file shown when a test fails."""

    def __init__(
        self,
        *,
        work_dir: Path,
        kubeconfig: Path,
        node_name: str,
        provider_config: dict[str, Any] | None = None,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        network: TestNetwork | None = None,
        client_ca_file: Path | None = None,
        provider: str = "mock",
        provider_config_path: Path | None = None,
    ) -> None:
        """With a ``network`` the daemon runs inside its namespace, reachable at its node IP
        (the API server's node proxy refuses loopback kubelets); otherwise on 127.0.0.1.

        The kubelet API is secured as in production: client certificates of ``client_ca_file``
        (default: the cluster's client CA written by :func:`service_account_kubeconfig`, which
        signs the API server's kubelet client certificate) and bearer tokens by TokenReview."""
        self.work_dir = work_dir
        self.network = network
        self.node_ip = network.node_ip if network else "127.0.0.1"
        self.node_name = node_name
        self.port = free_port()
        self.log_path = work_dir / f"vkubelet-{node_name}.log"
        config_path = provider_config_path or work_dir / f"mock-{node_name}.json"
        if provider_config_path is None:
            config_path.write_text(
                json.dumps(provider_config or {node_name: {"cpu": "100", "memory": "1Ti", "pods": "5000"}})
            )
        client_ca = client_ca_file or kubeconfig.parent / CLIENT_CA_NAME
        auth_args = ["--client-ca-file", str(client_ca)] if client_ca.exists() else []
        self.args = [
            *(network.exec_prefix() if network else []),
            sys.executable,
            "-m",
            "vkubelet",
            "--provider",
            provider,
            "--provider-config",
            str(config_path),
            "--nodename",
            node_name,
            "--kubeconfig",
            str(kubeconfig),
            "--listen-address",
            f"{self.node_ip}:{self.port}",
            "--startup-timeout",
            "60s",
            "--log-level",
            "debug",
            *auth_args,
            "--authentication-token-webhook",
            *extra_args,
        ]
        self.env = {**os.environ, "VKUBELET_POD_IP": self.node_ip, **(env or {})}
        self.env.pop("KUBECONFIG", None)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> VkubeletProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        return self

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def assert_alive(self) -> None:
        assert self.process is not None
        code = self.process.poll()
        assert code is None, f"virtual-kubelet exited with {code}:\n{self.log_tail()}"

    def stop(self, *, timeout: float = 30.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()


class ProviderProcess:
    """`vkubelet-process-provider` serving on a unix socket; pods outlive a vkubelet restart."""

    def __init__(
        self, work_dir: Path, socket_path: Path, host_ip: str, *, node_name: str, pods: str = "500"
    ) -> None:
        self.socket_path = socket_path
        self.log_path = work_dir / "process-provider.log"
        self.args = [
            str(PROVIDER_SCRIPT),
            "--listen",
            f"unix://{socket_path}",
            "--root-dir",
            str(work_dir / "pods"),
            "--node-name",
            node_name,
            "--host-ip",
            host_ip,
            "--pods",
            pods,
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        self.socket_path.unlink(missing_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        wait_for(self.socket_path.exists, timeout=30, what="provider socket")
        return self

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def node_is_ready(control_plane: Any, node: str) -> bool:
    found = control_plane.kubectl("get", "node", node, "-o", "json", check=False)
    if found.returncode != 0:
        return False
    conditions = json.loads(found.stdout)["status"].get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


@contextlib.contextmanager
def process_provider_node(
    control_plane: Any,
    network: TestNetwork | None,
    work_dir: Path,
    node: str,
    capacity: dict[str, str],
    extra_args: Sequence[str] = (),
) -> Iterator[VkubeletProcess]:
    """vkubelet with the in-process process provider, as deploy/rbac.yaml's ServiceAccount, until
    its node is Ready; stopped (log tail printed) at the end, and it must not have died."""
    process = VkubeletProcess(
        work_dir=work_dir,
        kubeconfig=service_account_kubeconfig(control_plane, work_dir),
        node_name=node,
        network=network,
        provider="process",
        provider_config={node: capacity},
        extra_args=extra_args,
    ).start()
    try:
        wait_for(lambda: node_is_ready(control_plane, node), timeout=60, what=f"node {node} Ready")
        yield process
        process.assert_alive()
    finally:
        process.stop()
        print(process.log_tail(80))


def process_provider_daemon(node: str, capacity: dict[str, str]) -> Any:
    """A module-scoped ``daemon`` fixture: :func:`process_provider_node` for ``node`` with
    ``capacity``, in a fresh work directory. Assign it to a module attribute named ``daemon``."""

    @pytest.fixture(scope="module", name="daemon")
    def daemon(
        control_plane: Any, test_network: TestNetwork | None, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[VkubeletProcess]:
        """vkubelet with the process provider, its node Ready, for this module's tests."""
        work_dir = tmp_path_factory.mktemp(node)
        with process_provider_node(control_plane, test_network, work_dir, node, capacity) as process:
            yield process

    return daemon


@contextlib.contextmanager
def scratch_namespace(control_plane: Any, prefix: str) -> Iterator[str]:
    """A fresh namespace (its default ServiceAccount ready), deleted without waiting afterwards."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    control_plane.create_namespace(name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)
