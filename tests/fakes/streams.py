"""A hand-written provider fake for exec, attach and port-forward tests (integration and e2e)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from vkubelet.application.ports.streams import ByteStream, StreamIO
from vkubelet.domain.pod import PodRef
from vkubelet.domain.provider import Capability

ALL = frozenset({Capability.EXEC, Capability.ATTACH, Capability.PORT_FORWARD})


class StreamingProvider:
    """Hand-written fake: ``echo`` copies stdin to stdout until EOF, ``echo-once`` copies one
    chunk, both then write ``done`` to stderr and exit 7; ``resize`` reports the first terminal
    size; ``hang`` waits until cancelled; ``fail`` raises. Port-forward echoes ``<port>:data``,
    and fails on port 1."""

    def __init__(self, capabilities: frozenset[Capability] = ALL) -> None:
        self._capabilities = capabilities
        self.cancelled = asyncio.Event()
        self.forward_cancelled = asyncio.Event()
        self.started = asyncio.Event()
        self.io: list[tuple[bool, bool, bool, bool]] = []
        self.targets: list[tuple[PodRef, str]] = []

    def capabilities(self) -> frozenset[Capability]:
        return self._capabilities

    def native_volume_kinds(self) -> frozenset[str]:
        return frozenset()

    async def exec_in_container(
        self, ref: PodRef, container: str, command: Sequence[str], io: StreamIO
    ) -> int:
        self.targets.append((ref, container))
        self.io.append((io.stdin, io.stdout, io.stderr, io.tty))
        verb = command[0]
        if verb in ("echo", "echo-once"):
            while chunk := await io.read_stdin():
                await io.write_stdout(chunk)
                if verb == "echo-once":
                    break
            await io.write_stderr(b"done\n")
            return 7
        if verb == "resize":
            async for size in io.resizes():
                await io.write_stdout(f"{size.width}x{size.height}\n".encode())
                break
            await io.write_stderr(b"on the tty\n")
            return 0
        if verb == "hang":
            self.started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        if verb == "big":
            await io.write_stdout(b"x" * 300_000)
            return 0
        raise RuntimeError("boom")

    async def attach_to_container(self, ref: PodRef, container: str, io: StreamIO) -> int:
        await io.write_stdout(b"attached\n")
        return 0

    async def port_forward(self, ref: PodRef, port: int, stream: ByteStream) -> None:
        if port == 1:
            raise ConnectionRefusedError("nothing listens on port 1")
        try:
            while chunk := await stream.read():
                await stream.write(f"{port}:".encode() + chunk)
        except asyncio.CancelledError:
            self.forward_cancelled.set()
            raise
        await stream.close()
