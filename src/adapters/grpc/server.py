"""The Python provider SDK: serve any object implementing the Provider port over gRPC.

    from vkubelet.adapters.grpc.server import serve
    asyncio.run(serve(MyProvider(), address="0.0.0.0:7443"))

``serve`` runs until SIGTERM/SIGINT and then stops gracefully (calls in flight get
``grace_seconds``); ``start_server`` returns at once with a :class:`RunningServer` (tests, or
a provider with its own main loop). Both also serve the standard health service
(grpc.health.v1, status SERVING while up) and server reflection.

Errors: a domain error raised by the provider becomes its status code (``errors.CODE_FOR_ERROR``)
with the message as details; any other exception becomes INTERNAL with a short message, and is
logged with its traceback here, so the provider author sees it and vkubelet retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from vkubelet.adapters.grpc import convert
from vkubelet.adapters.grpc._generated import provider_pb2 as pb
from vkubelet.adapters.grpc._generated import provider_pb2_grpc as pb_grpc
from vkubelet.adapters.grpc.errors import code_for
from vkubelet.application.ports.provider import Provider
from vkubelet.application.ports.streams import TerminalSize
from vkubelet.domain.errors import DomainError, InvalidInput, NotSupported
from vkubelet.domain.provider import Capability

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Provider"].full_name
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


@dataclass(frozen=True, slots=True)
class ServerTLS:
    """The provider's serving certificate; with ``client_ca`` clients must present a certificate
    signed by it (mTLS)."""

    cert_file: Path
    key_file: Path
    client_ca: Path | None = None

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key_file.read_bytes(), self.cert_file.read_bytes())],
            root_certificates=self.client_ca.read_bytes() if self.client_ca else None,
            require_client_auth=self.client_ca is not None,
        )


def _guarded(name: str) -> Callable[[F], F]:
    """Turn what a provider raises into the protocol's status codes."""

    def decorate(handler: F) -> F:
        @functools.wraps(handler)
        async def wrapper(self: _Servicer, request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                return await handler(self, request, context)
            except grpc.aio.AbortError:
                raise
            except DomainError as error:
                await context.abort(code_for(error), str(error) or type(error).__name__)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.exception("provider %s failed", name)
                await context.abort(
                    grpc.StatusCode.INTERNAL, f"{name}: {type(error).__name__}: {error}"[:300]
                )

        return wrapper  # type: ignore[return-value]

    return decorate


class _SessionIO:
    """StreamIO for one Exec/Attach call: requests feed stdin and resizes, writes become responses."""

    def __init__(self, start: pb.StreamStart, context: grpc.aio.ServicerContext) -> None:
        self.stdin = start.stdin
        self.stdout = start.stdout
        self.stderr = start.stderr
        self.tty = start.tty
        self._context = context
        self._stdin: asyncio.Queue[bytes] = asyncio.Queue()
        self._resizes: asyncio.Queue[TerminalSize | None] = asyncio.Queue()
        self.writing = asyncio.Lock()  # grpc.aio allows one write at a time per call

    async def pump(self) -> None:
        """Read the client's messages until it stops sending."""
        try:
            while True:
                request = await self._context.read()
                if request is grpc.aio.EOF:
                    break
                kind = request.WhichOneof("kind")
                if kind == "stdin" and request.stdin:
                    self._stdin.put_nowait(request.stdin)
                elif kind == "stdin_close":
                    self._stdin.put_nowait(b"")
                elif kind == "resize":
                    self._resizes.put_nowait(TerminalSize(request.resize.width, request.resize.height))
        finally:
            self._stdin.put_nowait(b"")  # the client is gone: stdin is closed too
            self._resizes.put_nowait(None)

    async def read_stdin(self) -> bytes:
        data = await self._stdin.get()
        if not data:
            self._stdin.put_nowait(b"")  # stays closed for later reads
        return data

    async def write_stdout(self, data: bytes) -> None:
        if data:
            async with self.writing:
                await self._context.write(pb.StreamResponse(stdout=data))

    async def write_stderr(self, data: bytes) -> None:
        if data:
            async with self.writing:
                await self._context.write(pb.StreamResponse(stderr=data))

    async def resizes(self) -> AsyncIterator[TerminalSize]:
        while (size := await self._resizes.get()) is not None:
            yield size


class _ForwardStream:
    """ByteStream for one PortForward call."""

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        self._context = context
        self._incoming: asyncio.Queue[bytes] = asyncio.Queue()
        self._writing = asyncio.Lock()
        self._announced = False
        self.closed = False

    async def pump(self) -> None:
        try:
            while True:
                request = await self._context.read()
                if request is grpc.aio.EOF:
                    break
                if request.WhichOneof("kind") == "data" and request.data:
                    self._incoming.put_nowait(request.data)
        finally:
            self._incoming.put_nowait(b"")

    async def read(self) -> bytes:
        if not self._announced:
            # The provider reads only once connected (the ContainerStreams contract): say so.
            self._announced = True
            async with self._writing:
                await self._context.write(pb.PortForwardResponse(connected=True))
        data = await self._incoming.get()
        if not data:
            self._incoming.put_nowait(b"")
        return data

    async def write(self, data: bytes) -> None:
        if data and not self.closed:
            async with self._writing:
                await self._context.write(pb.PortForwardResponse(data=data))

    async def close(self) -> None:
        self.closed = True


class _Servicer(pb_grpc.ProviderServicer):
    def __init__(self, provider: Provider, *, name: str, version: str) -> None:
        self._provider = provider
        self._name = name
        self._version = version

    def _require(self, capability: Capability) -> None:
        if capability not in self._provider.capabilities():
            raise NotSupported(f"this provider lacks the {capability.value!r} capability")

    @_guarded("Describe")
    async def Describe(self, request: pb.DescribeRequest, context: grpc.aio.ServicerContext) -> Any:
        template = await self._provider.node_template()
        return pb.DescribeResponse(
            name=self._name,
            version=self._version,
            capabilities=convert.capabilities_to_proto(self._provider.capabilities()),
            node=convert.template_to_proto(template),
            native_volume_kinds=convert.native_volume_kinds_to_proto(self._provider.native_volume_kinds()),
            revision=convert.PROTOCOL_REVISION,
        )

    @_guarded("CreatePod")
    async def CreatePod(self, request: pb.CreatePodRequest, context: grpc.aio.ServicerContext) -> Any:
        await self._provider.create_pod(convert.decode_pod(request.pod_json, call="CreatePod"))
        return pb.CreatePodResponse()

    @_guarded("UpdatePod")
    async def UpdatePod(self, request: pb.UpdatePodRequest, context: grpc.aio.ServicerContext) -> Any:
        await self._provider.update_pod(convert.decode_pod(request.pod_json, call="UpdatePod"))
        return pb.UpdatePodResponse()

    @_guarded("SetPodVolumes")
    async def SetPodVolumes(self, request: pb.SetPodVolumesRequest, context: grpc.aio.ServicerContext) -> Any:
        self._require(Capability.VOLUMES)
        ref = convert.ref_from_proto(request.pod, call="SetPodVolumes")
        volumes = convert.volumes_from_proto(request.volumes, call="SetPodVolumes")
        await self._provider.set_pod_volumes(ref, volumes)
        return pb.SetPodVolumesResponse()

    @_guarded("KillContainer")
    async def KillContainer(self, request: pb.KillContainerRequest, context: grpc.aio.ServicerContext) -> Any:
        self._require(Capability.KILL_CONTAINER)
        ref = convert.ref_from_proto(request.pod, call="KillContainer")
        if not request.container:
            raise InvalidInput("KillContainer: no container named")
        grace = request.grace_period_seconds
        if grace < 0:
            raise InvalidInput(f"KillContainer: grace_period_seconds must not be negative, got {grace}")
        await self._provider.kill_container(ref, request.container, grace_period_seconds=grace)
        return pb.KillContainerResponse()

    @_guarded("DeletePod")
    async def DeletePod(self, request: pb.DeletePodRequest, context: grpc.aio.ServicerContext) -> Any:
        await self._provider.delete_pod(convert.decode_pod(request.pod_json, call="DeletePod"))
        return pb.DeletePodResponse()

    @_guarded("GetPod")
    async def GetPod(self, request: pb.GetPodRequest, context: grpc.aio.ServicerContext) -> Any:
        pod = await self._provider.get_pod(convert.ref_from_proto(request.pod, call="GetPod"))
        return pb.GetPodResponse(pod_json=convert.encode_json(pod.manifest))

    @_guarded("GetPodStatus")
    async def GetPodStatus(self, request: pb.GetPodStatusRequest, context: grpc.aio.ServicerContext) -> Any:
        ref = convert.ref_from_proto(request.pod, call="GetPodStatus")
        status = await self._provider.get_pod_status(ref)
        return pb.GetPodStatusResponse(status_json=convert.encode_json(status))

    @_guarded("ListPods")
    async def ListPods(self, request: pb.ListPodsRequest, context: grpc.aio.ServicerContext) -> Any:
        pods = await self._provider.list_pods()
        return pb.ListPodsResponse(pods_json=[convert.encode_json(pod.manifest) for pod in pods])

    @_guarded("Ping")
    async def Ping(self, request: pb.PingRequest, context: grpc.aio.ServicerContext) -> Any:
        await self._provider.ping()
        return pb.PingResponse()

    @_guarded("GetStatsSummary")
    async def GetStatsSummary(
        self, request: pb.GetStatsSummaryRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        self._require(Capability.STATS_SUMMARY)
        summary = await self._provider.stats_summary()
        return pb.GetStatsSummaryResponse(summary_json=convert.encode_json(summary))

    @_guarded("GetMetricsResource")
    async def GetMetricsResource(
        self, request: pb.GetMetricsResourceRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        self._require(Capability.METRICS_RESOURCE)
        families = await self._provider.metrics_resource()
        return pb.GetMetricsResourceResponse(families=convert.families_to_proto(families))

    @_guarded("WatchPodStatus")
    async def WatchPodStatus(
        self, request: pb.WatchPodStatusRequest, context: grpc.aio.ServicerContext
    ) -> None:
        self._require(Capability.POD_STATUS_STREAM)
        async for pod in self._provider.pod_status_updates():
            await context.write(pb.PodStatusEvent(pod_json=convert.encode_json(pod.manifest)))

    @_guarded("WatchNodeStatus")
    async def WatchNodeStatus(
        self, request: pb.WatchNodeStatusRequest, context: grpc.aio.ServicerContext
    ) -> None:
        self._require(Capability.NODE_STATUS_STREAM)
        # Looked up rather than called: a provider written before the port had this method may
        # still declare the capability by mistake, and deserves a readable UNIMPLEMENTED.
        updates = getattr(self._provider, "node_status_updates", None)
        if updates is None:
            raise NotSupported("the provider declares node-status-stream but has no node_status_updates()")
        async for template in updates():
            await context.write(pb.NodeStatusEvent(node=convert.template_to_proto(template)))

    @_guarded("ContainerLogs")
    async def ContainerLogs(
        self, request: pb.ContainerLogsRequest, context: grpc.aio.ServicerContext
    ) -> None:
        self._require(Capability.LOGS)
        ref = convert.ref_from_proto(request.pod, call="ContainerLogs")
        options = convert.log_options_from_proto(request)
        async for data in self._provider.container_logs(ref, request.container, options):
            if data:
                await context.write(pb.LogChunk(data=data))

    @_guarded("Exec")
    async def Exec(self, request: Any, context: grpc.aio.ServicerContext) -> None:
        self._require(Capability.EXEC)
        await self._session("Exec", context)

    @_guarded("Attach")
    async def Attach(self, request: Any, context: grpc.aio.ServicerContext) -> None:
        self._require(Capability.ATTACH)
        await self._session("Attach", context)

    async def _session(self, name: str, context: grpc.aio.ServicerContext) -> None:
        first = await context.read()
        if first is grpc.aio.EOF or first.WhichOneof("kind") != "start":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{name}: the first message must be start")
        start = first.start
        ref = convert.ref_from_proto(start.pod, call=name)
        io = _SessionIO(start, context)
        pump = asyncio.create_task(io.pump())
        try:
            if name == "Exec":
                code = await self._provider.exec_in_container(ref, start.container, list(start.command), io)
            else:
                code = await self._provider.attach_to_container(ref, start.container, io)
            async with io.writing:
                await context.write(pb.StreamResponse(exit=pb.Exit(code=code)))
        finally:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)

    @_guarded("PortForward")
    async def PortForward(self, request: Any, context: grpc.aio.ServicerContext) -> None:
        self._require(Capability.PORT_FORWARD)
        first = await context.read()
        if first is grpc.aio.EOF or first.WhichOneof("kind") != "start":
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "PortForward: the first message must be start"
            )
        ref = convert.ref_from_proto(first.start.pod, call="PortForward")
        stream = _ForwardStream(context)
        pump = asyncio.create_task(stream.pump())
        try:
            await self._provider.port_forward(ref, first.start.port, stream)
        finally:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)


