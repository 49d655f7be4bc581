"""Go virtual-kubelet vs vkubelet, side by side on one fresh local control plane.

One command per workload size, e.g.::

    .venv/bin/python bench/compare.py --pods 100 --rounds 3
    .venv/bin/python bench/compare.py --pods 1000 --rounds 1 --idle-seconds 30

What one run of one implementation does (a fresh daemon process, its own node and namespace):

1. start the daemon (mock provider) and wait until its Node is Ready;
2. **burst**: create ``--pods`` pods at once with ``spec.nodeName`` set (a bounded pool of
   concurrent POSTs; the creation time is recorded separately) and time, from the first POST,
   until a watch has seen every pod Running;
3. **idle** (``--idle-seconds`` > 0): with those pods Running, after ``--idle-settle`` seconds
   (trailing work of the burst, such as queued events, would otherwise count), the daemon's CPU
   seconds over the interval, also in 5 s slices;
4. **delete**: one graceful collection DELETE (``kubectl delete pods --all``), time until the
   watch has seen every pod gone;
5. **latency**: ``--latency-pods`` pods created at ``--latency-rate`` pods/s, each pod's time
   from its POST returning to the watch seeing it Running (p50/p99), then deleted;
6. stop the daemon (SIGTERM) and record its CPU seconds (utime+stime) and peak RSS (VmHWM).

Implementations: ``go`` (the upstream CLI; it has no client rate-limit flags, so client-go's
defaults of 5 qps / burst 10 apply), ``vk`` (vkubelet at its defaults) and ``vk-raised``
(``--kube-api-qps/--kube-api-burst`` raised). Rounds alternate the order so every side sees the
same background noise. The **ceiling** is measured in the same run: the simplest client there is
(aiohttp, admin certificate, ``--ceiling-concurrency`` requests in flight) patching the status of
pods bound to a node no kubelet serves, as fast as it can.

``--profile py-spy`` attaches py-spy to each vkubelet daemon per phase (burst, idle, delete) and
writes ``<work-dir>/<node>.<phase>.folded`` for bench/folded.py; ``--profile cprofile`` runs the
daemon under ``python -m cProfile`` (one ``<node>.prof`` written at exit). ``--vkubelet-path``
runs another copy of the package (e.g. ``git archive <commit> src``) for before/after figures.

Results: one JSON object per run in ``--out`` (JSON lines), and a table of medians on stdout.
This is a benchmark, not a test: it is not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from vkubelet.adapters import certs
from vkubelet.entrypoints.localcluster.binaries import BinaryCache
from vkubelet.entrypoints.localcluster.cluster import LocalCluster

CLK_TCK = os.sysconf("SC_CLK_TCK")
IMPLEMENTATIONS = ("go", "vk", "vk-raised")
JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
MERGE_PATCH = {"Content-Type": "application/merge-patch+json", "Accept": "application/json"}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the daemon's process figures ------------------------------------------------------------


def cpu_split(pid: int) -> tuple[float, float]:
    """(utime, stime) of ``pid`` from /proc, s (children excluded: both daemons are one process).

    stime includes the kernel's TCP work on loopback sends, which runs in the sender's context.
    """
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # the command name may contain spaces
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid``."""
    return sum(cpu_split(pid))


