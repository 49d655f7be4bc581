"""``--rotate-server-certificates`` against a real control plane whose API server verifies kubelet
serving certificates (``--kubelet-certificate-authority`` = the controller-manager's
kubernetes.io/kubelet-serving signer CA), so ``kubectl logs`` only works through a certificate the
CSR API issued.

* self-approval: the daemon's CSR is approved by the daemon itself (as deploy/rbac.yaml's
  ServiceAccount), issued by kube-controller-manager, served, and ``kubectl logs`` passes;
* without the flag, the self-signed certificate makes ``kubectl logs`` fail verification;
* without self-approval the CSR waits, the Node gets a Pending event, the self-signed certificate
  is still served, and ``kubectl certificate approve`` makes ``kubectl logs`` pass.

The daemons run in the test network namespace (the node proxy refuses loopback kubelets), with the
in-process process provider, so pods have real logs.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import ssl
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.network import TestNetwork, unavailable_reason
from tests.e2e.vkubelet_process import (
    VkubeletProcess,
    process_provider_node,
    wait_for,
)
from vkubelet.adapters.certs import fingerprint_sha256
from vkubelet.entrypoints.localcluster.binaries import ensure_binaries
from vkubelet.entrypoints.localcluster.cluster import LocalCluster

SIGNER = "kubernetes.io/kubelet-serving"
SERVICE_ACCOUNT = "system:serviceaccount:vkubelet-system:virtual-kubelet"
CAPACITY = {"cpu": "4", "memory": "8Gi", "pods": "20"}
LINE = "served-through-a-verified-kubelet-certificate"


@pytest.fixture(scope="module")
def cluster(
    request: pytest.FixtureRequest,
    test_network: TestNetwork | None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LocalCluster]:
    """A control plane of this module's own: its API server verifies every kubelet's serving
    certificate against the kubelet-serving signer's CA (the shared one verifies nothing)."""
    if unavailable_reason() is not None:
        pytest.skip(f"the node proxy refuses loopback kubelets and no test network: {unavailable_reason()}")
    assert test_network is not None
    work_dir = tmp_path_factory.mktemp("serving-cert-cluster")
    serving_ca = work_dir / "pki" / "kubelet-serving-ca.crt"
    started = LocalCluster(
        work_dir,
        binaries=ensure_binaries(),
        bind_address=test_network.host_ip,
        extra_apiserver_args=[f"--kubelet-certificate-authority={serving_ca}"],
    )
    assert started.kubelet_serving_ca_cert_path == serving_ca
    started.start()
    try:
        yield started
    finally:
        failed = request.session.testsfailed > 0
        if failed:
            print(started.controller_manager_log_path.read_text(errors="replace")[-4000:])
        started.stop(keep_work_dir=failed)


@contextlib.contextmanager
def daemon(
    cluster: LocalCluster, network: TestNetwork, work_dir: Path, node: str, extra_args: Sequence[str]
) -> Iterator[VkubeletProcess]:
    """vkubelet with the process provider as deploy/rbac.yaml's ServiceAccount, its node Ready."""
    with process_provider_node(cluster, network, work_dir, node, CAPACITY, extra_args) as process:
        yield process


@contextlib.contextmanager
def talking_pod(cluster: LocalCluster, node: str) -> Iterator[str]:
    """A namespace with pod ``talker`` on ``node``, Running, that printed LINE; yields the namespace."""
    namespace = f"servingcert-{uuid.uuid4().hex[:6]}"
    cluster.create_namespace(namespace)
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "talker", "namespace": namespace},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 2,
            "enableServiceLinks": False,
            "containers": [
                {"name": "main", "image": "ignored", "command": ["sh", "-c", f"echo {LINE}; sleep 3600"]}
            ],
        },
    }
    cluster.kubectl("create", "-f", "-", input=json.dumps(manifest))

    def running() -> bool:
        pod = json.loads(cluster.kubectl("get", "pod", "talker", "-n", namespace, "-o", "json").stdout)
        return bool(pod.get("status", {}).get("phase") == "Running")

    wait_for(running, timeout=60, what=f"pod talker on {node} Running")
    try:
        yield namespace
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def kubectl_logs(cluster: LocalCluster, namespace: str) -> tuple[int, str]:
    result = cluster.kubectl("logs", "-n", namespace, "talker", check=False)
    return result.returncode, result.stdout + result.stderr


def logs_pass(cluster: LocalCluster, namespace: str) -> bool:
    code, output = kubectl_logs(cluster, namespace)
    return code == 0 and LINE in output


def assert_verification_fails(cluster: LocalCluster, namespace: str) -> None:
    code, output = kubectl_logs(cluster, namespace)
    assert code != 0, output
    assert "x509" in output or "failed to verify certificate" in output, output


