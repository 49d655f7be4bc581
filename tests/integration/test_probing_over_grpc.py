"""TCP probes through the real gRPC boundary (client, SDK server, process provider): a server
that accepts and never writes is alive (the provider's `connected` message, revision 3), a
closed port is refused, and an HTTP probe still gets its answer."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_grpc_provider import connected
from vkubelet.adapters.grpc.client import GrpcProvider
from vkubelet.adapters.grpc.server import start_server
from vkubelet.adapters.probing import StreamProber
from vkubelet.adapters.process.provider import ProcessProvider
from vkubelet.domain.pod import Pod, PodRef
from vkubelet.domain.probes import HttpGetHandler, ProbeOutcome, ProbeResult, TcpSocketHandler

REF = PodRef("default", "probed", "uid-probed")


def sleeping_pod() -> Pod:
    manifest = {
        "metadata": {"namespace": REF.namespace, "name": REF.name, "uid": REF.uid},
        "spec": {"containers": [{"name": "app", "image": "ignored", "command": ["sleep", "3600"]}]},
    }
    return Pod(REF, manifest)


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[GrpcProvider]:
    provider = ProcessProvider(root_dir=tmp_path, node_name="vk-0")
    server = await start_server(provider, address="127.0.0.1:0", name="process", version="1")
    grpc_client = await connected(server.address)
    await grpc_client.create_pod(sleeping_pod())
    yield grpc_client
    await grpc_client.close()
    await server.stop(0)
    await provider.close()


async def probe(client: GrpcProvider, handler: Any) -> ProbeResult:
    prober = StreamProber(client)
    return await asyncio.wait_for(prober.run(REF, "app", handler, timeout_seconds=3), 10)


async def test_the_provider_announces_revision_3(client: GrpcProvider) -> None:
    assert client._describe_cached().revision == 3


async def test_a_silent_server_is_alive(client: GrpcProvider) -> None:
    release = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    try:
        assert await probe(client, TcpSocketHandler(port)) == ProbeResult(ProbeOutcome.SUCCESS)
    finally:
        release.set()
        server.close()


async def test_a_closed_port_is_refused(client: GrpcProvider) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    assert await probe(client, TcpSocketHandler(port)) == ProbeResult(
        ProbeOutcome.FAILURE, f"dial tcp 127.0.0.1:{port}: connect: connection refused"
    )


async def test_http_still_gets_its_answer(client: GrpcProvider) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    try:
        assert await probe(client, HttpGetHandler(port=port, path="/healthz")) == ProbeResult(
            ProbeOutcome.FAILURE, "HTTP probe failed with statuscode: 503"
        )
    finally:
        server.close()
