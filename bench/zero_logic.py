"""A zero-logic kubelet: only the API work a kubelet must do per pod, for bench/kwok.py.

It registers a Node, keeps its Lease renewed, watches the pods bound to it (fieldSelector
``spec.nodeName``), sends one status PATCH per new pod (phase Running with the conditions and
container statuses a kubelet writes) and, once a pod has a deletionTimestamp, one DELETE with
``gracePeriodSeconds=0``. Nothing else: no provider, no rate limiter, no retries beyond what a
watch needs. Its figures are the limit of the control plane for that work, not a kubelet::

    .venv/bin/python bench/zero_logic.py --server https://127.0.0.1:6443 --ca ca.crt \\
        --cert admin.crt --key admin.key --node zero-1

``--node zero-1,zero-2,...`` runs one such kubelet per node in the one process, sharing its
client session (each registers, renews its own Lease and watches its own pods). It prints
``ready`` once every Node and its Lease exist, and exits on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import ssl
import sys
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import aiohttp

JSON = {"Content-Type": "application/json", "Accept": "application/json"}
MERGE_PATCH = {"Content-Type": "application/merge-patch+json", "Accept": "application/json"}
#: seconds between the end of one Lease renewal and the start of the next (the kubelet's quarter
#: of the 40 s duration)
LEASE_RENEW_INTERVAL_S = 10.0
LEASE_DURATION_S = 40
POD_CONDITIONS = ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")


def now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def now_micro() -> str:
    seconds = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds % 1 * 1e6):06d}Z"


def node_manifest(name: str, ip: str, capacity_pods: int) -> dict[str, Any]:
    stamp = now_rfc3339()
    capacity = {"cpu": "100000", "memory": "100Ti", "pods": str(capacity_pods)}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "type": "zero-logic"}},
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "zero-logic kubelet",
                    "lastHeartbeatTime": stamp,
                    "lastTransitionTime": stamp,
                }
            ],
            "nodeInfo": {
                "kubeletVersion": "v0.0.0-zero",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        },
    }


def running_status(pod: dict[str, Any], ip: str) -> dict[str, Any]:
    """The merge patch a kubelet's status manager would send once the containers started."""
    stamp = now_rfc3339()
    uid = pod["metadata"]["uid"]
    spec = pod["spec"]
    return {
        "status": {
            "phase": "Running",
            # A merge patch replaces the whole list, so PodScheduled is written back as well.
            "conditions": [
                {"type": t, "status": "True", "lastTransitionTime": stamp} for t in POD_CONDITIONS
            ],
            "hostIP": ip,
            "hostIPs": [{"ip": ip}],
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": stamp,
            "containerStatuses": [
                {
                    "name": c["name"],
                    "image": c["image"],
                    "imageID": c["image"],
                    "containerID": f"zero://{uid}/{c['name']}",
                    "ready": True,
                    "started": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": stamp}},
                }
                for c in spec.get("containers", ())
            ],
        }
    }


