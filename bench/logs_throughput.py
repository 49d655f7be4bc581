"""``/containerLogs`` streaming throughput of the kubelet API, in MB/s.

    .venv/bin/python bench/logs_throughput.py --mib 256 --rounds 3

An in-process provider produces ``--mib`` MiB of log data in chunks of ``--chunk`` bytes (one
preallocated buffer, so the provider costs next to nothing); the real aiohttp kubelet API
serves it and ``curl`` in its own process reads it (``-o /dev/null``), so the figure is what one
stream through vkubelet's HTTP layer sustains. Two setups:

* ``https+auth``: as deployed — TLS with a generated serving certificate, a client certificate
  verified against the client CA by the auth middleware, the SubjectAccessReview answered by an
  in-process allow-all reviewer (cached after the first request, as in production);
* ``http``: plain HTTP without middleware, the HTTP layer alone.

Results: one line per setup and chunk size (median of ``--rounds``), and with ``--json`` the raw
runs. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from vkubelet.adapters import certs
from vkubelet.adapters.kubeletapi.auth import AuthMiddleware, ClientCa
from vkubelet.adapters.kubeletapi.server import KubeletServer
from vkubelet.adapters.kubeletapi.tls import server_tls
from vkubelet.adapters.mock.provider import MockProvider
from vkubelet.adapters.system import SystemClock
from vkubelet.application.kubelet_api import KubeletApi
from vkubelet.application.kubelet_auth import auth_policy, cached_auth
from vkubelet.application.ports.streams import LogOptions
from vkubelet.domain.auth import AccessRequest, Decision, UserInfo
from vkubelet.domain.pod import Pod, PodRef
from vkubelet.domain.provider import Capability

NODE = "vk-bench"
MIB = 1024 * 1024


class ChattyProvider(MockProvider):
    """The mock provider plus logs: ``total`` bytes of one repeated chunk."""

    def __init__(self, *, chunk: int, total: int) -> None:
        super().__init__(node_name=NODE)
        self._buffer = (b"x" * (chunk - 1) + b"\n")[:chunk]
        self._count = max(1, total // chunk)

    async def container_logs(self, ref: PodRef, container: str, options: LogOptions) -> AsyncIterator[bytes]:
        buffer = self._buffer
        for _ in range(self._count):
            yield buffer

    def capabilities(self) -> frozenset[Capability]:
        return super().capabilities() | {Capability.LOGS}


class AllowAll:
    async def authenticate_token(self, token: str) -> UserInfo | None:
        return None

    async def authorize(self, request: AccessRequest) -> Decision:
        return Decision(allowed=True)


def bench_pod() -> Pod:
    return Pod.from_manifest(
        {
            "metadata": {"namespace": "bench", "name": "chatty", "uid": "u-bench"},
            "spec": {"nodeName": NODE, "containers": [{"name": "app"}]},
        }
    )


async def one_run(*, secure: bool, chunk: int, total: int, pki: Path) -> dict[str, float | int | str]:
    provider = ChattyProvider(chunk=chunk, total=total)
    pods = [bench_pod()]
    api = KubeletApi(provider=provider, node_pods=lambda: pods, node_name=NODE)
    ca_file = pki / "client-ca.crt"
    tls = server_tls(node_name=NODE, node_ip="127.0.0.1", client_ca_file=str(ca_file)) if secure else None
    middlewares = []
    if tls is not None:
        clock = SystemClock()
        policy = auth_policy(client_ca=True, token_webhook=False, anonymous=False)
        auth = cached_auth(
            policy=policy,
            node_name=NODE,
            clock=clock,
            authenticator=AllowAll(),
            authorizer=AllowAll(),
            token_ttl=120,
            allowed_ttl=300,
            denied_ttl=30,
        )
        client_ca = ClientCa(ca_file, clock=clock, ssl_context=tls.context)
        middlewares.append(AuthMiddleware(auth, client_ca=client_ca))
    server = KubeletServer(
        api,
        listen_host="127.0.0.1",
        listen_port=0,
        ssl_context=tls.context if tls else None,
        middlewares=middlewares,
    )
    await server.start()
    scheme = "https" if secure else "http"
    url = f"{scheme}://127.0.0.1:{server.port}/containerLogs/bench/chatty/app"
    command = ["curl", "-sS", "--fail", "-o", "/dev/null", "-w", "%{size_download} %{time_total}"]
    if secure:
        command += ["-k", "--cert", str(pki / "client.crt"), "--key", str(pki / "client.key")]
    try:
        started = time.perf_counter()
        process = await asyncio.create_subprocess_exec(*command, url, stdout=subprocess.PIPE)
        out, _ = await process.communicate()
        wall = time.perf_counter() - started
    finally:
        await server.stop()
    if process.returncode != 0:
        raise RuntimeError(f"curl exited with {process.returncode}")
    size, seconds = out.decode().split()
    received = int(size)
    if received != provider._count * chunk:
        raise RuntimeError(f"received {received} bytes, expected {provider._count * chunk}")
    return {
        "setup": "https+auth" if secure else "http",
        "chunk": chunk,
        "bytes": received,
        "seconds": float(seconds),
        "wall": wall,
        "mb_per_s": received / float(seconds) / 1e6,
    }


async def main_async(args: argparse.Namespace) -> list[dict[str, float | int | str]]:
    with tempfile.TemporaryDirectory(prefix="vk-bench-") as directory:
        pki = Path(directory)
        ca = certs.new_ca("bench-client-ca")
        client = certs.issue(
            ca, common_name="kube-apiserver-kubelet-client", organizations=["system:masters"], client=True
        )
        (pki / "client-ca.crt").write_bytes(ca.cert_pem)
        (pki / "client.crt").write_bytes(client.cert_pem)
        (pki / "client.key").write_bytes(client.key_pem)
        runs: list[dict[str, float | int | str]] = []
        for chunk in args.chunk:
            for secure in (True, False):
                results = [
                    await one_run(secure=secure, chunk=chunk, total=args.mib * MIB, pki=pki)
                    for _ in range(args.rounds)
                ]
                runs.extend(results)
                median = statistics.median(float(r["mb_per_s"]) for r in results)
                spread = ", ".join(f"{float(r['mb_per_s']):.0f}" for r in results)
                print(f"{results[0]['setup']:<11} chunk {chunk:>6} B: {median:7.1f} MB/s (runs: {spread})")
        return runs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mib", type=int, default=256, help="MiB per stream (default 256)")
    parser.add_argument("--chunk", type=int, action="append", help="chunk size in bytes (repeatable)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="write every run as JSON lines here")
    args = parser.parse_args()
    args.chunk = args.chunk or [4096, 65536]
    logging.getLogger("vkubelet").setLevel(logging.ERROR)  # the self-signed certificate notice
    runs = asyncio.run(main_async(args))
    if args.json:
        Path(args.json).write_text("\n".join(json.dumps(r) for r in runs) + "\n")


if __name__ == "__main__":
    main()
