"""SPDY/3.1: the framer, the session, and the aiohttp upgrade that hands a connection to it.

The Kubernetes API server (and ``kubectl`` with ``KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false``)
speaks SPDY/3.1 to the kubelet for exec, attach and port-forward. No maintained Python library
does, so this module implements the parts of the draft spec those clients use:

* frames (spec section 2.2): a control frame is ``C=1 | version(15) | type(16) | flags(8) |
  length(24) | payload``; a data frame is ``C=0 | stream-id(31) | flags(8) | length(24) |
  payload``. Control types: SYN_STREAM 1, SYN_REPLY 2, RST_STREAM 3, SETTINGS 4, PING 6,
  GOAWAY 7, HEADERS 8, WINDOW_UPDATE 9. Unknown control types are ignored, as the spec asks.
* header blocks (2.6.10): ``count(32) | (len(32) name len(32) value)*``, names lower case,
  several values of one name joined by NUL, the whole block deflated with one zlib stream per
  direction per session, primed with the SPDY/3 dictionary, each block ending in a sync flush.
* flow control (2.6.8, and 3.1's session window on stream 0): 64 KiB initial windows.

:class:`FrameParser` and :class:`FrameWriter` are sans-I/O. :class:`SpdySession` multiplexes
streams over a :class:`FrameSink` and is driven by :meth:`SpdySession.feed`; a malformed frame
or a broken zlib stream ends the session with GOAWAY(PROTOCOL_ERROR) and closes the
connection. Nothing raised by a peer's bytes escapes :meth:`SpdySession.feed`.

Peers that do no flow control: Go's spdystream (used by kubectl and the API server) never sends
WINDOW_UPDATE and ignores the ones it receives. Enforcing our send window against such a peer
would stall every stream after 64 KiB, so the send window is tracked from the start but only
enforced once the peer shows it takes part (it sends WINDOW_UPDATE or SETTINGS
INITIAL_WINDOW_SIZE). Symmetrically, receiving past the window is tolerated up to a bounded
per-stream buffer, beyond which the stream is reset with FLOW_CONTROL_ERROR.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import struct
import zlib
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from aiohttp import hdrs, web

log = logging.getLogger(__name__)

VERSION = 3
DEFAULT_WINDOW = 64 * 1024
MAX_WINDOW = 2**31 - 1
# Frames longer than this end the session (24-bit lengths allow 16 MiB; nothing we serve needs it).
DEFAULT_MAX_FRAME_LENGTH = 1024 * 1024
# A header block may not inflate beyond this (a zlib bomb must not exhaust memory).
MAX_HEADER_BLOCK = 256 * 1024
MAX_DATA_CHUNK = 16 * 1024
# Unread data a stream may hold before it is reset (see the module docstring).
MAX_STREAM_BUFFER = 8 * 1024 * 1024


def _spdy3_dictionary() -> bytes:
    """The SPDY/3 header compression dictionary (draft 3.1, section 2.6.10.1): 65 length-prefixed
    words (``len(32) word``) followed by a run of plain text."""
    spaced = (
        "options head post put delete trace accept accept-charset accept-encoding accept-language "
        "accept-ranges age allow authorization cache-control connection content-base "
        "content-encoding content-language content-length content-location content-md5 "
        "content-range content-type date etag expect expires from host if-match if-modified-since "
        "if-none-match if-range if-unmodified-since last-modified location max-forwards pragma "
        "proxy-authenticate proxy-authorization range referer retry-after server te trailer "
        "transfer-encoding upgrade user-agent vary via warning www-authenticate method get status"
    )
    words = spaced.split()
    words += ["200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin"]
    tail = (
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
        "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request"
        "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented"
        "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 "
        "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,"
        "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
        "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
    )
    out = bytearray()
    for word in words:
        out += struct.pack(">I", len(word)) + word.encode("ascii")
    return bytes(out) + tail.encode("ascii")


HEADER_DICTIONARY = _spdy3_dictionary()


class FrameType(enum.IntEnum):
    SYN_STREAM = 1
    SYN_REPLY = 2
    RST_STREAM = 3
    SETTINGS = 4
    PING = 6
    GOAWAY = 7
    HEADERS = 8
    WINDOW_UPDATE = 9


class RstStatus(enum.IntEnum):
    PROTOCOL_ERROR = 1
    INVALID_STREAM = 2
    REFUSED_STREAM = 3
    UNSUPPORTED_VERSION = 4
    CANCEL = 5
    INTERNAL_ERROR = 6
    FLOW_CONTROL_ERROR = 7
    STREAM_IN_USE = 8
    STREAM_ALREADY_CLOSED = 9
    FRAME_TOO_LARGE = 11


class GoAwayStatus(enum.IntEnum):
    OK = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2


class Setting(enum.IntEnum):
    MAX_CONCURRENT_STREAMS = 4
    INITIAL_WINDOW_SIZE = 7


FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02
FLAG_SETTINGS_CLEAR = 0x01

# (name, value) pairs; names are lower case, a value never contains NUL (several values of one
# name are separate pairs here and NUL-joined on the wire).
HeaderList = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class DataFrame:
    stream_id: int
    data: bytes
    fin: bool = False


@dataclass(frozen=True, slots=True)
class SynStream:
    stream_id: int
    headers: HeaderList
    associated_stream_id: int = 0
    priority: int = 0
    fin: bool = False
    unidirectional: bool = False


@dataclass(frozen=True, slots=True)
class SynReply:
    stream_id: int
    headers: HeaderList
    fin: bool = False


@dataclass(frozen=True, slots=True)
class RstStream:
    stream_id: int
    status: int


@dataclass(frozen=True, slots=True)
class SettingsFrame:
    # (id, value, flags)
    entries: tuple[tuple[int, int, int], ...]
    clear: bool = False


@dataclass(frozen=True, slots=True)
class Ping:
    ping_id: int


@dataclass(frozen=True, slots=True)
class GoAway:
    last_good_stream_id: int
    status: int = GoAwayStatus.OK


@dataclass(frozen=True, slots=True)
class HeadersFrame:
    stream_id: int
    headers: HeaderList
    fin: bool = False


@dataclass(frozen=True, slots=True)
class WindowUpdate:
    stream_id: int  # 0: the session window (SPDY/3.1)
    delta: int


Frame = (
    DataFrame | SynStream | SynReply | RstStream | SettingsFrame | Ping | GoAway | HeadersFrame | WindowUpdate
)


class SpdyProtocolError(Exception):
    """The peer's bytes are not valid SPDY/3.1; the session must end with GOAWAY."""


