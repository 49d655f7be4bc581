"""The Kubernetes adapter's edges against a tiny in-process aiohttp API server.

What a real control plane cannot show on demand: every failure status and its domain class,
the two shapes of 410 on a watch, bookmarks, broken connections, the client-side rate limit,
and how often the config cache really calls the server.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx2
import pytest
from aiohttp import web
from lightkube import ApiError

from tests.fakes.clock import FakeClock
from vkubelet import __version__
from vkubelet.adapters.kubernetes.client import ConnectionPool, KubeClient, TokenBucket, create_client
from vkubelet.adapters.kubernetes.config import KubernetesConfigSource
from vkubelet.adapters.kubernetes.errors import (
    HttpStatusError,
    error_class,
    error_for_status,
    translate_error,
)
from vkubelet.adapters.kubernetes.events import DROP_REPORT_INTERVAL_S, KubernetesEventRecorder
from vkubelet.adapters.kubernetes.pods import KubernetesPodGateway
from vkubelet.application.ports.cluster import EventType, ObjectRef, WatchEventType
from vkubelet.domain.errors import (
    Conflict,
    Expired,
    InvalidInput,
    NotFound,
    Permanent,
    Transient,
)
from vkubelet.domain.pod import PodRef


def status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
            "reason": reason, "message": message}  # fmt: skip


def pod(name: str, version: str) -> dict[str, Any]:
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "resourceVersion": version},
        "spec": {"nodeName": "vk"},
    }


class FakeApiServer:
    """Answers a few paths; records every request as (method, path, query)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.headers: list[dict[str, str]] = []
        self.peers: list[tuple[str, int] | None] = []  # the client end of each request's connection
        self.failures: dict[str, tuple[int, str, str]] = {}  # path -> (code, content type, body)
        self.rejected_tokens: set[str] = set()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        self.port = 0

    async def start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path, dict(request.query)))
        self.headers.append(dict(request.headers))
        self.peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        if request.headers.get("Authorization") in self.rejected_tokens:
            return web.json_response(status_body(401, "Unauthorized", "Unauthorized"), status=401)
        if request.path in self.failures:
            code, content_type, body = self.failures[request.path]
            return web.Response(status=code, content_type=content_type, text=body)
        if request.path == "/api/v1/pods" and request.query.get("watch") == "true":
            return await self.watch(request)
        if request.path == "/api/v1/namespaces/ns/configmaps/cm":
            return web.json_response({"metadata": {"name": "cm"}, "data": {"k": "v"}})
        if request.method == "POST" and request.path.endswith("/events"):
            return web.json_response(await request.json(), status=201)
        return web.json_response(status_body(404, "NotFound", f"{request.path} not found"), status=404)

    async def watch(self, request: web.Request) -> web.StreamResponse:
        version = request.query.get("resourceVersion")
        if version == "gone-http":
            return web.json_response(
                status_body(410, "Expired", "too old resource version: 1 (50)"), status=410
            )
        response = web.StreamResponse()
        await response.prepare(request)
        if version == "gone-event":
            lines = [
                {"type": "ERROR", "object": status_body(410, "Expired", "too old resource version: 2 (50)")}
            ]
        elif version == "big":
            # Lines far past aiohttp's 64 KiB readline limit, sent in odd-sized pieces that split
            # lines anywhere and also put several lines in one piece.
            big = pod("big", "10")
            big["metadata"]["annotations"] = {"blob": "x" * 300_000}
            data = b"".join(
                json.dumps(e).encode() + b"\n"
                for e in [{"type": "ADDED", "object": big}, {"type": "MODIFIED", "object": pod("a", "11")},
                          {"type": "MODIFIED", "object": pod("b", "12")}]
            )  # fmt: skip
            for offset in range(0, len(data), 7_001):
                await response.write(data[offset : offset + 7_001])
            await response.write_eof()
            return response
        elif version == "broken":
            await response.write(json.dumps({"type": "ADDED", "object": pod("a", "10")}).encode() + b"\n")
            assert request.transport is not None
            request.transport.close()  # the connection dies mid-stream
            return response
        else:
            lines = [
                {"type": "ADDED", "object": pod("a", "10")},
                {"type": "MODIFIED", "object": pod("a", "11")},
                {"type": "BOOKMARK", "object": {"kind": "Pod", "metadata": {"resourceVersion": "99"}}},
                {"type": "DELETED", "object": pod("a", "12")},
                {"type": "BOOKMARK", "object": {"kind": "Pod", "metadata": {"resourceVersion": "120"}}},
            ]
        for line in lines:
            await response.write(json.dumps(line).encode() + b"\n")
        await response.write_eof()
        return response

    def reject_token(self, authorization: str) -> None:
        self.rejected_tokens.add(authorization)

    def fail(self, path: str, code: int, *, json_status: bool = True) -> None:
        if json_status:
            body = json.dumps(status_body(code, "Failure", f"failure {code}"))
            self.failures[path] = (code, "application/json", body)
        else:
            self.failures[path] = (code, "text/html", "<html>bad gateway</html>")


