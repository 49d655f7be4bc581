"""Container log files in the CRI format, and the kubelet's log query over them.

Each run of a container writes one file; every record is one line
``<RFC3339Nano timestamp> <stdout|stderr> <F|P> <content>\\n`` (the format the kubelet reads
from container runtimes): ``F`` ends a line of output, ``P`` is a fragment (a very long line cut
in pieces, or output not yet followed by a newline when it was read: it is logged at once, not
held back), so the original bytes are reproduced exactly. Keeping the timestamp per record is
what makes ``timestamps``, ``sinceSeconds`` and ``sinceTime`` answerable.

Followers are woken in process (the writer and the readers share one event loop), so a follow
costs no polling; a follow ends when the run's log is closed (the process exited).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import deque
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

from vkubelet.application.ports.streams import LogOptions

MAX_RECORD = 16 * 1024  # longer lines are split into P records, as runtimes do
_READ_CHUNK = 64 * 1024


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 with nine fraction digits, fixed width (the kubelet's log timestamp layout)."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond * 1000:09d}Z"


def parse_timestamp(text: str) -> datetime:
    """Inverse of :func:`format_timestamp` (sub-microsecond digits are dropped)."""
    head, _, fraction = text.rstrip("Z").partition(".")
    moment = datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    return moment.replace(microsecond=int((fraction + "000000")[:6]))


class LogWriter:
    """Appends the output of one container run to its file and wakes the followers."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("ab", buffering=0)
        self._changed = asyncio.Event()
        self.closed = False

    def write(self, stream: str, data: bytes, *, complete: bool, moment: datetime) -> None:
        """Record ``data`` (without its newline) as one line (``complete``) or a fragment."""
        if self.closed:
            return
        stamp = format_timestamp(moment).encode("ascii")
        records = []
        for start in range(0, max(len(data), 1), MAX_RECORD):
            piece = data[start : start + MAX_RECORD]
            last = start + MAX_RECORD >= len(data)
            tag = b"F" if complete and last else b"P"
            records.append(b"%s %s %s %s\n" % (stamp, stream.encode("ascii"), tag, piece))
        self._file.write(b"".join(records))
        self._wake()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._file.close()
            self._wake()

    @property
    def changed(self) -> asyncio.Event:
        """Set at the next write or close. Take it *before* reading, so no change is missed."""
        return self._changed

    def _wake(self) -> None:
        # A fresh event per change: waiters of the old one wake, later waiters wait again.
        self._changed.set()
        self._changed = asyncio.Event()


def _render(record: bytes, options: LogOptions) -> tuple[datetime, bytes, bool] | None:
    """A record's time, its text as the kubelet shows it, and whether it ends a line."""
    try:
        stamp, _stream, tag, content = record.rstrip(b"\n").split(b" ", 3)
        moment = parse_timestamp(stamp.decode("ascii"))
    except ValueError:
        return None  # a torn or foreign line: skip it rather than fail the whole read
    complete = tag == b"F"
    text = content + (b"\n" if complete else b"")
    if options.timestamps:
        # Per record, as the kubelet does: a line written in pieces shows a stamp per piece.
        text = stamp + b" " + text
    return moment, text, complete


def _since(options: LogOptions, now: datetime) -> datetime | None:
    if options.since_time is not None:
        return options.since_time.astimezone(UTC)
    if options.since_seconds is not None:
        return datetime.fromtimestamp(now.timestamp() - options.since_seconds, UTC)
    return None


async def read_log(
    path: Path, writer: LogWriter | None, options: LogOptions, *, now: datetime
) -> AsyncIterator[bytes]:
    """Yield the rendered log of one run. ``writer`` is the live run's writer, None for a
    finished run; with ``options.follow`` and a live writer, keep yielding until it closes."""
    since = _since(options, now)
    remaining = options.limit_bytes
    follow = options.follow and writer is not None

    def admit(record: bytes) -> tuple[bytes, bool] | None:
        rendered = _render(record, options)
        if rendered is None or (since is not None and rendered[0] < since):
            return None
        return rendered[1], rendered[2]

    def cut(data: bytes) -> bytes:
        nonlocal remaining
        if remaining is None:
            return data
        data = data[:remaining]
        remaining -= len(data)
        return data

    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return
    with handle:
        # The backlog: whole file, then keep the last tail_lines lines. A line is its records
        # up to an F one (P records are its pieces); the last line may still be unfinished.
        kept: deque[bytes] = deque(maxlen=options.tail_lines if options.tail_lines is not None else None)
        line: list[bytes] = []
        pending = b""
        while chunk := handle.read(_READ_CHUNK):
            records = (pending + chunk).split(b"\n")
            pending = records.pop()
            for record in records:
                admitted = admit(record)
                if admitted is None:
                    continue
                line.append(admitted[0])
                if admitted[1]:
                    kept.append(b"".join(line))
                    line.clear()
        if line:
            kept.append(b"".join(line))
        if options.tail_lines == 0:
            kept.clear()
        backlog = cut(b"".join(kept))
        if backlog:
            yield backlog
        while follow and writer is not None and (remaining is None or remaining > 0):
            changed = writer.changed
            chunk = handle.read(_READ_CHUNK)
            if not chunk:
                if writer.closed:
                    break
                await changed.wait()
                continue
            records = (pending + chunk).split(b"\n")
            pending = records.pop()
            out = b"".join(admitted[0] for admitted in map(admit, records) if admitted is not None)
            out = cut(out)
            if out:
                yield out


def remove_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
