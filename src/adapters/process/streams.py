"""Logs, exec, attach and port-forward of the provider's containers (the ContainerStreams port);
the provider looks the container up and hands it here.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import signal
import subprocess
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from vkubelet.adapters.process import ephemeral
from vkubelet.adapters.process.logs import read_log
from vkubelet.adapters.process.records import Container
from vkubelet.adapters.process.spawn import Pty, resolvable, signal_tree, spawn
from vkubelet.application.ports.streams import ByteStream, LogOptions, StreamIO
from vkubelet.domain.container_status import exit_code
from vkubelet.domain.errors import InvalidInput, NotFound
from vkubelet.domain.pod import PodRef

_DRAIN_SECONDS = 1.0  # output still buffered when a process exits
_FIRST_RESIZE_WAIT_SECONDS = 1.0  # how long a tty exec waits for the client's terminal size


async def container_logs(
    ref: PodRef, target: Container, options: LogOptions, *, now: datetime
) -> AsyncIterator[bytes]:
    container = target.name
    index = target.runs - 1
    if options.previous:
        index -= 1
        if index < 0 or not target.log_path(index).exists():
            raise NotFound(f'previous terminated container "{container}" in pod "{ref.name}" not found')
    writer = None
    if not options.previous and target.run is not None and target.run.code is None:
        writer = target.run.log
    if index < 0:
        raise InvalidInput(f'container "{container}" in pod "{ref.name}" is waiting to start')
    async for chunk in read_log(target.log_path(index), writer, options, now=now):
        yield chunk


async def exec_in_container(ref: PodRef, target: Container, command: Sequence[str], io: StreamIO) -> int:
    """Run ``command`` with the container's env and working directory, in its mount
    namespace when it has volume mounts (it must be running then); its exit code."""
    container = target.name
    if not command:
        raise InvalidInput("exec needs a command")
    namespace_of = None
    if target.mounts or target.entered:
        run = target.run
        if run is None or run.code is not None or run.process.returncode is not None:
            raise InvalidInput(
                f"container {container} of pod {ref} is not running: an exec joins its mount namespace"
            )
        namespace_of = run.process.pid  # the command is looked up in there
    elif not resolvable(command[0], env=target.env, cwd=target.cwd):
        return await _spawn_failed(io, command, FileNotFoundError(errno.ENOENT, "executable file not found"))
    if io.tty:
        return await _exec_tty(target, list(command), io, namespace_of=namespace_of)
    pipe, null = subprocess.PIPE, subprocess.DEVNULL
    try:
        process = await spawn(
            command,
            env=target.env,
            cwd=target.cwd,
            stdin=pipe if io.stdin else null,
            stdout=pipe if io.stdout else null,
            stderr=pipe if io.stderr else null,
            namespace_of=namespace_of,
        )
    except OSError as error:
        return await _spawn_failed(io, command, error)
    outputs = []
    if process.stdout is not None:
        outputs.append(asyncio.create_task(_copy_out(process.stdout, io.write_stdout)))
    if process.stderr is not None:
        outputs.append(asyncio.create_task(_copy_out(process.stderr, io.write_stderr)))
    feeder = asyncio.create_task(_feed_stdin(io, process.stdin, close_at_eof=True))
    try:
        code = await process.wait()
        await drain(outputs)
    finally:
        feeder.cancel()
        signal_tree(process.pid, signal.SIGKILL)
        if process.returncode is None:
            process.kill()
            await process.wait()
    return exit_code(code)


async def attach_to_container(ref: PodRef, target: Container, io: StreamIO) -> int:
    """Stream the running process's output from now on and feed it stdin (when the spec has
    ``stdin: true``); returns its exit code when it ends."""
    container = target.name
    run = target.run
    if run is None or run.code is not None:
        raise InvalidInput(f"container {container} of pod {ref} is not running")
    queue: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue()
    run.subscribers.add(queue)
    if run.terminal is not None:  # tty: stdin and resizes go to its terminal
        wants_stdin = io.stdin and bool(target.spec.get("stdin"))
        feeder = asyncio.create_task(ephemeral.feed_terminal(io, run.terminal, stdin=wants_stdin))
    else:
        stdin = run.process.stdin if io.stdin else None
        close_at_eof = bool(target.spec.get("stdinOnce"))
        feeder = asyncio.create_task(_feed_stdin(io, stdin, close_at_eof=close_at_eof))
    try:
        while (item := await queue.get()) is not None:
            stream, data = item
            if stream == "stderr" and not io.tty:
                if io.stderr:
                    await io.write_stderr(data)
            elif io.stdout:
                await io.write_stdout(data)
    finally:
        feeder.cancel()
        run.subscribers.discard(queue)
    await run.ended.wait()
    assert run.code is not None
    return run.code


async def port_forward(ref: PodRef, port: int, stream: ByteStream) -> None:
    """Pump bytes between ``stream`` and 127.0.0.1:``port`` until the process side closes."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as error:
        raise InvalidInput(f"pod {ref}: nothing accepts connections on port {port}: {error}") from error

    async def upstream() -> None:
        while data := await stream.read():
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()  # half-close: the server may still answer

    sender = asyncio.create_task(upstream())
    try:
        while data := await reader.read(65536):
            await stream.write(data)
    finally:
        sender.cancel()
        writer.close()
        with contextlib.suppress(OSError, asyncio.CancelledError):
            await sender
        await stream.close()


