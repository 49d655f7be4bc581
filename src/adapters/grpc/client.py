"""``GrpcProvider``: the Provider port over the vkubelet.provider.v1 protocol (grpc.aio).

* **Transport.** ``host:port`` with TLS (system roots or a CA file), mTLS (client cert and key),
  or plaintext only when asked (``insecure=True``); or ``unix:///path``.
* **Deadlines.** Every unary call has ``call_timeout``; a call past it raises Transient. Streams
  (status, logs, exec, attach, port-forward) have none: they live as long as their session.
* **Reconnects.** The channel reconnects by itself with backoff (``reconnect_backoff_min/max``).
  While the provider is away unary calls fail fast with Transient (so the node goes NotReady and
  the pod controller changes nothing), and the status stream waits for the channel. Each time the
  channel becomes ready again after the first time, Describe is called again (capabilities may
  have changed with a new provider version) and every ``on_reconnect`` callback runs, e.g. the pod
  controller's full reconcile, because status changes made while away were never streamed.
* **Distrust.** A reply that is not what the contract says (bad JSON, a pod without a UID, a pod
  with another UID than asked) raises InvalidInput naming the call; it never crashes the caller.
* **Trace context.** The current OpenTelemetry context is injected into each call's metadata with
  the configured propagators (W3C traceparent, B3 when configured); a no-op when tracing is off.

``capabilities()`` is synchronous (the port says so) and answers from the cached Describe, so the
provider must be described before use: ``await connect()``, or ``describe_blocking()`` from
synchronous wiring code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import grpc
import grpc.aio
from opentelemetry import propagate

from vkubelet.adapters.grpc import convert
from vkubelet.adapters.grpc._generated import provider_pb2 as pb
from vkubelet.adapters.grpc._generated import provider_pb2_grpc as pb_grpc
from vkubelet.adapters.grpc.config import GrpcProviderConfig, load_grpc_config
from vkubelet.adapters.grpc.errors import from_rpc_error
from vkubelet.application.ports.streams import ByteStream, LogOptions, StreamIO
from vkubelet.domain.errors import InvalidInput, NotSupported, Transient
from vkubelet.domain.pod import Pod, PodRef
from vkubelet.domain.provider import Capability, MetricFamily, NodeTemplate
from vkubelet.domain.volumes import PodVolumes

log = logging.getLogger(__name__)

T = TypeVar("T")
ReconnectHook = Callable[[], Awaitable[None]]


def channel_credentials(config: GrpcProviderConfig) -> grpc.ChannelCredentials | None:
    """TLS credentials for ``config``, or None for a plaintext (insecure or unix) channel."""
    if not config.uses_tls:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=config.ca_file.read_bytes() if config.ca_file else None,
        private_key=config.key_file.read_bytes() if config.key_file else None,
        certificate_chain=config.cert_file.read_bytes() if config.cert_file else None,
    )


def trace_metadata() -> tuple[tuple[str, str], ...]:
    """The current trace context as gRPC metadata (keys must be lower case in HTTP/2)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return tuple((key.lower(), value) for key, value in carrier.items())