def children_cpu_seconds(pid: int) -> float:
    """cutime + cstime of ``pid``: its children's CPU, once they exited and were reaped."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[13]) + int(fields[14])) / CLK_TCK


def memory_kib(pid: int) -> dict[str, int]:
    """VmHWM (peak resident set) and VmRSS of ``pid``, in KiB."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            values[key] = int(rest.split()[0])
    return values


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (no interpolation: p99 of 50 samples is the largest)."""
    ordered = sorted(values)
    rank = math.ceil(fraction * len(ordered))
    return ordered[min(max(rank, 1), len(ordered)) - 1]


# -- the API client --------------------------------------------------------------------------


@dataclass
class Api:
    """A bare aiohttp client with the admin certificate: the same for every implementation."""

    server: str
    session: aiohttp.ClientSession

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, cluster: LocalCluster, *, connections: int = 128) -> Any:
        context = ssl.create_default_context(cafile=str(cluster.ca_cert_path))
        context.load_cert_chain(str(cluster.pki_dir / "admin.crt"), str(cluster.pki_dir / "admin.key"))
        connector = aiohttp.TCPConnector(ssl=context, limit=connections)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, read_bufsize=1 << 20
        ) as session:
            yield cls(cluster.server_url, session)

    async def request(self, method: str, path: str, body: Any = None, headers: Any = None) -> Any:
        data = None if body is None else json.dumps(body)
        async with self.session.request(
            method, self.server + path, data=data, headers=headers or JSON_HEADERS
        ) as response:
            payload = await response.read()
            if response.status >= 400:
                raise RuntimeError(f"{method} {path}: {response.status} {payload[:300]!r}")
            return json.loads(payload) if payload else None

    async def delete_pods(self, namespace: str, body: Any) -> None:
        """Delete every pod of ``namespace`` (one collection DELETE). With thousands of pods on a
        loaded API server the call can outlast its request timeout (504, the connection closed,
        or the reply cut off) after deleting only some: the DELETE is repeated for the rest, a few times at
        most."""
        for attempt in range(1, 6):
            try:
                await self.request("DELETE", f"/api/v1/namespaces/{namespace}/pods", body)
                return
            except (RuntimeError, aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as error:
                # The reply (the list of deleted pods) can also be cut off mid-body.
                cut = isinstance(error, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError)
                timed_out = cut or ": 504 " in str(error)
                if not timed_out or attempt == 5:
                    raise
                log(f"collection DELETE in {namespace}: {error!r:.120} (attempt {attempt}); repeating it")

    async def create_namespace(self, name: str) -> None:
        await self.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
        # The ServiceAccount admission plugin rejects pods until the controller-manager has
        # created the namespace's default ServiceAccount.
        deadline = time.monotonic() + 30
        while True:
            try:
                await self.request("GET", f"/api/v1/namespaces/{name}/serviceaccounts/default")
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)


def pod_manifest(name: str, namespace: str, node: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "bench"}},
        "spec": {
            "nodeName": node,
            "enableServiceLinks": False,
            "automountServiceAccountToken": False,
            # Both daemons taint their node; bound pods skip the scheduler, but tolerate anyway.
            "tolerations": [{"operator": "Exists"}],
            "containers": [{"name": "app", "image": "bench.invalid/app:1"}],
        },
    }


async def create_pods(
    api: Api,
    namespace: str,
    node: str,
    names: Sequence[str],
    *,
    concurrency: int,
    nodes: Sequence[str] | None = None,
) -> dict[str, float]:
    """POST every pod with at most ``concurrency`` in flight; name -> time its POST returned.

    Every pod is bound to ``node``, or, with ``nodes``, pod ``i`` of ``names`` to
    ``nodes[i % len(nodes)]`` (round-robin; ``node`` is then unused).
    """
    targets = list(nodes) if nodes else [node]
    queue = iter(enumerate(names))
    created: dict[str, float] = {}

    async def worker() -> None:
        for index, name in queue:
            bound = targets[index % len(targets)]
            await api.request(
                "POST", f"/api/v1/namespaces/{namespace}/pods", pod_manifest(name, namespace, bound)
            )
            created[name] = time.monotonic()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return created


def pod_ready(pod: dict[str, Any]) -> bool:
    """The pod's Ready condition is True."""
    conditions = (pod.get("status") or {}).get("conditions") or ()
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


