"""What pod volumes cost vkubelet: pods/s to Running with and without volumes, in one run.

    .venv/bin/python bench/volumes.py --pods 1000 --rounds 3

One fresh local control plane (etcd, kube-apiserver with the default admission plugins, the
scheduler and the controller-manager: ``LocalCluster``). Every run is a fresh
``python -m vkubelet --provider mock`` process on its own node and namespace, with the mock's
``"volumes": true`` config key: the mock then declares the VOLUMES capability, so vkubelet
resolves each pod's volumes and hands them over with ``set_pod_volumes`` exactly as it does for
a provider that mounts them, while the mock still runs nothing. What is measured is vkubelet's
own cost (and the API server's, on the same cores), not a runtime's. Two kinds of pod:

* ``plain``: ``automountServiceAccountToken: false`` and no volumes (nothing to resolve);
* ``volumes``: a ConfigMap and a Secret of its own (``--pods`` of each are created before the
  clock starts), mounted in the container, plus the default projected service-account token:
  automount is left on, so the ServiceAccount admission plugin adds the ``kube-api-access-*``
  volume (a bound token, the namespace's ``kube-root-ca.crt`` ConfigMap, the namespace from the
  downward API). vkubelet resolves it with one TokenRequest bound to the pod, a GET of the
  pod's ConfigMap and of its Secret, and one GET of ``kube-root-ca.crt`` per 5 s (the config
  source's TTL cache).

Pods are bound with ``spec.nodeName`` (no scheduler in the path) and tolerate every taint. One
run: start the daemon, wait for its Node Ready, create the N pods (``--create-concurrency``
POSTs in flight) and time from the first POST until one watch has seen all N Running (pods/s =
N / that time); the daemon's CPU (utime+stime from ``/proc/<pid>/stat``) over that interval;
then ``--steady-seconds`` with the N pods Running, after ``--steady-settle`` seconds (vkubelet
re-checks running pods' volumes every 2 s: this shows what that costs; without settling, the
burst's events are still being written in that interval, for both kinds); then one
collection DELETE and the time until all are gone. Request counts come from the API server's
own ``apiserver_request_total`` (scraped from ``/metrics`` around each phase): they count every
client, so the plain runs show the background (the controller-manager's own token refreshes,
for instance).

Client limits (``--limits``): ``default`` is the daemon's ``--kube-api-qps 50 --kube-api-burst
100``; ``raised`` is ``--kube-api-qps 0`` (unlimited, see src/entrypoints/cli_args.py). Rounds
alternate the order of the two kinds and of the two limits. Results: JSON lines in ``--out``
and a Markdown table of medians on stdout. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import re
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The API client, the pod watch, /proc readings and the machine description are compare.py's
# (one definition of "pods Running" for every benchmark here); grpc_vs_inprocess.py's daemon
# wrapper starts and stops the process and checks it is alive.
from compare import (
    Api,
    PodWatch,
    cpu_seconds,
    free_port,
    local_cluster,
    log,
    memory_kib,
    report_failures,
    start_run,
)
from grpc_vs_inprocess import Stack, _spawn, wait_node_ready

from vkubelet.entrypoints.localcluster.cluster import LocalCluster

KINDS = ("plain", "volumes")
LIMITS = {"default": ("50", "100"), "raised": ("0", "100")}

# (verb, resource, subresource) of apiserver_request_total -> the name reported
COUNTED = {
    ("POST", "serviceaccounts", "token"): "token_requests",
    ("GET", "configmaps", ""): "configmap_gets",
    ("GET", "secrets", ""): "secret_gets",
    ("PATCH", "pods", "status"): "status_patches",
    ("DELETE", "pods", ""): "pod_deletes",
    ("POST", "events", ""): "event_posts",
    ("PATCH", "events", ""): "event_patches",
}
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Options:
    pods: int
    create_concurrency: int
    steady_seconds: float
    steady_settle: float
    timeout: float
    work_dir: Path


# -- the API server's request counters ------------------------------------------------------------


async def request_counts(api: Api) -> dict[str, float]:
    """The counters of COUNTED, summed over response codes, from the API server's /metrics."""
    async with api.session.get(api.server + "/metrics", headers={"Accept": "text/plain"}) as response:
        response.raise_for_status()
        text = await response.text()
    counts = dict.fromkeys(COUNTED.values(), 0.0)
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels_text, _, value = line[len("apiserver_request_total{") :].rpartition("} ")
        labels = dict(_LABEL.findall(labels_text))
        name = COUNTED.get(
            (labels.get("verb", ""), labels.get("resource", ""), labels.get("subresource", ""))
        )
        if name is not None:
            counts[name] += float(value)
    return counts


