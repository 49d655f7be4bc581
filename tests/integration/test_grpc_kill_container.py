"""KillContainer over real in-process gRPC: the call reaches the provider with its arguments,
errors come back as their domain classes, bad requests never reach the provider, and a provider
without the capability (or from before protocol revision 3) answers NotSupported."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest

from tests.fakes.provider import FakeProvider
from tests.integration.test_grpc_provider import connected, make_pod
from vkubelet.adapters.grpc._generated import provider_pb2 as pb
from vkubelet.adapters.grpc._generated import provider_pb2_grpc as pb_grpc
from vkubelet.adapters.grpc.client import GrpcProvider
from vkubelet.adapters.grpc.server import RunningServer, start_server
from vkubelet.domain.errors import NotFound, NotSupported, Permanent, Transient
from vkubelet.domain.pod import PodRef
from vkubelet.domain.provider import Capability


@pytest.fixture
async def killable() -> AsyncIterator[tuple[FakeProvider, RunningServer, GrpcProvider]]:
    provider = FakeProvider(kills=True)
    server = await start_server(provider, address="127.0.0.1:0", name="fake", version="1")
    client = await connected(server.address)
    yield provider, server, client
    await client.close()
    await server.stop(0)


async def test_kill_reaches_the_provider_with_pod_container_and_grace(killable: Any) -> None:
    provider, _, client = killable
    assert Capability.KILL_CONTAINER in client.capabilities()
    pod = make_pod()
    await client.create_pod(pod)
    await client.kill_container(pod.ref, "c", grace_period_seconds=7)
    await client.kill_container(pod.ref, "c", grace_period_seconds=0)
    assert provider.kills == [(pod.ref, "c", 7), (pod.ref, "c", 0)]


async def test_not_found_and_other_errors_come_back_as_their_domain_class(killable: Any) -> None:
    provider, _, client = killable
    pod = make_pod()
    await client.create_pod(pod)
    with pytest.raises(NotFound, match=r"provider KillContainer: .*container nope"):
        await client.kill_container(pod.ref, "nope", grace_period_seconds=1)
    with pytest.raises(NotFound, match="provider KillContainer: pod"):
        await client.kill_container(PodRef("default", "web", "uid-unknown"), "c", grace_period_seconds=1)
    provider.inject_failure("kill_container", Transient("runtime busy"))
    with pytest.raises(Transient, match="runtime busy"):
        await client.kill_container(pod.ref, "c", grace_period_seconds=1)
    provider.inject_failure("kill_container", Permanent("cannot signal"))
    with pytest.raises(Permanent, match="cannot signal"):
        await client.kill_container(pod.ref, "c", grace_period_seconds=1)
    assert provider.kills == []


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        ({"container": "c", "grace_period_seconds": -1}, "grace_period_seconds must not be negative"),
        ({"container": "", "grace_period_seconds": 1}, "no container named"),
    ],
)
async def test_a_bad_request_is_invalid_argument_and_never_reaches_the_provider(
    killable: Any, request_fields: dict[str, Any], message: str
) -> None:
    provider, server, _ = killable
    async with grpc.aio.insecure_channel(server.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as wire:
            await pb_grpc.ProviderStub(channel).KillContainer(  # type: ignore[no-untyped-call]
                pb.KillContainerRequest(pod=pb.PodRef(namespace="ns", name="p", uid="u"), **request_fields),
                timeout=5,
            )
    assert wire.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (wire.value.details() or "")
    assert provider.calls["kill_container"] == 0


async def test_a_provider_without_the_capability_answers_not_supported() -> None:
    provider = FakeProvider(kills=False)
    server = await start_server(provider, address="127.0.0.1:0")
    client = await connected(server.address)
    try:
        assert Capability.KILL_CONTAINER not in client.capabilities()
        with pytest.raises(NotSupported, match="KillContainer"):
            await client.kill_container(PodRef("ns", "p", "u"), "c", grace_period_seconds=1)
        assert provider.calls["kill_container"] == 0
    finally:
        await client.close()
        await server.stop(0)


async def _describe(request: pb.DescribeRequest, context: Any) -> pb.DescribeResponse:
    return pb.DescribeResponse(name="old", capabilities=[pb.CAPABILITY_VOLUMES])


async def test_a_provider_from_before_revision_3_answers_not_supported() -> None:
    # Built from the revision 2 .proto: the service has no KillContainer method at all.
    server = grpc.aio.server()
    describe = grpc.unary_unary_rpc_method_handler(
        _describe,
        request_deserializer=pb.DescribeRequest.FromString,
        response_serializer=pb.DescribeResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("vkubelet.provider.v1.Provider", {"Describe": describe}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    client = await connected(f"127.0.0.1:{port}")
    try:
        assert client.capabilities() == {Capability.VOLUMES}
        with pytest.raises(NotSupported, match="KillContainer"):
            await client.kill_container(PodRef("ns", "p", "u"), "c", grace_period_seconds=1)
    finally:
        await client.close()
        await server.stop(0)