@dataclass
class CollectionWatch:
    """One watch on a collection (``collection``, e.g. ``/api/v1/namespaces/ns/pods``), every
    object handed to :meth:`_observe` with the monotonic time it arrived.

    The API server ends a watch after its request timeout (minutes, with jitter) or with an ERROR
    event (e.g. "Too large resource version" when the list it started from is ahead of the
    watch cache): the watch resumes from the last resourceVersion it saw, after a short pause;
    after a 410 Gone it lists the collection once to catch up (:meth:`_listed`). Bounded:
    ``max_restarts``.
    """

    api: Api
    collection: str
    max_restarts: int = 50
    restarts: int = 0
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(await self._catch_up()))

    async def _run(self, version: str) -> None:
        while True:
            version = await self._follow(version)
            self.restarts += 1
            if self.restarts > self.max_restarts:
                raise RuntimeError(f"the watch ended {self.restarts} times")
            await asyncio.sleep(0.5)
            if not version:
                version = await self._catch_up()

    async def _follow(self, version: str) -> str:
        """Watch from ``version`` until the stream ends; the version to resume from ("" = list)."""
        path = (
            f"{self.collection}?watch=1&resourceVersion={version}"
            "&allowWatchBookmarks=true&timeoutSeconds=7200"
        )
        async with self.api.session.get(self.api.server + path) as response:
            if response.status == 410:
                return ""
            response.raise_for_status()
            async for line in response.content:
                now = time.monotonic()
                event = json.loads(line)  # one decode per event
                obj = event["object"]
                if event["type"] == "ERROR":
                    code = obj.get("code")
                    log(f"watch of {self.collection}: {code} {obj.get('message', '')[:200]}; resuming")
                    return "" if code == 410 else version
                version = (obj.get("metadata") or {}).get("resourceVersion") or version
                if event["type"] != "BOOKMARK":
                    self._observe(event["type"] == "DELETED", obj, now)
        return version

    async def _catch_up(self) -> str:
        """List the collection into the tables; the resourceVersion to watch from."""
        listing = await self.api.request("GET", self.collection)
        self._listed(listing.get("items") or (), time.monotonic())
        self._changed.set()
        return str(listing["metadata"]["resourceVersion"])

    def _listed(self, items: Sequence[dict[str, Any]], now: float) -> None:
        for obj in items:
            self._observe(False, obj, now)

    def _observe(self, deleted: bool, obj: dict[str, Any], now: float) -> None:
        raise NotImplementedError

    async def wait(self, condition: Callable[[], bool], *, within: float, what: str) -> float:
        """Block until ``condition()`` holds after some event; the monotonic time it first held."""
        deadline = time.monotonic() + within
        while not condition():
            if self._task is not None and self._task.done():
                self._task.result()
                raise RuntimeError("the watch ended")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"timed out after {within:.0f}s waiting for {what}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 5.0))
        return time.monotonic()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await self._task


class PodWatch(CollectionWatch):
    """A namespace's pods: when each pod was first seen Running, Ready, and gone (after a 410,
    pods seen before and missing from the catch-up list count as gone at that moment)."""

    def __init__(self, api: Api, namespace: str) -> None:
        super().__init__(api, f"/api/v1/namespaces/{namespace}/pods")
        self.namespace = namespace
        self.running: dict[str, float] = {}
        self.ready: dict[str, float] = {}
        self.gone: dict[str, float] = {}
        self._seen: set[str] = set()

    def _listed(self, items: Sequence[dict[str, Any]], now: float) -> None:
        present = {pod["metadata"]["name"] for pod in items}
        super()._listed(items, now)
        for name in self._seen - present:
            self.gone.setdefault(name, now)

    def _observe(self, deleted: bool, pod: dict[str, Any], now: float) -> None:
        name = (pod.get("metadata") or {}).get("name")
        if not name:
            return
        if deleted:
            self.gone.setdefault(name, now)
        else:
            self._seen.add(name)
            if (pod.get("status") or {}).get("phase") != "Running":
                return
            self.running.setdefault(name, now)
            if pod_ready(pod):
                self.ready.setdefault(name, now)
        self._changed.set()

    def last(self, table: dict[str, float], names: Sequence[str]) -> float:
        return max(table[name] for name in names)


# -- the daemons -----------------------------------------------------------------------------


@dataclass
class Daemon:
    impl: str
    node: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)


@dataclass(frozen=True)
class Settings:
    go_binary: Path
    raised_qps: str
    raised_burst: str
    work_dir: Path
    capacity_pods: int
    profile: str  # "", "cprofile" or "py-spy"
    py_spy: str
    #: a directory holding the ``vkubelet`` package to run instead of the installed one
    vkubelet_path: Path | None


def daemon_command(impl: str, settings: Settings, *, node: str, config: Path, kubeconfig: Path) -> list[str]:
    common = ["--provider", "mock", "--provider-config", str(config), "--nodename", node]
    common += ["--kubeconfig", str(kubeconfig)]
    if impl == "go":
        return [str(settings.go_binary), *common, "--log-level", "warn"]
    python = [sys.executable]
    if settings.profile == "cprofile":
        python += ["-m", "cProfile", "-o", str(settings.work_dir / f"{node}.prof")]
    command = [*python, "-m", "vkubelet", *common, "--log-level", "warn"]
    if impl == "vk-raised":
        command += ["--kube-api-qps", settings.raised_qps, "--kube-api-burst", settings.raised_burst]
    return command