@pytest.fixture
async def server() -> AsyncIterator[FakeApiServer]:
    fake = FakeApiServer()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.runner.cleanup()


def write_kubeconfig(path: Path, port: int) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "fake", "user": {"token": "t0ken"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
        "current-context": "fake",
    }
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


@pytest.fixture
async def kube(server: FakeApiServer, tmp_path: Path) -> AsyncIterator[KubeClient]:
    client = create_client(write_kubeconfig(tmp_path / "kubeconfig", server.port), qps=0, burst=0)
    try:
        yield client
    finally:
        await client.close()


async def test_a_reply_not_decoded_is_empty_but_an_error_is_still_classified(
    server: FakeApiServer, kube: KubeClient
) -> None:
    found = "/api/v1/namespaces/ns/configmaps/cm"
    assert (await kube.request("GET", found, what="configmap cm"))["data"] == {"k": "v"}
    assert await kube.request("GET", found, what="configmap cm", decode=False) == {}
    with pytest.raises(NotFound, match="configmap gone"):
        await kube.request(
            "GET", "/api/v1/namespaces/ns/configmaps/gone", what="configmap gone", decode=False
        )


async def test_clients_sharing_a_connection_pool_reuse_one_connection_each_with_its_own_headers(
    server: FakeApiServer, tmp_path: Path
) -> None:
    """Several nodes of one process: their clients take turns on one kept-alive connection
    (each still sends its own User-Agent), and closing a client leaves the pool to the others."""
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", server.port)
    pool = ConnectionPool()
    first = create_client(kubeconfig, qps=0, burst=0, pool=pool, user_agent="node-a")
    second = create_client(kubeconfig, qps=0, burst=0, pool=pool, user_agent="node-b")
    apart = create_client(kubeconfig, qps=0, burst=0, user_agent="apart")
    try:
        for client in (first, second, first, second):
            await client.request("GET", "/api/v1/namespaces/ns/configmaps/cm", what="configmap cm")
        await first.close()
        await second.request("GET", "/api/v1/namespaces/ns/configmaps/cm", what="configmap cm")
        await apart.request("GET", "/api/v1/namespaces/ns/configmaps/cm", what="configmap cm")
    finally:
        await second.close()
        await apart.close()
        await pool.close()
    pooled, alone = server.peers[:5], server.peers[5]
    assert len(set(pooled)) == 1, f"one connection for the pooled clients, not {pooled}"
    assert alone not in pooled, "a client without the pool has its own connection"
    agents = [h["User-Agent"] for h in server.headers]
    assert agents == ["node-a", "node-b", "node-a", "node-b", "node-b", "apart"]


