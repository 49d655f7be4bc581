"""KubernetesConfigSource over a hand-written client stub: a configmap's env view (``data``) and
volume view (``data`` as UTF-8 plus ``binaryData`` decoded) come from one cached GET."""

from __future__ import annotations

import asyncio
import base64
from collections import Counter
from collections.abc import Mapping
from typing import Any, cast

import pytest
from tests.fakes.clock import FakeClock

from vkubelet.adapters.kubernetes.client import KubeClient
from vkubelet.adapters.kubernetes.config import KubernetesConfigSource
from vkubelet.domain.errors import InvalidInput, NotFound

CM_PATH = "/api/v1/namespaces/ns/configmaps/cm"
RAW = b"\x89PNG\r\n\x1a\n\x00\xff\xfe"  # not UTF-8


class StubClient:
    """Answers GETs of the objects it holds (path -> manifest), 404 otherwise; counts them."""

    def __init__(self, objects: Mapping[str, Mapping[str, Any]]) -> None:
        self.objects = dict(objects)
        self.gets: Counter[str] = Counter()
        self.gate: asyncio.Event | None = None  # set: answers wait for it
        # Not None: each answer waits for its own event, appended here as the request arrives.
        self.holds: list[asyncio.Event] | None = None

    async def request(self, method: str, path: str, *, what: str, **_: Any) -> dict[str, Any]:
        assert method == "GET"
        self.gets[path] += 1
        # The server reads the object when the request arrives; only the answer is delayed.
        found = dict(self.objects[path]) if path in self.objects else None
        if self.gate is not None:
            await self.gate.wait()
        if self.holds is not None:
            hold = asyncio.Event()
            self.holds.append(hold)
            await hold.wait()
        if found is None:
            raise NotFound(f"{what}: not found")
        return found


def source_for(
    objects: Mapping[str, Mapping[str, Any]], clock: FakeClock | None = None
) -> tuple[KubernetesConfigSource, StubClient]:
    client = StubClient(objects)
    source = KubernetesConfigSource(cast(KubeClient, client), ttl_seconds=5, clock=clock or FakeClock())
    return source, client


