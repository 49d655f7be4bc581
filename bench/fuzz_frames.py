"""Fuzz the SPDY/3.1 and WebSocket channel parsers with hypothesis for a fixed time.

    .venv/bin/python bench/fuzz_frames.py --seconds 180

Targets, each fed until the time share runs out:

* ``spdy-parser``: arbitrary bytes, and valid frame streams with bytes flipped, inserted or cut,
  into :class:`FrameParser` (one parser per input, fed in random splits). Only
  ``SpdyProtocolError`` may come out.
* ``spdy-session``: the same inputs into a server :class:`SpdySession`: ``feed`` must never
  raise; afterwards the session is either open or closed with an error.
* ``ws-channel``: arbitrary bytes/text into ``decode_message`` for every channel protocol (only
  ``ChannelProtocolError``), and arbitrary bytes as resize documents into ``ChannelIO.resizes``.

"No hang": every input must finish within ``--max-input-seconds``; the slowest is reported.
Exits 1 on the first crash or hang, printing the input.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import sys
import time
from collections.abc import Callable

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from vkubelet.adapters.kubeletapi import remotecommand, spdy, wsstream

_writer_frames = st.one_of(
    st.builds(spdy.DataFrame, st.integers(1, 2**31 - 1), st.binary(max_size=64), st.booleans()),
    st.builds(
        spdy.SynStream,
        st.integers(1, 99).map(lambda n: 2 * n + 1),
        st.lists(
            st.tuples(st.sampled_from(["streamtype", "port", "requestid", "x"]), st.text(max_size=8)),
            max_size=4,
        ).map(tuple),
    ),
    st.builds(spdy.SynReply, st.integers(1, 50), st.just(())),
    st.builds(spdy.RstStream, st.integers(1, 50), st.integers(0, 12)),
    st.builds(
        spdy.SettingsFrame,
        st.lists(st.tuples(st.integers(0, 8), st.integers(0, 2**31), st.integers(0, 3)), max_size=3).map(
            tuple
        ),
    ),
    st.builds(spdy.Ping, st.integers(0, 2**32 - 1)),
    st.builds(spdy.GoAway, st.integers(0, 2**31 - 1), st.integers(0, 2)),
    st.builds(spdy.WindowUpdate, st.integers(0, 50), st.integers(1, 2**31 - 1)),
)


@st.composite
def spdy_inputs(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    if draw(st.booleans()):
        wire = draw(st.binary(max_size=512))
    else:
        writer = spdy.FrameWriter()
        wire = bytearray()
        for frame in draw(st.lists(_writer_frames, max_size=6)):
            try:
                wire += writer.serialize(frame)
            except ValueError:
                continue
        for _ in range(draw(st.integers(0, 4))):  # mutations
            if not wire:
                break
            at = draw(st.integers(0, len(wire) - 1))
            kind = draw(st.sampled_from(["flip", "insert", "cut"]))
            if kind == "flip":
                wire[at] ^= draw(st.integers(1, 255))
            elif kind == "insert":
                wire[at:at] = draw(st.binary(min_size=1, max_size=8))
            else:
                del wire[at : at + draw(st.integers(1, 8))]
        wire = bytes(wire)
    splits = sorted(draw(st.lists(st.integers(0, max(len(wire), 1)), max_size=4)))
    return wire, splits


def _pieces(wire: bytes, splits: list[int]) -> list[bytes]:
    bounds = [0, *splits, len(wire)]
    return [wire[a:b] for a, b in itertools.pairwise(bounds) if b > a]


class _Sink:
    def __init__(self) -> None:
        self.closed = False

    def write(self, data: bytes) -> None:
        pass

    async def drain(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class Budget:
    def __init__(self, max_input_seconds: float) -> None:
        self.count = 0
        self.slowest = 0.0
        self.max_input_seconds = max_input_seconds

    def timed(self, what: str, payload: object, call: Callable[[], None]) -> None:
        start = time.perf_counter()
        call()
        elapsed = time.perf_counter() - start
        self.count += 1
        self.slowest = max(self.slowest, elapsed)
        if elapsed > self.max_input_seconds:
            raise AssertionError(f"{what}: an input took {elapsed:.3f} s: {payload!r}")


def _run_for(seconds: float, test: Callable[[], None]) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        test()


def fuzz(seconds: float, max_input_seconds: float) -> dict[str, Budget]:
    budgets = {name: Budget(max_input_seconds) for name in ("spdy-parser", "spdy-session", "ws-channel")}
    common = settings(
        max_examples=300,  # small batches keep the time budget accurate
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )

    @common
    @given(spdy_inputs())
    def parser_case(case: tuple[bytes, list[int]]) -> None:
        wire, splits = case

        def run() -> None:
            parser = spdy.FrameParser()
            try:
                for piece in _pieces(wire, splits):
                    parser.feed(piece)
            except spdy.SpdyProtocolError:
                pass

        budgets["spdy-parser"].timed("spdy-parser", wire, run)

    @common
    @given(spdy_inputs())
    def session_case(case: tuple[bytes, list[int]]) -> None:
        wire, splits = case

        def run() -> None:
            sink = _Sink()
            session = spdy.SpdySession(sink, is_server=True)
            for piece in _pieces(wire, splits):
                session.feed(piece)  # must never raise
            assert not session.closed or (session.error and sink.closed), "closed without an error"

        budgets["spdy-session"].timed("spdy-session", wire, run)

    @common
    @given(
        st.sampled_from(wsstream.EXEC_PROTOCOLS), st.one_of(st.binary(max_size=256), st.text(max_size=256))
    )
    def ws_case(protocol: wsstream.ChannelProtocol, message: bytes | str) -> None:
        def run() -> None:
            try:
                channel, data = wsstream.decode_message(protocol, message)
            except wsstream.ChannelProtocolError:
                return
            assert 0 <= channel <= 255
            if channel != wsstream.CLOSE_CHANNEL:
                assert wsstream.decode_message(
                    protocol, wsstream.encode_message(protocol, channel, data)
                ) == (
                    channel,
                    data,
                )

        budgets["ws-channel"].timed("ws-channel", message, run)

    @common
    @given(st.lists(st.binary(max_size=64), max_size=6))
    def resize_case(chunks: list[bytes]) -> None:
        async def consume() -> None:
            feed = iter([*[c for c in chunks if c], b""])

            async def read() -> bytes:
                return next(feed)

            io = remotecommand.ChannelIO(stdin=False, stdout=True, stderr=False, tty=True, _read_resize=read)
            async for _size in io.resizes():
                pass

        budgets["ws-channel"].timed("resize", chunks, lambda: asyncio.run(consume()))

    async def in_loop() -> None:  # sessions need a running loop
        _run_for(seconds * 0.35, parser_case)
        _run_for(seconds * 0.35, session_case)

    asyncio.run(in_loop())
    _run_for(seconds * 0.2, ws_case)
    _run_for(seconds * 0.1, resize_case)
    return budgets


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=180.0, help="total fuzzing time (default 180)")
    parser.add_argument("--max-input-seconds", type=float, default=1.0, help="per-input hang limit")
    args = parser.parse_args()
    logging.getLogger("vkubelet").setLevel(logging.CRITICAL)  # every bad input logs a warning
    started = time.monotonic()
    try:
        budgets = fuzz(args.seconds, args.max_input_seconds)
    except Exception as exc:
        print(f"FAIL: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    total = sum(b.count for b in budgets.values())
    print(f"fuzzed for {time.monotonic() - started:.0f} s: {total} inputs, no crash, no hang")
    for name, budget in budgets.items():
        print(f"  {name:13s} {budget.count:9d} inputs, slowest {budget.slowest * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
