"""``/exec`` and ``/attach``: the kubelet's remote command protocols over SPDY/3.1 and WebSocket.

Query: ``command`` (repeated, exec only), ``input``/``stdin``, ``output``/``stdout``,
``error``/``stderr``, ``tty``, each on when ``1`` or ``true``. At least one of the three
standard streams is required (400). With ``tty`` stderr is dropped, as the kubelet does
(upstream answered 400: its bug 6); the provider sees one combined output.

SPDY (``Upgrade: SPDY/3.1``): ``X-Stream-Protocol-Version`` is negotiated by *our* preference
among the values the client sends (upstream took the client's first value: bug 6). The client
then opens one stream per ``streamtype`` header (error, stdin, stdout, stderr, resize from v3
on with a tty), all within ``StreamTimeouts.creation``. v4 and v5 report the result on the
error stream as a JSON ``metav1.Status`` (Success, or Failure with reason NonZeroExitCode and an
ExitCode cause: kubectl turns that into its own exit code); v1-v3 write a plain message on
failure only.

WebSocket: the channel protocols of :mod:`.wsstream` (v5 and v4, binary and base64, and the
pre-v4 ones).

A client that goes away cancels the provider call. Errors found before the upgrade (no such
pod, missing capability, bad query) are ordinary HTTP answers through the server's error
translation; after it, they travel on the error stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import hdrs, web
from multidict import MultiMapping

from vkubelet.adapters.kubeletapi import spdy, wsstream
from vkubelet.application.kubelet_api import KubeletApi
from vkubelet.application.ports.streams import TerminalSize
from vkubelet.application.settings import ServerSettings
from vkubelet.domain.errors import InvalidInput
from vkubelet.domain.pod import PodRef
from vkubelet.domain.provider import Capability

log = logging.getLogger(__name__)

_DEFAULTS = ServerSettings()


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamTimeouts:
    """``creation``: how long a client has to open all its streams (or a port-forward pair);
    ``idle``: a session with no traffic for this long is closed (0: never). Keyword-only because
    upstream swapped the two (its bug 6)."""

    creation: float = _DEFAULTS.stream_creation_timeout
    idle: float = _DEFAULTS.stream_idle_timeout


STREAM_TIMEOUTS_KEY: web.AppKey[StreamTimeouts] = web.AppKey("stream_timeouts", StreamTimeouts)

SPDY_PROTOCOLS = (
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
)
_RESIZE_SPDY = {"v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io"}
_JSON_STATUS_SPDY = {"v5.channel.k8s.io", "v4.channel.k8s.io"}
PROTOCOL_HEADER = "X-Stream-Protocol-Version"


@dataclass(frozen=True, slots=True)
class ExecOptions:
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool
    command: tuple[str, ...] = ()


def _flag(query: MultiMapping[str], *names: str) -> bool:
    return any(query.get(name, "").lower() in ("1", "true") for name in names)


def parse_exec_options(query: MultiMapping[str], *, with_command: bool) -> ExecOptions:
    """The stream options of an exec/attach request; InvalidInput when unusable."""
    tty = _flag(query, "tty")
    options = ExecOptions(
        stdin=_flag(query, "input", "stdin"),
        stdout=_flag(query, "output", "stdout"),
        stderr=_flag(query, "error", "stderr") and not tty,
        tty=tty,
        command=tuple(query.getall("command", ())),
    )
    if not (options.stdin or options.stdout or _flag(query, "error", "stderr")):
        raise InvalidInput("you must specify at least one of stdin, stdout, stderr")
    if with_command and not options.command:
        raise InvalidInput("you must specify a command (the command query parameter)")
    return options


# -- results --------------------------------------------------------------------------------------
def success_status() -> dict[str, Any]:
    return {"metadata": {}, "status": "Success"}


def exit_code_status(exit_code: int, what: str) -> dict[str, Any]:
    """The Failure kubectl maps to its own exit code (client-go's exec.CodeExitError)."""
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: {what}, exit code {exit_code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(exit_code)}]},
    }


def internal_error_status(message: str) -> dict[str, Any]:
    return {
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "InternalError",
        "details": {"causes": [{"message": message}]},
        "code": 500,
    }


def encode_status(status: Mapping[str, Any], *, json_status: bool) -> bytes:
    """What goes on the error stream: the JSON Status (v4+), else the message of a failure."""
    if json_status:
        return json.dumps({"kind": "Status", "apiVersion": "v1", **status}).encode()
    if status.get("status") == "Success":
        return b""
    return str(status.get("message", "")).encode()


# -- StreamIO over any transport ------------------------------------------------------------------
Reader = Callable[[], Awaitable[bytes]]
Writer = Callable[[bytes], Awaitable[None]]


async def _no_input() -> bytes:
    return b""


async def _discard(data: bytes) -> None:
    return None


