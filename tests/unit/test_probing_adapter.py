"""StreamProber: exec, tcpSocket, httpGet (HTTP and HTTPS) and grpc probes run for real
against local servers through a fake provider's streams; timeouts on a fake clock."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tests.fakes.clock import FakeClock
from vkubelet.adapters.certs import self_signed_server
from vkubelet.adapters.probing import StreamProber
from vkubelet.application.ports.streams import ByteStream, LogOptions, StreamIO
from vkubelet.domain.errors import InvalidInput, NotFound, NotSupported
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

REF = PodRef("ns", "web", "uid-1")
WAIT = 10.0  # a deadline for conditions, never a synchronisation sleep


class LoopbackStreams:
    """Hand-written ``ContainerStreams``: exec answers from ``commands`` (first word -> exit
    code, stdout, stderr); ``hang`` runs until cancelled; ``gone`` raises NotFound; without
    ``exec_supported`` every exec raises NotSupported. Port-forward really connects to
    127.0.0.1:<port> (InvalidInput when refused, as the process provider says it); ports in
    ``stalled`` never connect; ``unknown_pod`` makes it raise NotFound."""

    def __init__(self) -> None:
        self.commands: dict[str, tuple[int, bytes, bytes]] = {}
        self.exec_supported = True
        self.unknown_pod = False
        self.stalled: set[int] = set()
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.io: list[tuple[bool, bool, bool, bool]] = []

    def container_logs(self, ref: PodRef, container: str, options: LogOptions) -> AsyncIterator[bytes]:
        raise NotSupported("no logs here")

    async def attach_to_container(self, ref: PodRef, container: str, io: StreamIO) -> int:
        raise NotSupported("no attach here")

    async def exec_in_container(
        self, ref: PodRef, container: str, command: Sequence[str], io: StreamIO
    ) -> int:
        if not self.exec_supported:
            raise NotSupported("the provider cannot exec")
        self.io.append((io.stdin, io.stdout, io.stderr, io.tty))
        assert await io.read_stdin() == b""
        assert [size async for size in io.resizes()] == []
        if command[0] == "gone":
            raise NotFound(f"container {container} of pod {ref} not found")
        if command[0] == "hang":
            self.started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        code, out, err = self.commands[command[0]]
        await io.write_stdout(out)
        await io.write_stderr(err)
        return code

    async def port_forward(self, ref: PodRef, port: int, stream: ByteStream) -> None:
        if self.unknown_pod:
            raise NotFound(f"pod {ref} not found")
        if port in self.stalled:
            self.started.set()
            await asyncio.Event().wait()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError as error:
            raise InvalidInput(f"pod {ref}: nothing accepts connections on port {port}: {error}") from error

        async def upstream() -> None:
            while data := await stream.read():
                writer.write(data)
                await writer.drain()
            writer.write_eof()

        sender = asyncio.create_task(upstream())
        try:
            while data := await reader.read(65536):
                await stream.write(data)
        finally:
            sender.cancel()
            writer.close()
            await asyncio.gather(sender, return_exceptions=True)
            await stream.close()


class HttpServer:
    """Answers ``/ok`` 200, ``/moved`` 302, ``/broken`` 500, ``/continue`` 100 then 204;
    ``/hang`` never answers. A connection closed before a request is closed too. Keeps the
    request heads it got."""

    def __init__(self) -> None:
        self.requests: list[list[str]] = []
        self.hung = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head: list[str] = []
            while (line := await reader.readline()) not in (b"\r\n", b""):
                head.append(line.decode().rstrip("\r\n"))
            if not head:
                return
            self.requests.append(head)
            path = head[0].split()[1]
            if path == "/hang":
                self.hung.set()
                await reader.read()  # until the prober goes away
                return
            answers = {
                "/ok": b"HTTP/1.1 200 OK\r\n",
                "/moved": b"HTTP/1.1 302 Found\r\nLocation: /ok\r\n",
                "/broken": b"HTTP/1.1 500 Internal Server Error\r\n",
                "/continue": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n",
            }
            writer.write(answers.get(path, b"HTTP/1.1 404 Not Found\r\n") + b"Content-Length: 0\r\n\r\n")
            await writer.drain()
        except (OSError, ssl.SSLError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def serving(handler: Any, *, tls: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=tls)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def streams() -> LoopbackStreams:
    return LoopbackStreams()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()  # never advanced unless a test times out on purpose


@pytest.fixture
def prober(streams: LoopbackStreams, clock: FakeClock) -> StreamProber:
    return StreamProber(streams, clock=clock)


@pytest.fixture
async def http() -> AsyncIterator[tuple[HttpServer, int]]:
    server = HttpServer()
    async with serving(server.handle) as port:
        yield server, port


@pytest.fixture
async def https(tmp_path: Path) -> AsyncIterator[tuple[HttpServer, int]]:
    pair = self_signed_server(common_name="probe-me", ip_addresses=["127.0.0.1"])
    (tmp_path / "tls.crt").write_bytes(pair.cert_pem)
    (tmp_path / "tls.key").write_bytes(pair.key_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    server = HttpServer()
    async with serving(server.handle, tls=context) as port:
        yield server, port


async def probe(prober: StreamProber, handler: Handler, *, seconds: float = 5) -> ProbeResult:
    return await asyncio.wait_for(prober.run(REF, "app", handler, timeout_seconds=seconds), WAIT)


async def timed_out(
    prober: StreamProber, clock: FakeClock, handler: Handler, started: asyncio.Event, *, seconds: float
) -> ProbeResult:
    """Run ``handler`` until ``started`` says it is stuck, then let ``seconds`` pass."""
    task = asyncio.create_task(prober.run(REF, "app", handler, timeout_seconds=seconds))
    await asyncio.wait_for(started.wait(), WAIT)
    await clock.advance(seconds * 0.9)
    assert not task.done()
    await clock.advance(seconds * 0.1)
    return await asyncio.wait_for(task, WAIT)


# -- exec ---------------------------------------------------------------------------------


async def test_exec_exit_zero_succeeds_without_stdin_or_tty(
    prober: StreamProber, streams: LoopbackStreams
) -> None:
    streams.commands["true"] = (0, b"fine\n", b"")
    result = await probe(prober, ExecHandler(("true",)))
    assert result.outcome is ProbeOutcome.SUCCESS
    assert streams.io == [(False, True, True, False)]


async def test_exec_non_zero_fails_with_the_combined_output(
    prober: StreamProber, streams: LoopbackStreams
) -> None:
    streams.commands["check"] = (3, b"out ", b"err\n")
    assert await probe(prober, ExecHandler(("check", "-v"))) == ProbeResult(ProbeOutcome.FAILURE, "out err\n")
    streams.commands["quiet"] = (2, b"", b"")
    result = await probe(prober, ExecHandler(("quiet", "x")))
    assert result == ProbeResult(ProbeOutcome.FAILURE, 'command "quiet x" exited with code 2')


async def test_exec_output_is_capped(prober: StreamProber, streams: LoopbackStreams) -> None:
    streams.commands["chatty"] = (1, b"a" * 8000, b"b" * 8000)
    result = await probe(prober, ExecHandler(("chatty",)))
    assert result.message == "a" * 8000 + "b" * (10 * 1024 - 8000)


async def test_exec_times_out_with_the_kubelets_words_and_cancels_the_command(
    prober: StreamProber, streams: LoopbackStreams, clock: FakeClock
) -> None:
    result = await timed_out(
        prober, clock, ExecHandler(("hang", "--for", "ever")), streams.started, seconds=2
    )
    assert result == ProbeResult(ProbeOutcome.FAILURE, 'command "hang --for ever" timed out')
    assert streams.cancelled.is_set()


async def test_exec_the_provider_cannot_run_is_an_error(
    prober: StreamProber, streams: LoopbackStreams
) -> None:
    result = await probe(prober, ExecHandler(("gone",)))
    assert result.outcome is ProbeOutcome.ERROR and "not found" in result.message
    streams.exec_supported = False
    assert await probe(prober, ExecHandler(("true",))) == ProbeResult(
        ProbeOutcome.ERROR, "the provider cannot exec"
    )


async def test_sleep_is_not_the_probers_job(prober: StreamProber) -> None:
    assert (await probe(prober, SleepHandler(3))).outcome is ProbeOutcome.ERROR


# -- tcpSocket ----------------------------------------------------------------------------


async def test_tcp_connects_through_the_port_forward(
    prober: StreamProber, http: tuple[HttpServer, int]
) -> None:
    _, port = http  # it closes a connection that sends nothing
    assert await probe(prober, TcpSocketHandler(port)) == ProbeResult(ProbeOutcome.SUCCESS)


async def test_tcp_succeeds_when_the_server_speaks_first_and_keeps_the_connection(
    prober: StreamProber,
) -> None:
    async def banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 hello\r\n")
        await writer.drain()
        await reader.read()  # ignores our half-close until we go
        writer.close()

    async with serving(banner) as port:
        assert await probe(prober, TcpSocketHandler(port)) == ProbeResult(ProbeOutcome.SUCCESS)


async def test_tcp_succeeds_against_a_server_that_never_writes_nor_closes(prober: StreamProber) -> None:
    release = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()  # ignores our half-close: only a connect tells it is alive
        writer.close()

    async with serving(silent) as port:
        try:
            assert await probe(prober, TcpSocketHandler(port)) == ProbeResult(ProbeOutcome.SUCCESS)
        finally:
            release.set()


async def test_tcp_refused_fails_like_the_kubelets_dial(prober: StreamProber) -> None:
    port = closed_port()
    assert await probe(prober, TcpSocketHandler(port)) == ProbeResult(
        ProbeOutcome.FAILURE, f"dial tcp 127.0.0.1:{port}: connect: connection refused"
    )


async def test_tcp_times_out_when_the_forward_never_connects(
    prober: StreamProber, streams: LoopbackStreams, clock: FakeClock
) -> None:
    streams.stalled.add(4321)
    result = await timed_out(prober, clock, TcpSocketHandler(4321), streams.started, seconds=1)
    assert result == ProbeResult(ProbeOutcome.FAILURE, "dial tcp 127.0.0.1:4321: i/o timeout")


async def test_tcp_to_an_explicit_host_dials_directly(
    prober: StreamProber, streams: LoopbackStreams, http: tuple[HttpServer, int]
) -> None:
    streams.unknown_pod = True  # the port-forward is not used
    _, port = http
    assert await probe(prober, TcpSocketHandler(port, host="127.0.0.1")) == ProbeResult(ProbeOutcome.SUCCESS)
    closed = closed_port()
    assert await probe(prober, TcpSocketHandler(closed, host="127.0.0.1")) == ProbeResult(
        ProbeOutcome.FAILURE, f"dial tcp 127.0.0.1:{closed}: connect: connection refused"
    )


async def test_tcp_to_an_unknown_pod_is_an_error(prober: StreamProber, streams: LoopbackStreams) -> None:
    streams.unknown_pod = True
    result = await probe(prober, TcpSocketHandler(80))
    assert result.outcome is ProbeOutcome.ERROR and "not found" in result.message


# -- httpGet ------------------------------------------------------------------------------


async def test_http_2xx_and_3xx_succeed_and_the_request_is_the_kubelets(
    prober: StreamProber, http: tuple[HttpServer, int]
) -> None:
    server, port = http
    handler = HttpGetHandler(port, "/ok", headers=(("X-Probe", "yes"), ("accept", "text/plain")))
    assert await probe(prober, handler) == ProbeResult(ProbeOutcome.SUCCESS)
    assert server.requests[-1] == [
        "GET /ok HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "User-Agent: kube-probe/1.36",
        "accept: text/plain",
        "X-Probe: yes",
        "Connection: close",
    ]
    assert (await probe(prober, HttpGetHandler(port, "/moved"))).outcome is ProbeOutcome.SUCCESS
    assert (await probe(prober, HttpGetHandler(port, "/continue"))).outcome is ProbeOutcome.SUCCESS


async def test_http_error_status_fails(prober: StreamProber, http: tuple[HttpServer, int]) -> None:
    _, port = http
    assert await probe(prober, HttpGetHandler(port, "/broken")) == ProbeResult(
        ProbeOutcome.FAILURE, "HTTP probe failed with statuscode: 500"
    )
    assert await probe(prober, HttpGetHandler(port, "/missing")) == ProbeResult(
        ProbeOutcome.FAILURE, "HTTP probe failed with statuscode: 404"
    )


async def test_http_refused_fails_like_the_kubelets_client(prober: StreamProber) -> None:
    port = closed_port()
    assert await probe(prober, HttpGetHandler(port, "/ok")) == ProbeResult(
        ProbeOutcome.FAILURE,
        f'Get "http://127.0.0.1:{port}/ok": dial tcp 127.0.0.1:{port}: connect: connection refused',
    )


async def test_http_times_out_awaiting_headers(
    prober: StreamProber, clock: FakeClock, http: tuple[HttpServer, int]
) -> None:
    server, port = http
    result = await timed_out(prober, clock, HttpGetHandler(port, "/hang"), server.hung, seconds=1)
    assert result == ProbeResult(
        ProbeOutcome.FAILURE,
        f'Get "http://127.0.0.1:{port}/hang": context deadline exceeded '
        "(Client.Timeout exceeded while awaiting headers)",
    )


async def test_http_with_an_explicit_host_dials_directly(
    prober: StreamProber, streams: LoopbackStreams, http: tuple[HttpServer, int]
) -> None:
    streams.unknown_pod = True
    server, port = http
    assert await probe(prober, HttpGetHandler(port, "/ok", host="127.0.0.1")) == ProbeResult(
        ProbeOutcome.SUCCESS
    )
    assert server.requests[-1][1] == f"Host: 127.0.0.1:{port}"


async def test_http_bad_header_fails_before_sending(
    prober: StreamProber, http: tuple[HttpServer, int]
) -> None:
    server, port = http
    result = await probe(prober, HttpGetHandler(port, "/ok", headers=(("X-Evil", "a\r\nInjected: 1"),)))
    assert result.outcome is ProbeOutcome.FAILURE and "invalid header field value" in result.message
    assert server.requests == []


async def test_https_does_not_verify_the_certificate(
    prober: StreamProber, https: tuple[HttpServer, int]
) -> None:
    server, port = https
    assert await probe(prober, HttpGetHandler(port, "/ok", scheme="HTTPS")) == ProbeResult(
        ProbeOutcome.SUCCESS
    )
    assert await probe(prober, HttpGetHandler(port, "/broken", scheme="HTTPS")) == ProbeResult(
        ProbeOutcome.FAILURE, "HTTP probe failed with statuscode: 500"
    )
    direct = HttpGetHandler(port, "/ok", scheme="HTTPS", host="127.0.0.1")
    assert await probe(prober, direct) == ProbeResult(ProbeOutcome.SUCCESS)
    assert len(server.requests) == 3


async def test_https_refused_and_timeout(
    prober: StreamProber, clock: FakeClock, https: tuple[HttpServer, int]
) -> None:
    closed = closed_port()
    result = await probe(prober, HttpGetHandler(closed, "/", scheme="HTTPS"))
    assert result == ProbeResult(
        ProbeOutcome.FAILURE,
        f'Get "https://127.0.0.1:{closed}/": dial tcp 127.0.0.1:{closed}: connect: connection refused',
    )
    server, port = https
    result = await timed_out(
        prober, clock, HttpGetHandler(port, "/hang", scheme="HTTPS"), server.hung, seconds=1
    )
    assert result.outcome is ProbeOutcome.FAILURE and "context deadline exceeded" in result.message


async def test_https_to_a_plain_server_fails(prober: StreamProber, http: tuple[HttpServer, int]) -> None:
    _, port = http
    result = await probe(prober, HttpGetHandler(port, "/ok", scheme="HTTPS"))
    assert result.outcome is ProbeOutcome.FAILURE
    assert result.message.startswith(f'Get "https://127.0.0.1:{port}/ok": ')


# -- grpc ---------------------------------------------------------------------------------


class HangingHealth(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.called = asyncio.Event()

    async def Check(self, request: Any, context: Any) -> Any:
        self.called.set()
        await asyncio.Event().wait()


@contextlib.asynccontextmanager
async def grpc_server(servicer: Any | None) -> AsyncIterator[int]:
    server = grpc.aio.server()
    if servicer is not None:
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield port
    finally:
        await server.stop(0)


async def test_grpc_serving_succeeds_and_not_serving_fails(prober: StreamProber) -> None:
    servicer = health.aio.HealthServicer()
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await servicer.set("sick", health_pb2.HealthCheckResponse.NOT_SERVING)
    async with grpc_server(servicer) as port:
        assert await probe(prober, GrpcHandler(port)) == ProbeResult(ProbeOutcome.SUCCESS)
        assert await probe(prober, GrpcHandler(port, service="sick")) == ProbeResult(
            ProbeOutcome.FAILURE, 'service unhealthy (responded with "NOT_SERVING")'
        )
        unknown = await probe(prober, GrpcHandler(port, service="nobody"))
        assert unknown.outcome is ProbeOutcome.FAILURE
        assert unknown.message.startswith("error: health rpc probe failed: rpc error: code = NotFound")


async def test_grpc_without_the_health_service_fails(prober: StreamProber) -> None:
    async with grpc_server(None) as port:
        result = await probe(prober, GrpcHandler(port))
    assert result.outcome is ProbeOutcome.FAILURE
    assert result.message.startswith("error: this server does not implement the grpc health protocol")


async def test_grpc_refused_fails(prober: StreamProber) -> None:
    port = closed_port()
    assert await probe(prober, GrpcHandler(port)) == ProbeResult(
        ProbeOutcome.FAILURE,
        f'error: failed to connect service at "127.0.0.1:{port}": '
        f"dial tcp 127.0.0.1:{port}: connect: connection refused",
    )


async def test_grpc_times_out(prober: StreamProber, clock: FakeClock) -> None:
    servicer = HangingHealth()
    async with grpc_server(servicer) as port:
        result = await timed_out(prober, clock, GrpcHandler(port), servicer.called, seconds=2)
    assert result == ProbeResult(ProbeOutcome.FAILURE, "timeout: health rpc did not complete within 2s")


async def test_an_unexpected_provider_exception_is_an_error_not_a_raise(prober: StreamProber) -> None:
    result = await probe(prober, ExecHandler(("unscripted",)))  # the fake raises KeyError
    assert result.outcome is ProbeOutcome.ERROR and result.message.startswith("KeyError")