# -- the mapping table ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (400, InvalidInput), (401, Permanent), (403, Permanent), (404, NotFound), (405, InvalidInput),
        (408, Transient), (409, Conflict), (410, Expired), (412, Conflict), (422, InvalidInput),
        (429, Transient), (500, Transient), (502, Transient), (503, Transient), (504, Transient),
    ],
)  # fmt: skip
def test_status_codes_map_to_domain_errors(code: int, expected: type[Exception]) -> None:
    assert error_class(code) is expected
    error = error_for_status(code, what="pod ns/web-0", reason="Reason", message="it broke")
    assert type(error) is expected
    assert str(error) == f"pod ns/web-0: it broke ({code} Reason)"


def test_translate_keeps_lightkube_and_httpx_errors_meaningful() -> None:
    request = httpx2.Request("GET", "https://api/api/v1/namespaces/ns/pods/web-0")
    response = httpx2.Response(
        409, json=status_body(409, "Conflict", "the object has been modified"), request=request
    )
    api_error = ApiError(request=request, response=response)
    translated = translate_error(api_error, what="pod ns/web-0")
    assert isinstance(translated, Conflict)
    assert "pod ns/web-0" in str(translated) and "the object has been modified" in str(translated)

    timeout = translate_error(httpx2.ReadTimeout("slow", request=request), what="node vk")
    assert isinstance(timeout, Transient) and "node vk" in str(timeout)
    refused = translate_error(httpx2.ConnectError("refused", request=request), what="node vk")
    assert isinstance(refused, Transient)
    # What this package's own aiohttp requests raise.
    assert isinstance(translate_error(aiohttp.ServerDisconnectedError(), what="node vk"), Transient)
    assert "timed out" in str(translate_error(aiohttp.ServerTimeoutError("slow"), what="node vk"))
    bad_gateway = translate_error(HttpStatusError(502, "Bad Gateway", b"<html>"), what="node vk")
    assert isinstance(bad_gateway, Transient) and "502 Bad Gateway" in str(bad_gateway)
    already = NotFound("x")
    assert translate_error(already, what="y") is already


# -- through the client ----------------------------------------------------------------------


async def test_client_raises_domain_errors_with_the_original_as_cause(
    server: FakeApiServer, kube: KubeClient
) -> None:
    gateway = KubernetesPodGateway(kube, node_name="vk")
    with pytest.raises(NotFound, match="pod ns/missing") as missing:
        await gateway.get_pod("ns", "missing")
    assert isinstance(missing.value.__cause__, ApiError)
    assert missing.value.__cause__.status.code == 404

    expectations = {403: Permanent, 429: Transient, 500: Transient, 422: InvalidInput}
    for code, expected in expectations.items():
        server.fail("/api/v1/namespaces/ns/pods/web-0", code)
        with pytest.raises(expected, match=f"pod ns/web-0: failure {code}"):
            await gateway.get_pod("ns", "web-0")

    server.fail("/api/v1/namespaces/ns/pods/web-0", 502, json_status=False)
    with pytest.raises(Transient, match="502") as bad_gateway:
        await gateway.get_pod("ns", "web-0")
    assert isinstance(bad_gateway.value.__cause__, HttpStatusError)
    assert bad_gateway.value.__cause__.status_code == 502

    server.fail("/api/v1/namespaces/ns/pods/web-0/status", 409)
    with pytest.raises(Conflict):
        await gateway.patch_pod_status(PodRef("ns", "web-0", "u1"), {"phase": "Running"})

    assert server.headers[0]["User-Agent"] == f"vkubelet/{__version__}"
    assert server.headers[0]["Authorization"] == "Bearer t0ken"


async def test_unreachable_server_is_transient(tmp_path: Path) -> None:
    sock_port = _closed_port()
    client = create_client(write_kubeconfig(tmp_path / "kubeconfig", sock_port), qps=0, burst=0)
    try:
        with pytest.raises(Transient, match="pod ns/web-0") as error:
            await KubernetesPodGateway(client, node_name="vk").get_pod("ns", "web-0")
        assert isinstance(error.value.__cause__, aiohttp.ClientConnectionError)
    finally:
        await client.close()


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- watch ------------------------------------------------------------------------------------