@dataclass(eq=False)
class ChannelIO:
    """The provider's view (the StreamIO port) of one session's streams."""

    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool
    _read_stdin: Reader = _no_input
    _write_stdout: Writer = _discard
    _write_stderr: Writer = _discard
    _read_resize: Reader | None = None
    _pending_sizes: list[TerminalSize] = field(default_factory=list)

    async def read_stdin(self) -> bytes:
        return await self._read_stdin() if self.stdin else b""

    async def write_stdout(self, data: bytes) -> None:
        if self.stdout and data:
            await self._write_stdout(data)

    async def write_stderr(self, data: bytes) -> None:
        if not data:
            return
        if self.tty:  # one terminal: stderr shows up on it, like the kubelet does
            await self.write_stdout(data)
        elif self.stderr:
            await self._write_stderr(data)

    async def resizes(self) -> AsyncIterator[TerminalSize]:
        if self._read_resize is None:
            return
        decoder = json.JSONDecoder()
        buffer = ""
        while True:
            chunk = await self._read_resize()
            if not chunk:
                return
            buffer += chunk.decode("utf-8", "replace")
            while buffer.strip():
                try:
                    value, end = decoder.raw_decode(buffer.lstrip())
                except json.JSONDecodeError:
                    break  # an incomplete document: wait for more bytes
                buffer = buffer.lstrip()[end:]
                size = _terminal_size(value)
                if size is not None:
                    yield size


def _terminal_size(value: object) -> TerminalSize | None:
    if not isinstance(value, Mapping):
        return None
    width, height = value.get("Width", value.get("width")), value.get("Height", value.get("height"))
    if isinstance(width, int) and isinstance(height, int) and width >= 0 and height >= 0:
        return TerminalSize(width=width, height=height)
    return None


# -- the session runner ---------------------------------------------------------------------------
async def _run_until_closed(call: Awaitable[int], closed: Callable[[], Awaitable[Any]]) -> int | None:
    """``call``'s result, or None (after cancelling it) when the client went away first."""
    work = asyncio.ensure_future(call)
    watcher = asyncio.ensure_future(closed())
    try:
        await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not work.done():
            work.cancel()
            with contextlib.suppress(BaseException):
                await work
    if work.cancelled():
        return None
    return work.result()


async def _call_provider(
    api: KubeletApi,
    ref: PodRef,
    container: str,
    options: ExecOptions,
    io: ChannelIO,
    closed: Callable[[], Awaitable[Any]],
) -> dict[str, Any] | None:
    """Run the exec/attach; the Status to report, or None when the client is gone."""
    attach = not options.command
    what = (
        f"error executing command {list(options.command)}" if not attach else "error attaching to container"
    )
    try:
        if attach:
            code = await _run_until_closed(api.attach_to_container(ref, container, io), closed)
        else:
            code = await _run_until_closed(api.exec_in_container(ref, container, options.command, io), closed)
    except Exception as exc:
        log.info("%s/%s: %s failed: %s", ref, container, "attach" if attach else "exec", exc)
        prefix = "error attaching to container" if attach else "error executing command in container"
        return internal_error_status(f"{prefix}: {exc}")
    if code is None:
        return None
    return success_status() if code == 0 else exit_code_status(code, what)


# -- SPDY -----------------------------------------------------------------------------------------
def _negotiate_spdy(request: web.Request, supported: Sequence[str]) -> str | None:
    """The protocol to use; "" when the client sent none (the v1 fallback). Raises a 403 with
    the accepted list when nothing matches, as the kubelet does."""
    offered = request.headers.getall(PROTOCOL_HEADER, [])
    if not offered:
        return ""
    chosen = spdy.negotiate(offered, supported)
    if chosen is None:
        raise web.HTTPForbidden(
            text=f"unable to upgrade: unable to negotiate protocol: client supports {offered}, "
            f"server supports {list(supported)}\n",
            headers={"X-Accepted-Stream-Protocol-Versions": ", ".join(supported)},
        )
    return chosen


async def collect_streams(
    session: spdy.SpdySession, expected: set[str], *, creation_timeout: float
) -> dict[str, spdy.SpdyStream] | None:
    """Accept (SYN_REPLY) streams until one of each ``expected`` streamtype arrived; None on
    timeout or session end. Unknown or duplicate stream types are reset."""
    streams: dict[str, spdy.SpdyStream] = {}

    async def gather() -> bool:
        while not expected.issubset(streams):
            stream = await session.accept()
            if stream is None:
                return False
            kind = (stream.header("streamtype") or "").lower()
            if kind not in expected or kind in streams:
                stream.reset(spdy.RstStatus.PROTOCOL_ERROR)
                continue
            stream.reply()
            streams[kind] = stream
        return True

    try:
        async with asyncio.timeout(creation_timeout if creation_timeout > 0 else None):
            complete = await gather()
    except TimeoutError:
        complete = False
    if not complete:
        log.info("SPDY exec: the client did not create its streams in time (got %s)", sorted(streams))
        error = streams.get("error")
        if error is not None and not error.is_reset:
            with contextlib.suppress(spdy.StreamReset):
                await error.write(b"timed out waiting for client to create streams")
                error.close()
        await session.close()
        return None
    return streams


