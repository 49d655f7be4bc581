"""A FakeProvider with container logs: fixed chunks, then (with follow) whatever a test feeds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from tests.fakes.provider import FakeProvider
from vkubelet.application.ports.streams import LogOptions
from vkubelet.domain.errors import NotFound
from vkubelet.domain.pod import PodRef
from vkubelet.domain.provider import Capability


class LogsProvider(FakeProvider):
    """``container_logs`` yields ``chunks``; with ``follow`` it then yields what :meth:`feed`
    gives until :meth:`end`. :attr:`closed` is set when the consumer closes the stream."""

    def __init__(self, chunks: Sequence[bytes] = ()) -> None:
        super().__init__()
        self.chunks = list(chunks)
        self.requests: list[tuple[PodRef, str, LogOptions]] = []
        self.opened = asyncio.Event()
        self.closed = asyncio.Event()
        self._follow: asyncio.Queue[bytes | None] = asyncio.Queue()

    def feed(self, data: bytes) -> None:
        self._follow.put_nowait(data)

    def end(self) -> None:
        self._follow.put_nowait(None)

    async def container_logs(self, ref: PodRef, container: str, options: LogOptions) -> AsyncIterator[bytes]:
        self.requests.append((ref, container, options))
        if container == "missing-logs":
            raise NotFound(f"no log for {container}")
        self.opened.set()
        try:
            for chunk in self.chunks:
                yield chunk
            while options.follow:
                data = await self._follow.get()
                if data is None:
                    return
                yield data
        finally:
            self.closed.set()

    def capabilities(self) -> frozenset[Capability]:
        return super().capabilities() | {Capability.LOGS}
