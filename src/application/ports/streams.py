"""Container streams: logs, exec, attach and port-forward (capabilities LOGS, EXEC, ATTACH,
PORT_FORWARD). The kubelet API adapts HTTP/SPDY/WebSocket connections to these shapes; a
provider (in process or behind gRPC) implements them. A provider lacking one raises
NotSupported, which the kubelet API answers with 501.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from vkubelet.domain.pod import PodRef


@dataclass(frozen=True, slots=True)
class LogOptions:
    """The kubelet's /containerLogs query options (all optional)."""

    follow: bool = False
    tail_lines: int | None = None
    since_seconds: int | None = None
    since_time: datetime | None = None
    timestamps: bool = False
    limit_bytes: int | None = None
    previous: bool = False


@dataclass(frozen=True, slots=True)
class TerminalSize:
    width: int
    height: int


class StreamIO(Protocol):
    """One exec/attach session's standard streams, as seen by the provider.

    ``stdin``/``stdout``/``stderr`` say which streams the client asked for; with ``tty`` there
    is no separate stderr (the kubelet folds it into stdout).
    """

    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool

    async def read_stdin(self) -> bytes:
        """The next chunk of stdin; ``b""`` once the client closed it."""
        ...

    async def write_stdout(self, data: bytes) -> None: ...

    async def write_stderr(self, data: bytes) -> None: ...

    def resizes(self) -> AsyncIterator[TerminalSize]:
        """Terminal size changes (tty sessions); ends when the session ends."""
        ...


class ByteStream(Protocol):
    """A bidirectional byte stream (one port-forward connection)."""

    async def read(self) -> bytes:
        """The next chunk; ``b""`` at end of stream."""
        ...

    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None: ...


class ContainerStreams(Protocol):
    def container_logs(self, ref: PodRef, container: str, options: LogOptions) -> AsyncIterator[bytes]:
        """Log bytes of ``container``; with ``follow`` it continues until the caller stops
        iterating (client disconnect) or the container's log ends. Raises NotFound."""
        ...

    async def exec_in_container(
        self, ref: PodRef, container: str, command: Sequence[str], io: StreamIO
    ) -> int:
        """Run ``command`` in the container's environment; returns its exit code."""
        ...

    async def attach_to_container(self, ref: PodRef, container: str, io: StreamIO) -> int:
        """Attach to the container's main process; returns its exit code when it ends."""
        ...

    async def port_forward(self, ref: PodRef, port: int, stream: ByteStream) -> None:
        """Connect ``stream`` to ``port`` inside the pod until either side closes.

        Raises (InvalidInput when nothing accepts connections on the port) *before* reading
        ``stream``, and reads it only once connected: the first ``read()`` means "connected",
        which is how a TCP probe tells a live server that never writes from a refused port.
        """
        ...
