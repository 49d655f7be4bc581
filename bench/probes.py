"""What probing costs vkubelet: N idle pods with readiness and liveness probes vs the same unprobed.

    .venv/bin/python bench/probes.py --pods 1000 --rounds 1

One fresh local control plane (``LocalCluster``, as bench/volumes.py). Every run is a fresh
``python -m vkubelet --provider process`` daemon (pods are host processes, children of the
daemon; it must run as root) on its own node and namespace, at the daemon's default client
limits (``--kube-api-qps 50 --kube-api-burst 100``). The process provider does not probe, so
vkubelet's own ProbeManager runs the probes (src/application/probes.py) through the provider's
streams (src/adapters/probing.py): a tcpSocket probe is a port-forward, i.e. a connection the
provider opens to 127.0.0.1:P. Kinds of pod, all ``sleep 3600`` with
``automountServiceAccountToken: false``, bound with ``spec.nodeName`` and tolerating every
taint:

* ``plain``: no probes;
* ``probed``: a tcpSocket readinessProbe and a tcpSocket livenessProbe on port P (periodSeconds
  10, default thresholds and timeout). The benchmark itself listens on 127.0.0.1:P (the pods
  share the host network) with an asyncio server that accepts, counts and closes each
  connection: the count over the window is the probes actually run (expected 2 N / 10 per s);
* ``exec`` (optional, ``--kinds plain,probed,exec``): the same two probes as ``exec: [true]``.
  Each probe spawns a process, so ``--exec-pods`` may be smaller than ``--pods``; the table says
  how many pods each kind had. The spawned processes' CPU is reported separately (the daemon's
  cutime+cstime: children count once they exited and were reaped; the ``sleep`` processes do
  not exit during the window).

One run: start the daemon, wait for its Node Ready, create the N pods (``--create-concurrency``
POSTs in flight) and time from the first POST until one watch has seen all N Running and all N
Ready; then ``--settle`` seconds; then ``--steady-seconds`` in which the daemon's CPU
(utime+stime from ``/proc/<pid>/stat``, as % of one core), pod status PATCHes and event POSTs
per second (the API server's ``apiserver_request_total``, all clients: the plain run shows the
background) and probe connections per second are measured, and the daemon's RSS read at the
end; then one collection DELETE and the time until all are gone. Rounds alternate the order of
the kinds. Results: JSON lines in ``--out`` and a Markdown table of medians on stdout. A
benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The harness is compare.py's (API client, /proc readings, machine description), the daemon
# wrapper grpc_vs_inprocess.py's, the request counters and the resuming watch volumes.py's.
from compare import (
    Api,
    PodWatch,
    children_cpu_seconds,
    cpu_seconds,
    free_port,
    local_cluster,
    log,
    memory_kib,
    pod_ready,
    report_failures,
    start_run,
)
from grpc_vs_inprocess import Stack, _spawn, wait_node_ready
from volumes import delta, post_all, request_counts

from vkubelet.entrypoints.localcluster.cluster import LocalCluster

KINDS = ("plain", "probed", "exec")
PERIOD_SECONDS = 10
PROBES_PER_POD = 2  # readiness + liveness


@dataclass(frozen=True)
class Options:
    pods: int
    exec_pods: int
    create_concurrency: int
    settle: float
    steady_seconds: float
    timeout: float
    work_dir: Path

    def pods_of(self, kind: str) -> int:
        return self.exec_pods if kind == "exec" else self.pods


# -- the probes' target ---------------------------------------------------------------------------


class ProbeTarget:
    """A TCP server on 127.0.0.1 that accepts connections, counts them and closes them."""

    def __init__(self) -> None:
        self.accepted = 0
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, backlog=1024)

    async def _accept(self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


# -- the workload ---------------------------------------------------------------------------------


def pod_manifest(name: str, namespace: str, node: str, kind: str, port: int) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "app",
        "image": "bench.invalid/app:1",  # the process provider ignores images
        "command": ["sleep", "3600"],
    }
    if kind != "plain":
        handler: dict[str, Any] = (
            {"tcpSocket": {"port": port}} if kind == "probed" else {"exec": {"command": ["true"]}}
        )
        for probe in ("readinessProbe", "livenessProbe"):
            container[probe] = {**handler, "periodSeconds": PERIOD_SECONDS}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "bench"}},
        "spec": {
            "nodeName": node,
            "enableServiceLinks": False,
            "automountServiceAccountToken": False,
            "tolerations": [{"operator": "Exists"}],
            "terminationGracePeriodSeconds": 5,
            "containers": [container],
        },
    }


def start_daemon(cluster: LocalCluster, options: Options, node: str) -> Stack:
    work = options.work_dir
    config = work / f"{node}.json"
    # cpu and memory: this machine's (the process provider's default); room for every pod.
    config.write_text(json.dumps({node: {"pods": str(max(10 * options.pods, 10000))}}))
    env = {**os.environ, "VKUBELET_POD_IP": "127.0.0.1"}
    env.pop("KUBECONFIG", None)
    command = [
        sys.executable, "-m", "vkubelet", "--provider", "process", "--provider-config", str(config),
        "--nodename", node, "--kubeconfig", str(cluster.kubeconfig_path),
        # Only the API server is involved: the kubelet API on a free loopback port, no callers.
        "--listen-address", f"127.0.0.1:{free_port()}", "--anonymous-auth", "--log-level", "warn",
    ]  # fmt: skip
    log_path = work / f"{node}.log"
    return Stack(node, _spawn(command, log_path, env), None, log_path)


async def not_ready(api: Api, namespace: str) -> int:
    listing = await api.request("GET", f"/api/v1/namespaces/{namespace}/pods")
    return sum(1 for pod in listing.get("items") or () if not pod_ready(pod))


async def run_once(
    api: Api, cluster: LocalCluster, options: Options, target: ProbeTarget, kind: str, round_no: int
) -> dict[str, Any]:
    pods = options.pods_of(kind)
    node = f"bench-probe-{kind}-n{pods}-r{round_no}"
    namespace = node
    result: dict[str, Any] = {
        "kind": kind,
        "round": round_no,
        "pods": pods,
        "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
    }
    if kind != "plain":
        result["expected_probes_per_s"] = PROBES_PER_POD * pods / PERIOD_SECONDS
    names = [f"p{i:05d}" for i in range(pods)]
    await api.create_namespace(namespace)
    stack = start_daemon(cluster, options, node)
    watch = PodWatch(api, namespace)
    try:
        started = time.monotonic()
        await wait_node_ready(api, stack, within=120)
        result["startup_to_ready_s"] = time.monotonic() - started
        await watch.start()
        pid = stack.daemon.pid
        bodies = [pod_manifest(n, namespace, node, kind, target.port) for n in names]

        # burst: first POST -> all Running, all Ready
        counts, cpu = await request_counts(api), cpu_seconds(pid)
        t0 = time.monotonic()
        last_post = await post_all(
            api, f"/api/v1/namespaces/{namespace}/pods", bodies, concurrency=options.create_concurrency
        )
        result["create_s"] = last_post - t0
        await watch.wait(lambda: len(watch.running) >= pods, within=options.timeout, what=f"{pods} Running")
        result["running_s"] = watch.last(watch.running, names) - t0
        await watch.wait(lambda: len(watch.ready) >= pods, within=options.timeout, what=f"{pods} Ready")
        stack.check_alive()
        result["ready_s"] = watch.last(watch.ready, names) - t0
        result["burst_cpu_s"] = cpu_seconds(pid) - cpu
        result.update(delta(await request_counts(api), counts, "burst"))

        # steady: N pods Running and Ready, idle but for their probes
        await asyncio.sleep(options.settle)
        stack.check_alive()
        counts, cpu, children = await request_counts(api), cpu_seconds(pid), children_cpu_seconds(pid)
        accepted = target.accepted
        t1 = time.monotonic()
        await asyncio.sleep(options.steady_seconds)
        took = time.monotonic() - t1
        stack.check_alive()
        result["steady_probes_per_s"] = (target.accepted - accepted) / took
        result["steady_cpu_percent"] = 100.0 * (cpu_seconds(pid) - cpu) / took
        result["steady_children_cpu_percent"] = 100.0 * (children_cpu_seconds(pid) - children) / took
        steady = delta(await request_counts(api), counts, "steady")
        result.update({key: value / took for key, value in steady.items()})  # per second
        memory = memory_kib(pid)
        result["steady_rss_mib"] = memory["VmRSS"] / 1024
        result["peak_rss_mib"] = memory["VmHWM"] / 1024
        result["steady_not_ready"] = await not_ready(api, namespace)

        # delete: one collection DELETE (graceful) -> all gone
        t2 = time.monotonic()
        await api.request("DELETE", f"/api/v1/namespaces/{namespace}/pods", {"kind": "DeleteOptions"})
        await watch.wait(lambda: len(watch.gone) >= pods, within=options.timeout, what=f"{pods} gone")
        stack.check_alive()
        result["delete_s"] = watch.last(watch.gone, names) - t2
    finally:
        await watch.stop()
        result["watch_restarts"] = watch.restarts
        result["exit_codes"] = stack.stop()
        result["daemon_log_lines"] = len(stack.log_path.read_text(errors="replace").splitlines())
        now = {"kind": "DeleteOptions", "gracePeriodSeconds": 0}
        base = f"/api/v1/namespaces/{namespace}"
        for path in (f"{base}/pods", base, f"/api/v1/nodes/{node}"):
            with contextlib.suppress(RuntimeError):
                await api.request("DELETE", path, now if path.endswith("/pods") else None)
    return result


# -- the report -----------------------------------------------------------------------------------

METRICS = (
    ("pods", "pods, N", "{:.0f}"),
    ("running_s", "first POST -> all N Running, s", "{:.1f}"),
    ("ready_s", "first POST -> all N Ready, s", "{:.1f}"),
    ("burst_cpu_s", "vkubelet CPU, first POST -> all Ready, s", "{:.1f}"),
    ("burst_status_patches", "pod status PATCHes, first POST -> all Ready", "{:.0f}"),
    ("steady_cpu_percent", "idle: vkubelet CPU, % of one core", "{:.1f}"),
    ("steady_children_cpu_percent", "idle: CPU of reaped children (exec probes), % of one core", "{:.1f}"),
    ("steady_rss_mib", "idle: vkubelet RSS, MiB", "{:.0f}"),
    ("steady_status_patches", "idle: pod status PATCHes/s (API server, all clients)", "{:.2f}"),
    ("steady_event_posts", "idle: event POSTs/s", "{:.2f}"),
    ("steady_probes_per_s", "idle: tcpSocket probes/s received by the target", "{:.1f}"),
    ("expected_probes_per_s", "... expected, 2 N / 10 s", "{:.1f}"),
    ("steady_not_ready", "pods not Ready at the end of the window", "{:.0f}"),
    ("delete_s", "collection DELETE -> all N gone, s", "{:.1f}"),
    ("peak_rss_mib", "vkubelet peak RSS, MiB", "{:.0f}"),
)


def summarize(results: Sequence[dict[str, Any]], kinds: Sequence[str]) -> str:
    runs = [r for r in results if "error" not in r]
    compare = "plain" in kinds and "probed" in kinds
    header = ["metric", *kinds, *(["probed - plain"] if compare else [])]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, title, form in METRICS:
        cells = [title]
        medians: dict[str, float] = {}
        for kind in kinds:
            values = [r[key] for r in runs if r["kind"] == kind and key in r]
            if values:
                medians[kind] = statistics.median(values)
                each = ", ".join(form.format(v) for v in values)
                cells.append(form.format(medians[kind]) + (f" ({each})" if len(values) > 1 else ""))
            else:
                cells.append("-")
        if not medians:
            continue
        if compare:
            both = "plain" in medians and "probed" in medians
            cells.append(form.format(medians["probed"] - medians["plain"]) if both else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


async def bench(
    args: argparse.Namespace, cluster: LocalCluster, options: Options, out: Path
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    target = ProbeTarget()
    await target.start()
    log(f"probe target on 127.0.0.1:{target.port}")
    try:
        async with Api.open(cluster, connections=args.create_concurrency + 8) as api:
            for round_no in range(1, args.rounds + 1):
                kinds = args.kinds if round_no % 2 else list(reversed(args.kinds))
                for kind in kinds:
                    log(f"round {round_no}: {kind}, {options.pods_of(kind)} pods ...")
                    try:
                        result = await run_once(api, cluster, options, target, kind, round_no)
                    except (RuntimeError, TimeoutError) as error:
                        result = {"kind": kind, "round": round_no, "error": str(error)}
                    result["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
                    results.append(result)
                    with out.open("a") as stream:
                        stream.write(json.dumps(result) + "\n")
                    log(json.dumps(result))
    finally:
        await target.stop()
    return results


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/probes.py",
        description="daemon CPU and status writes with N idle probed pods vs unprobed (process provider).",
    )
    parser.add_argument("--pods", type=int, default=1000, help="pods per run, N (default 1000)")
    parser.add_argument("--exec-pods", type=int, default=0, help="pods of the exec kind (default 0: --pods)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds; each runs every kind once")
    parser.add_argument(
        "--kinds",
        type=lambda s: [x for x in s.split(",") if x],
        default=["plain", "probed"],
        help=f"comma-separated subset of {','.join(KINDS)} (default plain,probed)",
    )
    parser.add_argument("--create-concurrency", type=int, default=32, help="POSTs in flight while creating")
    parser.add_argument("--settle", type=float, default=30.0, help="wait after all Ready, s (default 30)")
    parser.add_argument(
        "--steady-seconds", type=float, default=60.0, help="measured idle interval, s (default 60)"
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="deadline of each wait, s")
    parser.add_argument("--work-dir", type=Path, help="logs and configs (default: a new temp dir)")
    parser.add_argument("--out", type=Path, help="JSON lines of results (default: <work-dir>/results.jsonl)")
    args = parser.parse_args(argv)
    unknown = set(args.kinds) - set(KINDS)
    if unknown or not args.kinds:
        parser.error(f"--kinds: choose from {','.join(KINDS)}")
    if args.pods < 1 or args.rounds < 1 or args.exec_pods < 0 or args.steady_seconds <= 0:
        parser.error("--pods and --rounds must be at least 1, --steady-seconds positive")
    if os.geteuid() != 0:
        parser.error("the process provider runs pods as host processes and needs root")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    work_dir, out = start_run(args.work_dir, args.out, prefix="vkubelet-bench-probes-")
    options = Options(
        pods=args.pods,
        exec_pods=args.exec_pods or args.pods,
        create_concurrency=args.create_concurrency,
        settle=args.settle,
        steady_seconds=args.steady_seconds,
        timeout=args.timeout,
        work_dir=work_dir,
    )
    started = time.monotonic()
    with local_cluster() as cluster:
        results = asyncio.run(bench(args, cluster, options, out))
    log(f"took {time.monotonic() - started:.0f}s")
    sizes = ", ".join(f"{kind} {options.pods_of(kind)}" for kind in args.kinds)
    print(f"## pods: {sizes}; rounds={args.rounds}; medians, each run in parentheses\n")
    if "exec" in args.kinds and options.exec_pods != options.pods:
        print(f"(exec spawns a process per probe: it ran with {options.exec_pods} pods, not {args.pods})\n")
    print(summarize(results, args.kinds))
    return report_failures(results, lambda r: f"{r['kind']} round {r['round']}")


if __name__ == "__main__":
    raise SystemExit(main())
