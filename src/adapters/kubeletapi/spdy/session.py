"""The SPDY/3.1 session: streams multiplexed over a :class:`FrameSink`, flow control, GOAWAY
(the package docstring describes the rules)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Protocol

from vkubelet.adapters.kubeletapi.spdy.frames import (
    DEFAULT_MAX_FRAME_LENGTH,
    DEFAULT_WINDOW,
    MAX_DATA_CHUNK,
    MAX_STREAM_BUFFER,
    MAX_WINDOW,
    DataFrame,
    Frame,
    FrameParser,
    FrameWriter,
    GoAway,
    GoAwayStatus,
    HeaderList,
    HeadersFrame,
    Ping,
    RstStatus,
    RstStream,
    Setting,
    SettingsFrame,
    SpdyProtocolError,
    SynReply,
    SynStream,
    WindowUpdate,
    header_value,
)

log = logging.getLogger(__name__)


# -- the session ----------------------------------------------------------------------------------
class FrameSink(Protocol):
    """Where a session's bytes go: the upgraded connection."""

    def write(self, data: bytes) -> None:
        """Queue ``data``; never blocks. Ignored once the connection is closed."""
        ...

    async def drain(self) -> None:
        """Wait until the queued bytes have gone out (backpressure)."""
        ...

    def close(self) -> None: ...


class StreamReset(Exception):
    """The stream was reset (by either side) or its session ended."""


class SpdyStream:
    """One SPDY stream. Reads return ``b""`` after the peer's FIN, a reset, or the session end."""

    def __init__(
        self, session: SpdySession, stream_id: int, headers: HeaderList, *, send_window: int
    ) -> None:
        self._session = session
        self.stream_id = stream_id
        self.headers = headers
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._readable = asyncio.Event()
        self._remote_closed = False
        self._local_closed = False
        self._reset = False
        self._replied = asyncio.Event()
        self.send_window = send_window
        self._window_open = asyncio.Event()
        self._window_open.set()
        self._unacked = 0  # bytes consumed but not yet given back with WINDOW_UPDATE

    def header(self, name: str) -> str | None:
        return header_value(self.headers, name)

    @property
    def remote_closed(self) -> bool:
        return self._remote_closed

    @property
    def is_reset(self) -> bool:
        return self._reset

    def reply(self, headers: HeaderList = ()) -> None:
        """Accept a peer-created stream (SYN_REPLY)."""
        self._session._send(SynReply(self.stream_id, headers))

    async def wait_replied(self) -> None:
        await self._replied.wait()

    async def read(self) -> bytes:
        while not self._chunks:
            if self._remote_closed or self._reset:
                return b""
            self._readable.clear()
            await self._readable.wait()
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        self._session._consumed(self, len(chunk))
        return chunk

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._reset or self._local_closed:
                raise StreamReset(f"stream {self.stream_id} is closed")
            size = await self._session._reserve(self, min(len(view), MAX_DATA_CHUNK))
            if self._reset:
                raise StreamReset(f"stream {self.stream_id} was reset")
            self._session._send(DataFrame(self.stream_id, bytes(view[:size])))
            view = view[size:]
        await self._session._drain()

    def close(self) -> None:
        """Half-close: FIN on our side. Idempotent; a no-op on a reset stream."""
        if self._local_closed or self._reset:
            return
        self._local_closed = True
        self._session._send(DataFrame(self.stream_id, b"", fin=True))
        self._session._maybe_forget(self)

    def reset(self, status: int = RstStatus.CANCEL) -> None:
        if self._reset:
            return
        self._session._send(RstStream(self.stream_id, status))
        self._mark_reset()

    # -- session side --
    def _mark_reset(self) -> None:
        self._reset = True
        self._readable.set()
        self._window_open.set()
        self._replied.set()
        self._session._forget(self)

    def _receive(self, data: bytes, fin: bool) -> None:
        if data:
            self._chunks.append(data)
            self._buffered += len(data)
        if fin:
            self._remote_closed = True
            self._session._maybe_forget(self)
        self._readable.set()

    @property
    def _fully_closed(self) -> bool:
        return self._local_closed and self._remote_closed


