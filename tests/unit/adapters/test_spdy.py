"""The SPDY/3.1 framer and session, byte-level and without a network."""

from __future__ import annotations

import asyncio
import hashlib
import struct
import zlib

import pytest

from vkubelet.adapters.kubeletapi import spdy
from vkubelet.adapters.kubeletapi.spdy import (
    DataFrame,
    Frame,
    FrameParser,
    FrameWriter,
    GoAway,
    HeadersFrame,
    Ping,
    RstStream,
    SettingsFrame,
    SpdyProtocolError,
    SynReply,
    SynStream,
    WindowUpdate,
)

# adler32 of the SPDY/3 dictionary: the DICTID every header block's zlib header must carry.
DICT_ADLER32 = bytes.fromhex("e3c6a7c2")


def hand_made_header_block(block: bytes) -> bytes:
    """A zlib stream built by hand (RFC 1950/1951) around one *stored* deflate block: CMF 0x78
    (deflate, 32 KiB window), FLG 0x20 (FDICT; 0x7820 is a multiple of 31, so FCHECK is 0),
    DICTID, then BFINAL=0 BTYPE=00, LEN, NLEN and the raw bytes. It decodes only with the
    dictionary whose adler32 is DICTID."""
    return b"\x78\x20" + DICT_ADLER32 + b"\x00" + struct.pack("<HH", len(block), len(block) ^ 0xFFFF) + block


def test_dictionary_is_the_spdy3_one() -> None:
    d = spdy.HEADER_DICTIONARY
    assert len(d) == 1423
    assert d.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert d.endswith(b"utf-,*,enq=0.")
    assert zlib.adler32(d).to_bytes(4, "big") == DICT_ADLER32
    # Cross-checked against the byte listing in moby/spdystream's spdy/dictionary.go.
    assert hashlib.sha256(d).hexdigest() == "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02"


def test_decompressor_reads_a_hand_made_block_that_names_the_dictionary() -> None:
    block = b"\x00\x00\x00\x01" + b"\x00\x00\x00\x0astreamtype" + b"\x00\x00\x00\x05error"
    assert spdy.HeaderDecompressor().decompress(hand_made_header_block(block)) == (("streamtype", "error"),)


def test_compressor_primes_with_the_dictionary_and_keeps_its_context() -> None:
    compressor = spdy.HeaderCompressor()
    headers = (("streamtype", "stdout"), ("content-type", "text/plain"))
    first = compressor.compress(headers)
    second = compressor.compress(headers)
    assert first[0] == 0x78 and first[1] & 0x20  # FDICT set
    assert first[2:6] == DICT_ADLER32
    assert len(second) < len(first)  # the second block refers back into the same stream
    assert first.endswith(b"\x00\x00\xff\xff")  # each block ends with a sync flush
    with pytest.raises(zlib.error):
        zlib.decompressobj().decompress(first)  # not readable without the dictionary
    decompressor = spdy.HeaderDecompressor()
    assert decompressor.decompress(first) == headers
    assert decompressor.decompress(second) == headers


def test_known_frame_bytes() -> None:
    writer = FrameWriter()
    assert writer.serialize(DataFrame(1, b"hi", fin=True)) == bytes.fromhex("00000001 01000002 6869")
    assert writer.serialize(Ping(5)) == bytes.fromhex("80030006 00000004 00000005")
    assert writer.serialize(RstStream(3, 5)) == bytes.fromhex("80030003 00000008 00000003 00000005")
    assert writer.serialize(GoAway(7, 1)) == bytes.fromhex("80030007 00000008 00000007 00000001")
    assert writer.serialize(WindowUpdate(0, 32768)) == bytes.fromhex("80030009 00000008 00000000 00008000")
    assert writer.serialize(SettingsFrame(((7, 65536, 0),))) == bytes.fromhex(
        "80030004 0000000c 00000001 00000007 00010000"
    )