def header_value(headers: HeaderList, name: str) -> str | None:
    """The first value of ``name`` (lower case), or None."""
    for key, value in headers:
        if key == name:
            return value
    return None


# -- header blocks --------------------------------------------------------------------------------
def encode_header_block(headers: Iterable[tuple[str, str]]) -> bytes:
    """The uncompressed name/value block; repeated names are NUL-joined, names lower-cased."""
    grouped: dict[str, list[str]] = {}
    for name, value in headers:
        grouped.setdefault(name.lower(), []).append(value)
    out = bytearray(struct.pack(">I", len(grouped)))
    for name, values in grouped.items():
        raw_name = name.encode("utf-8")
        raw_value = "\x00".join(values).encode("utf-8")
        if not raw_name:
            raise ValueError("empty SPDY header name")
        out += struct.pack(">I", len(raw_name)) + raw_name
        out += struct.pack(">I", len(raw_value)) + raw_value
    return bytes(out)


def decode_header_block(block: bytes) -> HeaderList:
    """Parse an uncompressed name/value block (spec 2.6.10); SpdyProtocolError when malformed."""
    try:
        (count,) = struct.unpack_from(">I", block, 0)
        offset = 4
        # Each pair needs at least 8 bytes of lengths: a bigger count is a lie.
        if count * 8 > len(block) - offset:
            raise SpdyProtocolError(f"header block claims {count} pairs in {len(block)} bytes")
        pairs: list[tuple[str, str]] = []
        seen: set[str] = set()
        for _ in range(count):
            (name_len,) = struct.unpack_from(">I", block, offset)
            offset += 4
            name = block[offset : offset + name_len]
            if len(name) != name_len or name_len == 0:
                raise SpdyProtocolError("truncated or empty header name")
            offset += name_len
            (value_len,) = struct.unpack_from(">I", block, offset)
            offset += 4
            value = block[offset : offset + value_len]
            if len(value) != value_len:
                raise SpdyProtocolError("truncated header value")
            offset += value_len
            text = name.decode("utf-8")
            if text != text.lower():
                raise SpdyProtocolError(f"header name {text!r} is not lower case")
            if text in seen:
                raise SpdyProtocolError(f"duplicate header name {text!r}")
            seen.add(text)
            pairs.extend((text, part) for part in value.decode("utf-8").split("\x00"))
    except struct.error as exc:
        raise SpdyProtocolError(f"truncated header block: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise SpdyProtocolError(f"header block is not UTF-8: {exc}") from exc
    if offset != len(block):
        raise SpdyProtocolError("trailing bytes after the header block")
    return tuple(pairs)


class HeaderCompressor:
    """One direction's deflate stream: every block continues the same zlib context."""

    def __init__(self) -> None:
        self._deflate = zlib.compressobj(
            zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 15, zdict=HEADER_DICTIONARY
        )

    def compress(self, headers: Iterable[tuple[str, str]]) -> bytes:
        block = encode_header_block(headers)
        return self._deflate.compress(block) + self._deflate.flush(zlib.Z_SYNC_FLUSH)


class HeaderDecompressor:
    def __init__(self) -> None:
        self._inflate = zlib.decompressobj(15, zdict=HEADER_DICTIONARY)

    def decompress(self, data: bytes) -> HeaderList:
        try:
            block = self._inflate.decompress(data, MAX_HEADER_BLOCK)
        except zlib.error as exc:
            raise SpdyProtocolError(f"bad header compression: {exc}") from exc
        if self._inflate.unconsumed_tail:
            raise SpdyProtocolError(f"header block inflates beyond {MAX_HEADER_BLOCK} bytes")
        if self._inflate.eof:
            # A finished zlib stream cannot carry the session's later header blocks.
            raise SpdyProtocolError("header compression stream ended")
        return decode_header_block(block)


# -- frames ---------------------------------------------------------------------------------------
_HEADER = struct.Struct(">IB3s")


def _control(frame_type: FrameType, flags: int, payload: bytes) -> bytes:
    return struct.pack(">HHI", 0x8000 | VERSION, frame_type, (flags << 24) | len(payload)) + payload


def _id31(value: int) -> bytes:
    if not 0 <= value <= MAX_WINDOW:
        raise ValueError(f"31-bit field out of range: {value}")
    return struct.pack(">I", value)


class FrameWriter:
    """Serialises frames; owns the outgoing header compression context."""

    def __init__(self) -> None:
        self._compressor = HeaderCompressor()

    def serialize(self, frame: Frame) -> bytes:
        if isinstance(frame, DataFrame):
            if len(frame.data) >= 1 << 24:
                raise ValueError("data frame too long")
            return (
                _id31(frame.stream_id)
                + struct.pack(">I", (FLAG_FIN if frame.fin else 0) << 24 | len(frame.data))
                + frame.data
            )
        if isinstance(frame, SynStream):
            flags = (FLAG_FIN if frame.fin else 0) | (FLAG_UNIDIRECTIONAL if frame.unidirectional else 0)
            payload = (
                _id31(frame.stream_id)
                + _id31(frame.associated_stream_id)
                + bytes([(frame.priority & 0x7) << 5, 0])
                + self._compressor.compress(frame.headers)
            )
            return _control(FrameType.SYN_STREAM, flags, payload)
        if isinstance(frame, SynReply):
            payload = _id31(frame.stream_id) + self._compressor.compress(frame.headers)
            return _control(FrameType.SYN_REPLY, FLAG_FIN if frame.fin else 0, payload)
        if isinstance(frame, HeadersFrame):
            payload = _id31(frame.stream_id) + self._compressor.compress(frame.headers)
            return _control(FrameType.HEADERS, FLAG_FIN if frame.fin else 0, payload)
        if isinstance(frame, RstStream):
            return _control(FrameType.RST_STREAM, 0, _id31(frame.stream_id) + struct.pack(">I", frame.status))
        if isinstance(frame, SettingsFrame):
            payload = struct.pack(">I", len(frame.entries)) + b"".join(
                struct.pack(">II", (flags << 24) | ident, value) for ident, value, flags in frame.entries
            )
            return _control(FrameType.SETTINGS, FLAG_SETTINGS_CLEAR if frame.clear else 0, payload)
        if isinstance(frame, Ping):
            return _control(FrameType.PING, 0, struct.pack(">I", frame.ping_id))
        if isinstance(frame, GoAway):
            payload = _id31(frame.last_good_stream_id) + struct.pack(">I", frame.status)
            return _control(FrameType.GOAWAY, 0, payload)
        if isinstance(frame, WindowUpdate):
            return _control(FrameType.WINDOW_UPDATE, 0, _id31(frame.stream_id) + _id31(frame.delta))
        raise TypeError(f"not a SPDY frame: {frame!r}")


class FrameParser:
    """Incremental parser: :meth:`feed` bytes, get whole frames. Owns the incoming header
    decompression context, so it must see every byte of one direction of one session."""

    def __init__(self, *, max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH) -> None:
        self._buffer = bytearray()
        self._decompressor = HeaderDecompressor()
        self._max = max_frame_length

    def feed(self, data: bytes) -> list[Frame]:
        """Frames completed by ``data``. Raises SpdyProtocolError on malformed input, after
        which the parser is unusable (the session ends)."""
        self._buffer += data
        frames: list[Frame] = []
        while len(self._buffer) >= 8:
            word, flags_len = struct.unpack_from(">II", self._buffer, 0)
            flags, length = flags_len >> 24, flags_len & 0xFFFFFF
            if length > self._max:
                raise SpdyProtocolError(f"frame of {length} bytes exceeds the {self._max}-byte limit")
            if len(self._buffer) < 8 + length:
                break
            payload = bytes(self._buffer[8 : 8 + length])
            del self._buffer[: 8 + length]
            if word & 0x80000000:
                version, frame_type = (word >> 16) & 0x7FFF, word & 0xFFFF
                if version != VERSION:
                    raise SpdyProtocolError(f"unsupported SPDY version {version}")
                frame = self._control(frame_type, flags, payload)
                if frame is not None:
                    frames.append(frame)
            else:
                if word == 0:
                    raise SpdyProtocolError("data frame on stream 0")
                frames.append(DataFrame(word, payload, bool(flags & FLAG_FIN)))
        return frames

    def _control(self, frame_type: int, flags: int, payload: bytes) -> Frame | None:
        def fixed(size: int) -> None:
            if len(payload) != size:
                raise SpdyProtocolError(
                    f"control frame type {frame_type} must be {size} bytes, not {len(payload)}"
                )

        def minimum(size: int) -> None:
            if len(payload) < size:
                raise SpdyProtocolError(f"control frame type {frame_type} shorter than {size} bytes")

        fin = bool(flags & FLAG_FIN)
        if frame_type == FrameType.SYN_STREAM:
            minimum(10)
            stream_id, assoc = struct.unpack_from(">II", payload, 0)
            stream_id &= MAX_WINDOW
            if stream_id == 0:
                raise SpdyProtocolError("SYN_STREAM on stream 0")
            headers = self._decompressor.decompress(payload[10:])
            return SynStream(
                stream_id,
                headers,
                assoc & MAX_WINDOW,
                payload[8] >> 5,
                fin,
                bool(flags & FLAG_UNIDIRECTIONAL),
            )
        if frame_type in (FrameType.SYN_REPLY, FrameType.HEADERS):
            minimum(4)
            stream_id = struct.unpack_from(">I", payload, 0)[0] & MAX_WINDOW
            if stream_id == 0:
                raise SpdyProtocolError("SYN_REPLY/HEADERS on stream 0")
            headers = self._decompressor.decompress(payload[4:])
            if frame_type == FrameType.SYN_REPLY:
                return SynReply(stream_id, headers, fin)
            return HeadersFrame(stream_id, headers, fin)
        if frame_type == FrameType.RST_STREAM:
            fixed(8)
            stream_id, status = struct.unpack(">II", payload)
            if stream_id & MAX_WINDOW == 0:
                raise SpdyProtocolError("RST_STREAM on stream 0")
            return RstStream(stream_id & MAX_WINDOW, status)
        if frame_type == FrameType.SETTINGS:
            minimum(4)
            (count,) = struct.unpack_from(">I", payload, 0)
            if len(payload) != 4 + 8 * count:
                raise SpdyProtocolError("SETTINGS length does not match its entry count")
            entries = []
            for index in range(count):
                head, value = struct.unpack_from(">II", payload, 4 + 8 * index)
                entries.append((head & 0xFFFFFF, value, head >> 24))
            return SettingsFrame(tuple(entries), bool(flags & FLAG_SETTINGS_CLEAR))
        if frame_type == FrameType.PING:
            fixed(4)
            return Ping(struct.unpack(">I", payload)[0])
        if frame_type == FrameType.GOAWAY:
            fixed(8)
            last, status = struct.unpack(">II", payload)
            return GoAway(last & MAX_WINDOW, status)
        if frame_type == FrameType.WINDOW_UPDATE:
            fixed(8)
            stream_id, delta = struct.unpack(">II", payload)
            delta &= MAX_WINDOW
            if delta == 0:
                raise SpdyProtocolError("WINDOW_UPDATE with a zero delta")
            return WindowUpdate(stream_id & MAX_WINDOW, delta)
        return None  # unknown (or 3.0's CREDENTIAL) control frames are ignored, per the spec


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


# -- aiohttp glue ---------------------------------------------------------------------------------
class _TransportSink:
    """A FrameSink over an aiohttp connection's transport after the 101 response."""

    def __init__(self, request: web.BaseRequest) -> None:
        self._transport = request.transport
        self._protocol = request.protocol

    def write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    async def drain(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        # aiohttp's protocol exposes write backpressure through this helper (as its own writers use).
        await self._protocol._drain_helper()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class _SessionFeeder:
    """The object aiohttp's ``set_parser`` feeds post-upgrade bytes to."""

    def __init__(self, session: SpdySession) -> None:
        self._session = session

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self._session.feed(data)
        return False, b""

    def feed_eof(self) -> None:
        self._session.connection_lost()


async def upgrade(
    request: web.BaseRequest, *, protocol: str | None, idle_timeout: float
) -> tuple[SpdySession, web.StreamResponse]:
    """Answer ``101 Switching Protocols`` (``Upgrade: SPDY/3.1``, the negotiated
    ``X-Stream-Protocol-Version`` when given); a server session over the connection and the
    prepared response, which the handler must return once the session is over.

    Relies on aiohttp's ``request.protocol.set_parser``: the hook its WebSocket support uses to
    take over the bytes after an upgrade (semi-private, pinned by the integration tests).
    """
    headers: dict[str, str] = {hdrs.CONNECTION: "Upgrade", hdrs.UPGRADE: "SPDY/3.1"}
    if protocol:
        headers["X-Stream-Protocol-Version"] = protocol
    response = web.StreamResponse(status=101, headers=headers)
    session = SpdySession(_TransportSink(request), is_server=True, idle_timeout=idle_timeout)
    # aiohttp's HTTP parser only treats "websocket" upgrades as upgrades, so without this the
    # client's first frames would be parsed as HTTP. Taking the bytes over before the 101 goes
    # out leaves no window for that.
    request.protocol.keep_alive(False)
    request.protocol.set_parser(_SessionFeeder(session))  # type: ignore[arg-type]
    await response.prepare(request)
    return session, response


def is_spdy_upgrade(headers: Mapping[str, str]) -> bool:
    upgrade_header = headers.get("Upgrade", "")
    return "upgrade" in headers.get("Connection", "").lower() and upgrade_header.lower().startswith("spdy/3")


def negotiate(client: Iterable[str], supported: Iterable[str]) -> str | None:
    """The first of ``supported`` (server preference order) that the client offers; None when
    there is none. Each client header may carry a comma-separated list."""
    offered = {part.strip() for value in client for part in value.split(",") if part.strip()}
    for candidate in supported:
        if candidate in offered:
            return candidate
    return None