def start_daemon(
    impl: str, settings: Settings, cluster: LocalCluster, node: str, *, nodes: Sequence[str] | None = None
) -> Daemon:
    """Start one daemon process serving ``node``.

    With ``nodes`` (vkubelet only), the one process serves every node of it instead
    (``--nodename a,b,...``, each with its own mock config entry and an ephemeral kubelet API
    port); ``node`` then only names the files and the returned Daemon.
    """
    work = settings.work_dir
    config = work / f"{node}.json"
    capacity = {"cpu": "100000", "memory": "100Ti", "pods": str(settings.capacity_pods)}
    config.write_text(json.dumps({name: capacity for name in (nodes or [node])}))
    serving = certs.self_signed_server(common_name=node, ip_addresses=["127.0.0.1"])
    cert, key = work / f"{node}.crt", work / f"{node}.key"
    cert.write_bytes(serving.cert_pem)
    key.write_bytes(serving.key_pem)
    key.chmod(0o600)
    port = free_port()
    env = {
        **os.environ,
        "APISERVER_CERT_LOCATION": str(cert),
        "APISERVER_KEY_LOCATION": str(key),
        # The CA of the API server's kubelet client certificate: both daemons verify callers of
        # their kubelet API (vkubelet refuses to start with no way to authenticate them).
        "APISERVER_CA_CERT_LOCATION": str(cluster.client_ca_cert_path),
        "KUBELET_PORT": str(port),
        "VKUBELET_POD_IP": "127.0.0.1",
    }
    env.pop("KUBECONFIG", None)
    if settings.vkubelet_path is not None and impl != "go":
        env["PYTHONPATH"] = str(settings.vkubelet_path)
    if nodes:
        if impl == "go":
            raise ValueError("the Go virtual-kubelet serves one node per process")
        port = 0  # node i listens on port + i: 0 gives each node an ephemeral port of its own
        env.pop("KUBELET_PORT")  # the flag alone (KUBELET_PORT refuses 0)
    served = ",".join(nodes) if nodes else node
    command = daemon_command(impl, settings, node=served, config=config, kubeconfig=cluster.kubeconfig_path)
    if impl != "go":
        command += ["--listen-address", f"127.0.0.1:{port}"]
    log_path = work / f"{node}.log"
    with log_path.open("ab") as output:
        output.write(f"$ {' '.join(command)}\n".encode())
        output.flush()
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
    return Daemon(impl, node, process, log_path)


@dataclass
class PhaseProfiler:
    """py-spy attached to the daemon for one phase at a time: ``<node>.<phase>.folded`` each.

    Per phase, so the burst, idle and delete costs are not mixed in one profile. Sampling is
    non-blocking (the daemon is never paused), 100 Hz, collapsed-stack output for bench/folded.py.
    """

    settings: Settings
    pid: int
    node: str
    enabled: bool

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        output = self.settings.work_dir / f"{self.node}.{name}.folded"
        command = [self.settings.py_spy, "record", "--pid", str(self.pid), "--format", "raw"]
        command += ["--rate", "100", "--nonblocking", "--output", str(output)]
        with (self.settings.work_dir / f"{self.node}.py-spy.log").open("ab") as log_file:
            profiler = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            yield
        finally:
            profiler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                profiler.wait(timeout=60)
            except subprocess.TimeoutExpired:
                profiler.kill()
                profiler.wait()