class GrpcProvider:
    """Implements ``vkubelet.application.ports.provider.Provider`` against a remote provider."""

    def __init__(self, config: GrpcProviderConfig) -> None:
        self._target = config.address
        self._credentials = channel_credentials(config)
        self._call_timeout = config.call_timeout
        self._connect_timeout = config.connect_timeout
        self._options: list[tuple[str, Any]] = [
            ("grpc.initial_reconnect_backoff_ms", int(config.reconnect_backoff_min * 1000)),
            ("grpc.min_reconnect_backoff_ms", int(config.reconnect_backoff_min * 1000)),
            ("grpc.max_reconnect_backoff_ms", int(config.reconnect_backoff_max * 1000)),
            ("grpc.keepalive_time_ms", int(config.keepalive_time * 1000)),
            ("grpc.keepalive_timeout_ms", 20_000),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),  # big ListPods answers
            ("grpc.enable_retries", 0),  # vkubelet owns retries (the protocol contract)
        ]
        if config.server_name:
            self._options.append(("grpc.ssl_target_name_override", config.server_name))
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.ProviderStub | None = None
        self._monitor: asyncio.Task[None] | None = None
        self._description: pb.DescribeResponse | None = None
        self._capabilities: frozenset[Capability] | None = None
        self._native_volume_kinds: frozenset[str] = frozenset()
        self.on_reconnect: list[ReconnectHook] = []
        self.reconnects = 0  # times the channel came back after the first connection

    @property
    def target(self) -> str:
        return self._target

    @property
    def provider_name(self) -> str:
        return self._describe_cached().name

    @property
    def provider_version(self) -> str:
        return self._describe_cached().version

    # -- connection -------------------------------------------------------------------------
    def _stub_now(self) -> pb_grpc.ProviderStub:
        """The stub of the aio channel, created on first use (it needs the running loop)."""
        if self._stub is None:
            if self._credentials is None:
                self._channel = grpc.aio.insecure_channel(self._target, options=self._options)
            else:
                self._channel = grpc.aio.secure_channel(
                    self._target, self._credentials, options=self._options
                )
            self._stub = pb_grpc.ProviderStub(self._channel)  # type: ignore[no-untyped-call]
            self._monitor = asyncio.create_task(self._watch_channel(), name="grpc-provider-channel")
        return self._stub

    async def connect(self) -> None:
        """Describe the provider, waiting up to ``connect_timeout`` for it to come up.

        Raises Transient when it does not answer in time.
        """
        stub = self._stub_now()
        try:
            response = await stub.Describe(
                pb.DescribeRequest(),
                timeout=self._connect_timeout,
                wait_for_ready=True,
                metadata=trace_metadata(),
            )
        except grpc.RpcError as error:
            raise Transient(
                f"provider at {self._target} did not answer Describe within {self._connect_timeout:g} s: "
                f"{from_rpc_error(error, call='Describe')}"
            ) from error
        self._remember(response)

    def describe_blocking(self) -> None:
        """:meth:`connect` for synchronous wiring: one Describe on a short-lived blocking channel.

        It blocks the calling thread (at most ``connect_timeout``); meant for startup only.
        """
        if self._credentials is None:
            channel = grpc.insecure_channel(self._target, options=self._options)
        else:
            channel = grpc.secure_channel(self._target, self._credentials, options=self._options)
        try:
            stub = pb_grpc.ProviderStub(channel)  # type: ignore[no-untyped-call]
            response = stub.Describe(pb.DescribeRequest(), timeout=self._connect_timeout, wait_for_ready=True)
        except grpc.RpcError as error:
            raise Transient(
                f"provider at {self._target} did not answer Describe within {self._connect_timeout:g} s: "
                f"{from_rpc_error(error, call='Describe')}"
            ) from error
        finally:
            channel.close()
        self._remember(response)

    def _remember(self, response: pb.DescribeResponse) -> None:
        capabilities = convert.capabilities_from_proto(response.capabilities)
        if self._capabilities is not None and capabilities != self._capabilities:
            log.warning(
                "provider %s changed its capabilities: %s -> %s",
                self._target,
                sorted(self._capabilities),
                sorted(capabilities),
            )
        native = convert.native_volume_kinds_from_proto(response.native_volume_kinds)
        if self._description is not None and native != self._native_volume_kinds:
            log.warning(
                "provider %s changed its native volume kinds: %s -> %s",
                self._target,
                sorted(self._native_volume_kinds),
                sorted(native),
            )
        self._description = response
        self._capabilities = capabilities
        self._native_volume_kinds = native
        log.info(
            "provider %s at %s (version %s): capabilities %s; native volume kinds %s",
            response.name or "(unnamed)",
            self._target,
            response.version or "?",
            ", ".join(sorted(capabilities)) or "none",
            ", ".join(sorted(native)) or "none",
        )

    def _describe_cached(self) -> pb.DescribeResponse:
        if self._description is None:
            raise RuntimeError("GrpcProvider used before connect(): its capabilities are unknown")
        return self._description

    async def _watch_channel(self) -> None:
        """Refresh Describe and run the reconnect hooks each time the channel is READY again."""
        assert self._channel is not None
        channel = self._channel
        was_ready = False
        lost = False
        state = channel.get_state(try_to_connect=False)
        while True:
            if state is grpc.ChannelConnectivity.READY:
                if lost:
                    lost = False
                    await self._after_reconnect()
                was_ready = True
            elif was_ready and state in (
                grpc.ChannelConnectivity.TRANSIENT_FAILURE,
                grpc.ChannelConnectivity.IDLE,
                grpc.ChannelConnectivity.CONNECTING,
            ):
                lost = True
            if state is grpc.ChannelConnectivity.SHUTDOWN:
                return
            await channel.wait_for_state_change(state)
            # While lost, keep asking the channel to connect: with no call in flight it would
            # otherwise sit IDLE and the reconcile would wait for the next periodic call.
            state = channel.get_state(try_to_connect=lost)

    async def _after_reconnect(self) -> None:
        self.reconnects += 1
        log.info("provider %s is reachable again (reconnect %d)", self._target, self.reconnects)
        try:
            response = await self._stub_now().Describe(
                pb.DescribeRequest(), timeout=self._call_timeout, metadata=trace_metadata()
            )
            self._remember(response)
        except grpc.RpcError as error:
            log.warning("Describe after reconnecting failed: %s", from_rpc_error(error, call="Describe"))
        for hook in list(self.on_reconnect):
            try:
                await hook()
            except Exception:
                log.exception("a reconnect hook failed")

    async def _unary(self, call: str, method: Callable[..., Awaitable[T]], request: object) -> T:
        try:
            return await method(request, timeout=self._call_timeout, metadata=trace_metadata())
        except grpc.RpcError as error:
            raise from_rpc_error(error, call=call) from error
        except grpc.aio.UsageError as error:  # the channel was closed under the call
            raise Transient(f"provider {call}: {error}") from error

    # -- PodLifecycle -----------------------------------------------------------------------
    async def create_pod(self, pod: Pod) -> None:
        request = pb.CreatePodRequest(pod_json=convert.encode_json(pod.manifest))
        await self._unary("CreatePod", self._stub_now().CreatePod, request)

    async def update_pod(self, pod: Pod) -> None:
        request = pb.UpdatePodRequest(pod_json=convert.encode_json(pod.manifest))
        await self._unary("UpdatePod", self._stub_now().UpdatePod, request)

    async def set_pod_volumes(self, ref: PodRef, volumes: PodVolumes) -> None:
        request = pb.SetPodVolumesRequest(
            pod=convert.ref_to_proto(ref), volumes=convert.volumes_to_proto(volumes)
        )
        await self._unary("SetPodVolumes", self._stub_now().SetPodVolumes, request)

    async def delete_pod(self, pod: Pod) -> None:
        request = pb.DeletePodRequest(pod_json=convert.encode_json(pod.manifest))
        await self._unary("DeletePod", self._stub_now().DeletePod, request)

    # -- ContainerControl -------------------------------------------------------------------
    async def kill_container(self, ref: PodRef, container: str, *, grace_period_seconds: int) -> None:
        request = pb.KillContainerRequest(
            pod=convert.ref_to_proto(ref), container=container, grace_period_seconds=grace_period_seconds
        )
        await self._unary("KillContainer", self._stub_now().KillContainer, request)

    async def get_pod(self, ref: PodRef) -> Pod:
        request = pb.GetPodRequest(pod=convert.ref_to_proto(ref))
        response = await self._unary("GetPod", self._stub_now().GetPod, request)
        pod = convert.decode_pod(response.pod_json, call="GetPod")
        if pod.ref.uid != ref.uid:
            raise InvalidInput(f"GetPod: asked for pod uid {ref.uid}, the provider answered {pod.ref.uid}")
        return pod

    async def get_pod_status(self, ref: PodRef) -> Mapping[str, Any]:
        request = pb.GetPodStatusRequest(pod=convert.ref_to_proto(ref))
        response = await self._unary("GetPodStatus", self._stub_now().GetPodStatus, request)
        return convert.decode_object(response.status_json, call="GetPodStatus", what="pod status")

    async def list_pods(self) -> Sequence[Pod]:
        response = await self._unary("ListPods", self._stub_now().ListPods, pb.ListPodsRequest())
        return [convert.decode_pod(data, call="ListPods") for data in response.pods_json]

    # -- PodStatusSource --------------------------------------------------------------------
    async def pod_status_updates(self) -> AsyncIterator[Pod]:
        """Pods as the provider reports them. Waits for the channel when the provider is away;
        raises Transient when the stream breaks (the caller calls again). A malformed message is
        logged and skipped: one bad status must not cost the ones after it."""
        call = self._stub_now().WatchPodStatus(
            pb.WatchPodStatusRequest(), wait_for_ready=True, metadata=trace_metadata()
        )
        try:
            async for event in call:
                try:
                    yield convert.decode_pod(event.pod_json, call="WatchPodStatus")
                except InvalidInput as error:
                    log.error("skipping a malformed pod status from the provider: %s", error)
        except grpc.RpcError as error:
            raise from_rpc_error(error, call="WatchPodStatus") from error
        finally:
            call.cancel()
        raise Transient("provider WatchPodStatus: the provider ended the stream")

    # -- NodeStatusSource -------------------------------------------------------------------
    async def node_status_updates(self) -> AsyncIterator[NodeTemplate]:
        """The provider's whole node template each time it changes (capability
        NODE_STATUS_STREAM), converted like Describe's. Waits for the channel when the provider
        is away; raises Transient when the stream breaks or the provider ends it (the caller
        subscribes again), NotSupported when the provider answers UNIMPLEMENTED."""
        call = self._stub_now().WatchNodeStatus(
            pb.WatchNodeStatusRequest(), wait_for_ready=True, metadata=trace_metadata()
        )
        try:
            async for event in call:
                yield convert.template_from_proto(event.node)
        except grpc.RpcError as error:
            raise from_rpc_error(error, call="WatchNodeStatus") from error
        finally:
            call.cancel()
        raise Transient("provider WatchNodeStatus: the provider ended the stream")

    # -- NodeHealth -------------------------------------------------------------------------
    async def ping(self) -> None:
        await self._unary("Ping", self._stub_now().Ping, pb.PingRequest())

    async def node_template(self) -> NodeTemplate:
        response = await self._unary("Describe", self._stub_now().Describe, pb.DescribeRequest())
        self._remember(response)
        return convert.template_from_proto(response.node)

    # -- Stats ------------------------------------------------------------------------------
    async def stats_summary(self) -> Mapping[str, Any]:
        stub = self._stub_now()
        response = await self._unary("GetStatsSummary", stub.GetStatsSummary, pb.GetStatsSummaryRequest())
        return convert.decode_object(response.summary_json, call="GetStatsSummary", what="stats summary")

    async def metrics_resource(self) -> Sequence[MetricFamily]:
        stub = self._stub_now()
        response = await self._unary(
            "GetMetricsResource", stub.GetMetricsResource, pb.GetMetricsResourceRequest()
        )
        return convert.families_from_proto(response.families)

    # -- capabilities and lifecycle ---------------------------------------------------------
    def add_reconnect_hook(self, hook: ReconnectHook) -> None:
        """ProviderConnection: ``hook`` runs each time the channel comes back."""
        self.on_reconnect.append(hook)

    def capabilities(self) -> frozenset[Capability]:
        self._describe_cached()
        assert self._capabilities is not None
        return self._capabilities

    def native_volume_kinds(self) -> frozenset[str]:
        self._describe_cached()
        return self._native_volume_kinds

    async def close(self) -> None:
        """Close the channel. The provider's pods keep running."""
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
            self._monitor = None
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._stub = None

    # -- ContainerStreams -------------------------------------------------------------------
    def _require(self, capability: Capability, call: str) -> None:
        # Checked here, not left to the server: a bidi call the server rejects at once races
        # with our first stdin write, and grpc then reports that write's failure, not the code.
        if capability not in self.capabilities():
            raise NotSupported(f"provider {call}: the provider lacks the {capability.value!r} capability")

    async def container_logs(self, ref: PodRef, container: str, options: LogOptions) -> AsyncIterator[bytes]:
        request = convert.log_request(ref, container, options)
        call = self._stub_now().ContainerLogs(request, metadata=trace_metadata())
        try:
            async for chunk in call:
                yield chunk.data
        except grpc.RpcError as error:
            raise from_rpc_error(error, call="ContainerLogs") from error
        finally:
            call.cancel()  # the reader stopped early (client gone): end the provider's side too

    async def exec_in_container(
        self, ref: PodRef, container: str, command: Sequence[str], io: StreamIO
    ) -> int:
        self._require(Capability.EXEC, "Exec")
        return await self._session("Exec", self._stub_now().Exec, ref, container, command, io)

    async def attach_to_container(self, ref: PodRef, container: str, io: StreamIO) -> int:
        self._require(Capability.ATTACH, "Attach")
        return await self._session("Attach", self._stub_now().Attach, ref, container, (), io)

    async def _session(
        self,
        name: str,
        method: Callable[..., grpc.aio.StreamStreamCall],
        ref: PodRef,
        container: str,
        command: Sequence[str],
        io: StreamIO,
    ) -> int:
        call = method(metadata=trace_metadata())
        start = pb.StreamStart(
            pod=convert.ref_to_proto(ref),
            container=container,
            command=list(command),
            stdin=io.stdin,
            stdout=io.stdout,
            stderr=io.stderr,
            tty=io.tty,
        )

        writing = asyncio.Lock()  # grpc.aio allows one write at a time per call

        async def send(request: pb.StreamRequest) -> bool:
            async with writing:
                if call.done():
                    return False
                try:
                    await call.write(request)
                except (grpc.RpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
                    return False  # the call ended; its status is read (and reported) below
                return True

        async def send_stdin() -> None:
            while data := await io.read_stdin():
                if not await send(pb.StreamRequest(stdin=data)):
                    return
            await send(pb.StreamRequest(stdin_close=pb.StdinClose()))

        async def send_resizes() -> None:
            async for size in io.resizes():
                resize = pb.TerminalSize(width=size.width, height=size.height)
                if not await send(pb.StreamRequest(resize=resize)):
                    return

        pumps: list[asyncio.Task[None]] = []
        try:
            await call.write(pb.StreamRequest(start=start))
            if io.stdin:
                pumps.append(asyncio.create_task(send_stdin()))
            if io.tty:
                pumps.append(asyncio.create_task(send_resizes()))
            while True:
                response = await call.read()
                if response is grpc.aio.EOF:
                    break
                kind = response.WhichOneof("kind")
                if kind == "stdout":
                    await io.write_stdout(response.stdout)
                elif kind == "stderr":
                    await io.write_stderr(response.stderr)
                elif kind == "exit":
                    return int(response.exit.code)
            raise Transient(f"provider {name}: the stream ended without an exit code")
        except grpc.RpcError as error:
            raise from_rpc_error(error, call=name) from error
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            call.cancel()

    async def port_forward(self, ref: PodRef, port: int, stream: ByteStream) -> None:
        self._require(Capability.PORT_FORWARD, "PortForward")
        call = self._stub_now().PortForward(metadata=trace_metadata())

        async def send() -> None:
            try:
                while data := await stream.read():
                    await call.write(pb.PortForwardRequest(data=data))
                await call.done_writing()  # half-close: the pod side may still answer
            except (grpc.RpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
                return  # the call ended; its status is read (and reported) below

        pump: asyncio.Task[None] | None = None
        # From revision 3 the provider answers `connected` first; only then is ``stream`` read,
        # which tells a TCP probe that the pod side accepted (see ContainerStreams.port_forward).
        announces = self._describe_cached().revision >= 3
        try:
            start = pb.PortForwardStart(pod=convert.ref_to_proto(ref), port=port)
            await call.write(pb.PortForwardRequest(start=start))
            if not announces:
                pump = asyncio.create_task(send())
            while True:
                response = await call.read()
                if response is grpc.aio.EOF:
                    break
                if pump is None:
                    pump = asyncio.create_task(send())
                if response.data:
                    await stream.write(response.data)
        except grpc.RpcError as error:
            raise from_rpc_error(error, call="PortForward") from error
        finally:
            if pump is not None:
                pump.cancel()
                await asyncio.gather(pump, return_exceptions=True)
            call.cancel()


def connect_grpc_provider(config_path: str | os.PathLike[str] | None) -> GrpcProvider:
    """Load ``--provider-config``, build the provider and describe it (blocking, at startup).

    Raises GrpcConfigError for a bad file and Transient when the provider does not answer within
    its ``connect_timeout``.
    """
    provider = GrpcProvider(load_grpc_config(config_path))
    provider.describe_blocking()
    return provider


__all__ = ["GrpcProvider", "ReconnectHook", "channel_credentials", "connect_grpc_provider", "trace_metadata"]