def config_map(data: Mapping[str, str], binary_data: Mapping[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": "cm"}, "data": dict(data), "binaryData": dict(binary_data)}


async def test_the_volume_view_merges_data_as_utf8_and_binary_data_decoded() -> None:
    data = {"app.conf": "h\u00e9llo\n", "odd": "a\ud800b"}  # JSON may carry a lone surrogate
    manifest = config_map(data, {"logo.png": base64.b64encode(RAW).decode()})
    source, _ = source_for({CM_PATH: manifest})
    assert await source.get_config_map_files("ns", "cm") == {
        "app.conf": "h\u00e9llo\n".encode(),
        "odd": "a\ufffdb".encode(),  # as Go writes it
        "logo.png": RAW,
    }
    # env reads data only, as the kubelet's env does
    assert await source.get_config_map("ns", "cm") == data


async def test_a_configmap_without_binary_data_or_data_is_fine() -> None:
    source, _ = source_for({CM_PATH: {"metadata": {"name": "cm"}}})
    assert await source.get_config_map_files("ns", "cm") == {}
    assert await source.get_config_map("ns", "cm") == {}


async def test_both_views_share_one_get_and_a_missing_configmap_is_not_found_in_both() -> None:
    source, client = source_for({CM_PATH: config_map({"k": "v"}, {"b": "AAE="})})
    for _ in range(3):
        assert await source.get_config_map("ns", "cm") == {"k": "v"}
        assert await source.get_config_map_files("ns", "cm") == {"k": b"v", "b": b"\x00\x01"}
    assert client.gets[CM_PATH] == 1

    missing = "/api/v1/namespaces/ns/configmaps/gone"
    with pytest.raises(NotFound):
        await source.get_config_map_files("ns", "gone")
    with pytest.raises(NotFound):
        await source.get_config_map("ns", "gone")
    assert client.gets[missing] == 1


async def test_env_and_volume_reads_in_flight_together_share_the_get_and_expire_together() -> None:
    clock = FakeClock()
    source, client = source_for({CM_PATH: config_map({"k": "v"}, {"b": "AAE="})}, clock)
    client.gate = asyncio.Event()
    env = asyncio.create_task(source.get_config_map("ns", "cm"))
    files = asyncio.create_task(source.get_config_map_files("ns", "cm"))
    await clock.settle()
    assert client.gets[CM_PATH] == 1 and not env.done() and not files.done()
    client.gate.set()
    assert (await env, await files) == ({"k": "v"}, {"k": b"v", "b": b"\x00\x01"})
    assert client.gets[CM_PATH] == 1

    await clock.advance(6)  # past the TTL: the next read of either view fetches again, once
    await source.get_config_map_files("ns", "cm")
    await source.get_config_map("ns", "cm")
    assert client.gets[CM_PATH] == 2


async def test_returned_mappings_are_copies() -> None:
    source, _ = source_for({CM_PATH: config_map({"k": "v"}, {"b": "AAE="})})
    files = await source.get_config_map_files("ns", "cm")
    cast(dict[str, bytes], files)["k"] = b"changed"
    env = await source.get_config_map("ns", "cm")
    cast(dict[str, str], env)["k"] = "changed"
    assert await source.get_config_map_files("ns", "cm") == {"k": b"v", "b": b"\x00\x01"}
    assert await source.get_config_map("ns", "cm") == {"k": "v"}


@pytest.mark.parametrize("bad", ["not base64!", "AAE", 42])
async def test_bad_base64_in_binary_data_names_the_configmap_and_the_key(bad: Any) -> None:
    source, _ = source_for({CM_PATH: config_map({"k": "v"}, {"ok": "AAE=", "broken.bin": bad})})
    with pytest.raises(
        InvalidInput, match=r"configmap ns/cm: binaryData\['broken.bin'\] is not valid base64"
    ):
        await source.get_config_map_files("ns", "cm")
    # The env view does not read binaryData, so it still works.
    assert await source.get_config_map("ns", "cm") == {"k": "v"}


async def test_secrets_share_the_base64_decoding() -> None:
    secret_path = "/api/v1/namespaces/ns/secrets/sec"
    bad_path = "/api/v1/namespaces/ns/secrets/bad"
    source, _ = source_for(
        {
            secret_path: {"data": {"pw": base64.b64encode(RAW).decode()}},
            bad_path: {"data": {"pw": "%%%"}},
        }
    )
    assert await source.get_secret("ns", "sec") == {"pw": RAW}
    with pytest.raises(InvalidInput, match=r"secret ns/bad: data\['pw'\] is not valid base64"):
        await source.get_secret("ns", "bad")


# -- fresh reads (a pod's first resolution) ----------------------------------------------------

SECRET_PATH = "/api/v1/namespaces/ns/secrets/sec"


def secret(value: bytes) -> dict[str, Any]:
    return {"data": {"pw": base64.b64encode(value).decode()}}


async def test_a_fresh_read_bypasses_the_cached_answer_and_replaces_it() -> None:
    source, client = source_for({CM_PATH: config_map({"k": "old"}, {}), SECRET_PATH: secret(b"old")})
    assert await source.get_config_map("ns", "cm") == {"k": "old"}
    assert await source.get_secret("ns", "sec") == {"pw": b"old"}
    client.objects.update({CM_PATH: config_map({"k": "new"}, {}), SECRET_PATH: secret(b"new")})

    # Within the TTL a plain read is the cached answer; a fresh one asks the server.
    assert await source.get_config_map_files("ns", "cm") == {"k": b"old"}
    assert await source.get_config_map_files("ns", "cm", fresh=True) == {"k": b"new"}
    assert await source.get_secret("ns", "sec") == {"pw": b"old"}
    assert await source.get_secret("ns", "sec", fresh=True) == {"pw": b"new"}
    assert (client.gets[CM_PATH], client.gets[SECRET_PATH]) == (2, 2)

    # The fresh answers are now the cached ones, for both configmap views.
    assert await source.get_config_map("ns", "cm") == {"k": "new"}
    assert await source.get_config_map_files("ns", "cm") == {"k": b"new"}
    assert await source.get_secret("ns", "sec") == {"pw": b"new"}
    assert (client.gets[CM_PATH], client.gets[SECRET_PATH]) == (2, 2)

    # A deletion is seen by a fresh read and cached like any answer.
    del client.objects[CM_PATH]
    with pytest.raises(NotFound):
        await source.get_config_map("ns", "cm", fresh=True)
    with pytest.raises(NotFound):
        await source.get_config_map_files("ns", "cm")
    assert client.gets[CM_PATH] == 3


async def test_a_fresh_read_joins_no_older_request_in_flight_and_its_answer_outlives_it() -> None:
    clock = FakeClock()
    source, client = source_for({CM_PATH: config_map({"k": "old"}, {})}, clock)
    client.holds = []
    older = asyncio.create_task(source.get_config_map("ns", "cm"))
    await clock.settle()
    assert client.gets[CM_PATH] == 1

    client.objects[CM_PATH] = config_map({"k": "new"}, {})
    fresh = asyncio.create_task(source.get_config_map("ns", "cm", fresh=True))
    await clock.settle()
    assert client.gets[CM_PATH] == 2  # its own GET, not the one started before the change
    joined = asyncio.create_task(source.get_config_map("ns", "cm"))
    await clock.settle()
    assert client.gets[CM_PATH] == 2  # a plain read shares the latest request

    older_hold, fresh_hold = client.holds
    fresh_hold.set()
    assert (await fresh, await joined) == ({"k": "new"}, {"k": "new"})
    assert not older.done()
    older_hold.set()
    assert await older == {"k": "old"}  # it asked before the change

    # The older request finished last, yet the cache keeps the answer of the later one.
    assert await source.get_config_map("ns", "cm") == {"k": "new"}
    assert client.gets[CM_PATH] == 2
    await clock.advance(6)  # and that answer expires like any other
    client.holds = None
    assert await source.get_config_map("ns", "cm") == {"k": "new"}
    assert client.gets[CM_PATH] == 3


async def test_services_are_always_served_from_the_cache() -> None:
    path = "/api/v1/namespaces/ns/services"
    source, client = source_for({path: {"items": []}})
    assert await source.list_services("ns") == []
    client.objects[path] = {"items": [{"metadata": {"name": "api"}, "spec": {"clusterIP": "10.0.0.9"}}]}
    assert await source.list_services("ns") == []  # the kubelet's service env lags (an informer) too
    assert client.gets[path] == 1