async def wait_node_ready(
    api: Api, daemon: Daemon, within: float = 120.0, *, nodes: Sequence[str] | None = None
) -> None:
    """Until the daemon's Node is Ready, or with ``nodes``, every one of them (one LIST per poll)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if daemon.process.poll() is not None:
            tail = daemon.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{daemon.impl} exited with {daemon.process.returncode}:\n{tail}")
        with contextlib.suppress(RuntimeError):
            if nodes:
                listing = await api.request("GET", "/api/v1/nodes")
                ready = {n["metadata"]["name"] for n in listing.get("items") or () if node_is_ready(n)}
                if ready.issuperset(nodes):
                    return
            else:
                node = await api.request("GET", f"/api/v1/nodes/{daemon.node}")
                if node_is_ready(node):
                    return
        await asyncio.sleep(0.2)
    what = f"{len(nodes)} nodes of {daemon.impl}" if nodes else f"node {daemon.node}"
    raise TimeoutError(f"{what} not Ready after {within:.0f}s")


def node_is_ready(node: dict[str, Any]) -> bool:
    conditions = node.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


# -- one run ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    pods: int
    create_concurrency: int
    idle_seconds: float
    idle_settle: float
    latency_pods: int
    latency_rate: float
    timeout: float


async def run_once(
    api: Api, cluster: LocalCluster, settings: Settings, workload: Workload, impl: str, round_no: int
) -> dict[str, Any]:
    node = f"bench-{impl}-n{workload.pods}-r{round_no}"
    namespace = node
    await api.create_namespace(namespace)
    daemon = start_daemon(impl, settings, cluster, node)
    result: dict[str, Any] = {"impl": impl, "round": round_no, "pods": workload.pods, "node": node}
    watch = PodWatch(api, namespace)
    try:
        started = time.monotonic()
        await wait_node_ready(api, daemon)
        result["startup_to_ready_s"] = time.monotonic() - started
        pid = daemon.process.pid
        profiler = PhaseProfiler(settings, pid, node, enabled=settings.profile == "py-spy" and impl != "go")
        await watch.start()

        # burst
        names = [f"p{i:05d}" for i in range(workload.pods)]
        cpu_before = cpu_seconds(pid)
        sys_before = cpu_split(pid)[1]
        t0 = time.monotonic()
        with profiler.phase("burst"):
            created = await create_pods(api, namespace, node, names, concurrency=workload.create_concurrency)
            result["create_s"] = max(created.values()) - t0
            await watch.wait(
                lambda: len(watch.running) >= len(names),
                within=workload.timeout,
                what=f"{len(names)} pods Running",
            )
        result["burst_running_s"] = watch.last(watch.running, names) - t0
        result["burst_cpu_s"] = cpu_seconds(pid) - cpu_before
        result["burst_sys_cpu_s"] = cpu_split(pid)[1] - sys_before

        # idle, with every burst pod running
        if workload.idle_seconds > 0:
            # Trailing work of the burst (events still queued behind the client rate limit)
            # would count as idle CPU; --idle-settle waits it out first.
            await asyncio.sleep(workload.idle_settle)
            idle_before = cpu_seconds(pid)
            slices = []
            with profiler.phase("idle"):
                for _ in range(max(1, round(workload.idle_seconds / 5))):
                    before = cpu_seconds(pid)
                    await asyncio.sleep(workload.idle_seconds / max(1, round(workload.idle_seconds / 5)))
                    slices.append(round(cpu_seconds(pid) - before, 2))
            result["idle_cpu_slices_s"] = slices
            result["idle_cpu_s"] = cpu_seconds(pid) - idle_before
            result["idle_cpu_percent"] = 100.0 * result["idle_cpu_s"] / workload.idle_seconds
            result["idle_rss_kib"] = memory_kib(pid)["VmRSS"]

        # delete, graceful (default grace period; the kubelet finishes the deletion)
        cpu_before = cpu_seconds(pid)
        t1 = time.monotonic()
        with profiler.phase("delete"):
            await api.delete_pods(namespace, {"kind": "DeleteOptions"})
            await watch.wait(
                lambda: len(watch.gone) >= len(names), within=workload.timeout, what=f"{len(names)} pods gone"
            )
        result["delete_gone_s"] = watch.last(watch.gone, names) - t1
        result["delete_cpu_s"] = cpu_seconds(pid) - cpu_before
        result["burst_peak_rss_kib"] = memory_kib(pid)["VmHWM"]

        # latency at a low rate
        if workload.latency_pods > 0:
            slow = [f"l{i:05d}" for i in range(workload.latency_pods)]
            sent: dict[str, float] = {}

            async def create_one(name: str) -> None:
                path = f"/api/v1/namespaces/{namespace}/pods"
                await api.request("POST", path, pod_manifest(name, namespace, node))
                sent[name] = time.monotonic()

            tasks = []
            tick = time.monotonic()
            for name in slow:
                tasks.append(asyncio.create_task(create_one(name)))
                tick += 1.0 / workload.latency_rate
                await asyncio.sleep(max(0.0, tick - time.monotonic()))
            await asyncio.gather(*tasks)
            await watch.wait(
                lambda: all(n in watch.running for n in slow), within=workload.timeout, what="latency pods"
            )
            latencies = [watch.running[n] - sent[n] for n in slow]
            result["latency_p50_ms"] = 1000 * percentile(latencies, 0.50)
            result["latency_p99_ms"] = 1000 * percentile(latencies, 0.99)
            await api.delete_pods(namespace, {"kind": "DeleteOptions"})
            await watch.wait(
                lambda: all(n in watch.gone for n in slow), within=workload.timeout, what="latency pods gone"
            )

        memory = memory_kib(pid)
        result["peak_rss_kib"] = memory["VmHWM"]
        result["total_cpu_s"] = cpu_seconds(pid)
    finally:
        await watch.stop()
        result["exit_code"] = daemon.stop()
        with contextlib.suppress(RuntimeError):
            await api.request("DELETE", f"/api/v1/namespaces/{namespace}")
    return result


# -- the ceiling -----------------------------------------------------------------------------


async def ceiling(
    api: Api, *, pods: int, patches: int, concurrency: int, create_concurrency: int
) -> dict[str, Any]:
    """Status patches per second by a client that does nothing else.

    The pods are bound to a node no kubelet serves, so nothing else writes to them. Each patch
    sets phase Running and a Ready condition with a fresh timestamp, so every patch is a real
    write (a patch that changes nothing would be answered without touching etcd).
    """
    namespace = f"bench-ceiling-{int(time.time())}"
    await api.create_namespace(namespace)
    names = [f"c{i:05d}" for i in range(pods)]
    t0 = time.monotonic()
    await create_pods(api, namespace, "bench-ceiling-no-kubelet", names, concurrency=create_concurrency)
    creates_per_s = pods / (time.monotonic() - t0)
    counter = iter(range(patches))

    async def worker() -> None:
        for i in counter:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            body = {
                "status": {
                    "phase": "Running",
                    "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": stamp}],
                    "message": f"patch {i}",
                }
            }
            name = names[i % pods]
            await api.request(
                "PATCH", f"/api/v1/namespaces/{namespace}/pods/{name}/status", body, MERGE_PATCH
            )

    t1 = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    took = time.monotonic() - t1
    await api.request("DELETE", f"/api/v1/namespaces/{namespace}/pods", {"gracePeriodSeconds": 0})
    await api.request("DELETE", f"/api/v1/namespaces/{namespace}")
    return {
        "impl": "ceiling",
        "pods": pods,
        "patches": patches,
        "concurrency": concurrency,
        "patches_per_s": patches / took,
        "creates_per_s": creates_per_s,
    }


# -- the report ------------------------------------------------------------------------------

METRICS = (
    ("create_s", "creating the N pods (client side), s"),
    ("burst_running_s", "N pods created at once -> all Running, s"),
    ("delete_gone_s", "delete --all -> all gone, s"),
    ("burst_cpu_s", "daemon CPU during the burst to Running, s"),
    ("burst_sys_cpu_s", "  of which system (kernel) CPU, s"),
    ("delete_cpu_s", "daemon CPU during the deletion, s"),
    ("burst_peak_rss_kib", "peak RSS after burst + delete, MiB"),
    ("latency_p50_ms", "create->Running p50 at low rate, ms"),
    ("latency_p99_ms", "create->Running p99 at low rate, ms"),
    ("idle_cpu_percent", "idle CPU with the N pods Running, % of a core"),
    ("idle_rss_kib", "RSS while idle with the N pods, MiB"),
    ("total_cpu_s", "daemon CPU over the whole run, s"),
    ("startup_to_ready_s", "start -> node Ready, s"),
)


def summarize(
    results: Sequence[dict[str, Any]],
    impls: Sequence[str],
    *,
    baseline: str = "go",
    metrics: Sequence[tuple[str, str]] = METRICS,
) -> str:
    """Markdown table of medians, with each implementation's ratio to ``baseline``."""
    runs = [r for r in results if r["impl"] in impls and "error" not in r]
    others = [i for i in impls if i != baseline]
    lines = [f"| workload | {' | '.join(impls)} | " + " | ".join(f"{i} / {baseline}" for i in others) + " |"]
    lines.append("|" + "---|" * (1 + len(impls) + len(others)))
    for key, title in metrics:
        medians: dict[str, float] = {}
        for impl in impls:
            values = [r[key] for r in runs if r["impl"] == impl and key in r]
            if values:
                medians[impl] = statistics.median(values) / (1024 if key.endswith("_kib") else 1)
        if not medians:
            continue
        cells = [f"{medians[i]:.3g}" if i in medians else "-" for i in impls]
        ratios = []
        for impl in others:
            base, ours = medians.get(baseline), medians.get(impl)
            ratios.append(f"{ours / base:.2f}" if base and ours is not None else "-")
        lines.append(f"| {title} | {' | '.join(cells)} | {' | '.join(ratios)} |")
    for r in results:
        if r["impl"] == "ceiling":
            lines.append(
                f"\nceiling: {r['patches_per_s']:.0f} status patches/s ({r['patches']} patches, "
                f"{r['concurrency']} in flight, {r['pods']} pods); {r['creates_per_s']:.0f} pod creates/s"
            )
    return "\n".join(lines)