def delta(after: dict[str, float], before: dict[str, float], prefix: str) -> dict[str, float]:
    return {f"{prefix}_{key}": after[key] - before[key] for key in after}


# -- the workload ---------------------------------------------------------------------------------


def pod_manifest(name: str, namespace: str, node: str, kind: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "nodeName": node,
        "enableServiceLinks": False,
        "tolerations": [{"operator": "Exists"}],
        "containers": [{"name": "app", "image": "bench.invalid/app:1"}],
    }
    if kind == "plain":
        spec["automountServiceAccountToken"] = False
    else:
        # automountServiceAccountToken unset: the admission plugin adds kube-api-access-*.
        spec["volumes"] = [
            {"name": "config", "configMap": {"name": f"cm-{name}"}},
            {"name": "secret", "secret": {"secretName": f"sec-{name}"}},
        ]
        spec["containers"][0]["volumeMounts"] = [
            {"name": "config", "mountPath": "/etc/app"},
            {"name": "secret", "mountPath": "/etc/app-secret", "readOnly": True},
        ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "bench"}},
        "spec": spec,
    }


def config_map(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"cm-{name}"},
        "data": {"app.conf": f"name = {name}\nlevel = info\n", "feature-flags": "a=1,b=0"},
    }


def secret(name: str) -> dict[str, Any]:
    password = base64.b64encode(f"password-of-{name}".encode()).decode()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": f"sec-{name}"},
        "type": "Opaque",
        "data": {"password": password, "user": base64.b64encode(b"bench").decode()},
    }


async def post_all(api: Api, path: str, bodies: Sequence[dict[str, Any]], *, concurrency: int) -> float:
    """POST every body with at most ``concurrency`` in flight; the monotonic time the last returned."""
    queue = iter(bodies)
    last = time.monotonic()

    async def worker() -> None:
        nonlocal last
        for body in queue:
            await api.request("POST", path, body)
            last = time.monotonic()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return last


async def wait_for(api: Api, path: str, *, within: float) -> None:
    """GET ``path`` until it exists (bounded by ``within`` seconds)."""
    deadline = time.monotonic() + within
    while True:
        try:
            await api.request("GET", path)
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


def start_daemon(cluster: LocalCluster, options: Options, node: str, qps: str, burst: str) -> Stack:
    work = options.work_dir
    config = work / f"{node}.json"
    capacity = {"cpu": "100000", "memory": "100Ti", "pods": str(max(10 * options.pods, 10000))}
    config.write_text(json.dumps({node: {**capacity, "volumes": True}}))
    env = {**os.environ, "VKUBELET_POD_IP": "127.0.0.1"}
    env.pop("KUBECONFIG", None)
    command = [
        sys.executable, "-m", "vkubelet", "--provider", "mock", "--provider-config", str(config),
        "--nodename", node, "--kubeconfig", str(cluster.kubeconfig_path),
        # Only the API server is involved: the kubelet API on a free loopback port, no callers.
        "--listen-address", f"127.0.0.1:{free_port()}", "--anonymous-auth",
        "--kube-api-qps", qps, "--kube-api-burst", burst, "--log-level", "warn",
    ]  # fmt: skip
    log_path = work / f"{node}.log"
    return Stack(node, _spawn(command, log_path, env), None, log_path)


