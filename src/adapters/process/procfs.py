"""CPU and memory of process trees, read from /proc (Linux).

Every container's main process leads its own session (it is started with ``setsid``), so the
tree of a container is every process whose session id is the leader's pid. One scan of /proc
answers for all containers at once.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True, slots=True)
class TreeUsage:
    cpu_nano_seconds: int  # user + system time of the live members and their reaped children
    rss_bytes: int


def _stat_fields(pid: str) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read().decode("ascii", "replace")
    except OSError:
        return None  # the process exited during the scan
    # The command name (field 2) is in parentheses and may contain spaces: split after it.
    return raw[raw.rfind(")") + 2 :].split()


def _rss_bytes(pid: str, fields: list[str]) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as handle:
            for line in handle:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return int(fields[21]) * _PAGE  # stat's rss (pages) when status is unreadable


def tree_usage(sessions: Iterable[int]) -> Mapping[int, TreeUsage]:
    """Usage per session leader pid, for the given leaders; absent leaders are omitted."""
    wanted = {str(sid) for sid in sessions}
    cpu: dict[str, int] = {}
    rss: dict[str, int] = {}
    if not wanted:
        return {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        fields = _stat_fields(pid)
        # After the name: state(0) ppid(1) pgrp(2) session(3) ... utime(11) stime(12)
        # cutime(13) cstime(14) ... rss(21). Reaped children's time (cutime/cstime) counts, so
        # the counter does not drop when a short-lived child exits.
        if fields is None or len(fields) < 22 or fields[3] not in wanted:
            continue
        if fields[0] == "Z":
            continue
        session = fields[3]
        ticks = sum(int(value) for value in fields[11:15])
        cpu[session] = cpu.get(session, 0) + ticks * 1_000_000_000 // _TICKS
        rss[session] = rss.get(session, 0) + _rss_bytes(pid, fields)
    return {int(s): TreeUsage(cpu_nano_seconds=cpu[s], rss_bytes=rss[s]) for s in cpu}


def total_memory_bytes() -> int | None:
    try:
        with open("/proc/meminfo", "rb") as handle:
            for line in handle:
                if line.startswith(b"MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def processes_with_env(name: str, value: str) -> list[int]:
    """Pids of the processes (readable by us) whose environment has ``name=value``."""
    wanted = f"{name}={value}".encode()
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                variables = handle.read().split(b"\0")
        except OSError:
            continue  # gone, or another user's
        if wanted in variables:
            found.append(int(pid))
    return found