def order(round_no: int, impls: Sequence[str]) -> list[str]:
    """Rotate the order every round so no implementation always runs first (or last)."""
    shift = round_no % len(impls)
    return list(impls[shift:]) + list(impls[:shift])


async def bench(
    args: argparse.Namespace, cluster: LocalCluster, settings: Settings, out: Path
) -> list[dict[str, Any]]:
    workload = Workload(
        pods=args.pods,
        create_concurrency=args.create_concurrency,
        idle_seconds=args.idle_seconds,
        idle_settle=args.idle_settle,
        latency_pods=args.latency_pods,
        latency_rate=args.latency_rate,
        timeout=args.timeout,
    )
    results: list[dict[str, Any]] = []

    def record(result: dict[str, Any]) -> None:
        # Background load moves vkubelet's figures (not Go's, which its rate limiter sets).
        result["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
        results.append(result)
        with out.open("a") as stream:
            stream.write(json.dumps(result) + "\n")
        log(json.dumps(result))

    async with Api.open(
        cluster, connections=max(args.create_concurrency, args.ceiling_concurrency) + 8
    ) as api:
        if args.ceiling_patches > 0:
            log("ceiling ...")
            record(
                await ceiling(
                    api,
                    pods=args.ceiling_pods,
                    patches=args.ceiling_patches,
                    concurrency=args.ceiling_concurrency,
                    create_concurrency=args.create_concurrency,
                )
            )
        for round_no in range(1, args.rounds + 1):
            for impl in order(round_no - 1, args.impls):
                log(f"round {round_no}: {impl}, {args.pods} pods ...")
                try:
                    record(await run_once(api, cluster, settings, workload, impl, round_no))
                except (RuntimeError, TimeoutError) as error:
                    record({"impl": impl, "round": round_no, "pods": args.pods, "error": str(error)})
    return results


def machine() -> str:
    nproc = os.cpu_count()
    mem = subprocess.run(["free", "-g"], capture_output=True, text=True, check=False).stdout.strip()
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        "?",
    )
    return f"nproc={nproc} ({model})\n{mem}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/compare.py",
        description="Go virtual-kubelet vs vkubelet (mock providers) on one fresh local control plane.",
    )
    parser.add_argument("--pods", type=int, default=100, help="burst size N (default 100)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each runs every implementation once")
    parser.add_argument(
        "--impls",
        type=lambda s: [i for i in s.split(",") if i],
        default=list(IMPLEMENTATIONS),
        help=f"comma-separated subset of {','.join(IMPLEMENTATIONS)}",
    )
    parser.add_argument("--create-concurrency", type=int, default=32, help="POSTs in flight while creating")
    parser.add_argument(
        "--idle-seconds", type=float, default=0.0, help="idle CPU interval with the N pods (0: skip)"
    )
    parser.add_argument(
        "--idle-settle", type=float, default=2.0, help="wait before the idle interval, s (default 2)"
    )
    parser.add_argument(
        "--latency-pods", type=int, default=50, help="pods of the low-rate latency stage (0: skip)"
    )
    parser.add_argument("--latency-rate", type=float, default=10.0, help="pods/s of the latency stage")
    parser.add_argument("--raised-qps", default="1000", help="vk-raised --kube-api-qps (default 1000)")
    parser.add_argument("--raised-burst", default="2000", help="vk-raised --kube-api-burst (default 2000)")
    parser.add_argument(
        "--ceiling-patches", type=int, default=5000, help="status patches of the ceiling (0: skip)"
    )
    parser.add_argument(
        "--ceiling-pods", type=int, default=500, help="pods the ceiling's patches spread over"
    )
    parser.add_argument(
        "--ceiling-concurrency", type=int, default=64, help="patches in flight for the ceiling"
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="deadline of each wait, s")
    parser.add_argument(
        "--profile",
        choices=("", "cprofile", "py-spy"),
        default="",
        help="profile the vkubelet daemons (cProfile output or py-spy collapsed stacks in --work-dir)",
    )
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or "py-spy", help="py-spy executable")
    parser.add_argument(
        "--vkubelet-path",
        type=Path,
        help="directory with a vkubelet package for the daemon (its PYTHONPATH), e.g. a commit snapshot",
    )
    parser.add_argument("--go-binary", type=Path, help="upstream virtual-kubelet (default: build/cache it)")
    parser.add_argument("--work-dir", type=Path, help="logs, configs, profiles (default: a new temp dir)")
    parser.add_argument("--out", type=Path, help="JSON lines of results (default: <work-dir>/results.jsonl)")
    args = parser.parse_args(argv)
    if args.ceiling_patches > 0 and args.ceiling_pods < 1:
        parser.error(
            f"--ceiling-pods {args.ceiling_pods}: the ceiling needs at least one pod (or --ceiling-patches 0)"
        )
    return args


