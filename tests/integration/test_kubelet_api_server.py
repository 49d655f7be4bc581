"""The kubelet HTTPS API's read-only routes on a real aiohttp server with generated TLS."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.clock import FakeClock
from vkubelet.adapters.kubeletapi.server import KubeletServer
from vkubelet.adapters.kubeletapi.tls import ServerTls, TlsConfigError, server_tls
from vkubelet.adapters.mock.provider import MockProvider
from vkubelet.application.kubelet_api import KubeletApi
from vkubelet.application.ports.streams import ByteStream, LogOptions, StreamIO
from vkubelet.domain.pod import Pod, PodRef
from vkubelet.domain.provider import Capability, MetricFamily

NODE = "vk-0"


def make_pod(name: str, uid: str, containers: Sequence[str] = ("c0",)) -> Pod:
    return Pod.from_manifest(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"namespace": "e2e", "name": name, "uid": uid},
            "spec": {"nodeName": NODE, "containers": [{"name": c, "image": "foo"} for c in containers]},
        }
    )


class BareProvider:
    """A provider with pods but no optional capabilities: stats and metrics must answer 501."""

    def __init__(self, pods: Sequence[Pod] = ()) -> None:
        self.pods = list(pods)

    async def list_pods(self) -> Sequence[Pod]:
        return list(self.pods)

    async def stats_summary(self) -> Mapping[str, Any]:
        raise AssertionError("must not be called without STATS_SUMMARY")

    async def metrics_resource(self) -> Sequence[MetricFamily]:
        raise AssertionError("must not be called without METRICS_RESOURCE")

    def container_logs(self, ref: PodRef, container: str, options: LogOptions) -> AsyncIterator[bytes]:
        raise AssertionError("must not be called without LOGS")

    async def exec_in_container(
        self, ref: PodRef, container: str, command: Sequence[str], io: StreamIO
    ) -> int:
        raise AssertionError("must not be called without EXEC")

    async def attach_to_container(self, ref: PodRef, container: str, io: StreamIO) -> int:
        raise AssertionError("must not be called without ATTACH")

    async def port_forward(self, ref: PodRef, port: int, stream: ByteStream) -> None:
        raise AssertionError("must not be called without PORT_FORWARD")

    def capabilities(self) -> frozenset[Capability]:
        return frozenset()

    def native_volume_kinds(self) -> frozenset[str]:
        return frozenset()


class BrokenProvider(BareProvider):
    async def list_pods(self) -> Sequence[Pod]:
        raise RuntimeError("secret internal detail")


@pytest.fixture(scope="module")
def tls() -> ServerTls:
    return server_tls(node_name=NODE, node_ip="127.0.0.1")


def client_context(tls: ServerTls) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=tls.cert_pem.decode())
    return context


async def serve(api: KubeletApi, tls: ServerTls) -> KubeletServer:
    server = KubeletServer(api, listen_host="127.0.0.1", listen_port=0, ssl_context=tls.context)
    await server.start()
    return server


@pytest.fixture
async def mock_server(tls: ServerTls) -> AsyncIterator[tuple[str, MockProvider, list[Pod]]]:
    provider = MockProvider(node_name=NODE, clock=FakeClock())
    api_pods: list[Pod] = []
    api = KubeletApi(provider=provider, node_pods=lambda: list(api_pods), node_name=NODE)
    server = await serve(api, tls)
    try:
        yield f"https://127.0.0.1:{server.port}", provider, api_pods
    finally:
        await server.stop()


async def get(url: str, tls: ServerTls) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.get(url, ssl=client_context(tls)) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.text()


async def get_json(url: str, tls: ServerTls) -> Any:
    async with aiohttp.ClientSession() as session, session.get(url, ssl=client_context(tls)) as response:
        assert response.status == 200, await response.text()
        assert response.content_type == "application/json"
        return await response.json()


async def test_pods_lists_the_controllers_view(mock_server: Any, tls: ServerTls) -> None:
    base, _, api_pods = mock_server
    api_pods.extend([make_pod("b", "uid-b"), make_pod("a", "uid-a")])
    body = await get_json(f"{base}/pods", tls)
    assert (body["apiVersion"], body["kind"]) == ("v1", "PodList")
    assert [item["metadata"]["uid"] for item in body["items"]] == ["uid-a", "uid-b"]
    assert all(item["spec"]["nodeName"] == NODE for item in body["items"])


@pytest.mark.parametrize("path", ["/runningpods/", "/runningpods"])
async def test_running_pods_lists_the_providers_pods(mock_server: Any, tls: ServerTls, path: str) -> None:
    base, provider, _ = mock_server
    await provider.create_pod(make_pod("web", "uid-1"))
    body = await get_json(base + path, tls)
    assert body["kind"] == "PodList"
    (item,) = body["items"]
    assert item["metadata"]["uid"] == "uid-1"
    assert item["status"]["phase"] == "Running"


@pytest.mark.parametrize("path", ["/stats/summary", "/stats/summary/"])
async def test_stats_summary(mock_server: Any, tls: ServerTls, path: str) -> None:
    base, provider, _ = mock_server
    await provider.create_pod(make_pod("web", "uid-1", containers=("c0", "c1", "c2")))
    body = await get_json(base + path, tls)
    assert body["node"]["nodeName"] == NODE
    (pod,) = body["pods"]
    assert pod["podRef"] == {"namespace": "e2e", "name": "web", "uid": "uid-1"}
    assert len(pod["containers"]) == 3


@pytest.mark.parametrize("path", ["/metrics/resource", "/metrics/resource/"])
async def test_metrics_resource_is_prometheus_text(mock_server: Any, tls: ServerTls, path: str) -> None:
    base, provider, _ = mock_server
    await provider.create_pod(make_pod("web", "uid-1", containers=("c0", "c1", "c2")))
    await provider.create_pod(make_pod("other", "uid-2", containers=("x",)))
    status, content_type, text = await get(base + path, tls)
    assert status == 200
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"

    families = {family.name: family for family in text_string_to_metric_families(text)}
    # The parser drops "_total" from counter family names; the samples keep it.
    container_cpu = families["container_cpu_usage_seconds"]
    assert container_cpu.type == "counter"
    web_samples = [s for s in container_cpu.samples if s.labels["pod"] == "web"]
    assert len(web_samples) == 3
    assert {s.name for s in web_samples} == {"container_cpu_usage_seconds_total"}
    assert sorted(s.labels["container"] for s in web_samples) == ["c0", "c1", "c2"]
    assert all(s.labels["namespace"] == "e2e" for s in web_samples)
    assert all(s.timestamp is not None for s in web_samples)

    pod_cpu = families["pod_cpu_usage_seconds"]
    assert {s.labels["pod"] for s in pod_cpu.samples} == {"web", "other"}
    assert families["node_cpu_usage_seconds"].type == "counter"
    for gauge in (
        "node_memory_working_set_bytes",
        "pod_memory_working_set_bytes",
        "container_memory_working_set_bytes",
        "container_start_time_seconds",
    ):
        assert families[gauge].type == "gauge"
    (scrape_error,) = families["scrape_error"].samples
    assert scrape_error.value == 0


@pytest.mark.parametrize("path", ["/stats/summary", "/metrics/resource/"])
async def test_a_missing_capability_answers_501(tls: ServerTls, path: str) -> None:
    api = KubeletApi(provider=BareProvider(), node_pods=list, node_name=NODE)
    server = await serve(api, tls)
    try:
        status, _, text = await get(f"https://127.0.0.1:{server.port}{path}", tls)
    finally:
        await server.stop()
    assert status == 501
    capability = "stats-summary" if "stats" in path else "metrics-resource"
    assert capability in text


async def test_unexpected_errors_answer_500_without_details(tls: ServerTls) -> None:
    api = KubeletApi(provider=BrokenProvider(), node_pods=list, node_name=NODE)
    server = await serve(api, tls)
    try:
        status, _, text = await get(f"https://127.0.0.1:{server.port}/runningpods/", tls)
    finally:
        await server.stop()
    assert status == 500
    assert "secret internal detail" not in text


async def test_unknown_path_is_404(mock_server: Any, tls: ServerTls) -> None:
    base, _, _ = mock_server
    status, _, text = await get(f"{base}/containerLogs/ns/pod/c/extra/nothing", tls)
    assert status == 404
    assert "not found" in text


async def test_healthz(mock_server: Any, tls: ServerTls) -> None:
    base, _, _ = mock_server
    assert await get(f"{base}/healthz", tls) == (200, "text/plain; charset=utf-8", "ok")


async def test_extra_middlewares_run_before_the_routes(tls: ServerTls) -> None:
    from aiohttp import web

    seen: list[str] = []

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        seen.append(request.path)
        response: web.StreamResponse = await handler(request)
        response.headers["X-Seen"] = "1"
        return response

    api = KubeletApi(provider=BareProvider(), node_pods=list, node_name=NODE)
    server = KubeletServer(
        api, listen_host="127.0.0.1", listen_port=0, ssl_context=tls.context, middlewares=[record]
    )
    await server.start()
    try:
        url = f"https://127.0.0.1:{server.port}/stats/summary"
        async with aiohttp.ClientSession() as session, session.get(url, ssl=client_context(tls)) as response:
            assert response.status == 501  # translated inside, seen outside
            assert response.headers["X-Seen"] == "1"
    finally:
        await server.stop()
    assert seen == ["/stats/summary"]


def test_generated_certificate_covers_the_node(tls: ServerTls) -> None:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(tls.cert_pem)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"localhost", NODE}
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} == {"127.0.0.1"}
    assert tls.self_signed
    assert tls.context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_tls_from_files_and_half_configured_files(tmp_path: Any, tls: ServerTls) -> None:
    from vkubelet.adapters.certs import self_signed_server

    pair = self_signed_server(common_name="real", dns_names=["real.example"])
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_bytes(pair.cert_pem)
    key.write_bytes(pair.key_pem)
    loaded = server_tls(node_name=NODE, cert_file=str(cert), key_file=str(key), client_ca_file=str(cert))
    assert not loaded.self_signed
    assert loaded.cert_pem.strip() == pair.cert_pem.strip()
    assert loaded.context.verify_mode == ssl.CERT_OPTIONAL  # requested, not required
    with pytest.raises(TlsConfigError, match="APISERVER_KEY_LOCATION"):
        server_tls(node_name=NODE, cert_file=str(cert))
    with pytest.raises(TlsConfigError, match=r"missing\.key"):
        server_tls(node_name=NODE, cert_file=str(cert), key_file=str(tmp_path / "missing.key"))


def test_generated_certificate_logs_how_to_supply_a_real_one(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="vkubelet.adapters.kubeletapi.tls"):
        generated = server_tls(node_name=NODE, node_ip="192.0.2.7")
    assert generated.fingerprint in caplog.text
    assert "APISERVER_CERT_LOCATION" in caplog.text and "APISERVER_KEY_LOCATION" in caplog.text
