"""exec, attach and port-forward on a real aiohttp server: SPDY/3.1 driven by a client built on
our own framer, and WebSocket driven by aiohttp's client (v4, v4 base64, v5, port-forward)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import struct
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from tests.fakes.streams import StreamingProvider
from vkubelet.adapters.kubeletapi import spdy
from vkubelet.adapters.kubeletapi.remotecommand import StreamTimeouts
from vkubelet.adapters.kubeletapi.server import KubeletServer
from vkubelet.application.kubelet_api import KubeletApi
from vkubelet.domain.pod import Pod

NODE = "vk-0"
UID = "uid-1"
DEADLINE = 10.0
POD = Pod.from_manifest(
    {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"namespace": "ns", "name": "p", "uid": UID},
        "spec": {"nodeName": NODE, "containers": [{"name": "c0", "image": "busybox"}]},
    }
)


@pytest.fixture
def provider() -> StreamingProvider:
    return StreamingProvider()


@pytest.fixture
async def server(provider: StreamingProvider) -> AsyncIterator[KubeletServer]:
    api = KubeletApi(provider=provider, node_pods=lambda: [POD], node_name=NODE)  # type: ignore[arg-type]
    srv = KubeletServer(
        api,
        listen_host="127.0.0.1",
        listen_port=0,
        ssl_context=None,
        stream_timeouts=StreamTimeouts(creation=1.0, idle=60.0),
    )
    await srv.start()
    yield srv
    await srv.stop()


# -- a SPDY client on our own framer --------------------------------------------------------------
class _WriterSink:
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


@dataclass
class SpdyClient:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    session: spdy.SpdySession | None = None
    writer: asyncio.StreamWriter | None = None
    pump: asyncio.Task[None] | None = field(default=None, repr=False)

    def open(self, kind: str, **extra: str) -> spdy.SpdyStream:
        assert self.session is not None
        return self.session.open_stream((("streamtype", kind), *extra.items()))


async def spdy_connect(port: int, path: str, protocols: Sequence[str]) -> SpdyClient:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Connection: Upgrade",
        "Upgrade: SPDY/3.1",
        "Content-Length: 0",
        *(f"X-Stream-Protocol-Version: {p}" for p in protocols),
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = {}
    for line in header_lines:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    status = int(status_line.split()[1])
    if status != 101:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        writer.close()
        return SpdyClient(status, headers, body)
    session = spdy.SpdySession(_WriterSink(writer), is_server=False)

    async def pump() -> None:
        try:
            while data := await reader.read(65536):
                session.feed(data)
        finally:
            session.connection_lost()

    return SpdyClient(status, headers, session=session, writer=writer, pump=asyncio.create_task(pump()))


async def read_all(stream: spdy.SpdyStream) -> bytes:
    out = bytearray()
    async with asyncio.timeout(DEADLINE):
        while chunk := await stream.read():
            out += chunk
    return bytes(out)


def exec_path(query: str, prefix: str = "/exec") -> str:
    return f"{prefix}/ns/p/c0?{query}"


# -- SPDY exec ------------------------------------------------------------------------------------
async def test_spdy_exec_echoes_stdin_writes_stderr_and_reports_exit_code_7(
    server: KubeletServer, provider: StreamingProvider
) -> None:
    client = await spdy_connect(
        server.port,
        exec_path("command=echo&input=1&output=1&error=1"),
        ["v2.channel.k8s.io", "channel.k8s.io", "v4.channel.k8s.io"],
    )
    assert client.status == 101
    # Our best supported protocol wins, not the client's first choice (upstream bug 6).
    assert client.headers["x-stream-protocol-version"] == "v4.channel.k8s.io"
    error, stdin, stdout, stderr = (client.open(k) for k in ("error", "stdin", "stdout", "stderr"))
    for stream in (error, stdin, stdout, stderr):
        async with asyncio.timeout(DEADLINE):
            await stream.wait_replied()
    await stdin.write(b"hello ")
    await stdin.write(b"world\n")
    stdin.close()
    assert await read_all(stdout) == b"hello world\n"
    assert await read_all(stderr) == b"done\n"
    status = json.loads(await read_all(error))
    assert status["status"] == "Failure"
    assert status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "7"}]
    assert provider.targets == [(POD.ref, "c0")]
    assert client.session is not None
    async with asyncio.timeout(DEADLINE):
        await client.session.wait_closed()


async def test_spdy_exec_large_output_is_not_stalled_by_flow_control(server: KubeletServer) -> None:
    client = await spdy_connect(server.port, exec_path("command=big&output=1"), ["v4.channel.k8s.io"])
    error, stdout = client.open("error"), client.open("stdout")
    assert len(await read_all(stdout)) == 300_000
    assert json.loads(await read_all(error))["status"] == "Success"


async def test_spdy_tty_forwards_resize_and_folds_stderr_into_stdout(
    server: KubeletServer, provider: StreamingProvider
) -> None:
    # tty with stderr requested: the kubelet drops stderr instead of answering 400 (bug 6).
    client = await spdy_connect(
        server.port, exec_path("command=resize&output=1&error=1&tty=1"), ["v5.channel.k8s.io"]
    )
    assert client.status == 101
    assert client.headers["x-stream-protocol-version"] == "v5.channel.k8s.io"
    error, stdout, resize = client.open("error"), client.open("stdout"), client.open("resize")
    await resize.write(b'{"Width":132,"Height":43}\n')
    assert await read_all(stdout) == b"132x43\non the tty\n"
    assert json.loads(await read_all(error))["status"] == "Success"
    assert provider.io == [(False, True, False, True)]


async def test_spdy_v1_reports_failures_as_plain_text(server: KubeletServer) -> None:
    client = await spdy_connect(
        server.port, exec_path("command=echo-once&input=1&output=1"), ["channel.k8s.io"]
    )
    error, stdin, stdout = client.open("error"), client.open("stdin"), client.open("stdout")
    await stdin.write(b"x")
    assert await read_all(stdout) == b"x"
    message = (await read_all(error)).decode()
    assert message.startswith("command terminated with non-zero exit code")
    assert "exit code 7" in message


async def test_spdy_provider_error_becomes_an_internal_error_status(server: KubeletServer) -> None:
    client = await spdy_connect(server.port, exec_path("command=fail&output=1"), ["v4.channel.k8s.io"])
    error, _stdout = client.open("error"), client.open("stdout")
    status = json.loads(await read_all(error))
    assert status["reason"] == "InternalError"
    assert "error executing command in container: boom" in status["message"]


async def test_spdy_attach(server: KubeletServer) -> None:
    client = await spdy_connect(server.port, "/attach/ns/p/" + UID + "/c0?output=1", ["v4.channel.k8s.io"])
    assert client.status == 101
    error, stdout = client.open("error"), client.open("stdout")
    assert await read_all(stdout) == b"attached\n"
    assert json.loads(await read_all(error))["status"] == "Success"


async def test_spdy_unknown_protocol_is_refused_with_the_accepted_list(server: KubeletServer) -> None:
    client = await spdy_connect(server.port, exec_path("command=echo&output=1"), ["v9.channel.k8s.io"])
    assert client.status == 403
    assert "v4.channel.k8s.io" in client.headers["x-accepted-stream-protocol-versions"]


async def test_spdy_streams_not_created_in_time_end_the_session(server: KubeletServer) -> None:
    client = await spdy_connect(
        server.port, exec_path("command=echo&input=1&output=1"), ["v4.channel.k8s.io"]
    )
    error = client.open("error")  # stdin and stdout never come; creation timeout is 1 s
    assert b"timed out waiting for client to create streams" in await read_all(error)
    assert client.session is not None
    async with asyncio.timeout(DEADLINE):
        await client.session.wait_closed()


async def test_client_disconnect_cancels_the_provider(
    server: KubeletServer, provider: StreamingProvider
) -> None:
    client = await spdy_connect(server.port, exec_path("command=hang&output=1"), ["v4.channel.k8s.io"])
    client.open("error")
    client.open("stdout")
    async with asyncio.timeout(DEADLINE):
        await provider.started.wait()
    assert client.writer is not None
    client.writer.close()
    async with asyncio.timeout(DEADLINE):
        await provider.cancelled.wait()


async def test_malformed_frames_close_the_connection_and_the_server_stays_up(server: KubeletServer) -> None:
    client = await spdy_connect(server.port, exec_path("command=echo&output=1"), ["v4.channel.k8s.io"])
    assert client.writer is not None and client.session is not None
    # A control frame of SPDY version 2: a session error.
    client.writer.write(struct.pack(">HHI", 0x8002, 1, 10) + b"\x00" * 10)
    async with asyncio.timeout(DEADLINE):
        await client.session.wait_closed()
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{server.port}/healthz") as response,
    ):
        assert response.status == 200


@pytest.mark.parametrize(
    ("path", "status"),
    [
        (exec_path("command=echo"), 400),  # no stream requested
        (exec_path("output=1"), 400),  # exec without a command
        ("/exec/ns/nope/c0?command=x&output=1", 404),
        ("/exec/ns/p/other-uid/c0?command=x&output=1", 404),
        ("/exec/ns/p/c9?command=x&output=1", 400),
    ],
)
async def test_requests_rejected_before_the_upgrade(server: KubeletServer, path: str, status: int) -> None:
    client = await spdy_connect(server.port, path, ["v4.channel.k8s.io"])
    assert client.status == status


async def test_missing_capability_answers_501_before_upgrading() -> None:
    api = KubeletApi(provider=StreamingProvider(frozenset()), node_pods=lambda: [POD], node_name=NODE)  # type: ignore[arg-type]
    srv = KubeletServer(api, listen_host="127.0.0.1", listen_port=0, ssl_context=None)
    await srv.start()
    try:
        for path in (exec_path("command=x&output=1"), "/attach/ns/p/c0?output=1", "/portForward/ns/p"):
            client = await spdy_connect(srv.port, path, ["v4.channel.k8s.io", "portforward.k8s.io"])
            assert client.status == 501, path
            assert b"capability" in client.body
    finally:
        await srv.stop()


# -- SPDY port-forward ----------------------------------------------------------------------------
async def test_spdy_port_forward_echoes_over_paired_streams(server: KubeletServer) -> None:
    client = await spdy_connect(server.port, "/portForward/ns/p", ["portforward.k8s.io"])
    assert client.status == 101
    assert client.headers["x-stream-protocol-version"] == "portforward.k8s.io"
    pairs = []
    for request_id, port in (("0", "80"), ("1", "8080")):
        error = client.open("error", port=port, requestid=request_id)
        data = client.open("data", port=port, requestid=request_id)
        pairs.append((error, data))
    for (_error, data), expected in zip(pairs, (b"80:ping", b"8080:ping"), strict=True):
        await data.write(b"ping")
        async with asyncio.timeout(DEADLINE):
            assert await data.read() == expected
        data.close()
        assert await read_all(data) == b""
    for error, _data in pairs:
        assert await read_all(error) == b""


async def test_spdy_port_forward_reports_provider_errors_and_cancels_on_disconnect(
    server: KubeletServer, provider: StreamingProvider
) -> None:
    client = await spdy_connect(server.port, "/portForward/ns/p", ["portforward.k8s.io"])
    error = client.open("error", port="1", requestid="7")
    client.open("data", port="1", requestid="7")
    assert b"error forwarding port 1 to pod ns/p" in await read_all(error)
    # A running forward is cancelled when the client goes away (upstream's never was).
    client.open("error", port="80", requestid="8")
    data = client.open("data", port="80", requestid="8")
    await data.write(b"x")
    async with asyncio.timeout(DEADLINE):
        assert await data.read() == b"80:x"
    assert client.writer is not None
    client.writer.close()
    async with asyncio.timeout(DEADLINE):
        await provider.forward_cancelled.wait()


# -- WebSocket ------------------------------------------------------------------------------------
async def ws_messages(ws: aiohttp.ClientWebSocketResponse) -> list[Any]:
    out = []
    async with asyncio.timeout(DEADLINE):
        async for msg in ws:
            out.append(msg.data)
    return out


def by_channel(messages: list[bytes]) -> dict[int, bytes]:
    channels: dict[int, bytes] = {}
    for message in messages:
        channels[message[0]] = channels.get(message[0], b"") + message[1:]
    return channels


async def test_websocket_v4_exec(server: KubeletServer) -> None:
    url = f"http://127.0.0.1:{server.port}" + exec_path("command=echo-once&input=1&output=1&error=1")
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(url, protocols=["channel.k8s.io", "v4.channel.k8s.io"]) as ws,
    ):
        assert ws.protocol == "v4.channel.k8s.io"
        await ws.send_bytes(b"\x00hi there")
        channels = by_channel(await ws_messages(ws))
    assert channels[1] == b"hi there"
    assert channels[2] == b"done\n"
    status = json.loads(channels[3])
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "7"}]


async def test_websocket_v4_base64_exec(server: KubeletServer) -> None:
    url = f"http://127.0.0.1:{server.port}" + exec_path("command=echo-once&input=1&output=1")
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(url, protocols=["v4.base64.channel.k8s.io"]) as ws,
    ):
        await ws.send_str("0" + base64.b64encode(b"b64 data").decode())
        messages = await ws_messages(ws)
    assert all(isinstance(m, str) for m in messages)
    channels: dict[str, bytes] = {}
    for message in messages:
        channels[message[0]] = channels.get(message[0], b"") + base64.b64decode(message[1:])
    assert channels["1"] == b"b64 data"
    assert json.loads(channels["3"])["reason"] == "NonZeroExitCode"


async def test_websocket_v5_exec_with_stdin_close_message(server: KubeletServer) -> None:
    url = f"http://127.0.0.1:{server.port}" + exec_path("command=echo&input=1&output=1&error=1")
    async with aiohttp.ClientSession() as http, http.ws_connect(url, protocols=["v5.channel.k8s.io"]) as ws:
        await ws.send_bytes(b"\x00one ")
        await ws.send_bytes(b"\x00two")
        await ws.send_bytes(b"\xff\x00")  # v5: stdin is closed
        channels = by_channel(await ws_messages(ws))
    assert channels[1] == b"one two"
    assert json.loads(channels[3])["details"]["causes"][0]["message"] == "7"


async def test_websocket_tty_resize(server: KubeletServer) -> None:
    url = f"http://127.0.0.1:{server.port}" + exec_path("command=resize&output=1&tty=1")
    async with aiohttp.ClientSession() as http, http.ws_connect(url, protocols=["v5.channel.k8s.io"]) as ws:
        await ws.send_bytes(b'\x04{"Width":100,"Height":30}')
        channels = by_channel(await ws_messages(ws))
    assert channels[1] == b"100x30\non the tty\n"
    assert json.loads(channels[3])["status"] == "Success"


async def test_websocket_malformed_message_closes_with_protocol_error(server: KubeletServer) -> None:
    url = f"http://127.0.0.1:{server.port}" + exec_path("command=hang&input=1&output=1")
    async with aiohttp.ClientSession() as http, http.ws_connect(url, protocols=["v5.channel.k8s.io"]) as ws:
        await ws.send_bytes(b"")  # no channel byte
        await ws_messages(ws)
        assert ws.close_code == aiohttp.WSCloseCode.PROTOCOL_ERROR
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{server.port}/healthz") as r:
        assert r.status == 200


async def test_websocket_port_forward_echo(server: KubeletServer) -> None:
    url = f"http://127.0.0.1:{server.port}/portForward/ns/p?port=80&port=1"
    async with aiohttp.ClientSession() as http, http.ws_connect(url, protocols=["v4.channel.k8s.io"]) as ws:
        prefixes: dict[int, int] = {}
        errors = b""
        reply = b""
        async with asyncio.timeout(DEADLINE):
            while len(prefixes) < 4 or not reply or not errors:
                message = await ws.receive_bytes()
                channel, data = message[0], message[1:]
                if channel not in prefixes:
                    prefixes[channel] = struct.unpack("<H", data)[0]
                    if channel == 0:
                        await ws.send_bytes(b"\x00hello")
                elif channel == 0:
                    reply += data
                elif channel == 3:
                    errors += data
    assert prefixes == {0: 80, 1: 80, 2: 1, 3: 1}
    assert reply == b"80:hello"
    assert b"error forwarding port 1" in errors


async def test_port_forward_spdy_tunnelled_in_a_websocket(server: KubeletServer) -> None:
    url = f"http://127.0.0.1:{server.port}/portForward/ns/p"
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(url, protocols=["SPDY/3.1+portforward.k8s.io"]) as ws,
    ):
        assert ws.protocol == "SPDY/3.1+portforward.k8s.io"
        outgoing: asyncio.Queue[bytes] = asyncio.Queue()

        class Sink:
            def write(self, data: bytes) -> None:
                outgoing.put_nowait(data)

            async def drain(self) -> None:
                return None

            def close(self) -> None:
                return None

        session = spdy.SpdySession(Sink(), is_server=False)

        async def pump_out() -> None:
            while True:
                await ws.send_bytes(await outgoing.get())

        async def pump_in() -> None:
            async for message in ws:
                session.feed(message.data)

        tasks = [asyncio.create_task(pump_out()), asyncio.create_task(pump_in())]
        try:
            error = session.open_stream((("streamtype", "error"), ("port", "80"), ("requestid", "0")))
            data = session.open_stream((("streamtype", "data"), ("port", "80"), ("requestid", "0")))
            await data.write(b"tunnel")
            async with asyncio.timeout(DEADLINE):
                assert await data.read() == b"80:tunnel"
            data.close()
            assert await read_all(data) == b""
            assert await read_all(error) == b""
        finally:
            for task in tasks:
                task.cancel()


async def test_idle_sessions_are_closed_and_their_provider_calls_cancelled(
    provider: StreamingProvider,
) -> None:
    api = KubeletApi(provider=provider, node_pods=lambda: [POD], node_name=NODE)  # type: ignore[arg-type]
    srv = KubeletServer(
        api,
        listen_host="127.0.0.1",
        listen_port=0,
        ssl_context=None,
        stream_timeouts=StreamTimeouts(creation=5.0, idle=0.3),
    )
    await srv.start()
    try:
        client = await spdy_connect(srv.port, exec_path("command=hang&output=1"), ["v4.channel.k8s.io"])
        client.open("error")
        client.open("stdout")
        assert client.session is not None
        async with asyncio.timeout(DEADLINE):
            await provider.started.wait()
            await client.session.wait_closed()
            await provider.cancelled.wait()
        url = f"http://127.0.0.1:{srv.port}" + exec_path("command=hang&output=1")
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(url, protocols=["v5.channel.k8s.io"]) as ws,
        ):
            await ws_messages(ws)  # ends when the server closes the idle socket
    finally:
        await srv.stop()
