"""Starting and stopping process trees, and pseudo-terminals on the event loop (Linux)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import pty
import shutil
import struct
import sys
import termios
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from vkubelet.adapters.system import die_with_parent_prefix

_SETSID = shutil.which("setsid")
# Fallback for a controlling terminal without util-linux: a tiny Python trampoline.
_CTTY_TRAMPOLINE = (
    "import fcntl, os, sys, termios; os.setsid(); fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "os.execvp(sys.argv[1], sys.argv[1:])"
)


def resolvable(program: str, *, env: Mapping[str, str], cwd: Path) -> bool:
    """Whether ``program`` names an executable, looked up as exec would (PATH, or a path)."""
    if "/" in program:
        path = Path(program) if os.path.isabs(program) else cwd / program
        return path.is_file() and os.access(path, os.X_OK)
    return shutil.which(program, path=env.get("PATH", os.defpath)) is not None


async def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    stdin: int,
    stdout: int,
    stderr: int,
    controlling_tty: bool = False,
) -> asyncio.subprocess.Process:
    """Start ``argv`` as the leader of a new session (so its whole tree can be signalled).

    With ``controlling_tty``, stdin must be a pty's slave side, which becomes the session's
    controlling terminal.
    """
    # The tree dies with the provider (even on kill -9): a restarted provider cannot adopt
    # orphans whose output pipes are gone, and vkubelet recreates what it no longer lists.
    prefix: list[str] = die_with_parent_prefix()
    if controlling_tty:
        # setsid(1) is not a group leader here, so it calls setsid() in place, then TIOCSCTTY.
        prefix += [_SETSID, "--ctty"] if _SETSID else [sys.executable, "-c", _CTTY_TRAMPOLINE]
    return await asyncio.create_subprocess_exec(
        *prefix,
        *argv,
        env=dict(env),
        cwd=str(cwd),
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        start_new_session=not controlling_tty,
    )


def signal_tree(pid: int, signum: int) -> None:
    """Signal the process group led by ``pid``; a group already gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


class Pty:
    """The master side of a pseudo-terminal, read and written without blocking the loop."""

    def __init__(self) -> None:
        self.master, self.slave = pty.openpty()
        os.set_blocking(self.master, False)
        self._loop = asyncio.get_running_loop()

    def close_slave(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.slave)

    def close(self) -> None:
        self.close_slave()
        with contextlib.suppress(OSError):
            os.close(self.master)

    async def read(self) -> bytes:
        """The next output; ``b""`` once every slave side is closed (the process exited)."""
        while True:
            try:
                return os.read(self.master, 65536)
            except BlockingIOError:
                await self._ready(self._loop.add_reader, self._loop.remove_reader)
            except OSError as error:
                if error.errno == errno.EIO:  # Linux: the slave side is gone
                    return b""
                raise

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.master, view) :]
            except BlockingIOError:
                await self._ready(self._loop.add_writer, self._loop.remove_writer)

    def resize(self, *, width: int, height: int) -> None:
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))

    async def _ready(self, add: Callable[..., None], remove: Callable[[int], object]) -> None:
        ready: asyncio.Future[None] = self._loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        add(self.master, wake)
        try:
            await ready
        finally:
            remove(self.master)
