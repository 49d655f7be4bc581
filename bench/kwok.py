"""vkubelet vs KWOK vs a zero-logic kubelet, on one fresh local control plane.

::

    .venv/bin/python bench/kwok.py --pods 1000 --rounds 3

Per workload size N (``--pods``, a comma list) and round, each implementation in turn (the order
rotates every round) gets its own Node and namespace and a fresh process:

1. start it and wait until its Node is Ready; note its RSS (VmRSS);
2. **burst**: POST N pods bound to the node (``spec.nodeName``; bench/compare.py's bounded pool
   of concurrent POSTs) and time, from the first POST, until a watch has seen all Running;
3. **delete**: one graceful collection DELETE; time until the watch has seen all gone;
4. the process's CPU (utime+stime over the burst, the deletion and the whole run) and its peak
   RSS (VmHWM), then SIGTERM.

From the burst to the end of the deletion the node Leases in ``kube-node-lease`` are watched:
``lease_late_max_s`` is the largest gap between consecutive ``renewTime`` values of
any node (counting the one written before the burst, and the time since the last one at the end)
minus the implementation's renew interval (10 s for all of them: vkubelet's default, KWOK's
quarter of its 40 s ``--node-lease-duration-seconds`` plus up to 4% jitter, zero_logic.py's).
Negative when the window is shorter than an interval. ``memory_per_pod_kib`` is (peak RSS - RSS
before the burst) / pods.

**Many nodes** (``--nodes M``, default 1): each run has M Nodes, all served by the one process
of the implementation (KWOK manages every annotated Node, zero_logic.py takes a ``--node`` list,
vkubelet a ``--nodename`` list, each node on an ephemeral kubelet API port) and M*N pods, N per
node (``--pods`` is per node), bound round-robin, in one namespace.

Implementations:

- ``kwok``: KWOK v0.8.0's ``kwok`` binary (built into the binary cache on first use) with the
  stages kwokctl installs by default (node-initialize, node-heartbeat-with-lease, pod-ready,
  pod-complete, pod-delete; read from the module's source in the Go module cache), managing the
  Nodes annotated ``kwok.x-k8s.io/node=fake``, which this script creates. KWOK's client has no
  client-side rate limit at all (client-go's fake always-allow limiter) and no flag for one, so
  there is no "raised" KWOK; its remaining knob is the stage parallelism, ``kwok-par`` below;
- ``kwok-par``: the same with ``podPlayStageParallelism`` raised (``--kwok-parallelism``);
- ``vk``: ``python -m vkubelet --provider mock`` at its defaults, as bench/compare.py runs it;
- ``vk-raised``: the same with ``--kube-api-qps 0`` (no client-side rate limit);
- ``zero``: bench/zero_logic.py, only the API calls a kubelet must make per pod. Every figure is
  also given as a ratio to it.

``--profile py-spy`` samples each vkubelet process (py-spy at 100 Hz, non-blocking) over the burst
and over the deletion, into ``<work-dir>/<node>.burst.folded`` and ``.delete.folded`` for
bench/folded.py.

Results: one JSON object per run in ``--out`` (JSON lines, plus one ``machine`` line with the load
average before and after) and a Markdown table of medians on stdout.
This is a benchmark, not a test: it is not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import ipaddress
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare import (
    Api,
    CollectionWatch,
    Daemon,
    PhaseProfiler,
    PodWatch,
    Settings,
    cpu_seconds,
    create_pods,
    local_cluster,
    log,
    machine,
    memory_kib,
    order,
    report_failures,
    start_daemon,
    start_run,
    summarize,
    uptime,
    wait_node_ready,
)
from zero_logic import LEASE_RENEW_INTERVAL_S as ZERO_RENEW_INTERVAL_S

from vkubelet.application.settings import NodeSettings
from vkubelet.entrypoints.localcluster.binaries import COMPONENTS, BinaryCache
from vkubelet.entrypoints.localcluster.cluster import LocalCluster

IMPLEMENTATIONS = ("kwok", "kwok-par", "vk", "vk-raised", "zero", "vk-base", "vk-raised-base")
BASELINE_SUFFIX = "-base"  # vk-base / vk-raised-base: vk / vk-raised from the --baseline package
DEFAULT_IMPLS = ("kwok", "vk", "vk-raised", "zero")
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
#: the stages kwokctl gives a cluster by default (pkg/kwokctl/runtime/cluster.go)
KWOK_STAGES = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)
ZERO_LOGIC = Path(__file__).resolve().parent / "zero_logic.py"
KWOK_LEASE_DURATION_S = 40
#: vkubelet's default (src/application/settings.py): a node's settings with nothing else set
VK_RENEW_INTERVAL_S = NodeSettings(name="n", provider="mock").lease_renew_interval
#: how often each implementation renews its node Lease: vkubelet's default (a quarter of its 40 s
#: duration, src/domain/lease.py), KWOK's quarter of --node-lease-duration-seconds (plus a jitter
#: of up to 4%, pkg/kwok/controllers/controller.go), zero_logic.py's own
RENEW_INTERVAL_S = {
    "kwok": KWOK_LEASE_DURATION_S / 4,
    "kwok-par": KWOK_LEASE_DURATION_S / 4,
    "vk": VK_RENEW_INTERVAL_S,
    "vk-raised": VK_RENEW_INTERVAL_S,
    "vk-base": VK_RENEW_INTERVAL_S,
    "vk-raised-base": VK_RENEW_INTERVAL_S,
    "zero": ZERO_RENEW_INTERVAL_S,
}
LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"

METRICS = (
    ("create_s", "creating the N pods (client side), s"),
    ("burst_running_s", "N pods created at once -> all Running, s"),
    ("delete_gone_s", "delete --all -> all gone, s"),
    ("burst_cpu_s", "process CPU during the burst to Running, s"),
    ("delete_cpu_s", "process CPU during the deletion, s"),
    ("total_cpu_s", "process CPU over the whole run, s"),
    ("peak_rss_kib", "peak RSS (VmHWM), MiB"),
    ("startup_to_ready_s", "start -> node Ready, s"),
    # Measured since the many-node workload (--nodes) was added; in every run.
    ("rss_ready_kib", "RSS with the node(s) Ready, before the burst, MiB"),
    ("memory_per_pod_kib", "memory per pod: (peak RSS - RSS before the burst) / pods, MiB"),
    ("lease_late_max_s", "node lease lateness (largest renewal gap - renew interval), s"),
)


@dataclass(frozen=True)
class Context:
    cluster: LocalCluster
    vk: Settings
    work_dir: Path
    kwok_binary: Path | None
    kwok_config: Path | None
    kwok_par_config: Path | None


def kwok_stage_documents() -> str:
    """KWOK's own default stage manifests, from the module source the build downloaded."""
    spec = COMPONENTS["kwok"]
    module_dir = BinaryCache().tools_dir / (spec.module or "kwok")
    env = dict(os.environ, GOFLAGS="-mod=mod", GOWORK="off", GOTOOLCHAIN="local")
    listing = subprocess.run(
        ["go", "mod", "download", "-json", f"sigs.k8s.io/kwok@{spec.version}"],
        cwd=module_dir,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    source = Path(json.loads(listing.stdout)["Dir"])
    return "\n---\n".join((source / stage).read_text() for stage in KWOK_STAGES)


def kwok_config(stages: str, *, parallelism: int | None) -> str:
    if parallelism is None:
        return stages
    options = (
        "apiVersion: config.kwok.x-k8s.io/v1alpha1\nkind: KwokConfiguration\noptions:\n"
        f"  podPlayStageParallelism: {parallelism}\n"
        # A configuration file's options are not defaulted: KWOK's defaults, spelled out.
        "  nodePlayStageParallelism: 4\n  nodeLeaseParallelism: 4\n  podsOnNodeSyncParallelism: 1\n"
    )
    return options + "---\n" + stages


def pod_cidrs(nodes: int) -> list[str]:
    """One disjoint podCIDR per node out of 10.0.0.0/8: /16s for up to 256 nodes (one: 10.0.0.0/16)."""
    prefix = max(16, 8 + (nodes - 1).bit_length())
    subnets = ipaddress.ip_network("10.0.0.0/8").subnets(new_prefix=prefix)
    return [str(next(subnets)) for _ in range(nodes)]


async def create_kwok_node(api: Api, node: str, capacity_pods: int, *, pod_cidr: str = "10.0.0.0/16") -> None:
    capacity = {"cpu": "100000", "memory": "100Ti", "pods": str(capacity_pods)}
    await api.request(
        "POST",
        "/api/v1/nodes",
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": node,
                "annotations": {KWOK_ANNOTATION: "fake"},
                "labels": {"kubernetes.io/hostname": node, "type": "kwok"},
            },
            # KWOK hands out pod IPs from the node's CIDR (its --cidr default, a /24, is too small).
            "spec": {
                "podCIDR": pod_cidr,
                "taints": [{"key": KWOK_ANNOTATION, "value": "fake", "effect": "NoSchedule"}],
            },
            "status": {"capacity": capacity, "allocatable": capacity},
        },
    )