class SpdySession:
    """A SPDY/3.1 session over one connection, either side. Feed it the peer's bytes with
    :meth:`feed`; accept peer-created streams with :meth:`accept`; create streams with
    :meth:`open_stream`. ``idle_timeout`` (seconds, 0 for none) closes a session with no frame
    in either direction for that long."""

    def __init__(
        self,
        sink: FrameSink,
        *,
        is_server: bool,
        idle_timeout: float = 0.0,
        max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH,
    ) -> None:
        self._sink = sink
        self._is_server = is_server
        self._parser = FrameParser(max_frame_length=max_frame_length)
        self._writer = FrameWriter()
        self._streams: dict[int, SpdyStream] = {}
        self._incoming: asyncio.Queue[SpdyStream | None] = asyncio.Queue()
        self._last_peer_stream = 0
        self._next_stream = 2 if is_server else 1
        self._initial_send_window = DEFAULT_WINDOW
        self.session_send_window = DEFAULT_WINDOW
        self._session_window_open = asyncio.Event()
        self._session_window_open.set()
        self._session_unacked = 0
        self._peer_flow_control = False
        self._closed = asyncio.Event()
        self._goaway_received = False
        self.error: str | None = None
        self.pings_answered = 0
        self._loop = asyncio.get_running_loop()
        self._last_activity = self._loop.time()
        self._idle_timeout = idle_timeout
        self._idle_task = asyncio.create_task(self._watch_idle()) if idle_timeout > 0 else None

    # -- public --
    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def accept(self) -> SpdyStream | None:
        """The next stream the peer opened; None once the session is closed."""
        if self._closed.is_set() and self._incoming.empty():
            return None
        stream = await self._incoming.get()
        if stream is None:
            self._incoming.put_nowait(None)  # keep waking other acceptors
        return stream

    def open_stream(self, headers: HeaderList, *, fin: bool = False) -> SpdyStream:
        if self._closed.is_set():
            raise StreamReset("session closed")
        stream_id = self._next_stream
        self._next_stream += 2
        stream = SpdyStream(self, stream_id, headers, send_window=self._initial_send_window)
        self._streams[stream_id] = stream
        self._send(SynStream(stream_id, headers, fin=fin))
        if fin:
            stream._local_closed = True
        return stream

    def ping(self, ping_id: int) -> None:
        self._send(Ping(ping_id))

    def feed(self, data: bytes) -> None:
        """Process the peer's bytes. Never raises: protocol errors end the session."""
        if self._closed.is_set():
            return
        self._last_activity = self._loop.time()
        try:
            for frame in self._parser.feed(data):
                self._handle(frame)
        except SpdyProtocolError as exc:
            self._fail(GoAwayStatus.PROTOCOL_ERROR, str(exc))
        except Exception as exc:  # a bug here must not take the server down
            log.exception("SPDY session: unexpected error while handling a frame")
            self._fail(GoAwayStatus.INTERNAL_ERROR, f"internal error: {exc}")

    def fail(self, message: str) -> None:
        """End the session as a protocol error (GOAWAY PROTOCOL_ERROR, then close)."""
        if not self._closed.is_set():
            self._fail(GoAwayStatus.PROTOCOL_ERROR, message)

    def connection_lost(self) -> None:
        """The transport is gone: every stream ends."""
        self._finish("connection closed by the peer" if self.error is None else self.error)

    async def close(self, status: int = GoAwayStatus.OK) -> None:
        """GOAWAY, flush, close the connection."""
        if self._closed.is_set():
            return
        self._send(GoAway(self._last_peer_stream, status))
        with contextlib.suppress(Exception):
            await self._sink.drain()
        self._finish(None)

    # -- internals --
    def _send(self, frame: Frame) -> None:
        if self._closed.is_set():
            if isinstance(frame, DataFrame | SynReply | SynStream | HeadersFrame):
                raise StreamReset("session closed")
            return
        self._last_activity = self._loop.time()
        self._sink.write(self._writer.serialize(frame))

    async def _drain(self) -> None:
        await self._sink.drain()

    def _fail(self, status: int, message: str) -> None:
        log.warning("SPDY session: closing after a protocol error: %s", message)
        self.error = message
        with contextlib.suppress(Exception):
            self._sink.write(self._writer.serialize(GoAway(self._last_peer_stream, status)))
        self._finish(message)

    def _finish(self, error: str | None) -> None:
        if self._closed.is_set():
            return
        if error is not None and self.error is None:
            self.error = error
        self._closed.set()
        for stream in list(self._streams.values()):
            stream._mark_reset()
        self._streams.clear()
        self._incoming.put_nowait(None)
        self._session_window_open.set()
        if self._idle_task is not None and self._idle_task is not asyncio.current_task():
            self._idle_task.cancel()
        self._sink.close()

    async def _watch_idle(self) -> None:
        while not self._closed.is_set():
            remaining = self._last_activity + self._idle_timeout - self._loop.time()
            if remaining <= 0:
                log.info("SPDY session: idle for %.0f s, closing", self._idle_timeout)
                self.error = "idle timeout"
                self._send(GoAway(self._last_peer_stream, GoAwayStatus.OK))
                self._finish("idle timeout")
                return
            await asyncio.sleep(remaining)

    def _peer_initiated(self, stream_id: int) -> bool:
        return (stream_id % 2 == 1) == self._is_server

    def _handle(self, frame: Frame) -> None:
        if isinstance(frame, DataFrame):
            stream = self._streams.get(frame.stream_id)
            self._session_unacked += len(frame.data)
            self._ack_session()
            if stream is None:
                self._send(RstStream(frame.stream_id, RstStatus.INVALID_STREAM))
                return
            if stream.remote_closed:  # data after the peer's own FIN
                stream.reset(RstStatus.STREAM_ALREADY_CLOSED)
                return
            if stream._buffered + len(frame.data) > MAX_STREAM_BUFFER:
                stream.reset(RstStatus.FLOW_CONTROL_ERROR)
                return
            stream._receive(frame.data, frame.fin)
        elif isinstance(frame, SynStream):
            if not self._peer_initiated(frame.stream_id) or frame.stream_id <= self._last_peer_stream:
                raise SpdyProtocolError(f"SYN_STREAM with unexpected stream id {frame.stream_id}")
            self._last_peer_stream = frame.stream_id
            if self._goaway_received:
                self._send(RstStream(frame.stream_id, RstStatus.REFUSED_STREAM))
                return
            stream = SpdyStream(self, frame.stream_id, frame.headers, send_window=self._initial_send_window)
            stream._replied.set()
            self._streams[frame.stream_id] = stream
            if frame.fin:
                stream._remote_closed = True
            if frame.unidirectional:
                stream._local_closed = True
            self._incoming.put_nowait(stream)
        elif isinstance(frame, SynReply):
            stream = self._streams.get(frame.stream_id)
            if stream is None or self._peer_initiated(frame.stream_id):
                self._send(RstStream(frame.stream_id, RstStatus.INVALID_STREAM))
                return
            if stream._replied.is_set():
                stream.reset(RstStatus.STREAM_IN_USE)
                return
            stream.headers = stream.headers + frame.headers
            stream._replied.set()
            if frame.fin:
                stream._receive(b"", True)
        elif isinstance(frame, HeadersFrame):
            stream = self._streams.get(frame.stream_id)
            if stream is None:
                self._send(RstStream(frame.stream_id, RstStatus.INVALID_STREAM))
                return
            stream.headers = stream.headers + frame.headers
            if frame.fin:
                stream._receive(b"", True)
        elif isinstance(frame, RstStream):
            stream = self._streams.get(frame.stream_id)
            if stream is not None:
                stream._mark_reset()
        elif isinstance(frame, SettingsFrame):
            for ident, value, _flags in frame.entries:
                if ident == Setting.INITIAL_WINDOW_SIZE:
                    if value > MAX_WINDOW:
                        raise SpdyProtocolError(f"INITIAL_WINDOW_SIZE {value} out of range")
                    self._peer_flow_control = True
                    delta = value - self._initial_send_window
                    self._initial_send_window = value
                    for stream in self._streams.values():
                        stream.send_window += delta
                        self._update_window_event(stream)
        elif isinstance(frame, Ping):
            # Answer only the peer's pings (odd ids come from clients); ours come back as replies.
            if (frame.ping_id % 2 == 1) == self._is_server:
                self._send(frame)
                self.pings_answered += 1
        elif isinstance(frame, GoAway):
            self._goaway_received = True
            self._incoming.put_nowait(None)
        elif isinstance(frame, WindowUpdate):
            self._peer_flow_control = True
            if frame.stream_id == 0:
                self.session_send_window += frame.delta
                if self.session_send_window > MAX_WINDOW:
                    raise SpdyProtocolError("session window overflow")
                if self.session_send_window > 0:
                    self._session_window_open.set()
                return
            stream = self._streams.get(frame.stream_id)
            if stream is None:
                return  # a late update for a finished stream is harmless
            stream.send_window += frame.delta
            if stream.send_window > MAX_WINDOW:
                stream.reset(RstStatus.FLOW_CONTROL_ERROR)
                return
            self._update_window_event(stream)

    @staticmethod
    def _update_window_event(stream: SpdyStream) -> None:
        if stream.send_window > 0:
            stream._window_open.set()
        else:
            stream._window_open.clear()

    async def _reserve(self, stream: SpdyStream, wanted: int) -> int:
        """How many of ``wanted`` bytes may be sent now; waits while a window is exhausted."""
        while self._peer_flow_control:
            if stream.is_reset or self._closed.is_set():
                return wanted
            if stream.send_window <= 0:
                stream._window_open.clear()
                await stream._window_open.wait()
                continue
            if self.session_send_window <= 0:
                self._session_window_open.clear()
                await self._session_window_open.wait()
                continue
            size = min(wanted, stream.send_window, self.session_send_window)
            stream.send_window -= size
            self.session_send_window -= size
            return size
        # Not enforced (see the module docstring), but tracked for when the peer starts.
        stream.send_window -= wanted
        self.session_send_window -= wanted
        return wanted

    def _consumed(self, stream: SpdyStream, size: int) -> None:
        """The application read ``size`` bytes: give the window back once half is used."""
        stream._unacked += size
        if stream._unacked >= DEFAULT_WINDOW // 2 and not stream.remote_closed and not stream.is_reset:
            self._send(WindowUpdate(stream.stream_id, stream._unacked))
            stream._unacked = 0

    def _ack_session(self) -> None:
        if self._session_unacked >= DEFAULT_WINDOW // 2:
            self._send(WindowUpdate(0, self._session_unacked))
            self._session_unacked = 0

    def _maybe_forget(self, stream: SpdyStream) -> None:
        if stream._fully_closed and not stream._chunks:
            self._streams.pop(stream.stream_id, None)

    def _forget(self, stream: SpdyStream) -> None:
        self._streams.pop(stream.stream_id, None)