async def run_once(
    api: Api, cluster: LocalCluster, options: Options, kind: str, limit: str, round_no: int
) -> dict[str, Any]:
    node = f"bench-vol-{kind}-{limit}-n{options.pods}-r{round_no}"
    namespace = node
    qps, burst = LIMITS[limit]
    result: dict[str, Any] = {
        "kind": kind,
        "limit": limit,
        "qps": qps,
        "burst": burst,
        "round": round_no,
        "pods": options.pods,
        "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
    }
    names = [f"p{i:05d}" for i in range(options.pods)]
    await api.create_namespace(namespace)
    # The projected token's volume also needs the namespace's CA bundle, which the
    # controller-manager publishes a moment after the namespace appears.
    await wait_for(api, f"/api/v1/namespaces/{namespace}/configmaps/kube-root-ca.crt", within=30)
    if kind == "volumes":
        t = time.monotonic()
        base = f"/api/v1/namespaces/{namespace}"
        await post_all(api, f"{base}/configmaps", [config_map(n) for n in names], concurrency=32)
        await post_all(api, f"{base}/secrets", [secret(n) for n in names], concurrency=32)
        result["setup_s"] = time.monotonic() - t
    stack = start_daemon(cluster, options, node, qps, burst)
    watch = PodWatch(api, namespace)
    try:
        started = time.monotonic()
        await wait_node_ready(api, stack, within=120)
        result["startup_to_ready_s"] = time.monotonic() - started
        await watch.start()
        pid = stack.daemon.pid
        bodies = [pod_manifest(n, namespace, node, kind) for n in names]

        # burst: first POST -> all Running
        counts, cpu = await request_counts(api), cpu_seconds(pid)
        t0 = time.monotonic()
        last_post = await post_all(
            api, f"/api/v1/namespaces/{namespace}/pods", bodies, concurrency=options.create_concurrency
        )
        result["create_s"] = last_post - t0
        await watch.wait(
            lambda: len(watch.running) >= len(names), within=options.timeout, what=f"{len(names)} Running"
        )
        stack.check_alive()
        result["running_s"] = watch.last(watch.running, names) - t0
        result["pods_per_s"] = len(names) / result["running_s"]
        result["burst_cpu_s"] = cpu_seconds(pid) - cpu
        result.update(delta(await request_counts(api), counts, "burst"))

        # steady: N pods Running (the periodic volume check of running pods)
        if options.steady_seconds > 0:
            await asyncio.sleep(options.steady_settle)
            stack.check_alive()
            counts, cpu = await request_counts(api), cpu_seconds(pid)
            t1 = time.monotonic()
            await asyncio.sleep(options.steady_seconds)
            took = time.monotonic() - t1
            stack.check_alive()
            result["steady_cpu_percent"] = 100.0 * (cpu_seconds(pid) - cpu) / took
            steady = delta(await request_counts(api), counts, "steady")
            result.update({key: value / took for key, value in steady.items()})  # per second

        # delete: one collection DELETE (graceful; vkubelet finishes it) -> all gone
        cpu = cpu_seconds(pid)
        t2 = time.monotonic()
        await api.request("DELETE", f"/api/v1/namespaces/{namespace}/pods", {"kind": "DeleteOptions"})
        await watch.wait(
            lambda: len(watch.gone) >= len(names), within=options.timeout, what=f"{len(names)} gone"
        )
        stack.check_alive()
        result["delete_s"] = watch.last(watch.gone, names) - t2
        result["delete_cpu_s"] = cpu_seconds(pid) - cpu
        result["peak_rss_mib"] = memory_kib(pid)["VmHWM"] / 1024
    finally:
        await watch.stop()
        result["watch_restarts"] = watch.restarts
        result["exit_codes"] = stack.stop()
        base = f"/api/v1/namespaces/{namespace}"
        # Collection deletes now, so the namespace controller has little left to do in the
        # background of the next run.
        # (Pods are gone already unless the run failed; then nobody serves them any more.)
        now = {"kind": "DeleteOptions", "gracePeriodSeconds": 0}
        for path in (f"{base}/configmaps", f"{base}/secrets", f"{base}/pods", base, f"/api/v1/nodes/{node}"):
            with contextlib.suppress(RuntimeError):
                await api.request("DELETE", path, now if path.endswith("/pods") else None)
    return result


# -- the report -----------------------------------------------------------------------------------

METRICS = (
    ("pods_per_s", "pods/s to Running (N / first POST -> all Running)", "{:.1f}"),
    ("running_s", "first POST -> all N Running, s", "{:.2f}"),
    ("create_s", "first POST -> last POST returned (client), s", "{:.2f}"),
    ("burst_cpu_s", "vkubelet CPU, first POST -> all Running, s", "{:.2f}"),
    ("burst_token_requests", "TokenRequests during the burst (API server, all clients)", "{:.0f}"),
    ("burst_configmap_gets", "ConfigMap GETs during the burst", "{:.0f}"),
    ("burst_secret_gets", "Secret GETs during the burst", "{:.0f}"),
    ("burst_status_patches", "pod status PATCHes during the burst", "{:.0f}"),
    ("steady_cpu_percent", "vkubelet CPU with N pods Running, % of a core", "{:.1f}"),
    ("steady_configmap_gets", "... ConfigMap GETs/s with N pods Running", "{:.1f}"),
    ("steady_secret_gets", "... Secret GETs/s with N pods Running", "{:.1f}"),
    ("steady_token_requests", "... TokenRequests/s with N pods Running", "{:.2f}"),
    ("delete_s", "collection DELETE -> all N gone, s", "{:.2f}"),
    ("delete_cpu_s", "vkubelet CPU during the deletion, s", "{:.2f}"),
    ("peak_rss_mib", "vkubelet peak RSS, MiB", "{:.0f}"),
    ("setup_s", "creating N ConfigMaps + N Secrets (not timed), s", "{:.2f}"),
)


