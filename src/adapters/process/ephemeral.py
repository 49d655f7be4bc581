"""Ephemeral containers (``kubectl debug``) and container terminals for the process provider.

The kubelet's rules, which the provider follows: an ephemeral container is started once, when
it first appears in the spec, and is never restarted nor removed; it counts neither towards
the pod's phase nor its readiness (``ready`` stays false), and is reported in
``ephemeralContainerStatuses``. Images are ignored as everywhere in this provider:
``kubectl debug --image=busybox -- sh`` runs this host's ``sh``.

Which files it sees: with ``volumeMounts`` of its own it gets a private mount namespace like
any container; otherwise, with ``targetContainerName`` naming a container that runs in one, it
joins that namespace (as an exec into the target does); otherwise it sees the host's.

With ``tty: true`` the process starts on a pseudo-terminal, its controlling terminal and all
three standard streams; attach then writes stdin to the terminal and applies the client's
resizes, and the output (stdout only, as with any tty) is logged as it is for pipes.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Container, Mapping
from typing import Any

from vkubelet.adapters.process.spawn import Pty
from vkubelet.application.ports.streams import StreamIO
from vkubelet.domain.pod import Pod


def new_specs(pod: Pod, started: Container[str]) -> list[Mapping[str, Any]]:
    """The pod's ephemeral containers whose name is not among ``started``, in spec order."""
    specs = pod.spec.get("ephemeralContainers") or ()
    return [spec for spec in specs if isinstance(spec, Mapping) and str(spec.get("name")) not in started]


def earlier_state(pod: Pod, name: str) -> dict[str, Any] | None:
    """The state to report, instead of starting it, for an ephemeral container the API status
    shows as started already: the pod was lost and is being created again, and the kubelet
    never runs an ephemeral container twice (the API server refuses a terminated container
    going back to running). A run that was lost with the pod is reported terminated with 137,
    like the kubelet's ContainerStatusUnknown. None: it never ran, start it."""
    for status in pod.status.get("ephemeralContainerStatuses") or ():
        if not isinstance(status, Mapping) or status.get("name") != name:
            continue
        state = status.get("state") or {}
        if "terminated" in state:
            return {"terminated": dict(state["terminated"])}
        if "running" in state:
            terminated = {
                "exitCode": 137,
                "reason": "ContainerStatusUnknown",
                "message": "The container could not be located when the pod was created again",
            }
            started = (state.get("running") or {}).get("startedAt")
            return {"terminated": {**terminated, "startedAt": started} if started else terminated}
    return None


def status(container_status: Mapping[str, Any]) -> dict[str, Any]:
    """A container status as an ephemeral container's: never ready (no probes, no readiness)."""
    return {**container_status, "ready": False}


def stdio(spec: Mapping[str, Any], terminal: Pty | None) -> tuple[int, int, int]:
    """stdin, stdout, stderr for a container's main process: the terminal's slave side for
    all three with a tty, else pipes (stdin only when the spec asks for it)."""
    if terminal is not None:
        return terminal.slave, terminal.slave, terminal.slave
    stdin = subprocess.PIPE if spec.get("stdin") else subprocess.DEVNULL
    return stdin, subprocess.PIPE, subprocess.PIPE


class TerminalReader:
    """A pty's master side read like a StreamReader (``read(n)``), for the output pump."""

    def __init__(self, terminal: Pty) -> None:
        self._terminal = terminal

    async def read(self, n: int = -1) -> bytes:
        return await self._terminal.read()


async def feed_terminal(io: StreamIO, terminal: Pty, *, stdin: bool) -> None:
    """An attach session's input to a container's terminal until cancelled: its stdin (when
    ``stdin``; a terminal is not closed at the client's end of input) and its resizes."""

    async def resize() -> None:
        async for size in io.resizes():
            with contextlib.suppress(OSError):  # the terminal closed: the run ended
                terminal.resize(width=size.width, height=size.height)

    async def feed() -> None:
        with contextlib.suppress(OSError):
            while data := await io.read_stdin():
                await terminal.write(data)

    await asyncio.gather(resize(), feed() if stdin else asyncio.sleep(0))