async def _serve_spdy(
    request: web.Request,
    api: KubeletApi,
    ref: PodRef,
    container: str,
    options: ExecOptions,
    timeouts: StreamTimeouts,
) -> web.StreamResponse:
    protocol = _negotiate_spdy(request, SPDY_PROTOCOLS)
    effective = protocol or "channel.k8s.io"
    session, response = await spdy.upgrade(request, protocol=protocol or None, idle_timeout=timeouts.idle)
    try:
        expected = {"error"}
        if options.stdin:
            expected.add("stdin")
        if options.stdout:
            expected.add("stdout")
        if options.stderr:
            expected.add("stderr")
        if options.tty and effective in _RESIZE_SPDY:
            expected.add("resize")
        streams = await collect_streams(session, expected, creation_timeout=timeouts.creation)
        if streams is None:
            return response
        io = ChannelIO(
            stdin=options.stdin,
            stdout=options.stdout,
            stderr=options.stderr,
            tty=options.tty,
            _read_stdin=streams["stdin"].read if "stdin" in streams else _no_input,
            _write_stdout=streams["stdout"].write if "stdout" in streams else _discard,
            _write_stderr=streams["stderr"].write if "stderr" in streams else _discard,
            _read_resize=streams["resize"].read if "resize" in streams else None,
        )
        status = await _call_provider(api, ref, container, options, io, session.wait_closed)
        if status is not None and not session.closed:
            payload = encode_status(status, json_status=effective in _JSON_STATUS_SPDY)
            with contextlib.suppress(spdy.StreamReset):
                for kind in ("stdout", "stderr"):
                    if kind in streams:
                        streams[kind].close()
                if payload:
                    await streams["error"].write(payload)
                streams["error"].close()
    finally:
        await session.close()
    return response


# -- WebSocket ------------------------------------------------------------------------------------
def choose_ws_protocol(
    request: web.Request, supported: Sequence[wsstream.ChannelProtocol]
) -> wsstream.ChannelProtocol:
    offered = request.headers.getall(hdrs.SEC_WEBSOCKET_PROTOCOL, [])
    protocol = wsstream.choose_protocol(offered, supported)
    if protocol is None:
        raise InvalidInput(
            f"unsupported WebSocket subprotocol(s) {offered}; supported: {[p.name for p in supported]}"
        )
    return protocol


async def _serve_websocket(
    request: web.Request,
    api: KubeletApi,
    ref: PodRef,
    container: str,
    options: ExecOptions,
    timeouts: StreamTimeouts,
) -> web.StreamResponse:
    protocol = choose_ws_protocol(request, wsstream.EXEC_PROTOCOLS)
    ws = web.WebSocketResponse(protocols=[protocol.name] if protocol.name else (), autoping=True)
    await ws.prepare(request)
    conn = wsstream.ChannelConnection(
        ws, protocol, readable=(wsstream.STDIN, wsstream.RESIZE), idle_timeout=timeouts.idle
    )
    reader = asyncio.create_task(conn.run())
    try:
        # An empty message on the first writable channel tells the client the streams are ready.
        first = wsstream.STDOUT if options.stdout else wsstream.STDERR if options.stderr else wsstream.ERROR
        await conn.write(first, b"")

        async def stdout(data: bytes) -> None:
            await conn.write(wsstream.STDOUT, data)

        async def stderr(data: bytes) -> None:
            await conn.write(wsstream.STDERR, data)

        async def stdin() -> bytes:
            return await conn.read(wsstream.STDIN)

        async def resize() -> bytes:
            return await conn.read(wsstream.RESIZE)

        io = ChannelIO(
            stdin=options.stdin,
            stdout=options.stdout,
            stderr=options.stderr,
            tty=options.tty,
            _read_stdin=stdin,
            _write_stdout=stdout,
            _write_stderr=stderr,
            _read_resize=resize if options.tty else None,
        )
        status = await _call_provider(api, ref, container, options, io, conn.closed.wait)
        if status is not None and not conn.closed.is_set():
            payload = encode_status(status, json_status=protocol.json_status)
            if payload:
                with contextlib.suppress(ConnectionError):
                    await conn.write(wsstream.ERROR, payload)
    finally:
        await conn.close()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    return ws


# -- the handlers ---------------------------------------------------------------------------------
async def serve_remote_command(
    request: web.Request, api: KubeletApi, timeouts: StreamTimeouts, *, attach: bool
) -> web.StreamResponse:
    """``/exec/{namespace}/{pod}[/{uid}]/{container}`` or ``/attach/...`` (GET or POST)."""
    info = request.match_info
    container = info["container"]
    options = parse_exec_options(request.query, with_command=not attach)
    ref = api.stream_target(
        Capability.ATTACH if attach else Capability.EXEC,
        namespace=info["namespace"],
        pod=info["pod"],
        uid=info.get("uid"),
        container=container,
    )
    if attach:
        options = ExecOptions(options.stdin, options.stdout, options.stderr, options.tty, ())
    if spdy.is_spdy_upgrade(request.headers):
        return await _serve_spdy(request, api, ref, container, options, timeouts)
    if request.headers.get(hdrs.UPGRADE, "").lower() == "websocket":
        return await _serve_websocket(request, api, ref, container, options, timeouts)
    raise InvalidInput("exec and attach need an upgrade to SPDY/3.1 or WebSocket")
