"""The mock provider in process vs over gRPC, on one fresh local control plane.

    .venv/bin/python bench/grpc_vs_inprocess.py --pods 200 --rounds 3
    .venv/bin/python bench/grpc_vs_inprocess.py --pods 500 --rounds 3

Two ways of running the same provider under the same daemon:

* ``inprocess``: ``virtual-kubelet --provider mock`` (the provider is an object in the daemon);
* ``grpc``: ``vkubelet-mock-provider --listen unix://...`` as its own process, and
  ``virtual-kubelet --provider grpc`` talking to it over the unix socket (every create, delete
  and status change crosses the protocol).

Both get the same node config (the mock's JSON keyed by node name) and the same daemon flags.
One run: start the process(es), wait for the Node to be Ready, create ``--pods`` pods at once
(``spec.nodeName`` set, ``--create-concurrency`` POSTs in flight) and time from the first POST
until a watch has seen every pod Running; then one collection DELETE and the time until every
pod is gone; then stop. Rounds alternate which mode goes first, so both see the same background
load. Output: one JSON object per run in ``--out`` and a table of medians (ratio = grpc /
inprocess) on stdout. A benchmark, not a test.

Only the API server is needed (no node proxy), so the kubelet API listens on a free loopback
port with ``--anonymous-auth`` (it refuses to start without some authentication configured).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The API client, the pod watch and the machine description are compare.py's: one definition of
# "pods Running" for every benchmark in this directory.
from compare import (
    Api,
    PodWatch,
    cpu_seconds,
    create_pods,
    free_port,
    local_cluster,
    log,
    report_failures,
    start_run,
)

from vkubelet.entrypoints.localcluster.cluster import LocalCluster

MODES = ("inprocess", "grpc")
MOCK_PROVIDER = Path(sys.executable).with_name("vkubelet-mock-provider")


@dataclass(frozen=True)
class Options:
    pods: int
    create_concurrency: int
    kube_api_qps: str
    kube_api_burst: str
    call_timeout: float
    timeout: float
    work_dir: Path


@dataclass
class Stack:
    """The daemon and, in grpc mode, the provider process."""

    node: str
    daemon: subprocess.Popen[bytes]
    provider: subprocess.Popen[bytes] | None
    log_path: Path

    def check_alive(self) -> None:
        for name, process in (("virtual-kubelet", self.daemon), ("mock provider", self.provider)):
            if process is not None and process.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{tail}")

    def stop(self) -> dict[str, int | None]:
        codes: dict[str, int | None] = {}
        # The daemon first: a provider stopping under a live daemon is a different benchmark.
        for name, process in (("daemon", self.daemon), ("provider", self.provider)):
            if process is None:
                continue
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            codes[name] = process.returncode
        return codes


def _spawn(command: Sequence[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as output:
        output.write(f"$ {' '.join(command)}\n".encode())
        output.flush()
        return subprocess.Popen(list(command), stdout=output, stderr=subprocess.STDOUT, env=env)


def _wait_for_socket(path: Path, provider: subprocess.Popen[bytes], *, within: float) -> None:
    deadline = time.monotonic() + within
    while not path.exists():
        if provider.poll() is not None:
            raise RuntimeError(f"the mock provider exited with {provider.returncode} before listening")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {within:.0f}s")
        time.sleep(0.05)  # startup only; nothing else runs yet


async def start_stack(mode: str, options: Options, cluster: LocalCluster, node: str) -> Stack:
    work = options.work_dir
    node_config = work / f"{node}.json"
    capacity = {"cpu": "100000", "memory": "100Ti", "pods": str(max(10 * options.pods, 10000))}
    node_config.write_text(json.dumps({node: capacity}))
    log_path = work / f"{node}.log"
    env = {**os.environ, "VKUBELET_POD_IP": "127.0.0.1"}
    env.pop("KUBECONFIG", None)
    provider: subprocess.Popen[bytes] | None = None
    if mode == "grpc":
        socket_path = work / f"{node}.sock"
        socket_path.unlink(missing_ok=True)
        provider = _spawn(
            [
                str(MOCK_PROVIDER),
                "--listen",
                f"unix://{socket_path}",
                "--provider-config",
                str(node_config),
                "--nodename",
                node,
                "--log-level",
                "warning",
            ],
            work / f"{node}.provider.log",
            env,
        )
        _wait_for_socket(socket_path, provider, within=60)
        provider_args = ["--provider", "grpc", "--provider-config", str(work / f"{node}.grpc.json")]
        grpc_config = {"address": f"unix://{socket_path}", "call_timeout": options.call_timeout}
        (work / f"{node}.grpc.json").write_text(json.dumps(grpc_config))
    else:
        provider_args = ["--provider", "mock", "--provider-config", str(node_config)]
    command = [
        sys.executable,
        "-m",
        "vkubelet",
        *provider_args,
        "--nodename",
        node,
        "--kubeconfig",
        str(cluster.kubeconfig_path),
        "--listen-address",
        f"127.0.0.1:{free_port()}",
        "--anonymous-auth",
        "--kube-api-qps",
        options.kube_api_qps,
        "--kube-api-burst",
        options.kube_api_burst,
        "--log-level",
        "warn",
    ]
    daemon = _spawn(command, log_path, env)
    return Stack(node, daemon, provider, log_path)


async def wait_node_ready(api: Api, stack: Stack, *, within: float) -> None:
    deadline = time.monotonic() + within
    while True:
        stack.check_alive()
        with contextlib.suppress(RuntimeError):
            node = await api.request("GET", f"/api/v1/nodes/{stack.node}")
            conditions = (node.get("status") or {}).get("conditions") or []
            if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"node {stack.node} not Ready after {within:.0f}s")
        await asyncio.sleep(0.2)


async def run_once(
    api: Api, cluster: LocalCluster, options: Options, mode: str, round_no: int
) -> dict[str, Any]:
    node = f"bench-{mode}-n{options.pods}-r{round_no}"
    result: dict[str, Any] = {"mode": mode, "round": round_no, "pods": options.pods, "node": node}
    await api.create_namespace(node)
    stack = await start_stack(mode, options, cluster, node)
    watch = PodWatch(api, node)
    try:
        started = time.monotonic()
        await wait_node_ready(api, stack, within=120)
        result["startup_to_ready_s"] = time.monotonic() - started
        await watch.start()
        names = [f"p{i:05d}" for i in range(options.pods)]
        pids = {"daemon": stack.daemon.pid, **({"provider": stack.provider.pid} if stack.provider else {})}
        cpu_before = {role: cpu_seconds(pid) for role, pid in pids.items()}

        t0 = time.monotonic()
        created = await create_pods(api, node, node, names, concurrency=options.create_concurrency)
        result["create_s"] = max(created.values()) - t0
        await watch.wait(
            lambda: len(watch.running) >= len(names), within=options.timeout, what=f"{len(names)} Running"
        )
        stack.check_alive()
        result["running_s"] = watch.last(watch.running, names) - t0
        result["pods_per_s"] = len(names) / result["running_s"]
        for role, pid in pids.items():
            result[f"{role}_burst_cpu_s"] = cpu_seconds(pid) - cpu_before[role]

        t1 = time.monotonic()
        await api.request("DELETE", f"/api/v1/namespaces/{node}/pods", {"kind": "DeleteOptions"})
        await watch.wait(
            lambda: len(watch.gone) >= len(names), within=options.timeout, what=f"{len(names)} gone"
        )
        stack.check_alive()
        result["delete_s"] = watch.last(watch.gone, names) - t1
    finally:
        await watch.stop()
        result["exit_codes"] = stack.stop()
        with contextlib.suppress(RuntimeError):
            await api.request("DELETE", f"/api/v1/namespaces/{node}")
        with contextlib.suppress(RuntimeError):
            await api.request("DELETE", f"/api/v1/nodes/{node}")
    return result


METRICS = (
    ("pods_per_s", "pods/s to Running (N / time from first POST to all Running)"),
    ("running_s", "first POST -> all N Running, s"),
    ("create_s", "first POST -> last POST returned, s"),
    ("delete_s", "collection DELETE -> all N gone, s"),
    ("daemon_burst_cpu_s", "virtual-kubelet CPU during the burst, s"),
    ("provider_burst_cpu_s", "mock provider process CPU during the burst, s"),
    ("startup_to_ready_s", "start -> node Ready, s"),
)


def summarize(results: Sequence[dict[str, Any]]) -> str:
    runs = [r for r in results if "error" not in r]
    lines = ["| metric | inprocess | grpc | grpc / inprocess |", "|---|---|---|---|"]
    for key, title in METRICS:
        medians = {
            mode: statistics.median(values)
            for mode in MODES
            if (values := [r[key] for r in runs if r["mode"] == mode and key in r])
        }
        if not medians:
            continue
        cells = [f"{medians[m]:.3g}" if m in medians else "-" for m in MODES]
        base, other = medians.get("inprocess"), medians.get("grpc")
        ratio = f"{other / base:.2f}" if base and other is not None else "-"
        lines.append(f"| {title} | {' | '.join(cells)} | {ratio} |")
    counts = {mode: sum(1 for r in runs if r["mode"] == mode) for mode in MODES}
    lines.append(f"\nruns: {counts['inprocess']} inprocess, {counts['grpc']} grpc")
    return "\n".join(lines)


async def bench(
    args: argparse.Namespace, cluster: LocalCluster, options: Options, out: Path
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    async with Api.open(cluster, connections=args.create_concurrency + 8) as api:
        for round_no in range(1, args.rounds + 1):
            # Alternate who goes first so neither always runs on the warmer (or busier) machine.
            modes = MODES if round_no % 2 else tuple(reversed(MODES))
            for mode in modes:
                log(f"round {round_no}: {mode}, {args.pods} pods ...")
                try:
                    result = await run_once(api, cluster, options, mode, round_no)
                except (RuntimeError, TimeoutError) as error:
                    result = {"mode": mode, "round": round_no, "pods": args.pods, "error": str(error)}
                result["load_avg_1m"] = os.getloadavg()[0]
                results.append(result)
                with out.open("a") as stream:
                    stream.write(json.dumps(result) + "\n")
                log(json.dumps(result))
    return results


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/grpc_vs_inprocess.py",
        description="The mock provider in process vs over gRPC (unix socket), same control plane.",
    )
    parser.add_argument("--pods", type=int, default=200, help="burst size N (default 200)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each runs both modes once")
    parser.add_argument("--create-concurrency", type=int, default=32, help="POSTs in flight while creating")
    parser.add_argument(
        "--kube-api-qps",
        default="1000",
        help="daemon's --kube-api-qps (default 1000: raised, so the provider path is what differs)",
    )
    parser.add_argument("--kube-api-burst", default="2000", help="daemon's --kube-api-burst (default 2000)")
    parser.add_argument("--call-timeout", type=float, default=10.0, help="grpc provider call_timeout, s")
    parser.add_argument("--timeout", type=float, default=900.0, help="deadline of each wait, s")
    parser.add_argument("--work-dir", type=Path, help="logs and configs (default: a new temp dir)")
    parser.add_argument("--out", type=Path, help="JSON lines of results (default: <work-dir>/results.jsonl)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    work_dir, out = start_run(args.work_dir, args.out, prefix="vkubelet-bench-grpc-")
    options = Options(
        pods=args.pods,
        create_concurrency=args.create_concurrency,
        kube_api_qps=args.kube_api_qps,
        kube_api_burst=args.kube_api_burst,
        call_timeout=args.call_timeout,
        timeout=args.timeout,
        work_dir=work_dir,
    )
    with local_cluster() as cluster:
        results = asyncio.run(bench(args, cluster, options, out))
    print(f"## N={args.pods}, rounds={args.rounds} (medians; ratio = grpc / inprocess)\n")
    print(summarize(results))
    return report_failures(results, lambda r: f"{r['mode']} round {r['round']}")


if __name__ == "__main__":
    raise SystemExit(main())