def summarize(results: Sequence[dict[str, Any]], limits: Sequence[str]) -> str:
    runs = [r for r in results if "error" not in r]
    header = ["metric"]
    for limit in limits:
        qps, burst = LIMITS[limit]
        shown = "unlimited" if float(qps) <= 0 else f"qps {qps}/burst {burst}"
        header += [f"{limit} ({shown}): plain", "volumes", "volumes / plain"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, title, form in METRICS:
        cells = [title]
        found = False
        for limit in limits:
            medians: dict[str, float] = {}
            for kind in KINDS:
                values = [r[key] for r in runs if r["kind"] == kind and r["limit"] == limit and key in r]
                if values:
                    found = True
                    medians[kind] = statistics.median(values)
                    each = ", ".join(form.format(v) for v in values)
                    cells.append(form.format(medians[kind]) + (f" ({each})" if len(values) > 1 else ""))
                else:
                    cells.append("-")
            plain, with_volumes = medians.get("plain"), medians.get("volumes")
            cells.append(f"{with_volumes / plain:.2f}" if plain and with_volumes is not None else "-")
        if found:
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


async def bench(
    args: argparse.Namespace, cluster: LocalCluster, options: Options, out: Path
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    async with Api.open(cluster, connections=args.create_concurrency + 8) as api:
        for round_no in range(1, args.rounds + 1):
            # Alternate which kind (and which limit) goes first, so neither always runs first.
            limits = args.limits if round_no % 2 else list(reversed(args.limits))
            for index, limit in enumerate(limits):
                kinds = KINDS if (round_no + index) % 2 else tuple(reversed(KINDS))
                for kind in kinds:
                    log(f"round {round_no}: {kind}, {limit} limits, {args.pods} pods ...")
                    try:
                        result = await run_once(api, cluster, options, kind, limit, round_no)
                    except (RuntimeError, TimeoutError) as error:
                        result = {"kind": kind, "limit": limit, "round": round_no, "error": str(error)}
                    result["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
                    results.append(result)
                    with out.open("a") as stream:
                        stream.write(json.dumps(result) + "\n")
                    log(json.dumps(result))
    return results


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/volumes.py",
        description="pods/s to Running with a ConfigMap, a Secret and the projected token vs none.",
    )
    parser.add_argument("--pods", type=int, default=1000, help="pods per run, N (default 1000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each runs every kind x limit once")
    parser.add_argument(
        "--limits",
        type=lambda s: [x for x in s.split(",") if x],
        default=list(LIMITS),
        help="comma-separated subset of default,raised (default both)",
    )
    parser.add_argument("--create-concurrency", type=int, default=32, help="POSTs in flight while creating")
    parser.add_argument(
        "--steady-seconds", type=float, default=10.0, help="interval with N pods Running, s (0: skip)"
    )
    parser.add_argument(
        "--steady-settle",
        type=float,
        default=0.0,
        help="wait before the steady interval, s (default 0: events of the burst are still being written)",
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="deadline of each wait, s")
    parser.add_argument("--work-dir", type=Path, help="logs and configs (default: a new temp dir)")
    parser.add_argument("--out", type=Path, help="JSON lines of results (default: <work-dir>/results.jsonl)")
    args = parser.parse_args(argv)
    unknown = set(args.limits) - set(LIMITS)
    if unknown or not args.limits:
        parser.error(f"--limits: choose from {','.join(LIMITS)}")
    if args.pods < 1 or args.rounds < 1:
        parser.error("--pods and --rounds must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    work_dir, out = start_run(args.work_dir, args.out, prefix="vkubelet-bench-volumes-")
    options = Options(
        pods=args.pods,
        create_concurrency=args.create_concurrency,
        steady_seconds=args.steady_seconds,
        steady_settle=args.steady_settle,
        timeout=args.timeout,
        work_dir=work_dir,
    )
    started = time.monotonic()
    with local_cluster() as cluster:
        results = asyncio.run(bench(args, cluster, options, out))
    log(f"took {time.monotonic() - started:.0f}s")
    print(f"## N={args.pods}, rounds={args.rounds} (medians, each run in parentheses)\n")
    print(summarize(results, args.limits))
    return report_failures(results, lambda r: f"{r['kind']} {r['limit']} round {r['round']}")


if __name__ == "__main__":
    raise SystemExit(main())