def node_csrs(cluster: LocalCluster, node: str) -> list[dict[str, Any]]:
    listed = json.loads(cluster.kubectl("get", "csr", "-o", "json").stdout)["items"]
    return [
        csr
        for csr in listed
        if csr["metadata"]["name"].startswith(f"csr-{node}-") and csr["spec"]["signerName"] == SIGNER
    ]


def served_fingerprint(process: VkubeletProcess) -> str:
    """The certificate the node's kubelet API presents right now (new connection, unverified)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((process.node_ip, process.port), timeout=10) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return fingerprint_sha256(ssl.DER_cert_to_PEM_cert(der).encode())


def issued_pem(csr: dict[str, Any]) -> bytes:
    return base64.b64decode(csr["status"]["certificate"])


def verifies_against(cluster: LocalCluster, process: VkubeletProcess) -> None:
    """The served certificate verifies against the kubelet-serving CA for the node's IP."""
    context = ssl.create_default_context(cafile=str(cluster.kubelet_serving_ca_cert_path))
    with (
        socket.create_connection((process.node_ip, process.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=process.node_ip),
    ):
        pass


def pending_events(cluster: LocalCluster, node: str) -> list[dict[str, Any]]:
    listed = cluster.kubectl(
        "get",
        "events",
        "-n",
        "default",
        "--field-selector",
        f"involvedObject.kind=Node,involvedObject.name={node},reason=CertificateSigningRequestPending",
        "-o",
        "json",
    )
    items: list[dict[str, Any]] = json.loads(listed.stdout)["items"]
    return items


def test_self_approved_csr_is_issued_served_and_verified_by_the_api_server(
    cluster: LocalCluster, test_network: TestNetwork, tmp_path: Path
) -> None:
    node = "vk-e2e-servingcert-self"
    args = ["--rotate-server-certificates", "--serving-certificate-self-approve"]
    with daemon(cluster, test_network, tmp_path, node, args) as process, talking_pod(cluster, node) as ns:

        def issued() -> dict[str, Any] | None:
            found = [c for c in node_csrs(cluster, node) if c.get("status", {}).get("certificate")]
            return found[0] if found else None

        csr = wait_for(issued, timeout=60, what=f"an issued kubelet-serving CSR of {node}")
        spec = csr["spec"]
        assert spec["username"] == SERVICE_ACCOUNT
        assert sorted(spec["usages"]) == ["digital signature", "server auth"]  # an ECDSA key
        approved = [c for c in csr["status"]["conditions"] if c["type"] == "Approved"]
        assert [c["reason"] for c in approved] == ["VirtualKubeletSelfApprove"]

        wait_for(
            lambda: served_fingerprint(process) == fingerprint_sha256(issued_pem(csr)),
            timeout=30,
            what="the issued certificate served",
        )
        verifies_against(cluster, process)
        wait_for(lambda: logs_pass(cluster, ns), timeout=30, what="kubectl logs through the verified kubelet")


def test_a_self_signed_kubelet_fails_the_api_servers_verification(
    cluster: LocalCluster, test_network: TestNetwork, tmp_path: Path
) -> None:
    node = "vk-e2e-servingcert-none"
    with daemon(cluster, test_network, tmp_path, node, []), talking_pod(cluster, node) as ns:
        assert_verification_fails(cluster, ns)
        assert node_csrs(cluster, node) == []


def test_without_self_approval_the_csr_waits_until_an_admin_approves_it(
    cluster: LocalCluster, test_network: TestNetwork, tmp_path: Path
) -> None:
    node = "vk-e2e-servingcert-admin"
    with (
        daemon(cluster, test_network, tmp_path, node, ["--rotate-server-certificates"]) as process,
        talking_pod(cluster, node) as ns,
    ):
        csrs = wait_for(lambda: node_csrs(cluster, node), timeout=60, what=f"a CSR of {node}")
        assert len(csrs) == 1
        name = csrs[0]["metadata"]["name"]
        events = wait_for(lambda: pending_events(cluster, node), timeout=60, what="the Pending event")
        assert name in events[0]["message"] and "kubectl certificate approve" in events[0]["message"]
        # Still pending, still self-signed: the API server refuses it.
        (csr,) = node_csrs(cluster, node)
        assert not csr.get("status", {}).get("conditions") and not csr.get("status", {}).get("certificate")
        assert_verification_fails(cluster, ns)

        cluster.kubectl("certificate", "approve", name)
        wait_for(lambda: logs_pass(cluster, ns), timeout=60, what="kubectl logs after the approval")
        (csr,) = node_csrs(cluster, node)
        assert served_fingerprint(process) == fingerprint_sha256(issued_pem(csr))
        approved = [c for c in csr["status"]["conditions"] if c["type"] == "Approved"]
        assert [c["reason"] for c in approved] == ["KubectlApprove"]