class LeaseMonitor(CollectionWatch):
    """Every renewTime of some nodes' Leases over a window, from a watch on kube-node-lease.

    A watch sees every update; a LIST once a second (the first version of this monitor) could
    miss a renewal overwritten by the next one while the loaded API server took seconds to
    answer, and so report a node late that was not. The largest gap counts the renewal already
    present when the window starts and, at its end, the time since each node's last renewal, so
    a lease that stopped being renewed shows too.
    """

    def __init__(self, api: Api, nodes: frozenset[str]) -> None:
        super().__init__(api, LEASES)
        self.nodes = nodes
        self.renewals: dict[str, set[datetime]] = {}

    def _observe(self, deleted: bool, lease: dict[str, Any], now: float) -> None:
        name = (lease.get("metadata") or {}).get("name")
        renewed = (lease.get("spec") or {}).get("renewTime")
        if not deleted and name in self.nodes and renewed:
            self.renewals.setdefault(name, set()).add(datetime.fromisoformat(renewed))

    async def finish(self) -> dict[str, Any]:
        """End the window: its largest renewal gap of any node, and the renewals seen in it."""
        await self.stop()
        end = datetime.now(UTC)
        gap_max: float | None = None
        for node in self.renewals.keys() & self.nodes:
            times = sorted(self.renewals[node])
            times.append(max(end, times[-1]))
            gap = max((b - a).total_seconds() for a, b in itertools.pairwise(times))
            gap_max = gap if gap_max is None else max(gap_max, gap)
        # The first renewTime of each node was written before the window.
        seen = sum(len(t) - 1 for t in self.renewals.values())
        return {
            "lease_gap_max_s": gap_max,
            "lease_renewals": seen,
            "lease_watch_restarts": self.restarts,
            # Nodes whose Lease never had a renewTime in the window (0 for a sound implementation).
            "lease_missing": len(self.nodes - self.renewals.keys()),
        }


