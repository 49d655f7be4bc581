"""``ContainerProber`` over the provider's container streams, for providers that do not probe.

``exec`` runs through ``exec_in_container``; ``httpGet``, ``tcpSocket`` and ``grpc`` reach the
port through ``port_forward`` (which lands on the pod's localhost, so messages name 127.0.0.1;
the adapter does not know the pod IP). HTTPS and gRPC need a real socket for their TLS and
HTTP/2 libraries: a loopback bridge accepts one connection and pipes it into the port-forward.
Messages follow the kubelet's (Go) wording, so events read the same as on a real node.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from vkubelet.adapters.system import SystemClock
from vkubelet.application.ports.runtime import Clock
from vkubelet.application.ports.streams import ContainerStreams, TerminalSize
from vkubelet.domain.errors import DomainError, InvalidInput, classify
from vkubelet.domain.pod import PodRef
from vkubelet.domain.probes import (
    ExecHandler,
    GrpcHandler,
    Handler,
    HttpGetHandler,
    ProbeOutcome,
    ProbeResult,
    SleepHandler,
    TcpSocketHandler,
)

T = TypeVar("T")

POD_HOST = "127.0.0.1"  # where a port-forward connects, inside the pod
USER_AGENT = "kube-probe/1.36"
OUTPUT_LIMIT = 10 * 1024  # the kubelet keeps this much of an exec probe's output
_CANCEL_SLACK_SECONDS = 1.0  # how long a timed-out handler may take to wind down
_CHUNK = 65536


def _failure(message: str) -> ProbeResult:
    return ProbeResult(ProbeOutcome.FAILURE, message)


def _error(message: str) -> ProbeResult:
    return ProbeResult(ProbeOutcome.ERROR, message)


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _go_duration(seconds: float) -> str:
    return f"{seconds:g}s"


def _dial_message(error: BaseException, *, host: str, port: int) -> str:
    target = _hostport(host, port)
    # Providers say "nothing accepts connections" with InvalidInput (the process provider, and
    # INVALID_ARGUMENT over gRPC); a direct dial with the OS error.
    if isinstance(error, ConnectionRefusedError) or classify(error) is InvalidInput:
        return f"dial tcp {target}: connect: connection refused"
    if isinstance(error, OSError) and error.strerror:
        return f"dial tcp {target}: connect: {error.strerror.lower()}"
    return f"dial tcp {target}: {error or type(error).__name__}"


def _forward_failed(error: BaseException, *, port: int, wrap: Callable[[str], str] = str) -> ProbeResult:
    """The result when the port-forward to the pod's ``port`` raised ``error``: FAILURE when
    nothing accepted the connection, ERROR when the provider could not forward at all."""
    kind = classify(error)
    if kind is InvalidInput or (kind is None and isinstance(error, OSError)):
        return _failure(wrap(_dial_message(error, host=POD_HOST, port=port)))
    if kind is not None:
        return _error(str(error) or kind.__name__)
    raise error  # not a provider's classified error: a bug, reported as ERROR by run()


class _CollectingIO:
    """StreamIO of an exec probe: no stdin, no tty; stdout and stderr kept together, capped."""

    stdin = False
    stdout = True
    stderr = True
    tty = False

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._kept = bytearray()

    @property
    def output(self) -> str:
        return self._kept.decode("utf-8", errors="replace")

    async def read_stdin(self) -> bytes:
        return b""

    async def write_stdout(self, data: bytes) -> None:
        self._kept += data[: max(0, self._limit - len(self._kept))]

    async def write_stderr(self, data: bytes) -> None:
        await self.write_stdout(data)

    async def resizes(self) -> AsyncIterator[TerminalSize]:
        return
        yield  # an async generator that yields nothing


class _DialStream:
    """ByteStream of a TCP probe: sends nothing (half-closes at once, as a connect-and-close
    does) and notes when the connection is made (the provider's first read) or answered."""

    def __init__(self) -> None:
        self.answered = asyncio.Event()  # connected (first read) or the pod side wrote

    async def read(self) -> bytes:
        # Providers read the stream only once connected (the ContainerStreams contract).
        self.answered.set()
        return b""

    async def write(self, data: bytes) -> None:
        if data:
            self.answered.set()

    async def close(self) -> None:
        return None


class _SocketStream:
    """ByteStream over the bridge's accepted socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self) -> bytes:
        try:
            return await self._reader.read(_CHUNK)
        except OSError:
            return b""

    async def write(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def close(self) -> None:
        self._writer.close()


class _Bridge:
    """A loopback listener whose first connection is piped into ``port_forward`` to the pod's
    port (later ones are refused). Use as ``async with``; ``port`` is the listener's port."""

    def __init__(self, streams: ContainerStreams, ref: PodRef, port: int) -> None:
        self._streams = streams
        self._ref = ref
        self._target = port
        self._accepted: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.get_running_loop().create_future()
        )
        self._server: asyncio.Server | None = None
        self._forward: asyncio.Task[None] | None = None
        self.port = 0

    def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._accepted.done():
            writer.close()
        else:
            self._accepted.set_result((reader, writer))

    async def _pipe(self) -> None:
        reader, writer = await self._accepted
        try:
            await self._streams.port_forward(self._ref, self._target, _SocketStream(reader, writer))
        finally:
            writer.close()

    async def __aenter__(self) -> _Bridge:
        self._server = await asyncio.start_server(self._on_connect, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._forward = asyncio.create_task(self._pipe())
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None and self._forward is not None
        self._server.close()
        self._forward.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._forward
        if self._accepted.done() and not self._accepted.cancelled():
            self._accepted.result()[1].close()
        else:
            self._accepted.cancel()

    def _failed(self) -> BaseException | None:
        forward = self._forward
        if forward is None or not forward.done() or forward.cancelled():
            return None
        return forward.exception()

    async def guard(self, work: Awaitable[T]) -> T:
        """``work``'s result, or the port-forward's error when that fails first (the client
        would only see its connection closed)."""
        assert self._forward is not None
        task = asyncio.ensure_future(work)
        try:
            await asyncio.wait((task, self._forward), return_when=asyncio.FIRST_COMPLETED)
            if not task.done() and (failure := self._failed()) is not None:
                raise failure
            try:
                return await task
            except Exception:
                if (failure := self._failed()) is not None:
                    raise failure from None
                raise
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


def _insecure_tls() -> ssl.SSLContext:
    """The kubelet does not verify a probed server's certificate."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _valid_header(name: str, value: str) -> str | None:
    if not name or any(c in name for c in " \t\r\n:"):
        return f'net/http: invalid header field name "{name}"'
    if any(c in value for c in "\r\n\0"):
        return f'net/http: invalid header field value for "{name}"'
    return None


class StreamProber:
    """Implements ``ContainerProber`` with the provider's exec and port-forward streams."""

    def __init__(
        self, streams: ContainerStreams, *, clock: Clock | None = None, output_limit: int = OUTPUT_LIMIT
    ) -> None:
        self._streams = streams
        self._clock = clock or SystemClock()
        self._output_limit = output_limit

    async def run(
        self, ref: PodRef, container: str, handler: Handler, *, timeout_seconds: float
    ) -> ProbeResult:
        work: Coroutine[Any, Any, ProbeResult]
        match handler:
            case ExecHandler(command=command):
                work = self._exec(ref, container, command)
                joined = json.dumps(" ".join(command), ensure_ascii=False)
                timed_out = f"command {joined} timed out"
            case HttpGetHandler():
                url = self._url(handler)
                work = self._http(ref, handler, url)
                timed_out = (
                    f'Get "{url}": context deadline exceeded (Client.Timeout exceeded while awaiting headers)'
                )
            case TcpSocketHandler(port=port, host=host):
                work = self._tcp(ref, port, host)
                timed_out = f"dial tcp {_hostport(host or POD_HOST, port)}: i/o timeout"
            case GrpcHandler(port=port, service=service):
                work = self._grpc(ref, port, service)
                timed_out = f"timeout: health rpc did not complete within {_go_duration(timeout_seconds)}"
            case SleepHandler():
                return _error("sleep handlers are not run by the prober (the caller waits itself)")
        try:
            return await self._bounded(work, timeout_seconds, timed_out)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a bug or an unexpected provider error: the probe did not run
            return _error(f"{type(error).__name__}: {error}")

    async def _bounded(
        self, work: Coroutine[Any, Any, ProbeResult], seconds: float, timed_out: str
    ) -> ProbeResult:
        """``work``'s result, or FAILURE ``timed_out`` once ``seconds`` passed (``work`` is
        cancelled and given a little while to wind down, not waited for beyond that)."""
        task = asyncio.create_task(work)
        timer = asyncio.create_task(self._clock.sleep(seconds))
        late = False
        try:
            await asyncio.wait((task, timer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            if not task.done():
                late = True
                task.cancel()
                slack = asyncio.create_task(self._clock.sleep(_CANCEL_SLACK_SECONDS))
                try:
                    await asyncio.wait((task, slack), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    slack.cancel()
                    # Whatever it ended with no longer matters (and must not be logged as lost).
                    task.add_done_callback(lambda done: done.cancelled() or done.exception())
        if late:
            return _failure(timed_out)
        return task.result()

    # -- exec -------------------------------------------------------------------------------
    async def _exec(self, ref: PodRef, container: str, command: tuple[str, ...]) -> ProbeResult:
        io = _CollectingIO(self._output_limit)
        try:
            code = await self._streams.exec_in_container(ref, container, command, io)
        except DomainError as error:
            return _error(str(error) or type(error).__name__)
        if code == 0:
            return ProbeResult(ProbeOutcome.SUCCESS, io.output)
        joined = json.dumps(" ".join(command), ensure_ascii=False)
        return _failure(io.output or f"command {joined} exited with code {code}")

    # -- tcpSocket --------------------------------------------------------------------------
    async def _tcp(self, ref: PodRef, port: int, host: str) -> ProbeResult:
        if host:
            try:
                _, writer = await asyncio.open_connection(host, port)
            except OSError as error:
                return _failure(_dial_message(error, host=host, port=port))
            writer.transport.abort()
            return ProbeResult(ProbeOutcome.SUCCESS)
        # Connected: the provider read our stream (it does only once connected), the forward
        # ended cleanly, or the pod side sent something. Refused: the forward raised.
        stream = _DialStream()
        forward = asyncio.create_task(self._streams.port_forward(ref, port, stream))
        answered = asyncio.create_task(stream.answered.wait())
        try:
            await asyncio.wait((forward, answered), return_when=asyncio.FIRST_COMPLETED)
            if not forward.done():
                return ProbeResult(ProbeOutcome.SUCCESS)
            if (failure := forward.exception()) is not None:
                return _forward_failed(failure, port=port)
            return ProbeResult(ProbeOutcome.SUCCESS)
        finally:
            for task in (forward, answered):
                task.cancel()
            await asyncio.gather(forward, answered, return_exceptions=True)

    # -- httpGet ----------------------------------------------------------------------------
    @staticmethod
    def _url(handler: HttpGetHandler) -> str:
        host = handler.host or POD_HOST
        return f"{handler.scheme.lower()}://{_hostport(host, handler.port)}{handler.path}"

    async def _http(self, ref: PodRef, handler: HttpGetHandler, url: str) -> ProbeResult:
        for name, value in handler.headers:
            if (problem := _valid_header(name, value)) is not None:
                return _failure(f'Get "{url}": {problem}')
        tls = _insecure_tls() if handler.scheme == "HTTPS" else None
        host = handler.host or POD_HOST
        try:
            if handler.host:
                try:
                    reader, writer = await asyncio.open_connection(
                        handler.host, handler.port, ssl=tls, server_hostname=handler.host if tls else None
                    )
                except ssl.SSLError as error:
                    return _failure(f'Get "{url}": {error}')
                except OSError as error:
                    return _failure(f'Get "{url}": {_dial_message(error, host=host, port=handler.port)}')
                return await self._exchange(reader, writer, handler, url)
            async with _Bridge(self._streams, ref, handler.port) as bridge:
                return await bridge.guard(self._bridged_exchange(bridge.port, tls, handler, url))
        except (DomainError, OSError) as error:  # the forward's (the exchanges return their own)
            return _forward_failed(error, port=handler.port, wrap=lambda dial: f'Get "{url}": {dial}')

    async def _bridged_exchange(
        self, port: int, tls: ssl.SSLContext | None, handler: HttpGetHandler, url: str
    ) -> ProbeResult:
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=tls, server_hostname="" if tls else None
            )
        except OSError as error:
            # A failed TLS handshake; the bridge raises the forward's own error before this.
            return _failure(f'Get "{url}": {error}')
        return await self._exchange(reader, writer, handler, url)

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handler: HttpGetHandler, url: str
    ) -> ProbeResult:
        """Send the GET, read up to the final status line, judge it."""
        try:
            writer.write(self._request(handler))
            await writer.drain()
            while True:
                line = await reader.readline()
                if not line:
                    return _failure(f'Get "{url}": EOF')
                parts = line.decode("latin-1").split(None, 2)
                if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
                    shown = json.dumps(line[:64].decode("latin-1"))
                    return _failure(f'Get "{url}": net/http: malformed HTTP response {shown}')
                code = int(parts[1])
                if 100 <= code < 200 and code != 101:
                    # An informational response: skip its headers, the final one follows.
                    while await reader.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    continue
                break
        except (OSError, ValueError) as error:  # ValueError: a line past the reader's limit
            return _failure(f'Get "{url}": {error or type(error).__name__}')
        finally:
            writer.transport.abort()  # done: the body does not matter, nor a TLS goodbye
        if 200 <= code < 400:
            return ProbeResult(ProbeOutcome.SUCCESS)
        return _failure(f"HTTP probe failed with statuscode: {code}")

    @staticmethod
    def _request(handler: HttpGetHandler) -> bytes:
        host = handler.host or POD_HOST
        headers = {
            "host": ("Host", _hostport(host, handler.port)),
            "user-agent": ("User-Agent", USER_AGENT),
            "accept": ("Accept", "*/*"),
        }
        for name, value in handler.headers:  # the handler's own win, as with the kubelet
            headers[name.lower()] = (name, value)
        headers["connection"] = ("Connection", "close")
        lines = [f"GET {handler.path} HTTP/1.1", *(f"{name}: {value}" for name, value in headers.values())]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")

    # -- grpc -------------------------------------------------------------------------------
    async def _grpc(self, ref: PodRef, port: int, service: str) -> ProbeResult:
        target = _hostport(POD_HOST, port)
        try:
            async with _Bridge(self._streams, ref, port) as bridge:
                channel = grpc.aio.insecure_channel(
                    f"127.0.0.1:{bridge.port}", options=[("grpc.enable_http_proxy", 0)]
                )
                try:
                    stub = health_pb2_grpc.HealthStub(channel)
                    request = health_pb2.HealthCheckRequest(service=service)
                    response = await bridge.guard(stub.Check(request))
                finally:
                    await channel.close()
        except grpc.aio.AioRpcError as error:
            code = error.code()
            if code is grpc.StatusCode.UNIMPLEMENTED:
                return _failure(
                    "error: this server does not implement the grpc health protocol "
                    f"(grpc.health.v1.Health): {error.details()}"
                )
            go_code = "".join(part.capitalize() for part in code.name.split("_"))
            status = f"rpc error: code = {go_code} desc = {error.details()}"
            return _failure(f"error: health rpc probe failed: {status}")
        except (DomainError, OSError) as error:  # the forward's
            return _forward_failed(
                error, port=port, wrap=lambda dial: f'error: failed to connect service at "{target}": {dial}'
            )
        if response.status == health_pb2.HealthCheckResponse.SERVING:
            return ProbeResult(ProbeOutcome.SUCCESS)
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        return _failure(f'service unhealthy (responded with "{status}")')
