"""SPDY/3.1 frames and header blocks: the sans-I/O :class:`FrameParser` and :class:`FrameWriter`
(the package docstring describes the wire format)."""

from __future__ import annotations

import enum
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

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