def spawn(command: list[str], log_path: Path, impl: str, node: str) -> Daemon:
    env = dict(os.environ)
    env.pop("KUBECONFIG", None)
    with log_path.open("ab") as output:
        output.write(f"$ {' '.join(command)}\n".encode())
        output.flush()
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
    return Daemon(impl, node, process, log_path)


async def start(api: Api, ctx: Context, impl: str, node: str, *, nodes: Sequence[str] = ()) -> Daemon:
    """One process of ``impl`` serving ``node``, or with ``nodes``, all of them (``node`` names its files)."""
    served = list(nodes) or [node]
    if impl in ("vk", "vk-raised"):
        current = dataclasses.replace(ctx.vk, vkubelet_path=None)  # the package installed here
        return start_daemon(impl, current, ctx.cluster, node, nodes=nodes or None)
    if impl in ("vk-base", "vk-raised-base"):
        if ctx.vk.vkubelet_path is None:
            raise SystemExit(f"{impl} needs --baseline")
        base_impl = impl.removesuffix(BASELINE_SUFFIX)
        daemon = start_daemon(base_impl, ctx.vk, ctx.cluster, node, nodes=nodes or None)
        return dataclasses.replace(daemon, impl=impl)
    log_path = ctx.work_dir / f"{node}.log"
    if impl in ("kwok", "kwok-par"):
        assert ctx.kwok_binary is not None
        config = ctx.kwok_config if impl == "kwok" else ctx.kwok_par_config
        if not nodes:
            await create_kwok_node(api, node, ctx.vk.capacity_pods)
        else:
            await asyncio.gather(
                *(
                    create_kwok_node(api, name, ctx.vk.capacity_pods, pod_cidr=cidr)
                    for name, cidr in zip(served, pod_cidrs(len(served)), strict=True)
                )
            )
        command = [str(ctx.kwok_binary), "--kubeconfig", str(ctx.cluster.kubeconfig_path)]
        command += [
            "--config",
            str(config),
            "--manage-nodes-with-annotation-selector",
            f"{KWOK_ANNOTATION}=fake",
        ]
        command += ["--node-lease-duration-seconds", str(KWOK_LEASE_DURATION_S)]
        command += ["--node-ip", "127.0.0.1", "-v", "WARN"]
        return spawn(command, log_path, impl, node)
    cluster = ctx.cluster
    command = [
        sys.executable,
        str(ZERO_LOGIC),
        "--server",
        cluster.server_url,
        "--ca",
        str(cluster.ca_cert_path),
    ]
    command += ["--cert", str(cluster.pki_dir / "admin.crt"), "--key", str(cluster.pki_dir / "admin.key")]
    command += ["--node", ",".join(served), "--capacity-pods", str(ctx.vk.capacity_pods)]
    return spawn(command, log_path, impl, node)