async def test_watch_yields_events_and_follows_bookmarks(server: FakeApiServer, kube: KubeClient) -> None:
    watch = KubernetesPodGateway(kube, node_name="vk", watch_timeout_seconds=60).watch_node_pods("5")
    events = [(e.type, e.pod.resource_version) async for e in watch]
    assert events == [
        (WatchEventType.ADDED, "10"),
        (WatchEventType.MODIFIED, "11"),
        (WatchEventType.DELETED, "12"),
    ]
    assert watch.resource_version == "120"  # the last bookmark
    _, _, query = server.requests[-1]
    assert query == {
        "watch": "true",
        "fieldSelector": "spec.nodeName=vk",
        "allowWatchBookmarks": "true",
        "timeoutSeconds": "60",
        "resourceVersion": "5",
    }


@pytest.mark.parametrize("version", ["gone-http", "gone-event"])
async def test_watch_from_a_too_old_version_raises_expired(kube: KubeClient, version: str) -> None:
    with pytest.raises(Expired, match="too old resource version") as error:
        async for _ in KubernetesPodGateway(kube, node_name="vk").watch_node_pods(version):
            pass
    assert isinstance(error.value.__cause__, ApiError)
    assert error.value.__cause__.status.code == 410


async def test_watch_lines_longer_than_64_kib_arrive_whole(kube: KubeClient) -> None:
    watch = KubernetesPodGateway(kube, node_name="vk").watch_node_pods("big")
    events = [(e.pod.ref.name, e.pod.resource_version) async for e in watch]
    assert events == [("big", "10"), ("a", "11"), ("b", "12")]


