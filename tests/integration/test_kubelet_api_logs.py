"""``/containerLogs`` on a real aiohttp server: streaming, parameters, errors, disconnects."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest

from tests.fakes.logs import LogsProvider
from tests.fakes.provider import FakeProvider
from vkubelet.adapters.kubeletapi.server import KubeletServer
from vkubelet.application.kubelet_api import KubeletApi
from vkubelet.domain.pod import Pod

NODE = "vk-logs"
WAIT = 10.0  # deadline for conditions; never a synchronisation sleep


def web_pod() -> Pod:
    return Pod.from_manifest(
        {
            "metadata": {"namespace": "ns", "name": "web", "uid": "u1"},
            "spec": {"nodeName": NODE, "containers": [{"name": "app"}, {"name": "missing-logs"}]},
        }
    )


@dataclass
class Served:
    base: str
    provider: FakeProvider


@contextlib.asynccontextmanager
async def serve(provider: FakeProvider) -> AsyncIterator[Served]:
    pods = [web_pod()]
    api = KubeletApi(provider=provider, node_pods=lambda: pods, node_name=NODE)
    server = KubeletServer(api, listen_host="127.0.0.1", listen_port=0, ssl_context=None)
    await server.start()
    try:
        yield Served(f"http://127.0.0.1:{server.port}/containerLogs/ns/web", provider)
    finally:
        await server.stop()


async def fetch(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


async def test_logs_with_options() -> None:
    provider = LogsProvider([b"line 1\n", b"line 2\n"])
    async with serve(provider) as served:
        status, body = await fetch(f"{served.base}/app?tailLines=2&timestamps=true&limitBytes=10")
        assert (status, body) == (200, "line 1\nlin")
        ref, container, options = provider.requests[0]
        assert (ref.uid, container, options.tail_lines, options.timestamps) == ("u1", "app", 2, True)


async def test_follow_streams_each_chunk_as_it_comes() -> None:
    provider = LogsProvider([b"before\n"])
    async with (
        serve(provider) as served,
        aiohttp.ClientSession() as session,
        session.get(f"{served.base}/app?follow=1") as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        assert await asyncio.wait_for(response.content.readline(), WAIT) == b"before\n"
        provider.feed(b"after\n")  # written after the follow started: must arrive alone
        assert await asyncio.wait_for(response.content.readline(), WAIT) == b"after\n"
        provider.end()
        assert await asyncio.wait_for(response.content.read(), WAIT) == b""


async def test_follow_of_a_quiet_container_opens_the_stream() -> None:
    provider = LogsProvider()
    # Headers arrive although no log line exists yet.
    async with (
        serve(provider) as served,
        aiohttp.ClientSession() as session,
        asyncio.timeout(WAIT),
        session.get(f"{served.base}/app?follow=true") as response,
    ):
        assert response.status == 200
        provider.feed(b"late\n")
        assert await response.content.readline() == b"late\n"
        provider.end()


async def test_a_client_disconnect_closes_the_provider_stream() -> None:
    provider = LogsProvider([b"x\n"])
    async with serve(provider) as served:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{served.base}/app?follow=true") as response,
        ):
            assert await asyncio.wait_for(response.content.readline(), WAIT) == b"x\n"
            assert not provider.closed.is_set()
        # The session is gone: the server must notice and close the follow.
        await asyncio.wait_for(provider.closed.wait(), WAIT)


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("follow=maybe", "follow"),
        ("tailLines=-3", "tailLines"),
        ("sinceTime=noon", "sinceTime"),
        ("sinceSeconds=10&sinceTime=2024-01-02T03:04:05Z", "sinceSeconds and sinceTime"),
    ],
)
async def test_bad_parameters_answer_400_naming_them(query: str, named: str) -> None:
    provider = LogsProvider()
    async with serve(provider) as served:
        status, body = await fetch(f"{served.base}/app?{query}")
        assert status == 400
        assert named in body
        assert provider.requests == []


async def test_errors_before_streaming_keep_their_status() -> None:
    async with serve(LogsProvider()) as served:
        assert (await fetch(f"{served.base}/missing-logs"))[0] == 404  # the provider's NotFound
        assert (await fetch(f"{served.base}/nope"))[0] == 400  # not a container of the pod
        status, body = await fetch(served.base.replace("/web", "/ghost") + "/app")
        assert status == 404 and "ns/ghost" in body


async def test_a_provider_without_logs_answers_501() -> None:
    async with serve(FakeProvider()) as served:
        status, body = await fetch(f"{served.base}/app")
        assert status == 501
        assert "does not support container logs" in body