def node_names(impl: str, *, pods: int, nodes: int, round_no: int) -> tuple[str, list[str]]:
    """The run's base name (its namespace, and its only node when ``nodes`` is 1) and its nodes."""
    if nodes == 1:
        base = f"kwok-bench-{impl}-n{pods}-r{round_no}"
        return base, [base]
    base = f"kwok-bench-{impl}-n{pods}x{nodes}-r{round_no}"
    return base, [f"{base}-{i}" for i in range(nodes)]


async def run_once(
    api: Api,
    ctx: Context,
    impl: str,
    *,
    pods: int,
    nodes: int,
    round_no: int,
    create_concurrency: int,
    deadline_s: float,
) -> dict[str, Any]:
    node, served = node_names(impl, pods=pods, nodes=nodes, round_no=round_no)
    many = served if nodes > 1 else []
    namespace = node
    total = pods * nodes
    await api.create_namespace(namespace)
    result: dict[str, Any] = {"impl": impl, "round": round_no, "pods": pods, "node": node, "nodes": nodes}
    watch = PodWatch(api, namespace)
    leases = LeaseMonitor(api, frozenset(served))
    daemon: Daemon | None = None
    try:
        started = time.monotonic()
        daemon = await start(api, ctx, impl, node, nodes=many)
        if many:
            await wait_node_ready(api, daemon, 120.0 + 2.0 * nodes, nodes=many)
        else:
            await wait_node_ready(api, daemon)
        result["startup_to_ready_s"] = time.monotonic() - started
        pid = daemon.process.pid
        await watch.start()
        rss_ready = memory_kib(pid)["VmRSS"]
        await leases.start()

        names = [f"p{i:05d}" for i in range(total)]
        profiled = ctx.vk.profile == "py-spy" and impl.startswith("vk")
        profiler = PhaseProfiler(ctx.vk, pid, node, enabled=profiled)
        cpu_before = cpu_seconds(pid)
        t0 = time.monotonic()
        with profiler.phase("burst"):
            created = await create_pods(
                api, namespace, node, names, concurrency=create_concurrency, nodes=many or None
            )
            result["create_s"] = max(created.values()) - t0
            all_running = f"{total} pods Running"
            await watch.wait(lambda: len(watch.running) >= total, within=deadline_s, what=all_running)
        result["burst_running_s"] = watch.last(watch.running, names) - t0
        result["burst_cpu_s"] = cpu_seconds(pid) - cpu_before

        cpu_before = cpu_seconds(pid)
        t1 = time.monotonic()
        with profiler.phase("delete"):
            await api.delete_pods(namespace, {"kind": "DeleteOptions"})
            await watch.wait(lambda: len(watch.gone) >= total, within=deadline_s, what=f"{total} pods gone")
        result["delete_gone_s"] = watch.last(watch.gone, names) - t1
        result["delete_cpu_s"] = cpu_seconds(pid) - cpu_before
        lease_window = await leases.finish()

        result["peak_rss_kib"] = memory_kib(pid)["VmHWM"]
        result["total_cpu_s"] = cpu_seconds(pid)
        result["rss_ready_kib"] = rss_ready
        result["memory_per_pod_kib"] = (result["peak_rss_kib"] - rss_ready) / total
        result.update(lease_window)
        result["lease_renew_interval_s"] = RENEW_INTERVAL_S[impl]
        if lease_window["lease_gap_max_s"] is not None:
            result["lease_late_max_s"] = lease_window["lease_gap_max_s"] - RENEW_INTERVAL_S[impl]
    finally:
        await leases.stop()
        await watch.stop()
        if daemon is not None:
            result["exit_code"] = daemon.stop()
        with contextlib.suppress(RuntimeError):
            await api.request("DELETE", f"/api/v1/namespaces/{namespace}")
        # A Node left behind would be managed by the next KWOK process too.
        await asyncio.gather(*(delete_node(api, name) for name in served))
    return result


