"""``/portForward/{namespace}/{pod}[/{uid}]`` over SPDY/3.1 and WebSocket.

SPDY (protocol ``portforward.k8s.io``): for every forwarded connection the client opens a
``data`` and an ``error`` stream with the same ``requestid`` header and a ``port`` header (a
uint16 > 0). Without a requestid the pair is matched by stream id (error = n, data = n + 2).
Once both halves are there (within ``StreamTimeouts.creation``), the provider's
``port_forward`` runs with the data stream as its ByteStream; a provider failure is written to
the error stream. When the client goes away every running forward is cancelled (upstream ran
them under a context that was never cancelled: its bug 6).

WebSocket (``?port=N`` repeated; channels 2i data and 2i+1 error for the i-th port): each
channel starts with the port as a little-endian uint16, written by us. Upstream created no
channels at all here (bug 6).

SPDY tunnelled in a WebSocket (subprotocol ``SPDY/3.1+portforward.k8s.io``, what kubectl 1.31+
sends and a 1.36 API server passes through to nodes declaring ExtendWebSocketsToKubelet): the
SPDY session above, its bytes carried in binary messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, hdrs, web

from vkubelet.adapters.kubeletapi import spdy, wsstream
from vkubelet.adapters.kubeletapi.remotecommand import StreamTimeouts, choose_ws_protocol
from vkubelet.application.kubelet_api import KubeletApi
from vkubelet.domain.errors import InvalidInput
from vkubelet.domain.pod import PodRef
from vkubelet.domain.provider import Capability

log = logging.getLogger(__name__)

SPDY_PROTOCOL = "portforward.k8s.io"
TUNNEL_PROTOCOL = "SPDY/3.1+portforward.k8s.io"


def parse_port(value: str | None) -> int:
    """A forwarded port: a decimal uint16 greater than 0."""
    if value is None or not value.isdigit():
        raise InvalidInput(f"invalid port {value!r}: not a number")
    port = int(value)
    if not 0 < port <= 0xFFFF:
        raise InvalidInput(f"invalid port {port}: must be 1-65535")
    return port


class SpdyByteStream:
    """A ByteStream over one SPDY data stream."""

    def __init__(self, stream: spdy.SpdyStream) -> None:
        self._stream = stream

    async def read(self) -> bytes:
        return await self._stream.read()

    async def write(self, data: bytes) -> None:
        await self._stream.write(data)

    async def close(self) -> None:
        self._stream.close()


class ChannelByteStream:
    """A ByteStream over one WebSocket data channel."""

    def __init__(self, conn: wsstream.ChannelConnection, channel: int) -> None:
        self._conn = conn
        self._channel = channel

    async def read(self) -> bytes:
        return await self._conn.read(self._channel)

    async def write(self, data: bytes) -> None:
        await self._conn.write(self._channel, data)

    async def close(self) -> None:
        return None  # a channel cannot be half-closed; the session ends with the connection


async def _forward(
    api: KubeletApi,
    ref: PodRef,
    port: int,
    stream: SpdyByteStream | ChannelByteStream,
    report: Callable[[bytes], Awaitable[None]],
) -> None:
    try:
        await api.port_forward(ref, port, stream)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.info("port-forward %s port %d failed: %s", ref, port, exc)
        message = f"error forwarding port {port} to pod {ref.namespace}/{ref.name}, uid {ref.uid}: {exc}"
        with contextlib.suppress(Exception):
            await report(message.encode())


# -- SPDY -----------------------------------------------------------------------------------------
@dataclass
class _Pair:
    data: spdy.SpdyStream | None = None
    error: spdy.SpdyStream | None = None
    expiry: asyncio.TimerHandle | None = None
    task: asyncio.Task[None] | None = field(default=None)


def _request_id(stream: spdy.SpdyStream, kind: str) -> str:
    given = stream.header("requestid")
    if given:
        return given
    return str(stream.stream_id if kind == "error" else stream.stream_id - 2)


async def _serve_spdy(
    request: web.Request, api: KubeletApi, ref: PodRef, timeouts: StreamTimeouts
) -> web.StreamResponse:
    offered = request.headers.getall("X-Stream-Protocol-Version", [])
    if offered and spdy.negotiate(offered, (SPDY_PROTOCOL,)) is None:
        raise web.HTTPForbidden(
            text=f"unable to upgrade: unable to negotiate protocol: client supports {offered}, "
            f"server supports {[SPDY_PROTOCOL]}\n",
            headers={"X-Accepted-Stream-Protocol-Versions": SPDY_PROTOCOL},
        )
    session, response = await spdy.upgrade(
        request, protocol=SPDY_PROTOCOL if offered else None, idle_timeout=timeouts.idle
    )
    await _serve_pairs(session, api, ref, timeouts)
    return response


async def _serve_pairs(
    session: spdy.SpdySession, api: KubeletApi, ref: PodRef, timeouts: StreamTimeouts
) -> None:
    """Pair the client's data/error streams and run one forward per pair until the session ends."""
    pairs: dict[str, _Pair] = {}
    loop = asyncio.get_running_loop()

    def expire(request_id: str) -> None:
        pair = pairs.pop(request_id, None)
        if pair is None or pair.task is not None:
            return
        log.info("port-forward: request %s did not get both streams in time", request_id)
        for half in (pair.data, pair.error):
            if half is not None:
                half.reset(spdy.RstStatus.CANCEL)

    try:
        while True:
            stream = await session.accept()
            if stream is None:
                break
            kind = (stream.header("streamtype") or "").lower()
            if kind not in ("data", "error"):
                stream.reset(spdy.RstStatus.PROTOCOL_ERROR)
                continue
            try:
                port = parse_port(stream.header("port"))
            except InvalidInput as exc:
                stream.reply()
                if kind == "error":
                    with contextlib.suppress(spdy.StreamReset):
                        await stream.write(str(exc).encode())
                    stream.close()
                else:
                    stream.reset(spdy.RstStatus.PROTOCOL_ERROR)
                continue
            request_id = _request_id(stream, kind)
            pair = pairs.setdefault(request_id, _Pair())
            if getattr(pair, kind) is not None:
                stream.reset(spdy.RstStatus.STREAM_IN_USE)
                continue
            stream.reply()
            setattr(pair, kind, stream)
            if pair.data is None or pair.error is None:
                if timeouts.creation > 0:
                    pair.expiry = loop.call_later(timeouts.creation, expire, request_id)
                continue
            if pair.expiry is not None:
                pair.expiry.cancel()
            pair.task = asyncio.create_task(_run_pair(api, ref, port, pair.data, pair.error))
            pair.task.add_done_callback(_forget(pairs, request_id))
    finally:
        for pair in list(pairs.values()):
            if pair.expiry is not None:
                pair.expiry.cancel()
            if pair.task is not None:
                pair.task.cancel()  # the client went away: so does the provider's forward
        tasks = [p.task for p in pairs.values() if p.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await session.close()


# -- SPDY tunnelled through a WebSocket -----------------------------------------------------------
class _WebSocketSink:
    """A FrameSink that sends the session's bytes as binary WebSocket messages, in order."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self._ws = ws
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._flushed = asyncio.Event()
        self._flushed.set()
        self._sender = asyncio.create_task(self._send_all())

    def write(self, data: bytes) -> None:
        if not self._sender.done():
            self._flushed.clear()
            self._queue.put_nowait(data)

    async def drain(self) -> None:
        if not self._sender.done():
            await self._flushed.wait()

    def close(self) -> None:
        self._queue.put_nowait(None)

    async def _send_all(self) -> None:
        try:
            while (data := await self._queue.get()) is not None:
                await self._ws.send_bytes(data)
                if self._queue.empty():
                    self._flushed.set()
        except ConnectionError:
            pass
        finally:
            self._flushed.set()
            await self._ws.close()


async def _serve_tunnelled(
    request: web.Request, api: KubeletApi, ref: PodRef, timeouts: StreamTimeouts
) -> web.StreamResponse:
    """kubectl >= 1.31 sends port-forward as SPDY inside a WebSocket (subprotocol
    ``SPDY/3.1+portforward.k8s.io``); a 1.36 API server passes it through to a node that
    declares ExtendWebSocketsToKubelet. The SPDY session is the same, only its bytes travel in
    binary messages."""
    ws = web.WebSocketResponse(protocols=[TUNNEL_PROTOCOL])
    await ws.prepare(request)
    sink = _WebSocketSink(ws)
    session = spdy.SpdySession(sink, is_server=True, idle_timeout=timeouts.idle)

    async def pump() -> None:
        try:
            async for message in ws:
                if message.type != WSMsgType.BINARY:
                    session.fail(f"unexpected {message.type.name} message in a SPDY tunnel")
                    break
                session.feed(message.data)
        finally:
            session.connection_lost()

    reader = asyncio.create_task(pump())
    try:
        await _serve_pairs(session, api, ref, timeouts)
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        with contextlib.suppress(Exception):
            await sink.drain()
        await ws.close()
    return ws


def _forget(pairs: dict[str, _Pair], request_id: str) -> Callable[[asyncio.Task[None]], None]:
    def done(_task: asyncio.Task[None]) -> None:
        pairs.pop(request_id, None)

    return done


async def _run_pair(
    api: KubeletApi, ref: PodRef, port: int, data: spdy.SpdyStream, error: spdy.SpdyStream
) -> None:
    try:
        await _forward(api, ref, port, SpdyByteStream(data), error.write)
    finally:
        data.close()
        error.close()


# -- WebSocket ------------------------------------------------------------------------------------
async def _serve_websocket(
    request: web.Request, api: KubeletApi, ref: PodRef, timeouts: StreamTimeouts
) -> web.StreamResponse:
    ports = [parse_port(value) for value in request.query.getall("port", ())]
    if not ports:
        raise InvalidInput("port-forward over WebSocket needs at least one port query parameter")
    protocol = choose_ws_protocol(request, wsstream.PORT_FORWARD_PROTOCOLS)
    ws = web.WebSocketResponse(protocols=[protocol.name] if protocol.name else ())
    await ws.prepare(request)
    conn = wsstream.ChannelConnection(
        ws, protocol, readable=[2 * index for index in range(len(ports))], idle_timeout=timeouts.idle
    )
    reader = asyncio.create_task(conn.run())
    tasks: list[asyncio.Task[None]] = []
    try:
        for index, port in enumerate(ports):
            prefix = struct.pack("<H", port)
            await conn.write(2 * index, prefix)
            await conn.write(2 * index + 1, prefix)

        for index, port in enumerate(ports):

            async def report(message: bytes, channel: int = 2 * index + 1) -> None:
                await conn.write(channel, message)

            tasks.append(
                asyncio.create_task(_forward(api, ref, port, ChannelByteStream(conn, 2 * index), report))
            )
        # Until the client goes away or every forward has ended, whichever comes first.
        closed: asyncio.Future[Any] = asyncio.create_task(conn.closed.wait())
        finished: asyncio.Future[Any] = asyncio.ensure_future(asyncio.gather(*tasks, return_exceptions=True))
        await asyncio.wait([closed, finished], return_when=asyncio.FIRST_COMPLETED)
        closed.cancel()
        finished.cancel()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await conn.close()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    return ws


async def serve_port_forward(
    request: web.Request, api: KubeletApi, timeouts: StreamTimeouts
) -> web.StreamResponse:
    info = request.match_info
    ref = api.stream_target(
        Capability.PORT_FORWARD,
        namespace=info["namespace"],
        pod=info["pod"],
        uid=info.get("uid"),
        container=None,
    )
    if spdy.is_spdy_upgrade(request.headers):
        return await _serve_spdy(request, api, ref, timeouts)
    if request.headers.get(hdrs.UPGRADE, "").lower() == "websocket":
        offered = request.headers.getall(hdrs.SEC_WEBSOCKET_PROTOCOL, [])
        if TUNNEL_PROTOCOL in {p.strip() for value in offered for p in value.split(",")}:
            return await _serve_tunnelled(request, api, ref, timeouts)
        return await _serve_websocket(request, api, ref, timeouts)
    raise InvalidInput("port-forward needs an upgrade to SPDY/3.1 or WebSocket")
