"""Tracing overhead: pods/s from creation to Running with tracing off, at rate 0 and at rate 100.

Starts the project's local control plane (etcd + kube-apiserver), then for each mode runs the real
``virtual-kubelet`` CLI (mock provider) as a subprocess on its own node, creates ``--pods`` pods in
one ``kubectl create`` and times until every one is Running. Modes:

* ``off``      no ``--trace-exporter``: the NullTracer, no request middleware
* ``rate0``    ``--trace-exporter <exporter> --trace-sample-rate 0``: spans created, all dropped
* ``rate100``  ``--trace-exporter <exporter> --trace-sample-rate 100``: every span recorded/exported

``--exporter zpages`` (default) needs nothing else; ``--exporter jaeger`` exports over HTTP Thrift to
the collector in ``JAEGER_ENDPOINT`` (start one first, e.g. the cached Jaeger v2). Rounds rotate the
mode order so a warm API server does not favour one mode; the median is reported.

    .venv/bin/python bench/tracing_overhead.py --pods 300 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from vkubelet.entrypoints.localcluster.binaries import ensure_binaries
from vkubelet.entrypoints.localcluster.cluster import LocalCluster

MODES = ("off", "rate0", "rate100")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait(condition: Any, *, timeout: float, what: str, interval: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def daemon_args(
    mode: str, exporter: str, node: str, kubeconfig: Path, work: Path
) -> tuple[list[str], dict[str, str]]:
    config = work / f"mock-{node}.json"
    config.write_text(json.dumps({node: {"cpu": "1000", "memory": "10Ti", "pods": "10000"}}))
    args = [
        sys.executable, "-m", "vkubelet", "--provider", "mock", "--provider-config", str(config),
        "--nodename", node, "--kubeconfig", str(kubeconfig), "--listen-address", f"127.0.0.1:{free_port()}",
        "--anonymous-auth", "--log-level", "info",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env["VKUBELET_POD_IP"] = "127.0.0.1"
    if mode != "off":
        args += ["--trace-exporter", exporter, "--trace-sample-rate", "0" if mode == "rate0" else "100"]
        if exporter == "zpages":
            env["ZPAGES_PORT"] = f"127.0.0.1:{free_port()}"
    return args, env


def node_ready(cluster: LocalCluster, node: str) -> bool:
    result = cluster.kubectl("get", "node", node, "-o", "json", check=False)
    if result.returncode != 0:
        return False
    conditions = json.loads(result.stdout)["status"].get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def running(cluster: LocalCluster, namespace: str) -> int:
    phases = cluster.kubectl("get", "pods", "-n", namespace, "-o", "jsonpath={.items[*].status.phase}").stdout
    return phases.split().count("Running")


def one_run(cluster: LocalCluster, mode: str, *, pods: int, exporter: str, work: Path, index: int) -> float:
    suffix = "warmup" if index < 0 else str(index)
    node = f"vk-bench-{mode}-{suffix}"
    namespace = f"bench-{mode}-{suffix}"
    args, env = daemon_args(mode, exporter, node, cluster.kubeconfig_path, work)
    log = (work / f"{node}.log").open("ab")
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait(lambda: node_ready(cluster, node), timeout=60, what=f"node {node} Ready")
        cluster.create_namespace(namespace)
        items = [
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"p{i}", "namespace": namespace},
                "spec": {
                    "nodeName": node,
                    "enableServiceLinks": False,
                    "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists"}],
                    "containers": [{"name": "c", "image": "busybox"}],
                },
            }
            for i in range(pods)
        ]
        manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
        started = time.monotonic()
        cluster.kubectl("create", "-f", "-", input=manifest, timeout=300)
        wait(
            lambda: running(cluster, namespace) == pods,
            timeout=600,
            what=f"{pods} pods Running",
            interval=0.5,
        )
        elapsed = time.monotonic() - started
        if process.poll() is not None:
            raise SystemExit(f"virtual-kubelet ({mode}) exited with {process.returncode}; see {log.name}")
        return pods / elapsed
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        cluster.kubectl("delete", "node", node, "--wait=false", check=False)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--exporter", choices=("zpages", "jaeger", "otlp"), default="zpages")
    parser.add_argument("--json", type=Path, help="also write the results here")
    options = parser.parse_args()
    if options.exporter == "jaeger" and not os.environ.get("JAEGER_ENDPOINT"):
        parser.error("--exporter jaeger needs JAEGER_ENDPOINT (a running collector)")
    results: dict[str, list[float]] = {mode: [] for mode in MODES}
    with (
        tempfile.TemporaryDirectory(prefix="vk-bench-") as tmp,
        LocalCluster(binaries=ensure_binaries()) as cluster,
    ):
        work = Path(tmp)
        # The first node and namespace on a fresh API server are slow for reasons unrelated to
        # tracing (caches, admission warm-up): one unrecorded run first.
        one_run(cluster, "off", pods=options.pods, exporter=options.exporter, work=work, index=-1)
        for round_ in range(options.rounds):
            order = MODES[round_ % 3 :] + MODES[: round_ % 3]
            for mode in order:
                rate = one_run(
                    cluster, mode, pods=options.pods, exporter=options.exporter, work=work, index=round_
                )
                results[mode].append(rate)
                print(f"round {round_ + 1} {mode:8s} {rate:7.1f} pods/s", flush=True)
    medians = {mode: statistics.median(values) for mode, values in results.items()}
    print(f"\n{options.pods} pods, {options.rounds} rounds, exporter {options.exporter}, median pods/s:")
    for mode in MODES:
        print(f"  {mode:8s} {medians[mode]:7.1f}  ({medians[mode] / medians['off']:.2f}x of off)")
    summary = {
        "pods": options.pods,
        "rounds": options.rounds,
        "exporter": options.exporter,
        "pods_per_second": results,
        "median": medians,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
    }
    if options.json:
        options.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
