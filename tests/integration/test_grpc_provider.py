"""GrpcProvider against real in-process grpc.aio servers (the SDK, and hand-written raw ones)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from opentelemetry.sdk.trace import TracerProvider

from tests.fakes.cluster import FakeLeaseGateway, FakeNodeGateway
from tests.helpers import close_stream, eventually
from vkubelet.adapters.certs import issue, new_ca
from vkubelet.adapters.grpc._generated import provider_pb2 as pb
from vkubelet.adapters.grpc._generated import provider_pb2_grpc as pb_grpc
from vkubelet.adapters.grpc.client import GrpcProvider
from vkubelet.adapters.grpc.config import parse_grpc_config
from vkubelet.adapters.grpc.server import RunningServer, ServerTLS, start_server
from vkubelet.adapters.mock.provider import MockProvider
from vkubelet.adapters.node_config import MockNodeConfig
from vkubelet.adapters.system import SystemClock
from vkubelet.application.node_controller import NodeController, NodeControllerSettings
from vkubelet.application.ports.streams import ByteStream, LogOptions, StreamIO, TerminalSize
from vkubelet.domain.errors import (
    Conflict,
    DomainError,
    InvalidInput,
    NotFound,
    NotSupported,
    Permanent,
    Transient,
)
from vkubelet.domain.pod import Pod, PodRef
from vkubelet.domain.provider import Capability, NodeCondition, NodeTemplate, Taint


def make_pod(uid: str = "uid-1", name: str = "web") -> Pod:
    return Pod.from_manifest(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"namespace": "default", "name": name, "uid": uid},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        }
    )


async def connected(address: str, **extra: Any) -> GrpcProvider:
    document: dict[str, Any] = {"address": address, "call_timeout": 5, "connect_timeout": 5}
    if not address.startswith("unix:") and not {"ca_file"} & extra.keys():
        document["insecure"] = True
    document.update(extra)
    provider = GrpcProvider(parse_grpc_config(document))
    await provider.connect()
    return provider


@pytest.fixture
async def mock_server() -> AsyncIterator[tuple[MockProvider, RunningServer]]:
    mock = MockProvider(node_name="vk-grpc")
    server = await start_server(mock, address="127.0.0.1:0", name="mock", version="1.2.3")
    yield mock, server
    await server.stop(0)


async def test_every_unary_call_reaches_the_mock_over_tcp(mock_server: Any) -> None:
    mock, server = mock_server
    client = await connected(server.address)
    try:
        assert client.capabilities() == mock.capabilities()
        assert (client.provider_name, client.provider_version) == ("mock", "1.2.3")
        template = await client.node_template()
        assert template == await mock.node_template()
        await client.ping()
        pod = make_pod()
        await client.create_pod(pod)
        await client.create_pod(pod)  # idempotent per UID
        got = await client.get_pod(pod.ref)
        assert got.ref == pod.ref and got.status["phase"] == "Running"
        assert (await client.get_pod_status(pod.ref))["phase"] == "Running"
        assert [p.ref for p in await client.list_pods()] == [pod.ref]
        changed = Pod(
            pod.ref, {**pod.manifest, "metadata": {**pod.manifest["metadata"], "labels": {"a": "b"}}}
        )
        await client.update_pod(changed)
        assert (await mock.get_pod(pod.ref)).manifest["metadata"]["labels"] == {"a": "b"}
        summary = await client.stats_summary()
        assert summary["pods"][0]["podRef"]["uid"] == pod.ref.uid
        families = await client.metrics_resource()
        assert {f.name for f in families} == {f.name for f in await mock.metrics_resource()}
        await client.delete_pod(pod)
        with pytest.raises(NotFound, match="GetPod"):
            await client.get_pod(pod.ref)
        with pytest.raises(NotFound):
            await client.delete_pod(pod)  # already gone
    finally:
        await client.close()


async def test_unix_socket_transport(tmp_path: Path) -> None:
    mock = MockProvider(node_name="vk-unix")
    address = f"unix://{tmp_path}/provider.sock"
    server = await start_server(mock, address=address)
    client = await connected(address)
    try:
        await client.create_pod(make_pod("u-unix"))
        assert [p.ref.uid for p in await client.list_pods()] == ["u-unix"]
    finally:
        await client.close()
        await server.stop(0)


def write_pki(tmp_path: Path) -> dict[str, Path]:
    ca = new_ca("provider-ca")
    server = issue(
        ca, common_name="provider", server=True, dns_names=["localhost"], ip_addresses=["127.0.0.1"]
    )
    client = issue(ca, common_name="vkubelet", client=True)
    files = {
        "ca": ca.cert_pem,
        "server_cert": server.cert_pem,
        "server_key": server.key_pem,
        "client_cert": client.cert_pem,
        "client_key": client.key_pem,
    }
    paths = {}
    for name, data in files.items():
        paths[name] = tmp_path / f"{name}.pem"
        paths[name].write_bytes(data)
    return paths


async def test_tls_and_mtls(tmp_path: Path) -> None:
    pki = write_pki(tmp_path)
    mock = MockProvider(node_name="vk-tls")
    tls = ServerTLS(cert_file=pki["server_cert"], key_file=pki["server_key"])
    server = await start_server(mock, address="127.0.0.1:0", tls=tls)
    client = await connected(server.address, ca_file=str(pki["ca"]))
    await client.ping()
    await client.close()
    await server.stop(0)

    mtls = ServerTLS(cert_file=pki["server_cert"], key_file=pki["server_key"], client_ca=pki["ca"])
    server = await start_server(mock, address="127.0.0.1:0", tls=mtls)
    try:
        client = await connected(
            server.address,
            ca_file=str(pki["ca"]),
            cert_file=str(pki["client_cert"]),
            key_file=str(pki["client_key"]),
        )
        await client.ping()
        await client.close()
        anonymous = GrpcProvider(
            parse_grpc_config({"address": server.address, "ca_file": str(pki["ca"]), "connect_timeout": 1})
        )
        with pytest.raises(Transient, match="did not answer Describe"):
            await anonymous.connect()  # no client certificate: the handshake fails
        await anonymous.close()
    finally:
        await server.stop(0)


async def test_status_stream_and_reconnect_after_the_server_restarts() -> None:
    mock = MockProvider(node_name="vk-restart")
    server = await start_server(mock, address="127.0.0.1:0")
    port = server.port
    client = await connected(server.address, reconnect_backoff_min=0.1, reconnect_backoff_max=0.5)
    reconnected = asyncio.Event()

    async def on_reconnect() -> None:
        reconnected.set()

    client.on_reconnect.append(on_reconnect)
    try:
        stream = client.pod_status_updates()
        await client.create_pod(make_pod("u-1"))
        first = await asyncio.wait_for(anext(stream), 5)
        assert first.ref.uid == "u-1" and first.status["phase"] == "Running"

        await server.stop(0)
        with pytest.raises(Transient):
            await asyncio.wait_for(anext(stream), 5)  # the stream breaks: Transient, not a crash
        with pytest.raises(Transient):
            await client.list_pods()  # away: fails fast, nothing is concluded from it
        mock2 = MockProvider(node_name="vk-restart")
        server = await start_server(mock2, address=f"127.0.0.1:{port}")
        again = client.pod_status_updates()  # the caller calls again; it waits for the channel
        await asyncio.wait_for(reconnected.wait(), 10)
        assert client.reconnects == 1
        await client.create_pod(make_pod("u-2"))
        second = await asyncio.wait_for(anext(again), 5)
        assert second.ref.uid == "u-2"
        await close_stream(again)
    finally:
        await client.close()
        await server.stop(0)


class EchoProvider(MockProvider):
    """Logs, exec/attach that echo stdin and exit 7, and a port-forward echo."""

    def capabilities(self) -> frozenset[Capability]:
        return frozenset(Capability) - {Capability.NODE_STATUS_STREAM}

    async def container_logs(self, ref: PodRef, container: str, options: LogOptions) -> AsyncIterator[bytes]:
        yield f"{ref.name}/{container} tail={options.tail_lines} follow={options.follow}\n".encode()
        yield f"since={options.since_time.isoformat() if options.since_time else None}\n".encode()

    async def exec_in_container(
        self, ref: PodRef, container: str, command: Sequence[str], io: StreamIO
    ) -> int:
        await io.write_stderr(f"running {' '.join(command)} tty={io.tty}\n".encode())
        if io.tty:
            async for size in io.resizes():
                await io.write_stdout(f"size {size.width}x{size.height}\n".encode())
                break
        while data := await io.read_stdin():
            await io.write_stdout(data)
        return 7

    async def attach_to_container(self, ref: PodRef, container: str, io: StreamIO) -> int:
        return await self.exec_in_container(ref, container, ["attach"], io)

    async def port_forward(self, ref: PodRef, port: int, stream: ByteStream) -> None:
        await stream.write(f"port {port}\n".encode())
        while data := await stream.read():
            await stream.write(data)


class FakeIO:
    def __init__(self, chunks: Sequence[bytes], *, tty: bool = False) -> None:
        self.stdin, self.stdout, self.stderr, self.tty = True, True, not tty, tty
        self._chunks = list(chunks)
        self.out = bytearray()
        self.err = bytearray()

    async def read_stdin(self) -> bytes:
        return self._chunks.pop(0) if self._chunks else b""

    async def write_stdout(self, data: bytes) -> None:
        self.out += data

    async def write_stderr(self, data: bytes) -> None:
        self.err += data

    async def resizes(self) -> AsyncIterator[TerminalSize]:
        yield TerminalSize(80, 24)
        await asyncio.Event().wait()  # no more resizes until the session ends


class FakeByteStream:
    def __init__(self, chunks: Sequence[bytes]) -> None:
        self._chunks = list(chunks)
        self.received = bytearray()

    async def read(self) -> bytes:
        return self._chunks.pop(0) if self._chunks else b""

    async def write(self, data: bytes) -> None:
        self.received += data

    async def close(self) -> None:
        pass


@pytest.fixture
async def echo_client() -> AsyncIterator[GrpcProvider]:
    server = await start_server(EchoProvider(node_name="vk-echo"), address="127.0.0.1:0")
    client = await connected(server.address)
    yield client
    await client.close()
    await server.stop(0)


async def test_logs_stream_carries_the_options(echo_client: GrpcProvider) -> None:
    from datetime import UTC, datetime

    since = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    options = LogOptions(follow=True, tail_lines=5, since_time=since)
    chunks = [c async for c in echo_client.container_logs(PodRef("ns", "p", "u"), "c", options)]
    assert b"".join(chunks) == b"p/c tail=5 follow=True\nsince=2025-01-02T03:04:05+00:00\n"


async def test_exec_echoes_stdin_and_returns_exit_code_7(echo_client: GrpcProvider) -> None:
    io = FakeIO([b"hello ", b"world"])
    code = await echo_client.exec_in_container(PodRef("ns", "p", "u"), "c", ["sh", "-c", "cat"], io)
    assert code == 7
    assert bytes(io.out) == b"hello world"
    assert bytes(io.err) == b"running sh -c cat tty=False\n"


async def test_attach_with_tty_sees_the_resize(echo_client: GrpcProvider) -> None:
    io = FakeIO([b"typed"], tty=True)
    code = await echo_client.attach_to_container(PodRef("ns", "p", "u"), "c", io)
    assert code == 7
    assert bytes(io.out) == b"size 80x24\ntyped"


async def test_port_forward_echo_and_half_close(echo_client: GrpcProvider) -> None:
    stream = FakeByteStream([b"ping", b"pong"])
    await asyncio.wait_for(echo_client.port_forward(PodRef("ns", "p", "u"), 8080, stream), 5)
    assert bytes(stream.received) == b"port 8080\npingpong"


async def test_mock_without_exec_answers_not_supported(mock_server: Any) -> None:
    _, server = mock_server
    client = await connected(server.address)
    try:
        with pytest.raises(NotSupported):
            await client.exec_in_container(PodRef("ns", "p", "u"), "c", ["true"], FakeIO([]))
        with pytest.raises(NotSupported):
            [c async for c in client.container_logs(PodRef("ns", "p", "u"), "c", LogOptions())]
    finally:
        await client.close()


class FailingProvider(MockProvider):
    """Raises a chosen error from ping (or hangs)."""

    error: BaseException | None = None
    hang = False

    async def ping(self) -> None:
        if self.hang:
            await asyncio.Event().wait()
        if self.error is not None:
            raise self.error


@pytest.mark.parametrize(
    ("raised", "expected", "code"),
    [
        (NotFound("gone"), NotFound, grpc.StatusCode.NOT_FOUND),
        (InvalidInput("bad"), InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
        (Transient("later"), Transient, grpc.StatusCode.UNAVAILABLE),
        (Permanent("never"), Permanent, grpc.StatusCode.FAILED_PRECONDITION),
        (NotSupported("no"), NotSupported, grpc.StatusCode.UNIMPLEMENTED),
        (Conflict("changed"), Conflict, grpc.StatusCode.ABORTED),
        (RuntimeError("boom"), Transient, grpc.StatusCode.INTERNAL),
    ],
)
async def test_error_mapping_both_ways(raised: BaseException, expected: type[DomainError], code: Any) -> None:
    provider = FailingProvider(node_name="vk-err")
    server = await start_server(provider, address="127.0.0.1:0")
    client = await connected(server.address)
    provider.error = raised
    try:
        # The wire code, seen by a plain gRPC client:
        async with grpc.aio.insecure_channel(server.address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as wire:
                await pb_grpc.ProviderStub(channel).Ping(pb.PingRequest(), timeout=5)  # type: ignore[no-untyped-call]
            assert wire.value.code() == code
            assert str(raised) in (wire.value.details() or "")
        # ... and the domain class GrpcProvider turns it back into:
        with pytest.raises(expected, match=f"provider Ping: .*{raised}") as caught:
            await client.ping()
        assert type(caught.value) is expected
    finally:
        await client.close()
        await server.stop(0)


async def test_a_hanging_call_raises_transient_within_the_deadline() -> None:
    provider = FailingProvider(node_name="vk-hang")
    server = await start_server(provider, address="127.0.0.1:0")
    client = await connected(server.address, call_timeout=0.3)
    provider.hang = True
    try:
        started = time.monotonic()
        with pytest.raises(Transient, match="DEADLINE_EXCEEDED"):
            await client.ping()
        assert time.monotonic() - started < 1.5
    finally:
        await client.close()
        await server.stop(0)


class RawServicer(pb_grpc.ProviderServicer):
    """A misbehaving provider written against the bare generated code."""

    def __init__(self) -> None:
        self.metadata: list[dict[str, str]] = []

    async def Describe(self, request: Any, context: Any) -> pb.DescribeResponse:
        # 99: a capability from a newer protocol revision, ignored by the client.
        return pb.DescribeResponse(name="raw", capabilities=[pb.CAPABILITY_LOGS, 99])  # type: ignore[list-item]

    async def Ping(self, request: Any, context: Any) -> pb.PingResponse:
        self.metadata.append({k: v for k, v in context.invocation_metadata()})
        return pb.PingResponse()

    async def ListPods(self, request: Any, context: Any) -> pb.ListPodsResponse:
        return pb.ListPodsResponse(pods_json=[b"{not json"])

    async def GetPod(self, request: Any, context: Any) -> pb.GetPodResponse:
        return pb.GetPodResponse(pod_json=b'{"metadata": {"namespace": "ns", "name": "p"}}')

    async def GetPodStatus(self, request: Any, context: Any) -> pb.GetPodStatusResponse:
        return pb.GetPodStatusResponse(status_json=b"[1, 2]")


@pytest.fixture
async def raw() -> AsyncIterator[tuple[RawServicer, GrpcProvider]]:
    server = grpc.aio.server()
    servicer = RawServicer()
    pb_grpc.add_ProviderServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    client = await connected(f"127.0.0.1:{port}")
    yield servicer, client
    await client.close()
    await server.stop(0)


async def test_malformed_replies_raise_invalid_input_naming_the_call(raw: Any) -> None:
    _, client = raw
    assert client.capabilities() == {Capability.LOGS}
    with pytest.raises(InvalidInput, match="ListPods: pod is not valid JSON"):
        await client.list_pods()
    with pytest.raises(InvalidInput, match=r"GetPod: .*uid"):
        await client.get_pod(PodRef("ns", "p", "u"))
    with pytest.raises(InvalidInput, match="GetPodStatus: pod status must be a JSON object"):
        await client.get_pod_status(PodRef("ns", "p", "u"))


async def test_a_method_the_provider_lacks_is_not_supported(raw: Any) -> None:
    _, client = raw
    with pytest.raises(NotSupported, match="GetStatsSummary"):
        await client.stats_summary()
    with pytest.raises(NotSupported):
        await client.create_pod(make_pod())


async def test_traceparent_arrives_in_the_metadata_when_a_span_is_active(raw: Any) -> None:
    servicer, client = raw
    await client.ping()
    assert "traceparent" not in servicer.metadata[-1]  # tracing off: nothing injected
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("sync") as span:
        await client.ping()
        trace_id = format(span.get_span_context().trace_id, "032x")
    assert servicer.metadata[-1]["traceparent"].split("-")[1] == trace_id


async def test_node_template_crosses_intact() -> None:
    from vkubelet.adapters.grpc import convert
    from vkubelet.domain.provider import NodeAddress, NodeCondition, Taint

    template = NodeTemplate(
        capacity={"cpu": "4"},
        allocatable={"cpu": "3"},
        labels={"l": "1"},
        annotations={"a": "2"},
        taints=(Taint("k", "v", "NoSchedule"),),
        addresses=(NodeAddress("InternalIP", "10.0.0.1"),),
        conditions=(NodeCondition("DiskPressure", "False", "Fine", "ok"),),
        operating_system="linux",
        architecture="arm64",
        provider_id="p://1",
    )
    assert convert.template_from_proto(convert.template_to_proto(template)) == template


# -- the node status stream (WatchNodeStatus) ---------------------------------------------------


async def test_a_capacity_change_of_the_mock_crosses_the_node_status_stream() -> None:
    mock = MockProvider(node_name="vk-node", config=MockNodeConfig(cpu="4", memory="8Gi", pods="10"))
    server = await start_server(mock, address="127.0.0.1:0")
    client = await connected(server.address)
    try:
        assert Capability.NODE_STATUS_STREAM in client.capabilities()
        stream = client.node_status_updates()
        first = await asyncio.wait_for(anext(stream), 5)
        assert first == await client.node_template() == await mock.node_template()
        assert first.capacity["cpu"] == "4"

        taint = Taint("example.com/gpu", "true", "NoSchedule")
        condition = NodeCondition("example.com/Quota", "True", "QuotaLow", "low")
        mock.update_node(
            capacity={"cpu": "8", "memory": "8Gi", "pods": "10"},
            allocatable={"cpu": "7", "memory": "7Gi", "pods": "10"},
            taints=[taint],
            conditions=[condition],
        )

        pushed = await asyncio.wait_for(anext(stream), 5)
        assert pushed == await mock.node_template()
        assert pushed.capacity["cpu"] == "8"
        assert pushed.allocatable == {"cpu": "7", "memory": "7Gi", "pods": "10"}
        assert pushed.taints == (taint,)
        assert pushed.conditions == (condition,)
        await close_stream(stream)
    finally:
        await client.close()
        await server.stop(0)


async def test_the_node_status_stream_of_a_provider_without_it_is_not_supported(
    echo_client: GrpcProvider,
) -> None:
    assert Capability.NODE_STATUS_STREAM not in echo_client.capabilities()
    with pytest.raises(NotSupported, match="node-status-stream"):
        await asyncio.wait_for(anext(echo_client.node_status_updates()), 5)


class OneShotNodeProvider(MockProvider):
    """Sends its template once, then ends the node status stream."""

    async def node_status_updates(self) -> AsyncIterator[NodeTemplate]:
        yield await self.node_template()


async def test_a_node_status_stream_the_provider_ends_raises_transient() -> None:
    server = await start_server(OneShotNodeProvider(node_name="vk-once"), address="127.0.0.1:0")
    client = await connected(server.address)
    try:
        stream = client.node_status_updates()
        assert (await asyncio.wait_for(anext(stream), 5)).capacity
        with pytest.raises(Transient, match="WatchNodeStatus: the provider ended the stream"):
            await asyncio.wait_for(anext(stream), 5)
    finally:
        await client.close()
        await server.stop(0)


async def test_node_controller_follows_the_mock_over_grpc_and_across_a_restart() -> None:
    """The whole chain: MockProvider.update_node -> SDK server -> GrpcProvider -> NodeController
    -> the Node's status and taints; then the provider restarts with another node."""
    config = MockNodeConfig(cpu="4", memory="8Gi", pods="10")
    mock = MockProvider(node_name="vk-grpc", config=config)
    server = await start_server(mock, address="127.0.0.1:0")
    port = server.port
    client = await connected(server.address, reconnect_backoff_min=0.1, reconnect_backoff_max=0.5)
    nodes = FakeNodeGateway()
    controller = NodeController(
        nodes=nodes,
        leases=FakeLeaseGateway(),
        provider=client,
        clock=SystemClock(),
        # A status patch every 10 minutes: anything sooner was pushed by the stream.
        settings=NodeControllerSettings(name="vk-grpc", provider="grpc", status_interval=600),
    )

    def capacity_cpu() -> str:
        return str(nodes.node("vk-grpc")["status"]["capacity"]["cpu"])

    running: asyncio.Task[None] | None = None
    try:
        await controller.register()
        running = asyncio.create_task(controller.run())
        assert capacity_cpu() == "4"

        taint = Taint("example.com/gpu", "true", "NoSchedule")
        mock.update_node(capacity={"cpu": "8", "memory": "8Gi", "pods": "10"}, taints=[taint])
        await eventually(lambda: capacity_cpu() == "8", "capacity cpu 8", within=5)
        assert taint.to_manifest() in nodes.node("vk-grpc")["spec"]["taints"]

        # The provider restarts knowing a bigger node; nothing is pushed about it.
        await server.stop(0)
        server = await start_server(
            MockProvider(node_name="vk-grpc", config=MockNodeConfig(cpu="16", memory="8Gi", pods="10")),
            address=f"127.0.0.1:{port}",
        )
        await eventually(lambda: capacity_cpu() == "16", "capacity cpu 16", within=15)
        assert not running.done()
    finally:
        await controller.stop()
        if running is not None:
            await running
        await client.close()
        await server.stop(0)