class ZeroKubelet:
    def __init__(self, session: aiohttp.ClientSession, server: str, *, node: str, ip: str) -> None:
        self.session = session
        self.server = server
        self.node = node
        self.ip = ip
        self.patched: set[str] = set()  # pod UIDs already set Running
        self.deleted: set[str] = set()  # pod UIDs already deleted
        self.tasks: set[asyncio.Task[None]] = set()

    async def call(self, method: str, path: str, body: Any = None, headers: Any = None) -> Any:
        data = None if body is None else json.dumps(body)
        async with self.session.request(method, self.server + path, data=data, headers=headers or JSON) as r:
            payload = await r.read()
            if r.status >= 400:
                raise RuntimeError(f"{method} {path}: {r.status} {payload[:200]!r}")
            return json.loads(payload) if payload else None

    async def register(self, capacity_pods: int) -> None:
        manifest = node_manifest(self.node, self.ip, capacity_pods)
        await self.call("POST", "/api/v1/nodes", manifest)
        # The node's status is not guaranteed to survive the create; write it once more.
        patch = {"status": manifest["status"]}
        await self.call("PATCH", f"/api/v1/nodes/{self.node}/status", patch, MERGE_PATCH)
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.node, "namespace": "kube-node-lease"},
            "spec": {
                "holderIdentity": self.node,
                "leaseDurationSeconds": LEASE_DURATION_S,
                "renewTime": now_micro(),
            },
        }
        await self.call("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", lease)

    async def keep_lease(self, every: float = LEASE_RENEW_INTERVAL_S) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node}"
        while True:
            await asyncio.sleep(every)
            with contextlib.suppress(RuntimeError, aiohttp.ClientError):
                await self.call("PATCH", path, {"spec": {"renewTime": now_micro()}}, MERGE_PATCH)

    def on_pod(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        if meta.get("deletionTimestamp"):
            if uid not in self.deleted:
                self.deleted.add(uid)
                self.spawn(self.delete(meta["namespace"], meta["name"], uid))
        elif uid not in self.patched and (pod.get("status") or {}).get("phase") in (None, "Pending"):
            self.patched.add(uid)
            self.spawn(self.set_running(pod))

    def spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            print(f"zero-logic: {task.exception()}", file=sys.stderr, flush=True)

    async def set_running(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status"
        await self.call("PATCH", path, running_status(pod, self.ip), MERGE_PATCH)

    async def delete(self, namespace: str, name: str, uid: str) -> None:
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0}
        body["preconditions"] = {"uid": uid}
        try:
            await self.call("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}", body)
        except RuntimeError as error:
            if ": 404 " not in str(error) and ": 409 " not in str(error):  # already gone
                raise

    async def watch_pods(self) -> None:
        selector = quote(f"spec.nodeName={self.node}")
        version = ""
        while True:
            if not version:
                listing = await self.call("GET", f"/api/v1/pods?fieldSelector={selector}")
                for pod in listing.get("items") or ():
                    self.on_pod(pod)
                version = listing["metadata"]["resourceVersion"]
            path = (
                f"/api/v1/pods?fieldSelector={selector}&watch=1&resourceVersion={version}"
                "&allowWatchBookmarks=true&timeoutSeconds=600"
            )
            async with self.session.get(self.server + path, headers={"Accept": "application/json"}) as r:
                r.raise_for_status()
                async for line in r.content:
                    event = json.loads(line)
                    obj = event["object"]
                    if event["type"] == "ERROR":  # e.g. 410 Gone: list again
                        version = ""
                        break
                    version = obj["metadata"].get("resourceVersion", version)
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self.on_pod(obj)


async def run(args: argparse.Namespace) -> None:
    context = ssl.create_default_context(cafile=args.ca)
    context.load_cert_chain(args.cert, args.key)
    # Each node's pod watch holds a connection for good; with one node it shares the limit, as
    # before, and every further node brings its own.
    connector = aiohttp.TCPConnector(ssl=context, limit=args.connections + len(args.node) - 1)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, read_bufsize=1 << 20) as session:
        server = args.server.rstrip("/")
        kubelets = [ZeroKubelet(session, server, node=node, ip=args.ip) for node in args.node]
        await asyncio.gather(*(kubelet.register(args.capacity_pods) for kubelet in kubelets))
        print("ready", flush=True)
        loop_tasks = [asyncio.create_task(k.keep_lease()) for k in kubelets]
        loop_tasks += [asyncio.create_task(k.watch_pods()) for k in kubelets]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        stopped = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stopped, *loop_tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in [stopped, *loop_tasks, *(t for k in kubelets for t in k.tasks)]:
            task.cancel()
        for task in done:  # a loop that ended on an error: report it
            if task is not stopped and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/zero_logic.py", description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True, help="API server URL")
    parser.add_argument("--ca", required=True, help="CA of the API server's serving certificate")
    parser.add_argument("--cert", required=True, help="client certificate (the admin's)")
    parser.add_argument("--key", required=True, help="client key")
    parser.add_argument(
        "--node",
        required=True,
        type=lambda s: [n for n in s.split(",") if n],
        help="Node name, or a comma list: one zero-logic kubelet per node, in this one process",
    )
    parser.add_argument("--ip", default="127.0.0.1", help="host and pod IP written to the statuses")
    parser.add_argument("--capacity-pods", type=int, default=10000)
    parser.add_argument("--connections", type=int, default=64, help="requests in flight at most")
    args = parser.parse_args(argv)
    if not args.node:
        parser.error("--node: no node name")
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
