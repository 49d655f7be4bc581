"""Issue 5 (security and logs) end to end: the kubelet API of a real vkubelet behind a real API server.

The daemon runs as in tests/e2e/test_sync_core.py, with --client-ca-file set to the cluster's
client CA (which signed the API server's kubelet client certificate) and TokenReview
authentication. Requests go straight to the daemon (no credentials, ServiceAccount tokens) and
through the API server (its client certificate; ``kubectl logs``).
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.network import TestNetwork, unavailable_reason
from tests.e2e.vkubelet_process import VkubeletProcess, service_account_kubeconfig, wait_for

NODE = "vk-e2e-sec"
# Denials are cached only briefly so that a test can grant access and see it take effect.
DENIED_TTL = "1s"


def node_ready(control_plane: Any) -> bool:
    result = control_plane.kubectl("get", "node", NODE, "-o", "json", check=False)
    if result.returncode != 0:
        return False
    conditions = json.loads(result.stdout)["status"].get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


@pytest.fixture(scope="module")
def daemon(
    control_plane: Any, test_network: TestNetwork | None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VkubeletProcess]:
    work_dir = tmp_path_factory.mktemp("vkubelet-sec")
    kubeconfig = service_account_kubeconfig(control_plane, work_dir)
    process = VkubeletProcess(
        work_dir=work_dir,
        kubeconfig=kubeconfig,
        node_name=NODE,
        network=test_network,
        extra_args=["--authorization-webhook-cache-unauthorized-ttl", DENIED_TTL],
    )
    process.start()
    try:
        wait_for(lambda: node_ready(control_plane), timeout=60, what=f"node {NODE} Ready")
        yield process
        process.assert_alive()
    finally:
        code = process.stop()
        print(process.log_tail(200))
    assert code == 0


@pytest.fixture(scope="module")
def namespace(control_plane: Any) -> str:
    name = f"sec-{uuid.uuid4().hex[:6]}"
    control_plane.create_namespace(name)
    return name


def direct(daemon: VkubeletProcess, path: str, token: str | None = None) -> tuple[int, str]:
    """GET ``path`` from the daemon itself (its certificate is self-signed: not verified here)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(f"https://{daemon.node_ip}:{daemon.port}{path}")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, context=context, timeout=30) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode()


def through_api_server(control_plane: Any, *args: str) -> Any:
    if unavailable_reason() is not None:
        pytest.skip(f"the node proxy refuses loopback kubelets and no test network: {unavailable_reason()}")
    return control_plane.kubectl(*args, check=False)


def test_a_request_without_credentials_gets_401(daemon: VkubeletProcess) -> None:
    assert direct(daemon, "/pods") == (401, "Unauthorized\n")
    assert direct(daemon, "/containerLogs/default/any/c") == (401, "Unauthorized\n")
    assert direct(daemon, "/healthz") == (200, "ok")  # liveness needs no credentials


def test_a_forged_token_gets_401(daemon: VkubeletProcess) -> None:
    assert direct(daemon, "/pods", token="not-a-token")[0] == 401


def test_a_service_account_needs_nodes_proxy(
    daemon: VkubeletProcess, control_plane: Any, namespace: str
) -> None:
    control_plane.kubectl("create", "serviceaccount", "reader", "-n", namespace)
    token = control_plane.kubectl("create", "token", "reader", "-n", namespace).stdout.strip()
    user = f"system:serviceaccount:{namespace}:reader"

    status, body = direct(daemon, "/pods", token=token)
    assert status == 403, body
    assert body.strip() == f"Forbidden (user={user}, verb=get, resource=nodes, subresource=proxy)"
    status, body = direct(daemon, "/stats/summary", token=token)
    assert (status, "subresource=stats" in body) == (403, True)

    role = f"{namespace}-node-proxy"
    control_plane.kubectl(
        "create", "clusterrole", role, "--verb=get", "--resource=nodes/proxy", f"--resource-name={NODE}"
    )
    control_plane.kubectl(
        "create", "clusterrolebinding", role, f"--clusterrole={role}", f"--serviceaccount={namespace}:reader"
    )
    try:
        # RBAC reaches the authorizer within moments and the denial is cached for DENIED_TTL.
        wait_for(
            lambda: direct(daemon, "/pods", token=token)[0] == 200, timeout=30, what="nodes/proxy granted"
        )
        assert json.loads(direct(daemon, "/pods", token=token)[1])["kind"] == "PodList"
        # The grant is nodes/proxy only: stats stays forbidden.
        assert direct(daemon, "/stats/summary", token=token)[0] == 403
    finally:
        control_plane.kubectl("delete", "clusterrolebinding", role, check=False)
        control_plane.kubectl("delete", "clusterrole", role, check=False)


def test_the_api_servers_client_certificate_is_accepted(daemon: VkubeletProcess, control_plane: Any) -> None:
    result = through_api_server(control_plane, "get", "--raw", f"/api/v1/nodes/{NODE}/proxy/pods")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["kind"] == "PodList"
    summary = through_api_server(control_plane, "get", "--raw", f"/api/v1/nodes/{NODE}/proxy/stats/summary")
    assert json.loads(summary.stdout)["node"]["nodeName"] == NODE


def test_kubectl_logs_answers_501_with_the_mock_provider(
    daemon: VkubeletProcess, control_plane: Any, namespace: str
) -> None:
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "logs", "namespace": namespace},
        "spec": {
            "nodeName": NODE,
            "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists"}],
            "containers": [{"name": "app", "image": "busybox"}],
        },
    }
    control_plane.kubectl("create", "-f", "-", input=json.dumps(manifest))

    def running() -> bool:
        pod = json.loads(control_plane.kubectl("get", "pod", "-n", namespace, "logs", "-o", "json").stdout)
        return (pod.get("status") or {}).get("phase") == "Running"

    wait_for(running, timeout=30, what="pod logs Running")
    result = through_api_server(control_plane, "logs", "-n", namespace, "logs", "-c", "app")
    assert result.returncode != 0
    # The kubelet's 501 body reaches the user through the API server.
    assert "does not support container logs" in result.stderr, result.stderr


def test_without_any_authentication_the_daemon_refuses_to_start(control_plane: Any, tmp_path: Path) -> None:
    config = tmp_path / "mock.json"
    config.write_text(json.dumps({"vk-open": {"cpu": "1"}}))
    base = [sys.executable, "-m", "vkubelet", "--provider", "mock", "--provider-config", str(config)]
    base += ["--nodename", "vk-open", "--kubeconfig", str(control_plane.kubeconfig_path)]
    env = {k: v for k, v in os.environ.items() if k != "APISERVER_CA_CERT_LOCATION"}
    result = subprocess.run(base, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 1, result.stderr
    for flag in ("--client-ca-file", "--authentication-token-webhook", "--anonymous-auth"):
        assert flag in result.stderr
    # It failed before registering anything.
    assert control_plane.kubectl("get", "node", "vk-open", check=False).returncode != 0
