"""The real clock, and what the host looks like from the network."""

from __future__ import annotations

import asyncio
import socket
import time
from datetime import UTC, datetime


class SystemClock:
    """Implements the ``Clock`` port with the OS clocks."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


def primary_host_ip() -> str:
    """The address other machines reach this host on (the source of the route outwards)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1; a UDP connect sends no packet
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"
