"""KubeletApi.container_logs: pod lookup, container validation, capability, limitBytes, closing."""

from __future__ import annotations

import pytest
from tests.fakes.logs import LogsProvider
from tests.fakes.provider import FakeProvider

from vkubelet.application.kubelet_api import KubeletApi
from vkubelet.application.ports.streams import LogOptions
from vkubelet.domain.errors import InvalidInput, NotFound, NotSupported
from vkubelet.domain.pod import Pod

NODE = "vk-0"


def pod(name: str, uid: str, containers: tuple[str, ...] = ("app",)) -> Pod:
    return Pod.from_manifest(
        {
            "metadata": {"namespace": "ns", "name": name, "uid": uid},
            "spec": {"nodeName": NODE, "containers": [{"name": c} for c in containers]},
        }
    )


def api(provider: FakeProvider, node_pods: list[Pod]) -> KubeletApi:
    return KubeletApi(provider=provider, node_pods=lambda: node_pods, node_name=NODE)


async def collect(api: KubeletApi, name: str, container: str = "app", **options: object) -> bytes:
    chunks = await api.container_logs(
        namespace="ns",
        pod=name,
        container=container,
        options=LogOptions(**options),  # type: ignore[arg-type]
    )
    return b"".join([chunk async for chunk in chunks])


async def test_streams_the_provider_log_of_the_api_servers_pod() -> None:
    provider = LogsProvider([b"one\n", b"two\n"])
    assert await collect(api(provider, [pod("web", "u1")]), "web", tail_lines=5) == b"one\ntwo\n"
    ref, container, options = provider.requests[0]
    assert (ref.uid, container, options.tail_lines) == ("u1", "app", 5)


async def test_falls_back_to_the_providers_pods() -> None:
    provider = LogsProvider([b"x"])
    provider.seed(pod("orphan", "u9"))
    assert await collect(api(provider, []), "orphan") == b"x"
    assert provider.requests[0][0].uid == "u9"


async def test_unknown_pod_is_not_found_and_unknown_container_invalid() -> None:
    provider = LogsProvider()
    with pytest.raises(NotFound, match="ns/nope"):
        await collect(api(provider, []), "nope")
    with pytest.raises(InvalidInput, match="'db' is not valid"):
        await collect(api(provider, [pod("web", "u1")]), "web", container="db")
    assert provider.requests == []


async def test_without_the_logs_capability_is_not_supported() -> None:
    with pytest.raises(NotSupported, match="container logs"):
        await collect(api(FakeProvider(), [pod("web", "u1")]), "web")


async def test_limit_bytes_is_enforced_and_closes_the_provider_stream() -> None:
    provider = LogsProvider([b"abcd", b"efgh", b"ijkl"])
    assert await collect(api(provider, [pod("web", "u1")]), "web", limit_bytes=6, follow=True) == b"abcdef"
    assert provider.closed.is_set()  # a follow would never end on its own


async def test_closing_the_stream_closes_the_provider_stream() -> None:
    provider = LogsProvider([b"first"])
    chunks = await api(provider, [pod("web", "u1")]).container_logs(
        namespace="ns", pod="web", container="app", options=LogOptions(follow=True)
    )
    assert await anext(chunks) == b"first"
    assert not provider.closed.is_set()
    await chunks.aclose()  # type: ignore[attr-defined]
    assert provider.closed.is_set()