def uptime() -> str:
    """The machine's load, as ``uptime`` prints it."""
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def start_run(work_dir: Path | None, out: Path | None, *, prefix: str) -> tuple[Path, Path]:
    """The run's work dir (a new temp dir unless given) and results file, logged with the
    machine and its load, so every benchmark's log starts with what it ran on."""
    work_dir = work_dir or Path(tempfile.mkdtemp(prefix=prefix))
    work_dir.mkdir(parents=True, exist_ok=True)
    out = out or work_dir / "results.jsonl"
    log(f"work dir {work_dir}; results {out}")
    log(machine().replace("\n", " | "))
    log(f"at start: {uptime()}")
    return work_dir, out


def report_failures(results: Sequence[dict[str, Any]], describe: Callable[[dict[str, Any]], str]) -> int:
    """Print each failed run, named by ``describe``; the exit code (1 if any run failed)."""
    errors = [r for r in results if "error" in r]
    for r in errors:
        print(f"\nrun failed: {describe(r)}: {r['error']}")
    return 1 if errors else 0


@contextlib.contextmanager
def local_cluster() -> Iterator[LocalCluster]:
    cluster = LocalCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    unknown = set(args.impls) - set(IMPLEMENTATIONS)
    if unknown:
        raise SystemExit(f"unknown implementation(s): {', '.join(sorted(unknown))}")
    work_dir, out = start_run(args.work_dir, args.out, prefix="vkubelet-bench-")
    go_binary = args.go_binary
    if go_binary is None and "go" in args.impls:
        go_binary = BinaryCache().ensure("upstream-vk")["virtual-kubelet"]
    settings = Settings(
        go_binary=go_binary or Path("virtual-kubelet"),
        raised_qps=args.raised_qps,
        raised_burst=args.raised_burst,
        work_dir=work_dir,
        capacity_pods=max(10 * args.pods, 10000),
        profile=args.profile,
        py_spy=args.py_spy,
        vkubelet_path=args.vkubelet_path,
    )
    with local_cluster() as cluster:
        results = asyncio.run(bench(args, cluster, settings, out))
    print(f"## N={args.pods}, rounds={args.rounds} (medians; ratio = implementation / go)\n")
    print(summarize(results, args.impls))
    return report_failures(results, lambda r: f"{r['impl']} round {r['round']}")


if __name__ == "__main__":
    raise SystemExit(main())
