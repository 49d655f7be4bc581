"""The container image's size and start-up time, on one fresh local control plane.

::

    .venv/bin/python bench/image.py --rounds 5

Builds the image with tools/build-image (its base is cached after the first run; the time printed
is this run's), then per round starts ``virtual-kubelet --provider mock`` in it as
tests/e2e/test_image.py does (host network, deploy/rbac.yaml's ServiceAccount token in a
read-only mounted kubeconfig, read-only root, /tmp a tmpfs) and times ``podman run`` -> the Node
Ready in the API server, then stops it. Prints the image size and the start-up times (median,
min, max). Needs root, like tools/build-image. This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import base64
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import yaml

from vkubelet.entrypoints.localcluster.cluster import LocalCluster

REPO = Path(__file__).resolve().parents[1]
BUILD_IMAGE = REPO / "tools" / "build-image"
MOUNT = "/etc/vkubelet"


def build() -> tuple[str, int, float]:
    """(image reference, size in bytes, build seconds) from tools/build-image's report."""
    started = time.monotonic()
    out = subprocess.run([str(BUILD_IMAGE)], check=True, capture_output=True, text=True).stdout
    report = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
    size = int(report["size"].rpartition("(")[2].split()[0])
    return report["image"], size, time.monotonic() - started


def write_config(cluster: LocalCluster, directory: Path, node: str) -> None:
    """A token kubeconfig of deploy/rbac.yaml's ServiceAccount, the client CA, the mock config;
    world-readable: the image runs as 65532."""
    cluster.kubectl("apply", "-f", str(REPO / "deploy" / "rbac.yaml"))
    token = cluster.kubectl("create", "token", "virtual-kubelet", "-n", "vkubelet-system").stdout.strip()
    ca = base64.b64encode(Path(cluster.ca_cert_path).read_bytes()).decode()
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "c", "cluster": {"server": cluster.server_url, "certificate-authority-data": ca}}
        ],
        "users": [{"name": "vk", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "vk"}}],
        "current-context": "c",
    }
    (directory / "kubeconfig").write_text(yaml.safe_dump(kubeconfig))
    (directory / "client-ca.crt").write_bytes(Path(cluster.client_ca_cert_path).read_bytes())
    (directory / "mock.json").write_text(json.dumps({node: {"cpu": "8", "memory": "16Gi", "pods": "110"}}))
    directory.chmod(0o755)
    for path in directory.iterdir():
        path.chmod(0o644)


def node_ready(cluster: LocalCluster, node: str) -> bool:
    found = cluster.kubectl("get", "node", node, "-o", "json", check=False)
    if found.returncode != 0:
        return False
    conditions = json.loads(found.stdout)["status"].get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_up(cluster: LocalCluster, image: str, directory: Path, *, timeout: float = 90) -> float:
    """Seconds from ``podman run`` to the Node Ready; the container is stopped afterwards."""
    node = f"vk-bench-image-{uuid.uuid4().hex[:6]}"
    name = f"{node}-ctr"
    write_config(cluster, directory, node)
    command = [
        *(str(BUILD_IMAGE), "run", "--rm", "--name", name, "--network=host", "--read-only", "--tmpfs=/tmp"),
        *(f"--volume={directory}:{MOUNT}:ro", "--env=VKUBELET_POD_IP=127.0.0.1", image),
        *("--provider", "mock", "--provider-config", f"{MOUNT}/mock.json", "--nodename", node),
        *("--kubeconfig", f"{MOUNT}/kubeconfig", "--listen-address", f"127.0.0.1:{free_port()}"),
        *("--client-ca-file", f"{MOUNT}/client-ca.crt", "--authentication-token-webhook"),
    ]
    log = (directory.parent / f"{name}.log").open("wb")
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        while not node_ready(cluster, node):
            if process.poll() is not None:
                raise RuntimeError(f"the container exited with {process.returncode}; log: {log.name}")
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"node {node} not Ready after {timeout:.0f}s; log: {log.name}")
            time.sleep(0.05)  # polling interval of the measurement, not synchronisation
        return time.monotonic() - started
    finally:
        subprocess.run(["podman", "stop", "--time", "10", name], capture_output=True, check=False)
        process.wait(timeout=30)
        log.close()
        cluster.kubectl("delete", "node", node, "--wait=false", check=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="container start-ups to time (default 5)")
    args = parser.parse_args(argv)
    image, size, build_seconds = build()
    print(f"image: {image}, {size / 1e6:.0f} MB ({size} bytes); tools/build-image took {build_seconds:.1f} s")
    cluster = LocalCluster()
    cluster.start()
    try:
        with tempfile.TemporaryDirectory(prefix="vkubelet-bench-image-") as work:
            times = []
            for round_no in range(args.rounds):
                directory = Path(work) / f"round-{round_no}"
                directory.mkdir()
                times.append(start_up(cluster, image, directory))
                print(f"round {round_no + 1}: start-up (podman run -> node Ready) {times[-1]:.2f} s")
    finally:
        cluster.stop()
    print(
        f"start-up over {len(times)} rounds: median {statistics.median(times):.2f} s, "
        f"min {min(times):.2f} s, max {max(times):.2f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
