"""The Kubernetes WebSocket channel protocols (exec, attach, port-forward over WebSocket).

Each WebSocket message carries one channel's bytes:

* binary protocols (``channel.k8s.io``, ``v4.channel.k8s.io``, ``v5.channel.k8s.io``, and the
  empty subprotocol): a binary message ``channel(1 byte) | data``;
* base64 protocols (``base64.channel.k8s.io``, ``v4.base64.channel.k8s.io``): a text message
  ``channel as one ASCII digit | base64(data)``.

Exec/attach channels: 0 stdin, 1 stdout, 2 stderr, 3 error (status), 4 resize (JSON
TerminalSize). The v4 protocols put a JSON ``metav1.Status`` on the error channel; older ones a
plain message, only on failure. ``v5.channel.k8s.io`` adds the close message: channel 255 whose
one data byte names a channel the client will not write again (how stdin EOF is signalled).

Port-forward over WebSocket uses two channels per requested port (2i data, 2i+1 error), and the
server opens each channel with the port as a little-endian uint16.

:func:`decode_message` / :func:`encode_message` are pure (and fuzzed); :class:`ChannelConnection`
runs them over an aiohttp ``WebSocketResponse``. A malformed message closes the connection with
WebSocket code 1002 (protocol error); nothing escapes to the server.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp import WSCloseCode, WSMsgType, web

log = logging.getLogger(__name__)

STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
CLOSE_CHANNEL = 255


@dataclass(frozen=True, slots=True)
class ChannelProtocol:
    name: str
    base64: bool = False
    # v4+: the error channel carries a JSON metav1.Status (success included).
    json_status: bool = False
    # v5: channel 255 close messages.
    close_messages: bool = False


# Server preference order: the best protocol the client offers wins, not the client's first.
EXEC_PROTOCOLS: tuple[ChannelProtocol, ...] = (
    ChannelProtocol("v5.channel.k8s.io", json_status=True, close_messages=True),
    ChannelProtocol("v4.channel.k8s.io", json_status=True),
    ChannelProtocol("v4.base64.channel.k8s.io", base64=True, json_status=True),
    ChannelProtocol("channel.k8s.io"),
    ChannelProtocol("base64.channel.k8s.io", base64=True),
)
PORT_FORWARD_PROTOCOLS: tuple[ChannelProtocol, ...] = (
    ChannelProtocol("v4.channel.k8s.io"),
    ChannelProtocol("v4.base64.channel.k8s.io", base64=True),
    ChannelProtocol("portforward.k8s.io"),
    ChannelProtocol("channel.k8s.io"),
    ChannelProtocol("base64.channel.k8s.io", base64=True),
)
# A client that names no subprotocol gets the original binary channel protocol.
NO_SUBPROTOCOL = ChannelProtocol("")


class ChannelProtocolError(Exception):
    """A WebSocket message that is not valid for the negotiated channel protocol."""


def choose_protocol(offered: Iterable[str], supported: Iterable[ChannelProtocol]) -> ChannelProtocol | None:
    """The first of ``supported`` that the client offers; NO_SUBPROTOCOL when it offers none;
    None when it offers only protocols we do not speak."""
    names = [name.strip() for value in offered for name in value.split(",") if name.strip()]
    if not names:
        return NO_SUBPROTOCOL
    for protocol in supported:
        if protocol.name in names:
            return protocol
    return None


def encode_message(protocol: ChannelProtocol, channel: int, data: bytes) -> bytes | str:
    if not 0 <= channel <= 255:
        raise ValueError(f"channel {channel} out of range")
    if protocol.base64:
        if channel > 9:
            raise ValueError(f"channel {channel} cannot be written in a base64 protocol")
        return chr(ord("0") + channel) + base64.b64encode(data).decode("ascii")
    return bytes([channel]) + data


def decode_message(protocol: ChannelProtocol, message: bytes | str) -> tuple[int, bytes]:
    """``(channel, data)`` of one message; ChannelProtocolError when malformed."""
    if protocol.base64:
        if not isinstance(message, str):
            raise ChannelProtocolError("binary message in a base64 channel protocol")
        if not message or not "0" <= message[0] <= "9":
            raise ChannelProtocolError("base64 message without a channel digit")
        try:
            data = base64.b64decode(message[1:].encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError) as exc:
            raise ChannelProtocolError(f"invalid base64 payload: {exc}") from exc
        return ord(message[0]) - ord("0"), data
    if not isinstance(message, bytes | bytearray):
        raise ChannelProtocolError("text message in a binary channel protocol")
    if not message:
        raise ChannelProtocolError("empty message (no channel byte)")
    channel = message[0]
    data = bytes(message[1:])
    if channel == CLOSE_CHANNEL:
        if not protocol.close_messages:
            raise ChannelProtocolError("close message outside v5.channel.k8s.io")
        if len(data) != 1:
            raise ChannelProtocolError("close message must name exactly one channel")
    return channel, data


class ChannelConnection:
    """Demultiplexes a prepared WebSocket into per-channel reads and writes.

    ``readable`` are the channels the client may write; messages for other channels are dropped
    (as the kubelet does). Call :meth:`run` as a task; it ends when the socket closes, after a
    malformed message, or after ``idle_timeout`` seconds (0: none) without a message either way.
    Reads then return ``b""``.
    """

    def __init__(
        self,
        ws: web.WebSocketResponse,
        protocol: ChannelProtocol,
        *,
        readable: Iterable[int],
        idle_timeout: float,
    ) -> None:
        self._ws = ws
        self.protocol = protocol
        self._queues: dict[int, asyncio.Queue[bytes]] = {ch: asyncio.Queue() for ch in readable}
        self._idle_timeout = idle_timeout
        self._loop = asyncio.get_running_loop()
        self._last_activity = self._loop.time()
        self._write_lock = asyncio.Lock()
        self.error: str | None = None
        self.closed = asyncio.Event()

    async def read(self, channel: int) -> bytes:
        """The next data written by the client on ``channel``; ``b""`` once it is closed."""
        queue = self._queues[channel]
        if self.closed.is_set() and queue.empty():
            return b""
        data = await queue.get()
        if not data:
            queue.put_nowait(b"")  # keep EOF sticky for later readers
        return data

    async def write(self, channel: int, data: bytes) -> None:
        if self._ws.closed:
            raise ConnectionResetError("the WebSocket is closed")
        self._last_activity = self._loop.time()
        message = encode_message(self.protocol, channel, data)
        async with self._write_lock:
            if isinstance(message, str):
                await self._ws.send_str(message)
            else:
                await self._ws.send_bytes(message)

    async def close(self, code: int = WSCloseCode.OK, message: bytes = b"") -> None:
        self._end()
        with contextlib.suppress(Exception):
            await self._ws.close(code=code, message=message)

    async def run(self) -> None:
        try:
            while True:
                timeout = None
                if self._idle_timeout > 0:
                    timeout = max(0.0, self._last_activity + self._idle_timeout - self._loop.time())
                try:
                    msg = await self._ws.receive(timeout=timeout)
                except TimeoutError:
                    if self._loop.time() - self._last_activity < self._idle_timeout:
                        continue  # we wrote in the meantime
                    self.error = "idle timeout"
                    await self.close(WSCloseCode.OK, b"idle timeout")
                    return
                if msg.type in (WSMsgType.BINARY, WSMsgType.TEXT):
                    self._last_activity = self._loop.time()
                    try:
                        channel, data = decode_message(self.protocol, msg.data)
                    except ChannelProtocolError as exc:
                        log.warning("WebSocket stream: closing after a malformed message: %s", exc)
                        self.error = str(exc)
                        await self.close(WSCloseCode.PROTOCOL_ERROR, str(exc).encode()[:120])
                        return
                    self._dispatch(channel, data)
                elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                    return
                elif msg.type == WSMsgType.ERROR:
                    self.error = str(msg.data)
                    return
        finally:
            self._end()

    def _dispatch(self, channel: int, data: bytes) -> None:
        if channel == CLOSE_CHANNEL:
            queue = self._queues.get(data[0])
            if queue is not None:
                queue.put_nowait(b"")
            return
        queue = self._queues.get(channel)
        if queue is not None and data:  # an empty message is not EOF
            queue.put_nowait(data)

    def _end(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for queue in self._queues.values():
            queue.put_nowait(b"")