ALL_FRAMES: list[Frame] = [
    DataFrame(1, b"payload"),
    DataFrame(3, b"", fin=True),
    SynStream(1, (("streamtype", "error"), ("port", "80")), associated_stream_id=0, priority=3),
    SynStream(5, (("a", "1"), ("a", "2")), fin=True, unidirectional=True),
    SynReply(1, ()),
    SynReply(3, (("x", "y"),), fin=True),
    HeadersFrame(3, (("k", "v"),)),
    RstStream(1, spdy.RstStatus.CANCEL),
    SettingsFrame(((spdy.Setting.INITIAL_WINDOW_SIZE, 1 << 20, 1), (4, 100, 0)), clear=True),
    Ping(1),
    GoAway(9, spdy.GoAwayStatus.PROTOCOL_ERROR),
    WindowUpdate(1, 1000),
    WindowUpdate(0, 2**31 - 1),
]


def test_every_frame_round_trips_whole_and_byte_by_byte() -> None:
    writer = FrameWriter()
    wire = b"".join(writer.serialize(frame) for frame in ALL_FRAMES)
    assert FrameParser().feed(wire) == ALL_FRAMES
    # Same wire, one byte at a time: the parser buffers partial frames.
    second = FrameWriter()
    wire = b"".join(second.serialize(frame) for frame in ALL_FRAMES)
    parser = FrameParser()
    got = []
    for index in range(len(wire)):
        got += parser.feed(wire[index : index + 1])
    assert got == ALL_FRAMES


def test_unknown_control_frames_are_ignored() -> None:
    credential = struct.pack(">HHI", 0x8003, 10, 4) + b"abcd"
    assert FrameParser().feed(credential + FrameWriter().serialize(Ping(3))) == [Ping(3)]


def _control(frame_type: int, payload: bytes, version: int = 3, flags: int = 0) -> bytes:
    return struct.pack(">HHI", 0x8000 | version, frame_type, flags << 24 | len(payload)) + payload


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (_control(6, b"\x00\x00\x00\x01", version=2), "version"),
        (_control(6, b"\x00\x00\x01"), "must be 4 bytes"),  # truncated PING
        (_control(1, b"\x00\x00\x00\x01\x00\x00"), "shorter"),  # truncated SYN_STREAM
        (struct.pack(">II", 1, 5 << 20), "exceeds"),  # oversized length
        (_control(1, b"\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00" + b"not zlib at all"), "compression"),
        (_control(4, b"\x00\x00\x00\x02" + b"\x00" * 8), "entry count"),
        (_control(9, b"\x00\x00\x00\x01\x00\x00\x00\x00"), "zero delta"),
        (_control(3, b"\x00\x00\x00\x00\x00\x00\x00\x01"), "stream 0"),
        (struct.pack(">II", 0, 1) + b"x", "stream 0"),
    ],
)
def test_malformed_frames_raise_protocol_errors(wire: bytes, message: str) -> None:
    with pytest.raises(SpdyProtocolError, match=message):
        FrameParser().feed(wire)


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (b"\x00\x00\x00\x01\x00\x00\x00\x04Name\x00\x00\x00\x00", "lower case"),
        (b"\x00\x00\x00\x02\x00\x00\x00\x01a\x00\x00\x00\x00\x00\x00\x00\x01a\x00\x00\x00\x00", "duplicate"),
        (b"\x00\x00\x00\x09", "claims"),
        (b"\x00\x00\x00\x01\x00\x00\x00\x09abcdef", "truncated"),
        (b"\x00\x00\x00\x00junk", "trailing"),
    ],
)
def test_malformed_header_blocks(block: bytes, message: str) -> None:
    with pytest.raises(SpdyProtocolError, match=message):
        spdy.HeaderDecompressor().decompress(hand_made_header_block(block))


def test_header_bomb_is_refused() -> None:
    bomb = zlib.compressobj(9, zlib.DEFLATED, 15, zdict=spdy.HEADER_DICTIONARY)
    data = bomb.compress(b"\x00" * (spdy.MAX_HEADER_BLOCK * 4)) + bomb.flush(zlib.Z_SYNC_FLUSH)
    with pytest.raises(SpdyProtocolError, match="inflates beyond"):
        spdy.HeaderDecompressor().decompress(data)


