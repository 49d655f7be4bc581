"""CPU per pod status patch: vkubelet's Kubernetes client against a bare aiohttp client.

The 5,000-pod profile put 24 % of the daemon's busy time under the HTTP/TLS stack of the status
patch. This measures that stack alone, in one process, on a fresh local control plane: both
clients patch the status of the same pods (bound to a node nobody serves), ``--concurrency`` in
flight, no rate limit, and report patches/s and this process's CPU microseconds per patch
(``time.process_time``; the API server's CPU is not counted). Rounds alternate the order.

    .venv/bin/python bench/client_stack.py --patches 5000 --rounds 3

``kubeclient`` is ``vkubelet.adapters.kubernetes.client.create_client`` (qps 0) calling
``KubeClient.request``, i.e. what ``KubernetesPodGateway.patch_pod_status`` sends; ``aiohttp`` is
one ``aiohttp.ClientSession`` with the admin certificate, the response read and decoded.
This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from vkubelet.adapters.kubernetes.client import MERGE_PATCH, create_client
from vkubelet.entrypoints.localcluster.cluster import LocalCluster

NAMESPACE = "default"
Patch = Callable[[str, dict[str, Any]], Awaitable[object]]


def status_patch(round_no: int, index: int) -> dict[str, Any]:
    return {
        "status": {
            "phase": "Running",
            "podIP": f"10.{round_no % 250}.{index // 250}.{index % 250}",
            "conditions": [{"type": "Ready", "status": "True"}],
        }
    }


async def drive(
    patch: Patch, *, pods: int, patches: int, concurrency: int, round_no: int
) -> dict[str, float]:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(patches):
        queue.put_nowait(index)

    async def worker() -> None:
        while not queue.empty():
            index = queue.get_nowait()
            name = f"stack-{index % pods}"
            await patch(f"/api/v1/namespaces/{NAMESPACE}/pods/{name}/status", status_patch(round_no, index))

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"patches_per_s": patches / wall, "cpu_us_per_patch": cpu / patches * 1e6}


async def bench(cluster: LocalCluster, args: argparse.Namespace) -> dict[str, list[dict[str, float]]]:
    kube = create_client(str(cluster.kubeconfig_path), qps=0, max_connections=args.concurrency)
    ssl_context = __import__("ssl").create_default_context(cafile=str(cluster.ca_cert_path))
    admin = cluster.issue_client_certificate("bench-admin", ["system:masters"])
    cert_dir = cluster.work_dir / "bench"
    cert_dir.mkdir(exist_ok=True)
    (cert_dir / "admin.crt").write_bytes(admin.cert_pem)
    (cert_dir / "admin.key").write_bytes(admin.key_pem)
    ssl_context.load_cert_chain(cert_dir / "admin.crt", cert_dir / "admin.key")
    session = aiohttp.ClientSession(
        base_url=cluster.server_url,
        connector=aiohttp.TCPConnector(ssl=ssl_context, limit=args.concurrency),
    )
    try:
        for index in range(args.pods):
            body = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"stack-{index}"},
                "spec": {"nodeName": "nobody", "containers": [{"name": "c", "image": "busybox"}]},
            }
            await kube.request("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", what="create", body=body)

        async def with_kubeclient(path: str, body: dict[str, Any]) -> object:
            return await kube.request("PATCH", path, what="patch", body=body, content_type=MERGE_PATCH)

        async def with_aiohttp(path: str, body: dict[str, Any]) -> object:
            data = json.dumps(body, separators=(",", ":")).encode()
            async with session.patch(path, data=data, headers={"Content-Type": MERGE_PATCH}) as response:
                response.raise_for_status()
                return json.loads(await response.read())

        stacks: dict[str, Patch] = {"kubeclient": with_kubeclient, "aiohttp": with_aiohttp}
        results: dict[str, list[dict[str, float]]] = {name: [] for name in stacks}
        names = list(stacks)
        for round_no in range(1, args.rounds + 1):
            for name in names if round_no % 2 else reversed(names):
                result = await drive(
                    stacks[name],
                    pods=args.pods,
                    patches=args.patches,
                    concurrency=args.concurrency,
                    round_no=round_no,
                )
                results[name].append(result)
                print(f"round {round_no} {name}: {json.dumps(result)}", file=sys.stderr, flush=True)
        return results
    finally:
        await session.close()
        await kube.close()


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench/client_stack.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=500)
    parser.add_argument("--patches", type=int, default=5000, help="patches per stack per round")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with LocalCluster() as cluster:
        results = asyncio.run(bench(cluster, args))
    print("| stack | patches/s (median) | client CPU µs per patch (median) | rounds |")
    print("|---|---|---|---|")
    for name, runs in results.items():
        rate = statistics.median(r["patches_per_s"] for r in runs)
        cpu = statistics.median(r["cpu_us_per_patch"] for r in runs)
        per_round = ", ".join(f"{r['cpu_us_per_patch']:.0f}" for r in runs)
        print(f"| {name} | {rate:.0f} | {cpu:.0f} ({per_round}) | {len(runs)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
