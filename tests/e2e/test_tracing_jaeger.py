"""Issue 6 end to end: vkubelet's spans in a real Jaeger v2, and zpages on the real daemon.

Jaeger (built from the Go module proxy and cached like the control plane, component ``jaeger``)
runs with a generated config: memory storage, the Jaeger receiver's Thrift-over-HTTP and
compact-Thrift-over-UDP endpoints, the OTLP/HTTP receiver and the query API, each on a free port.
The real CLI runs with ``--trace-exporter jaeger --trace-sample-rate 100`` once per Jaeger transport
(``JAEGER_ENDPOINT``, ``JAEGER_AGENT_ENDPOINT``) and once with ``otlp``; the test creates a pod,
reads its reconcile trace back from Jaeger's query API, and sends a kubelet API request with B3
headers whose span must be the child of the span id the test sent.
"""

from __future__ import annotations

import functools
import json
import os
import re
import secrets
import socket
import ssl
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.network import TestNetwork
from tests.e2e.test_sync_core import node_ready, pod_ready
from tests.e2e.vkubelet_process import VkubeletProcess, free_port, service_account_kubeconfig, wait_for
from vkubelet.entrypoints.localcluster.binaries import BinaryCache

SPAN_FLUSH_ENV = {"OTEL_BSP_SCHEDULE_DELAY": "200"}  # export within 0.2 s instead of 5 s


@dataclass
class Jaeger:
    host: str
    query_port: int
    thrift_http_port: int
    compact_udp_port: int
    otlp_http_port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def api(self, path: str, **params: str) -> Any:
        url = f"http://{self.host}:{self.query_port}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())

    def traces(self, service: str) -> list[dict[str, Any]]:
        return list(self.api("/api/traces", service=service, limit="1000", lookback="1h")["data"] or [])

    def log_tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-40:])


def jaeger_config(
    host: str, *, query: int, query_grpc: int, thrift_http: int, compact: int, otlp_http: int
) -> str:
    return f"""
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [jaeger, otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    traces:
      level: none  # else Jaeger traces itself to localhost:4317 and waits 10 s for it at exit
    logs:
      level: info
extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: "{host}:{query}"
    grpc:
      endpoint: "{host}:{query_grpc}"
receivers:
  jaeger:
    protocols:
      thrift_http:
        endpoint: "{host}:{thrift_http}"
      thrift_compact:
        endpoint: "{host}:{compact}"
  otlp:
    protocols:
      http:
        endpoint: "{host}:{otlp_http}"
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"""


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _exited_or_answering(server: Jaeger) -> bool:
    return server.process.poll() is not None or server.api("/api/services") is not None


def _start_jaeger(binary: Path, host: str, work_dir: Path, log_path: Path) -> Jaeger:
    ports = {
        "query": free_port(),
        "query_grpc": free_port(),
        "thrift_http": free_port(),
        "otlp_http": free_port(),
    }
    config = work_dir / "jaeger.yaml"
    compact = free_udp_port()
    config.write_text(jaeger_config(host, compact=compact, **ports))
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [str(binary), "--config", f"file:{config}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "JAEGER_LISTEN_HOST": host},
        )
    return Jaeger(host, ports["query"], ports["thrift_http"], compact, ports["otlp_http"], process, log_path)


@pytest.fixture(scope="module")
def jaeger(
    request: pytest.FixtureRequest, test_network: TestNetwork | None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Jaeger]:
    capture = request.config.pluginmanager.getplugin("capturemanager")
    assert capture is not None
    with capture.global_and_fixture_disabled():  # a first run builds Jaeger for minutes
        binary = BinaryCache().ensure("jaeger")["jaeger"]
    host = test_network.host_ip if test_network else "127.0.0.1"
    work_dir = tmp_path_factory.mktemp("jaeger")
    log_path = work_dir / "jaeger.log"
    # Free ports are chosen before Jaeger binds them: another socket can take one meanwhile
    # (it happened in CI), so a start that loses that race is retried with new ports.
    for attempt in range(3):
        server = _start_jaeger(binary, host, work_dir, log_path)
        try:
            wait_for(
                functools.partial(_exited_or_answering, server),
                timeout=60,
                what=f"Jaeger's query API (log: {log_path})",
            )
        except AssertionError:
            server.process.kill()
            raise
        lost_race = server.process.poll() is not None and "address already in use" in server.log_tail()
        if not lost_race or attempt == 2:
            break
    process = server.process
    try:
        wait_for(
            lambda: process.poll() is None and server.api("/api/services") is not None,
            timeout=60,
            what=f"Jaeger's query API (log: {log_path})",
        )
        yield server
    finally:
        process.terminate()
        process.wait(timeout=30)
        if request.session.testsfailed:
            print(server.log_tail())