async def delete_node(api: Api, node: str) -> None:
    with contextlib.suppress(RuntimeError):
        await api.request("DELETE", f"/api/v1/nodes/{node}")


async def bench(args: argparse.Namespace, ctx: Context, out: Path) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []

    def record(result: dict[str, Any]) -> None:
        result["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
        results.append(result)
        with out.open("a") as stream:
            stream.write(json.dumps(result) + "\n")
        log(json.dumps(result))

    async with Api.open(ctx.cluster, connections=args.create_concurrency + 8) as api:
        for pods in args.pods:
            for round_no in range(1, args.rounds + 1):
                for impl in order(round_no - 1, args.impls):
                    many = f"{args.nodes} nodes x " if args.nodes > 1 else ""
                    log(f"round {round_no}: {impl}, {many}{pods} pods ...")
                    try:
                        record(
                            await run_once(
                                api,
                                ctx,
                                impl,
                                pods=pods,
                                nodes=args.nodes,
                                round_no=round_no,
                                create_concurrency=args.create_concurrency,
                                deadline_s=args.timeout,
                            )
                        )
                    except (RuntimeError, TimeoutError) as error:
                        failure = {"impl": impl, "round": round_no, "pods": pods, "nodes": args.nodes}
                        record({**failure, "error": str(error)})
    return results


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/kwok.py",
        description="vkubelet vs KWOK vs a zero-logic kubelet on one local control plane.",
    )
    parser.add_argument(
        "--pods", type=lambda s: [int(n) for n in s.split(",") if n], default=[1000], help="N, comma list"
    )
    parser.add_argument(
        "--nodes",
        type=int,
        default=1,
        help="M nodes per run, all served by one process per implementation; --pods is then per node",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each runs every implementation once")
    parser.add_argument(
        "--impls",
        type=lambda s: [i for i in s.split(",") if i],
        default=list(DEFAULT_IMPLS),
        help=f"comma-separated subset of {','.join(IMPLEMENTATIONS)} (default {','.join(DEFAULT_IMPLS)})",
    )
    parser.add_argument("--create-concurrency", type=int, default=32, help="POSTs in flight while creating")
    parser.add_argument("--raised-burst", default="2000", help="vk-raised --kube-api-burst (qps is 0)")
    parser.add_argument(
        "--kwok-parallelism",
        type=int,
        default=16,
        help="kwok-par podPlayStageParallelism (KWOK's default: 4)",
    )
    parser.add_argument("--kwok-binary", type=Path, help="kwok executable (default: build/cache it)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="deadline of each wait, s")
    parser.add_argument(
        "--profile",
        choices=("", "py-spy"),
        default="",
        help="py-spy: sample each vkubelet process per phase into <work-dir>/<node>.{burst,delete}.folded",
    )
    parser.add_argument("--py-spy", default="py-spy", help="py-spy executable (with --profile py-spy)")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="directory holding another vkubelet package (a commit's src/ as vkubelet/) for the "
        "vk-base and vk-raised-base implementations: before/after in alternating rounds",
    )
    parser.add_argument("--work-dir", type=Path, help="logs and configs (default: a new temp dir)")
    parser.add_argument("--out", type=Path, help="JSON lines of results (default: <work-dir>/results.jsonl)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    unknown = set(args.impls) - set(IMPLEMENTATIONS)
    if unknown:
        raise SystemExit(f"unknown implementation(s): {', '.join(sorted(unknown))}")
    if args.nodes < 1:
        raise SystemExit(f"--nodes must be at least 1, not {args.nodes}")
    before = uptime()
    host = machine()
    work_dir, out = start_run(args.work_dir, args.out, prefix="vkubelet-kwok-bench-")
    kwok_binary = kwok_path = kwok_par_path = None
    if {"kwok", "kwok-par"} & set(args.impls):
        kwok_binary = args.kwok_binary or BinaryCache().ensure("kwok")["kwok"]
        stages = kwok_stage_documents()
        kwok_path, kwok_par_path = work_dir / "kwok.yaml", work_dir / "kwok-par.yaml"
        kwok_path.write_text(kwok_config(stages, parallelism=None))
        kwok_par_path.write_text(kwok_config(stages, parallelism=args.kwok_parallelism))
    vk = Settings(
        go_binary=Path("virtual-kubelet"),  # unused: no Go virtual-kubelet here
        raised_qps="0",
        raised_burst=args.raised_burst,
        work_dir=work_dir,
        capacity_pods=max(10 * max(args.pods), 10000),
        profile=args.profile,
        py_spy=args.py_spy,
        vkubelet_path=args.baseline,  # used only by the *-base implementations
    )
    with local_cluster() as cluster:
        ctx = Context(cluster, vk, work_dir, kwok_binary, kwok_path, kwok_par_path)
        results = asyncio.run(bench(args, ctx, out))
    after = uptime()
    with out.open("a") as stream:
        stream.write(
            json.dumps({"impl": "machine", "machine": host, "uptime_before": before, "uptime_after": after})
        )
        stream.write("\n")
    print(f"{host}\n\nuptime before: {before}\nuptime after:  {after}\n")
    for pods in args.pods:
        size = f"M={args.nodes} nodes x N={pods} pods per node" if args.nodes > 1 else f"N={pods}"
        print(f"## {size}, rounds={args.rounds} (medians; ratio = implementation / zero)\n")
        rows = [r for r in results if r.get("pods") == pods]
        print(summarize(rows, args.impls, baseline="zero", metrics=METRICS) + "\n")
    return report_failures(results, lambda r: f"{r['impl']} round {r['round']} N={r['pods']}")


if __name__ == "__main__":
    raise SystemExit(main())
