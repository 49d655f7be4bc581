"""The real clock, and what the host looks like: its network address, its CPU architecture."""

from __future__ import annotations

import asyncio
import platform
import shutil
import socket
import threading
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


def die_with_parent_prefix() -> list[str]:
    """A command prefix that makes the child get SIGKILL when this process dies, even by kill -9.

    util-linux's ``setpriv`` sets PR_SET_PDEATHSIG and execs in place (same pid). Not a
    ``preexec_fn``: Python code between fork and exec can crash children when other threads (gRPC)
    run. The signal follows the *thread* that started the child, not the process: a child
    started from a short-lived thread (``asyncio.to_thread``) would be killed when that thread
    ends. So only the main thread gets the guarantee; elsewhere, and where setpriv is missing,
    the prefix is empty.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None or threading.current_thread() is not threading.main_thread():
        return []
    return [setpriv, "--pdeathsig", "KILL", "--"]


# platform.machine() spellings -> Go's GOARCH names, which Kubernetes uses for kubernetes.io/arch.
_GO_ARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "armv6l": "arm",
    "i386": "386",
    "i686": "386",
    "x86": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


def host_architecture() -> str:
    """The host's CPU architecture under its Go name (``amd64``, ``arm64``, ...)."""
    machine = platform.machine().lower()
    return _GO_ARCH.get(machine, machine or "amd64")
