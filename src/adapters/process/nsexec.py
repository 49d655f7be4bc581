"""The trampoline between the provider's spawn and a container's command: it puts the process in
a mount namespace (a new private one with the container's volume mounts, or the namespace of a
running container for exec), changes to the working directory, then execs the command in
place, so the pid, the session and PR_SET_PDEATHSIG of the spawn all carry over.

Run as a script, ``python -I -S nsexec.py OPTIONS -- COMMAND...`` (``-I -S``: no site, no
``PYTHON*`` variables from the container's environment; stdlib only, nothing of vkubelet is
imported, so keep this module free of package imports). Options:

``--status-fd N``
    Where a failure before the exec is reported, as ``<errno>\\n<message>``; the descriptor is
    close-on-exec, so the provider reads EOF and nothing else once the command runs.
``--new``
    ``unshare(CLONE_NEWNS)`` and make every mount private (what ``unshare --mount
    --propagation private`` does), so nothing mounted here reaches the host.
``--enter-fd N``
    ``setns(N, CLONE_NEWNS)``: join the namespace ``N`` (an open ``/proc/<pid>/ns/mnt``) refers to.
``--bind SOURCE TARGET ro|rw``
    Bind-mount SOURCE (a directory or a file, already resolved by the provider) on TARGET,
    creating TARGET (a directory, or an empty file for a file) if it is missing; ``ro`` remounts
    it read-only once every mount is made (so a mount point nested in a read-only volume can be
    created). Every source is opened before the first mount, so a mount cannot hide a later
    source; mounts happen in the order given (parents first).
``--cwd DIR`` / ``--make-cwd``
    Change to DIR after the mounts (``--make-cwd``: create it first).
``--ctty``
    Start a new session with stdin (a pty's slave side) as its controlling terminal.
``--probe``
    Stop after the namespace step and exit 0: whether this host lets us create mount namespaces.

Exit status 127 when it fails before the exec (the message is on the status descriptor, or on
stderr without one).
"""

from __future__ import annotations

import ctypes
import os
import signal
import stat
import sys
from collections.abc import Sequence

CLONE_NEWNS = 0x00020000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_RELATIME = 0x200000
MNT_DETACH = 0x2
# statvfs's f_flag bits equal the MS_* bits on Linux; a read-only remount must keep these or the
# kernel refuses it where the mount is locked (user namespaces).
_KEPT_FLAGS = MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME | MS_RELATIME
FAILED = 127

_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    """mount(2); OSError naming the target on failure."""

    def encode(value: str | None) -> bytes | None:
        return None if value is None else os.fsencode(value)

    _check(
        _lib().mount(encode(source), encode(target), encode(fstype), ctypes.c_ulong(flags), encode(data)),
        f"mount {source or fstype or ''} on {target}",
    )


def umount(target: str, flags: int = 0) -> None:
    """umount2(2)."""
    _check(_lib().umount2(os.fsencode(target), flags), f"umount {target}")


def _unshare_private() -> None:
    _check(_lib().unshare(CLONE_NEWNS), "unshare a mount namespace")
    mount(None, "/", None, MS_REC | MS_PRIVATE, None)


def _enter(fd: int) -> None:
    _check(_lib().setns(fd, CLONE_NEWNS), "enter the container's mount namespace")
    os.close(fd)


def _bind(fd: int, source: str, target: str) -> None:
    try:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            os.makedirs(target, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(target) or "/", exist_ok=True)
            if not os.path.lexists(target):
                os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
    except OSError as error:
        raise OSError(error.errno, f"mount point {target}: {error.strerror}") from None
    # The open descriptor, not the path: a mount made earlier may now cover the path.
    try:
        mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC, None)
    except OSError as error:
        raise OSError(
            error.errno, f"bind-mount {source} on {target}: {os.strerror(error.errno or 0)}"
        ) from None


def _read_only(target: str) -> None:
    kept = os.statvfs(target).f_flag & _KEPT_FLAGS
    mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | kept, None)