@pytest.fixture(scope="module")
def namespace(control_plane: Any) -> str:
    name = f"e2e-trace-{uuid.uuid4().hex[:6]}"
    control_plane.create_namespace(name)
    return name


def kubelet_get(control_plane: Any, process: VkubeletProcess, path: str, headers: dict[str, str]) -> int:
    """GET from the daemon's kubelet API directly, as a cluster admin (a client certificate of the
    cluster's client CA, which the daemon trusts)."""
    pair = control_plane.issue_client_certificate("vk-e2e-tracing", organizations=["system:masters"])
    cert, key = process.work_dir / "admin-client.crt", process.work_dir / "admin-client.key"
    cert.write_bytes(pair.cert_pem)
    key.write_bytes(pair.key_pem)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the daemon's self-signed serving certificate
    context.load_cert_chain(cert, key)
    request = urllib.request.Request(f"https://{process.node_ip}:{process.port}{path}", headers=headers)
    with urllib.request.urlopen(request, timeout=10, context=context) as response:
        return int(response.status)


def span_tags(span: dict[str, Any]) -> dict[str, Any]:
    return {tag["key"]: tag["value"] for tag in span.get("tags", [])}


@pytest.mark.parametrize("transport", ["http", "udp", "otlp"])
def test_reconcile_and_request_traces_reach_jaeger(
    transport: str,
    control_plane: Any,
    test_network: TestNetwork | None,
    jaeger: Jaeger,
    namespace: str,
    tmp_path: Path,
) -> None:
    node = f"vk-trace-{transport}"
    service = f"vkubelet-e2e-{transport}-{uuid.uuid4().hex[:6]}"
    env = dict(SPAN_FLUSH_ENV)
    if transport == "http":
        env["JAEGER_ENDPOINT"] = f"http://{jaeger.host}:{jaeger.thrift_http_port}"  # /api/traces appended
    elif transport == "udp":
        env["JAEGER_AGENT_ENDPOINT"] = f"{jaeger.host}:{jaeger.compact_udp_port}"
    else:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://{jaeger.host}:{jaeger.otlp_http_port}"
    kubeconfig = service_account_kubeconfig(control_plane, tmp_path)
    process = VkubeletProcess(
        work_dir=tmp_path,
        kubeconfig=kubeconfig,
        node_name=node,
        network=test_network,
        env=env,
        extra_args=[
            "--trace-exporter",
            "otlp" if transport == "otlp" else "jaeger",
            "--trace-sample-rate",
            "100",
            "--trace-service-name",
            service,
            "--trace-tag",
            "suite=e2e",
        ],
    ).start()
    try:
        wait_for(lambda: node_ready(control_plane, node), timeout=60, what=f"node {node} Ready")
        pod = create_pod_on(control_plane, namespace, node)
        name, uid = pod["metadata"]["name"], pod["metadata"]["uid"]
        wait_for(lambda: pod_ready(control_plane, namespace, name), timeout=30, what=f"pod {name} Running")

        def reconcile_trace() -> dict[str, Any] | None:
            for trace in jaeger.traces(service):
                spans = {s["operationName"]: s for s in trace["spans"]}
                sync = spans.get("PodController.sync")
                if sync and span_tags(sync).get("pod.uid") == uid and "Provider.create_pod" in spans:
                    return trace
            return None

        trace = wait_for(reconcile_trace, timeout=30, what=f"the reconcile trace of pod {name} in Jaeger")
        spans = {s["operationName"]: s for s in trace["spans"]}
        sync, create = spans["PodController.sync"], spans["Provider.create_pod"]
        assert create["references"][0]["spanID"] == sync["spanID"]  # create is a child of sync
        for span in (sync, create):
            tags = span_tags(span)
            assert (tags["pod.namespace"], tags["pod.name"], tags["pod.uid"], tags["node.name"]) == (
                namespace,
                name,
                uid,
                node,
            )
        process_tags = {
            **span_tags(sync),
            **{t["key"]: t["value"] for t in trace["processes"][sync["processID"]].get("tags", [])},
        }
        assert trace["processes"][sync["processID"]]["serviceName"] == service
        assert (process_tags["nodeName"], process_tags["provider"], process_tags["suite"]) == (
            node,
            "mock",
            "e2e",
        )

        # A kubelet API request with B3 headers: its span continues the caller's trace.
        trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
        headers = (
            {"X-B3-TraceId": trace_id, "X-B3-SpanId": parent_id, "X-B3-Sampled": "1"}
            if transport == "http"
            else {"b3": f"{trace_id}-{parent_id}-1"}
        )
        assert kubelet_get(control_plane, process, "/pods", headers) == 200

        def request_span() -> dict[str, Any] | None:
            try:
                data = jaeger.api(f"/api/traces/{trace_id}")["data"]
            except urllib.error.HTTPError:
                return None  # 404 until stored
            spans = [s for t in data or [] for s in t["spans"] if s["operationName"] == "GET /pods"]
            return spans[0] if spans else None

        span = wait_for(request_span, timeout=30, what=f"the request span of trace {trace_id} in Jaeger")
        assert span["traceID"] == trace_id
        assert [(r["refType"], r["traceID"], r["spanID"]) for r in span["references"]] == [
            ("CHILD_OF", trace_id, parent_id)
        ]
        assert span_tags(span)["http.response.status_code"] == 200
        process.assert_alive()
    except BaseException:
        print(process.log_tail(100))
        raise
    finally:
        code = process.stop()
        if code != 0:
            print(process.log_tail(100))
    assert code == 0