async def test_a_rotated_token_file_is_read_again_after_a_401(server: FakeApiServer, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("old-token")
    kubeconfig = tmp_path / "kubeconfig"
    config = json.loads(write_kubeconfig(kubeconfig, server.port).read_text())
    config["users"][0]["user"] = {"tokenFile": str(token_file)}
    kubeconfig.write_text(json.dumps(config))
    client = create_client(kubeconfig, qps=0, burst=0)
    path = "/api/v1/namespaces/ns/configmaps/cm"
    try:
        await client.request("GET", path, what="cm")  # the client now holds the old token
        token_file.write_text("new-token")
        server.reject_token("Bearer old-token")
        assert await client.request("GET", path, what="cm") == {
            "metadata": {"name": "cm"},
            "data": {"k": "v"},
        }
        sent = [h["Authorization"] for h in server.headers]
        assert sent == ["Bearer old-token", "Bearer old-token", "Bearer new-token"]
    finally:
        await client.close()


async def test_watch_broken_mid_stream_is_transient(kube: KubeClient) -> None:
    seen = []
    with pytest.raises(Transient, match="watch of pods on node vk"):
        async for event in KubernetesPodGateway(kube, node_name="vk").watch_node_pods("broken"):
            seen.append(event.pod.ref.name)
    assert seen == ["a"]


# -- rate limit -------------------------------------------------------------------------------


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    now = [100.0]
    bucket = TokenBucket(qps=10, burst=2, monotonic=lambda: now[0])
    assert [bucket.reserve() for _ in range(4)] == pytest.approx([0.0, 0.0, 0.1, 0.2])
    now[0] += 1.0  # pays back the debt (0.3 s) and refills, capped at the burst
    assert [bucket.reserve() for _ in range(3)] == pytest.approx([0.0, 0.0, 0.1])
    unlimited = TokenBucket(qps=0, burst=0)
    assert all(unlimited.reserve() == 0.0 for _ in range(1000))


async def test_requests_are_rate_limited(server: FakeApiServer, tmp_path: Path) -> None:
    client = create_client(write_kubeconfig(tmp_path / "kubeconfig", server.port), qps=20, burst=2)
    try:
        started = time.monotonic()
        await asyncio.gather(
            *(client.request("GET", "/api/v1/namespaces/ns/configmaps/cm", what="cm") for _ in range(6))
        )
        # 2 at once, then 4 more at 20/s: at least 0.2 s.
        assert time.monotonic() - started >= 0.18
    finally:
        await client.close()


# -- config cache -----------------------------------------------------------------------------


async def test_config_cache_shares_one_get_and_caches_not_found_only(
    server: FakeApiServer, kube: KubeClient
) -> None:
    clock = FakeClock()
    source = KubernetesConfigSource(kube, ttl_seconds=5, clock=clock)

    def gets(path: str) -> int:
        return Counter(p for m, p, _ in server.requests if m == "GET")[path]

    cm_path = "/api/v1/namespaces/ns/configmaps/cm"
    results = await asyncio.gather(*(source.get_config_map("ns", "cm") for _ in range(50)))
    assert all(r == {"k": "v"} for r in results) and gets(cm_path) == 1
    await clock.advance(4)
    await source.get_config_map("ns", "cm")
    assert gets(cm_path) == 1
    await clock.advance(2)  # past the TTL
    await source.get_config_map("ns", "cm")
    assert gets(cm_path) == 2

    missing = "/api/v1/namespaces/ns/secrets/nope"
    for _ in range(3):
        with pytest.raises(NotFound, match="secret ns/nope"):
            await source.get_secret("ns", "nope")
    assert gets(missing) == 1

    broken = "/api/v1/namespaces/ns/services"
    server.fail(broken, 503)
    for _ in range(3):
        with pytest.raises(Transient):
            await source.list_services("ns")
    assert gets(broken) == 3


# -- events never fail the caller --------------------------------------------------------------


async def test_event_recorder_swallows_api_failures_and_overflow(
    server: FakeApiServer, kube: KubeClient, caplog: pytest.LogCaptureFixture
) -> None:
    server.fail("/api/v1/namespaces/ns/events", 500)
    recorder = KubernetesEventRecorder(kube, component="vk/pod-controller", host="vk", queue_size=3)
    obj = ObjectRef.for_pod(PodRef("ns", "web-0", "u1"))
    for i in range(5):  # not started yet: the queue holds 3, two are dropped
        recorder.record(obj, type=EventType.WARNING, reason="Failed", message=str(i))
    assert recorder.dropped == 2
    recorder.start()
    await recorder.flush()
    await recorder.close()
    posts = [p for m, p, _ in server.requests if m == "POST"]
    assert posts == ["/api/v1/namespaces/ns/events"] * 3
    assert "cannot write event Failed for Pod ns/web-0" in caplog.text


async def test_a_full_event_queue_is_reported_once_per_interval_with_its_count(
    server: FakeApiServer, kube: KubeClient, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    recorder = KubernetesEventRecorder(kube, component="vk", host="vk", queue_size=2, clock=clock)
    obj = ObjectRef.for_pod(PodRef("ns", "web-0", "u1"))

    def record(count: int) -> None:
        for i in range(count):
            recorder.record(obj, type=EventType.NORMAL, reason="Started", message=str(i))

    latest = "Normal Started for Pod ns/web-0"

    def drop_reports() -> list[str]:
        return [r.getMessage() for r in caplog.records if "event queue full" in r.getMessage()]

    record(2 + 500)  # not started: 2 queued, 500 dropped in one burst
    assert recorder.dropped == 500
    assert drop_reports() == [
        f"event queue full (2 queued): dropped 1 event(s) since the last report, the latest {latest}"
    ], "the first drop is reported at once, the other 499 of the burst only counted"
    await clock.advance(DROP_REPORT_INTERVAL_S)
    record(1)
    assert drop_reports()[1:] == [
        f"event queue full (2 queued): dropped 500 event(s) since the last report, the latest {latest}"
    ]
    record(3)  # within the interval again: counted, reported once the writer has emptied the queue
    assert len(drop_reports()) == 2
    recorder.start()
    await recorder.flush()
    await recorder.close()
    assert drop_reports()[2:] == [
        f"event queue full (0 queued): dropped 3 event(s) since the last report, the latest {latest}"
    ]
    assert recorder.dropped == 504