@dataclass(slots=True)
class RunningServer:
    """A started provider server. ``port`` is the bound TCP port (0 for a unix socket)."""

    server: grpc.aio.Server
    health: health.aio.HealthServicer
    address: str
    port: int

    async def stop(self, grace_seconds: float = 5.0) -> None:
        """Report NOT_SERVING, then stop; calls in flight get ``grace_seconds`` to finish."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_seconds)


async def start_server(
    provider: Provider,
    *,
    address: str,
    tls: ServerTLS | None = None,
    name: str = "",
    version: str = "",
) -> RunningServer:
    """Serve ``provider`` on ``address`` (``host:port``, port 0 picks one, or ``unix:///path``)
    and return at once. ``name``/``version`` are what Describe reports (default: the class name)."""
    server = grpc.aio.server(
        options=[
            # Accept vkubelet's keepalive pings (and faster ones from other clients).
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ]
    )
    servicer = _Servicer(provider, name=name or type(provider).__name__, version=version)
    pb_grpc.add_ProviderServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    if tls is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, tls.credentials())
    if not address.startswith("unix:") and port == 0:
        raise OSError(f"cannot listen on {address}")
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    if address.startswith("unix:"):
        bound = address
        port = 0
    else:
        host = address.rpartition(":")[0]
        bound = f"{host}:{port}"
    log.info("provider %s serving on %s", servicer._name, bound)
    return RunningServer(server=server, health=health_servicer, address=bound, port=port)


async def serve(
    provider: Provider,
    *,
    address: str,
    tls: ServerTLS | None = None,
    grace_seconds: float = 5.0,
    name: str = "",
    version: str = "",
) -> None:
    """Serve ``provider`` until SIGTERM or SIGINT, then stop gracefully and close the provider."""
    running = await start_server(provider, address=address, tls=tls, name=name, version=version)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
        log.info("stopping: calls in flight get %g s", grace_seconds)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await running.stop(grace_seconds)
        with contextlib.suppress(Exception):
            await provider.close()


__all__ = ["RunningServer", "ServerTLS", "serve", "start_server"]