async def _exec_tty(
    target: Container, argv: list[str], io: StreamIO, *, namespace_of: int | None = None
) -> int:
    terminal = Pty()
    sized = asyncio.Event()

    async def resize() -> None:
        try:
            async for size in io.resizes():
                terminal.resize(width=size.width, height=size.height)
                sized.set()
        finally:
            sized.set()

    # kubectl sends the terminal's size right after the stream opens; a command spawned before
    # it arrives (`stty size`, a shell laying out its prompt) would see 0x0.
    resizer = asyncio.create_task(resize())
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sized.wait(), _FIRST_RESIZE_WAIT_SECONDS)
        try:
            process = await spawn(
                argv,
                env={"TERM": "xterm", **target.env},
                cwd=target.cwd,
                stdin=terminal.slave,
                stdout=terminal.slave,
                stderr=terminal.slave,
                controlling_tty=True,
                namespace_of=namespace_of,
            )
        except OSError as error:
            return await _spawn_failed(io, argv, error)
        terminal.close_slave()

        async def output() -> None:
            while data := await terminal.read():
                await io.write_stdout(data)

        async def feed() -> None:
            if io.stdin:
                while data := await io.read_stdin():
                    await terminal.write(data)

        helpers = [asyncio.create_task(feed()), resizer]
        reader = asyncio.create_task(output())
        try:
            code = await process.wait()
            await drain([reader])
        finally:
            for task in helpers:
                task.cancel()
            signal_tree(process.pid, signal.SIGKILL)
            if process.returncode is None:
                process.kill()
                await process.wait()
        return exit_code(code)
    finally:
        resizer.cancel()
        terminal.close()


async def _copy_out(reader: asyncio.StreamReader, write: Any) -> None:
    while data := await reader.read(65536):
        await write(data)


async def _feed_stdin(io: StreamIO, writer: asyncio.StreamWriter | None, *, close_at_eof: bool) -> None:
    if writer is None or not io.stdin:
        return
    try:
        while data := await io.read_stdin():
            writer.write(data)
            await writer.drain()
        if close_at_eof:
            writer.close()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the process stopped reading: its exit ends the session


async def drain(tasks: Sequence[asyncio.Task[None]]) -> None:
    """Let output pumps finish; one held open by an escaped grandchild is cut off."""
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=_DRAIN_SECONDS)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _spawn_failed(io: StreamIO, argv: Sequence[str], error: OSError) -> int:
    message = f"exec {argv[0]!r} failed: {error.strerror or error}\n".encode()
    if io.stderr and not io.tty:
        await io.write_stderr(message)
    elif io.stdout:
        await io.write_stdout(message)
    return 127 if isinstance(error, FileNotFoundError) else 126
