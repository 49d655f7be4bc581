"""Starting and stopping process trees, and pseudo-terminals on the event loop (Linux).

A process with volume mounts starts through :mod:`.nsexec` (``python -I -S nsexec.py``), which
creates its private mount namespace, bind-mounts the volumes and then execs the command in
place; an exec into such a container joins that namespace the same way. The trampoline reports
a failure before its exec on a close-on-exec pipe, which :func:`spawn` turns into the OSError a
failed exec would have raised, so callers handle both paths alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import pty
import shutil
import signal
import struct
import subprocess
import sys
import termios
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from vkubelet.adapters.process import nsexec
from vkubelet.adapters.system import die_with_parent_prefix

_SETSID = shutil.which("setsid")
# Fallback for a controlling terminal without util-linux: a tiny Python trampoline.
_CTTY_TRAMPOLINE = (
    "import fcntl, os, sys, termios; os.setsid(); fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "os.execvp(sys.argv[1], sys.argv[1:])"
)


# -I -S: the container's PYTHON* variables are ignored and no site-packages are read.
_NSEXEC = [sys.executable, "-I", "-S", str(Path(nsexec.__file__).resolve())]


@dataclass(frozen=True, slots=True)
class BindMount:
    """One volume mount of a container: ``source`` is the resolved path on this host (a
    directory, or a file for a subPath of one), ``target`` the absolute ``mountPath``."""

    source: Path
    target: str
    read_only: bool


def mount_namespace_problem() -> str:
    """Why this process may not create mount namespaces and mount in them; empty when it may.
    It tries, in a child, and blocks for the few milliseconds that takes."""
    try:
        probe = subprocess.run([*_NSEXEC, "--new", "--probe"], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError) as error:
        return f"cannot run the mount namespace helper: {error}"
    if probe.returncode == 0:
        return ""
    return probe.stderr.decode(errors="replace").strip() or f"the probe exited {probe.returncode}"


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
    mounts: Sequence[BindMount] | None = None,
    namespace_of: int | None = None,
) -> asyncio.subprocess.Process:
    """Start ``argv`` as the leader of a new session (so its whole tree can be signalled).

    With ``controlling_tty``, stdin must be a pty's slave side, which becomes the session's
    controlling terminal. With ``mounts`` the process gets a private mount namespace holding
    them (parents first: the order given), and ``cwd``, seen from inside it, is created when
    missing. With ``namespace_of`` (a pid) it joins that process's mount namespace and ``cwd``
    is looked up there. Either raises OSError when the process cannot start (mount failed,
    command not found, ...), with the errno of the failing step.
    """
    # The tree dies with the provider (even on kill -9): a restarted provider cannot adopt
    # orphans whose output pipes are gone, and vkubelet recreates what it no longer lists.
    prefix: list[str] = die_with_parent_prefix()
    if mounts is not None or namespace_of is not None:
        return await _spawn_in_namespace(
            prefix,
            argv,
            env=env,
            cwd=cwd,
            stdio=(stdin, stdout, stderr),
            controlling_tty=controlling_tty,
            mounts=mounts,
            namespace_of=namespace_of,
        )
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


async def _spawn_in_namespace(
    prefix: list[str],
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    stdio: tuple[int, int, int],
    controlling_tty: bool,
    mounts: Sequence[BindMount] | None,
    namespace_of: int | None,
) -> asyncio.subprocess.Process:
    report_fd, status_fd = os.pipe()
    options = ["--status-fd", str(status_fd)]
    inherited = [status_fd]
    try:
        if namespace_of is not None:
            # A descriptor, not the pid: it names that namespace even if the pid is reused.
            namespace_fd = os.open(f"/proc/{namespace_of}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
            inherited.append(namespace_fd)
            options += ["--enter-fd", str(namespace_fd)]
        else:
            options.append("--new")
            for bind in mounts or ():
                options += ["--bind", str(bind.source), bind.target, "ro" if bind.read_only else "rw"]
            options.append("--make-cwd")
        options += ["--cwd", str(cwd)]
        if controlling_tty:
            options.append("--ctty")  # the trampoline calls setsid() itself
        stdin, stdout, stderr = stdio
        process = await asyncio.create_subprocess_exec(
            *prefix,
            *_NSEXEC,
            *options,
            "--",
            *argv,
            env=dict(env),
            cwd="/",
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            start_new_session=not controlling_tty,
            pass_fds=inherited,
        )
    except BaseException:
        os.close(report_fd)
        raise
    finally:
        for fd in inherited:
            os.close(fd)
    try:
        report = await _read_to_eof(report_fd)
    except BaseException:
        signal_tree(process.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        raise
    finally:
        os.close(report_fd)
    if report:  # it never reached its exec
        await process.wait()
        code, _, message = report.decode(errors="replace").partition("\n")
        raise OSError(int(code) if code.isdigit() else 0, message)
    return process


async def _read_to_eof(fd: int) -> bytes:
    os.set_blocking(fd, False)
    loop = asyncio.get_running_loop()
    chunks: list[bytes] = []
    while True:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            await _readable(loop, fd)
            continue
        if not data:
            return b"".join(chunks)
        chunks.append(data)


async def _readable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


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