def create_pod_on(control_plane: Any, namespace: str, node: str, prefix: str = "traced") -> dict[str, Any]:
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": f"{prefix}-", "namespace": namespace},
        "spec": {
            "nodeName": node,
            "enableServiceLinks": False,
            "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists"}],
            "containers": [{"name": "c0", "image": "busybox"}],
        },
    }
    result = control_plane.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(manifest))
    return dict(json.loads(result.stdout))


def test_zpages_tracez_lists_reconcile_spans_with_counts(
    control_plane: Any, test_network: TestNetwork | None, namespace: str, tmp_path: Path
) -> None:
    node = "vk-trace-zpages"
    host = test_network.node_ip if test_network else "127.0.0.1"
    zpages = f"{host}:{free_port()}"
    process = VkubeletProcess(
        work_dir=tmp_path,
        kubeconfig=service_account_kubeconfig(control_plane, tmp_path),
        node_name=node,
        network=test_network,
        env={"ZPAGES_PORT": zpages},
        extra_args=["--trace-exporter", "zpages", "--trace-sample-rate", "always"],
    ).start()
    try:
        wait_for(lambda: node_ready(control_plane, node), timeout=60, what=f"node {node} Ready")
        names = [create_pod_on(control_plane, namespace, node, "zp")["metadata"]["name"] for _ in range(3)]
        for name in names:
            wait_for(
                functools.partial(pod_ready, control_plane, namespace, name),
                timeout=30,
                what=f"pod {name} Running",
            )

        def rows() -> dict[str, Any] | None:
            with urllib.request.urlopen(f"http://{zpages}/debug/tracez?format=json", timeout=5) as response:
                table = {row["name"]: row for row in json.loads(response.read())}
            created = table.get("Provider.create_pod", {}).get("finished", 0)
            return table if created >= 3 else None

        table = wait_for(rows, timeout=30, what="3 Provider.create_pod spans on /debug/tracez")
        assert table["PodController.sync"]["finished"] >= 3
        assert table["PodGateway.patch_pod_status"]["finished"] >= 3
        assert table["NodeController.register"]["finished"] == 1
        with urllib.request.urlopen(f"http://{zpages}/debug/tracez", timeout=5) as response:
            page = response.read().decode()
        for name in ("PodController.sync", "Provider.create_pod", "PodGateway.patch_pod_status"):
            assert f'data-span-name="{name}"' in page
        # Log lines inside a recorded span carry its trace id.
        created = [line for line in process.log_path.read_text().splitlines() if "mock: created pod" in line]
        assert len(created) == 3 and all(
            re.search(r" trace_id=[0-9a-f]{32} span_id=[0-9a-f]{16}$", line) for line in created
        )
        process.assert_alive()
    finally:
        code = process.stop()
        if code != 0:
            print(process.log_tail(100))
    assert code == 0
