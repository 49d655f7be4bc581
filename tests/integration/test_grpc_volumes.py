"""SetPodVolumes over real in-process gRPC: contents arrive intact, bad paths never reach the
provider, and a provider without the VOLUMES capability answers NotSupported."""

from __future__ import annotations

import grpc
import grpc.aio
import pytest

from tests.fakes.provider import FakeProvider
from tests.integration.test_grpc_provider import connected
from vkubelet.adapters.grpc._generated import provider_pb2 as pb
from vkubelet.adapters.grpc._generated import provider_pb2_grpc as pb_grpc
from vkubelet.adapters.grpc.server import start_server
from vkubelet.domain.errors import NotSupported
from vkubelet.domain.pod import PodRef
from vkubelet.domain.provider import Capability
from vkubelet.domain.volumes import EmptyDirVolume, FileVolume, PodVolumes, VolumeFile

REF = PodRef(namespace="default", name="web", uid="uid-vol")
VOLUMES = PodVolumes(
    files=(
        FileVolume(
            name="kube-api-access-x7k2p",
            kind="projected",
            files=(
                VolumeFile(path="token", data=b"eyJhbGciOi...", mode=0o644),
                VolumeFile(path="ca.crt", data=b"-----BEGIN CERTIFICATE-----\n", mode=0o644),
                VolumeFile(path="namespace", data=b"default", mode=0o644),
            ),
        ),
        FileVolume(
            name="creds", kind="secret", files=(VolumeFile(path="db/pass", data=b"\x00\xffs3", mode=0o400),)
        ),
    ),
    empty_dirs=(
        EmptyDirVolume(name="scratch", medium="Memory", size_limit="64Mi"),
        EmptyDirVolume(name="tmp"),
    ),
    image_pull_secret=b'{"auths":{"registry.example":{"auth":"dXNlcjpwdw=="}}}',
)


async def test_volumes_arrive_byte_for_byte_and_mode_for_mode() -> None:
    provider = FakeProvider(volumes=True)
    server = await start_server(provider, address="127.0.0.1:0", name="fake", version="1")
    client = await connected(server.address)
    try:
        assert Capability.VOLUMES in client.capabilities()
        await client.set_pod_volumes(REF, VOLUMES)
        assert provider.volumes[REF.uid] == VOLUMES
        assert provider.volumes[REF.uid].digest() == VOLUMES.digest()
    finally:
        await client.close()
        await server.stop(0)


async def test_a_provider_without_the_capability_answers_not_supported() -> None:
    provider = FakeProvider(volumes=False)
    server = await start_server(provider, address="127.0.0.1:0", name="fake", version="1")
    client = await connected(server.address)
    try:
        assert Capability.VOLUMES not in client.capabilities()
        with pytest.raises(NotSupported):
            await client.set_pod_volumes(REF, VOLUMES)
    finally:
        await client.close()
        await server.stop(0)


@pytest.mark.parametrize(
    "kinds",
    [frozenset(), frozenset({"persistentVolumeClaim", "csi", "hostPath", "nfs"})],
    ids=["none", "four"],
)
async def test_native_volume_kinds_cross_describe(kinds: frozenset[str]) -> None:
    provider = FakeProvider(native_volume_kinds=kinds)
    server = await start_server(provider, address="127.0.0.1:0", name="fake", version="1")
    client = await connected(server.address)
    try:
        assert client.native_volume_kinds() == kinds
        async with grpc.aio.insecure_channel(server.address) as channel:
            response = await pb_grpc.ProviderStub(channel).Describe(pb.DescribeRequest(), timeout=5)  # type: ignore[no-untyped-call]
        assert list(response.native_volume_kinds) == sorted(kinds)  # field 5, in a stable order
    finally:
        await client.close()
        await server.stop(0)


@pytest.mark.parametrize("path", ["/etc/passwd", "../escape", "a/../../b", ""])
async def test_a_path_that_leaves_the_volume_is_refused_before_the_provider(path: str) -> None:
    provider = FakeProvider(volumes=True)
    server = await start_server(provider, address="127.0.0.1:0", name="fake", version="1")
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = pb_grpc.ProviderStub(channel)  # type: ignore[no-untyped-call]
            request = pb.SetPodVolumesRequest(
                pod=pb.PodRef(namespace="default", name="web", uid="uid-vol"),
                volumes=pb.PodVolumes(
                    files=[
                        pb.FileVolume(name="evil", kind="secret", files=[pb.VolumeFile(path=path, data=b"x")])
                    ]
                ),
            )
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.SetPodVolumes(request, timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "leaves the volume" in (caught.value.details() or "")
        assert provider.volumes == {}
    finally:
        await server.stop(0)