class _Options:
    def __init__(self, args: Sequence[str]) -> None:
        self.status_fd: int | None = None
        self.new = False
        self.enter_fd: int | None = None
        self.binds: list[tuple[str, str, bool]] = []
        self.cwd: str | None = None
        self.make_cwd = False
        self.ctty = False
        self.probe = False
        self.argv: list[str] = []
        index = 0
        while index < len(args):
            arg = args[index]
            index += 1
            if arg == "--":
                self.argv = list(args[index:])
                return
            if arg == "--status-fd":
                self.status_fd, index = int(args[index]), index + 1
            elif arg == "--enter-fd":
                self.enter_fd, index = int(args[index]), index + 1
            elif arg == "--cwd":
                self.cwd, index = args[index], index + 1
            elif arg == "--bind":
                source, target, mode = args[index : index + 3]
                if mode not in ("ro", "rw"):
                    raise ValueError(f"--bind mode {mode!r}")
                self.binds.append((source, target, mode == "ro"))
                index += 3
            elif arg in ("--new", "--make-cwd", "--ctty", "--probe"):
                setattr(self, arg[2:].replace("-", "_"), True)
            else:
                raise ValueError(f"unknown option {arg!r}")


def _given_environment() -> dict[bytes, bytes]:
    """The environment this process was started with. Not ``os.environ``: Python's start-up may
    have added to it (PEP 538 sets LC_CTYPE=C.UTF-8 under the C locale), and the command must
    get exactly what the provider gave. /proc/self/environ is the original block."""
    with open("/proc/self/environ", "rb") as given:
        items = given.read().split(b"\0")
    return dict(item.partition(b"=")[::2] for item in items if b"=" in item)


def _run(options: _Options) -> None:
    environment = _given_environment()
    if options.enter_fd is not None:
        _enter(options.enter_fd)
    if options.new:
        _unshare_private()
    if options.probe:
        os._exit(0)
    opened = [os.open(source, os.O_PATH | os.O_CLOEXEC) for source, _, _ in options.binds]
    for fd, (source, target, _) in zip(opened, options.binds, strict=True):
        _bind(fd, source, target)
    # Read-only last: a mount point nested in a read-only volume can still be made first.
    for _, target, read_only in options.binds:
        if read_only:
            _read_only(target)
    for fd in opened:
        os.close(fd)
    if options.cwd is not None:
        try:
            if options.make_cwd:
                os.makedirs(options.cwd, exist_ok=True)
            os.chdir(options.cwd)
        except OSError as error:
            raise OSError(error.errno, f"working directory {options.cwd}: {error.strerror}") from None
    if options.ctty:
        import fcntl
        import termios

        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    if not options.argv:
        raise ValueError("no command")
    # Python ignores these at startup, and an ignored signal stays ignored across exec.
    for name in ("SIGPIPE", "SIGXFSZ"):
        signal.signal(getattr(signal, name), signal.SIG_DFL)
    try:
        os.execvpe(options.argv[0], options.argv, environment)
    except OSError as error:  # named by the command, not by the last PATH entry tried
        raise OSError(error.errno, error.strerror, options.argv[0]) from None


def main(args: Sequence[str]) -> None:
    status_fd = None
    try:
        options = _Options(args)
        status_fd = options.status_fd
        if status_fd is not None:
            os.set_inheritable(status_fd, False)  # closed by the exec: EOF means it ran
        _run(options)
    except BaseException as error:  # anything before the exec is a failure to start
        code, message = 0, repr(error)
        if isinstance(error, OSError) and error.strerror:
            code, message = error.errno or 0, error.strerror
            if error.filename is not None:
                message += f": {os.fsdecode(error.filename)}"
        report = f"{code}\n{message}".encode(errors="replace")
        if status_fd is not None:
            os.write(status_fd, report)
        else:
            os.write(2, message.encode(errors="replace") + b"\n")
        os._exit(FAILED)


if __name__ == "__main__":
    main(sys.argv[1:])