# -- the session ----------------------------------------------------------------------------------
class RecordingSink:
    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False
        self.wrote = asyncio.Event()
        self._parser = FrameParser()
        self.frames: list[spdy.Frame] = []

    def write(self, data: bytes) -> None:
        self.data += data
        self.frames += self._parser.feed(data)
        self.wrote.set()

    async def drain(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True


class Peer:
    """The client side of a server session under test, as raw frames."""

    def __init__(self, session: spdy.SpdySession) -> None:
        self._writer = FrameWriter()
        self._session = session

    def send(self, *frames: spdy.Frame) -> None:
        self._session.feed(b"".join(self._writer.serialize(f) for f in frames))


def server_session() -> tuple[spdy.SpdySession, RecordingSink, Peer]:
    sink = RecordingSink()
    session = spdy.SpdySession(sink, is_server=True)
    return session, sink, Peer(session)


async def test_peer_streams_are_accepted_replied_and_read() -> None:
    session, sink, peer = server_session()
    peer.send(SynStream(1, (("streamtype", "stdin"),)), DataFrame(1, b"abc"), DataFrame(1, b"", fin=True))
    stream = await session.accept()
    assert stream is not None and stream.header("streamtype") == "stdin"
    stream.reply()
    assert sink.frames == [SynReply(1, ())]
    assert await stream.read() == b"abc"
    assert await stream.read() == b""
    await stream.write(b"out")
    stream.close()
    assert sink.frames[1:] == [DataFrame(1, b"out"), DataFrame(1, b"", fin=True)]


async def test_pings_from_the_peer_are_answered_ours_are_not() -> None:
    session, sink, peer = server_session()
    peer.send(Ping(1), Ping(2))
    assert sink.frames == [Ping(1)]
    assert session.pings_answered == 1


async def test_rst_stream_ends_reads_and_writes() -> None:
    session, _sink, peer = server_session()
    peer.send(SynStream(1, ()))
    stream = await session.accept()
    assert stream is not None
    peer.send(RstStream(1, spdy.RstStatus.CANCEL))
    assert stream.is_reset
    assert await stream.read() == b""
    with pytest.raises(spdy.StreamReset):
        await stream.write(b"x")


async def test_goaway_stops_accepting_and_refuses_new_streams() -> None:
    session, sink, peer = server_session()
    peer.send(GoAway(0))
    assert await session.accept() is None
    peer.send(SynStream(1, ()))
    assert sink.frames == [RstStream(1, spdy.RstStatus.REFUSED_STREAM)]


async def test_stream_ids_must_grow_and_be_odd_from_a_client() -> None:
    session, sink, peer = server_session()
    peer.send(SynStream(2, ()))
    assert session.closed and sink.closed
    assert sink.frames == [GoAway(0, spdy.GoAwayStatus.PROTOCOL_ERROR)]


@pytest.mark.parametrize(
    "garbage",
    [
        _control(6, b"\x00\x00\x00\x01", version=2),
        struct.pack(">II", 1, 0xFFFFFF),
        _control(1, b"\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00" + b"\xff" * 20),
    ],
)
async def test_malformed_input_closes_the_session_with_goaway_and_never_raises(garbage: bytes) -> None:
    session, sink, peer = server_session()
    peer.send(SynStream(1, ()))
    stream = await session.accept()
    assert stream is not None
    session.feed(garbage)  # must not raise
    assert session.closed and sink.closed
    assert sink.frames[-1] == GoAway(1, spdy.GoAwayStatus.PROTOCOL_ERROR)
    assert session.error
    assert stream.is_reset and await stream.read() == b""
    assert await session.accept() is None
    session.feed(FrameWriter().serialize(Ping(1)))  # ignored once closed
    assert sink.frames[-1] == GoAway(1, spdy.GoAwayStatus.PROTOCOL_ERROR)


async def test_consumed_data_is_given_back_with_window_updates() -> None:
    session, sink, peer = server_session()
    peer.send(SynStream(1, ()), DataFrame(1, b"a" * 20_000), DataFrame(1, b"b" * 20_000))
    stream = await session.accept()
    assert stream is not None
    # The session window is returned as data arrives (past half of 64 KiB) ...
    assert WindowUpdate(0, 40_000) in sink.frames
    assert not any(isinstance(f, WindowUpdate) and f.stream_id == 1 for f in sink.frames)
    # ... the stream's once the application has read it.
    await stream.read()
    await stream.read()
    assert WindowUpdate(1, 40_000) in sink.frames


async def test_send_window_is_enforced_once_the_peer_does_flow_control() -> None:
    session, sink, peer = server_session()
    peer.send(SettingsFrame(((spdy.Setting.INITIAL_WINDOW_SIZE, 10, 0),)), SynStream(1, ()))
    stream = await session.accept()
    assert stream is not None
    writing = asyncio.create_task(stream.write(b"0123456789abcdefghijklmno"))
    await sink.wrote.wait()
    assert sink.frames == [DataFrame(1, b"0123456789")]
    assert stream.send_window == 0 and not writing.done()
    peer.send(WindowUpdate(1, 15))
    async with asyncio.timeout(5):
        await writing
    assert sink.frames == [DataFrame(1, b"0123456789"), DataFrame(1, b"abcdefghijklmno")]


async def test_a_peer_without_flow_control_is_not_stalled() -> None:
    # Go's spdystream never sends WINDOW_UPDATE; 200 KiB must still go out.
    session, sink, peer = server_session()
    peer.send(SynStream(1, ()))
    stream = await session.accept()
    assert stream is not None
    await stream.write(b"z" * 200_000)
    assert sum(len(f.data) for f in sink.frames if isinstance(f, DataFrame)) == 200_000
    assert max(len(f.data) for f in sink.frames if isinstance(f, DataFrame)) <= spdy.MAX_DATA_CHUNK


async def test_an_unread_stream_past_its_buffer_cap_is_reset() -> None:
    session, sink, peer = server_session()
    peer.send(SynStream(1, ()))
    chunk = DataFrame(1, b"q" * 1_000_000)
    for _ in range(spdy.MAX_STREAM_BUFFER // 1_000_000 + 1):
        peer.send(chunk)
    assert RstStream(1, spdy.RstStatus.FLOW_CONTROL_ERROR) in sink.frames
    assert not session.closed


async def test_client_session_opens_streams_and_sees_replies() -> None:
    sink = RecordingSink()
    client = spdy.SpdySession(sink, is_server=False)
    stream = client.open_stream((("streamtype", "error"),))
    assert stream.stream_id == 1 and client.open_stream(()).stream_id == 3
    client.feed(FrameWriter().serialize(SynReply(1, ())))
    async with asyncio.timeout(5):
        await stream.wait_replied()
    await client.close()
    assert sink.frames[-1] == GoAway(0, spdy.GoAwayStatus.OK) and sink.closed


def test_negotiate_prefers_the_servers_order() -> None:
    supported = ("v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io")
    assert spdy.negotiate(["channel.k8s.io", "v4.channel.k8s.io"], supported) == "v4.channel.k8s.io"
    assert spdy.negotiate(["channel.k8s.io, v5.channel.k8s.io"], supported) == "v5.channel.k8s.io"
    assert spdy.negotiate(["v9"], supported) is None


async def test_data_for_unknown_or_finished_streams_is_refused() -> None:
    session, sink, peer = server_session()
    peer.send(DataFrame(9, b"?"))
    peer.send(SynStream(1, (), fin=True), DataFrame(1, b"late"))
    assert sink.frames == [
        RstStream(9, spdy.RstStatus.INVALID_STREAM),
        RstStream(1, spdy.RstStatus.STREAM_ALREADY_CLOSED),
    ]
    assert not session.closed
