"""Exec round-trip latency through the kubelet API: SPDY/3.1 and WebSocket v5.channel.k8s.io.

    .venv/bin/python bench/exec_latency.py --round-trips 2000 --sessions 50

An in-process provider echoes stdin to stdout; the real aiohttp kubelet API serves it on
loopback (plain HTTP: this measures the streaming layers, not TLS). Two figures per transport:

* round trip: one ``--size``-byte stdin write until its echo is read back on stdout, in one
  long-lived session (p50/p90/p99 over ``--round-trips``);
* session: connect, upgrade, open the streams, one echo, and the exit status read (p50 over
  ``--sessions``), i.e. what a short ``kubectl exec`` pays on the kubelet side.

The SPDY client is this repository's own framer; the WebSocket client is aiohttp's. Both run in
the same process and loop as the server, so the numbers include both ends' Python cost. A
benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import statistics
import time
from collections.abc import Sequence

import aiohttp

from vkubelet.adapters.kubeletapi import spdy
from vkubelet.adapters.kubeletapi.server import KubeletServer
from vkubelet.application.kubelet_api import KubeletApi
from vkubelet.application.ports.streams import StreamIO
from vkubelet.domain.pod import Pod, PodRef
from vkubelet.domain.provider import Capability

POD = Pod.from_manifest(
    {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"namespace": "bench", "name": "echo", "uid": "u"},
        "spec": {"nodeName": "bench", "containers": [{"name": "c"}]},
    }
)
PATH = "/exec/bench/echo/c?command=cat&input=1&output=1"


class EchoProvider:
    def capabilities(self) -> frozenset[Capability]:
        return frozenset({Capability.EXEC})

    def native_volume_kinds(self) -> frozenset[str]:
        return frozenset()

    async def exec_in_container(
        self, ref: PodRef, container: str, command: Sequence[str], io: StreamIO
    ) -> int:
        while chunk := await io.read_stdin():
            await io.write_stdout(chunk)
        return 0


class _Sink:
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    def write(self, data: bytes) -> None:
        if not self._writer.is_closing():
            self._writer.write(data)

    async def drain(self) -> None:
        with contextlib.suppress(ConnectionError):
            await self._writer.drain()

    def close(self) -> None:
        self._writer.close()


async def spdy_session(port: int) -> tuple[spdy.SpdySession, asyncio.Task[None]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        (
            f"POST {PATH} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
            "X-Stream-Protocol-Version: v4.channel.k8s.io\r\nContent-Length: 0\r\n\r\n"
        ).encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert b" 101 " in head.split(b"\r\n")[0], head
    session = spdy.SpdySession(_Sink(writer), is_server=False)

    async def pump() -> None:
        try:
            while data := await reader.read(65536):
                session.feed(data)
        finally:
            session.connection_lost()

    return session, asyncio.create_task(pump())


async def read_exactly(stream: spdy.SpdyStream, size: int) -> None:
    got = 0
    while got < size:
        chunk = await stream.read()
        if not chunk:
            raise ConnectionError("stream ended early")
        got += len(chunk)


async def spdy_round_trips(port: int, count: int, payload: bytes) -> list[float]:
    session, pump = await spdy_session(port)
    error = session.open_stream((("streamtype", "error"),))
    stdin = session.open_stream((("streamtype", "stdin"),))
    stdout = session.open_stream((("streamtype", "stdout"),))
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        await stdin.write(payload)
        await read_exactly(stdout, len(payload))
        samples.append(time.perf_counter() - start)
    stdin.close()
    while await error.read():
        pass
    pump.cancel()
    return samples


async def spdy_one_session(port: int, payload: bytes) -> float:
    start = time.perf_counter()
    session, pump = await spdy_session(port)
    error = session.open_stream((("streamtype", "error"),))
    stdin = session.open_stream((("streamtype", "stdin"),))
    stdout = session.open_stream((("streamtype", "stdout"),))
    await stdin.write(payload)
    await read_exactly(stdout, len(payload))
    stdin.close()
    status = b""
    while chunk := await error.read():
        status += chunk
    assert b"Success" in status, status
    elapsed = time.perf_counter() - start
    pump.cancel()
    return elapsed


async def ws_round_trips(http: aiohttp.ClientSession, port: int, count: int, payload: bytes) -> list[float]:
    samples = []
    async with http.ws_connect(f"http://127.0.0.1:{port}{PATH}", protocols=["v5.channel.k8s.io"]) as ws:
        await ws.receive_bytes()  # the readiness message
        for _ in range(count):
            start = time.perf_counter()
            await ws.send_bytes(b"\x00" + payload)
            got = 0
            while got < len(payload):
                got += len(await ws.receive_bytes()) - 1
            samples.append(time.perf_counter() - start)
        await ws.send_bytes(b"\xff\x00")
    return samples


async def ws_one_session(http: aiohttp.ClientSession, port: int, payload: bytes) -> float:
    start = time.perf_counter()
    async with http.ws_connect(f"http://127.0.0.1:{port}{PATH}", protocols=["v5.channel.k8s.io"]) as ws:
        await ws.send_bytes(b"\x00" + payload)
        await ws.send_bytes(b"\xff\x00")
        async for message in ws:
            if message.data[0] == 3:
                assert b"Success" in message.data
    return time.perf_counter() - start


def _ms(values: list[float], q: float) -> str:
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.3f}"


async def main_async(args: argparse.Namespace) -> None:
    api = KubeletApi(provider=EchoProvider(), node_pods=lambda: [POD], node_name="bench")  # type: ignore[arg-type]
    server = KubeletServer(api, listen_host="127.0.0.1", listen_port=0, ssl_context=None)
    await server.start()
    payload = b"x" * args.size
    try:
        async with aiohttp.ClientSession() as http:
            await spdy_round_trips(server.port, 50, payload)  # warm-up
            await ws_round_trips(http, server.port, 50, payload)
            rows = []
            for name, trips, sessions in (
                (
                    "spdy/3.1 v4",
                    await spdy_round_trips(server.port, args.round_trips, payload),
                    [await spdy_one_session(server.port, payload) for _ in range(args.sessions)],
                ),
                (
                    "websocket v5",
                    await ws_round_trips(http, server.port, args.round_trips, payload),
                    [await ws_one_session(http, server.port, payload) for _ in range(args.sessions)],
                ),
            ):
                rows.append(
                    f"| {name} | {_ms(trips, 0.5)} | {_ms(trips, 0.9)} | {_ms(trips, 0.99)} | "
                    f"{statistics.median(sessions) * 1000:.2f} |"
                )
    finally:
        await server.stop()
    print(f"{args.size}-byte echo, {args.round_trips} round trips, {args.sessions} sessions")
    print("| transport | round trip p50 ms | p90 ms | p99 ms | whole session p50 ms |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--round-trips", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--size", type=int, default=64, help="bytes per stdin write (default 64)")
    args = parser.parse_args()
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
