"""Issue 12 end to end: volumes and tokens reach the process provider's pods.

The daemon runs the process provider in process, as deploy/rbac.yaml's ServiceAccount, against
the whole local cluster (ServiceAccount admission on: every pod has its kube-api-access volume).
What the pod sees is read with `kubectl exec`, as a user would.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.test_whole_cluster import apply, is_ready, pod_spec
from tests.e2e.vkubelet_process import VkubeletProcess, process_provider_daemon, scratch_namespace, wait_for

NODE = "vk-e2e-inputs"
TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


daemon = process_provider_daemon(NODE, {"cpu": "4", "memory": "8Gi", "pods": "40"})


@pytest.fixture
def namespace(control_plane: Any) -> Iterator[str]:
    with scratch_namespace(control_plane, "in") as name:
        yield name


def pod_json(control_plane: Any, namespace: str, name: str) -> dict[str, Any]:
    result = control_plane.kubectl("get", f"pod/{name}", "-n", namespace, "-o", "json")
    found: dict[str, Any] = json.loads(result.stdout)
    return found


def exec_in(control_plane: Any, namespace: str, name: str, script: str) -> str:
    result = control_plane.kubectl("exec", "-n", namespace, name, "--", "sh", "-c", script)
    return str(result.stdout)


def start(control_plane: Any, namespace: str, name: str, spec: dict[str, Any]) -> None:
    apply(
        control_plane,
        namespace,
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec},
    )
    wait_for(lambda: is_ready(pod_json(control_plane, namespace, name)), timeout=60, what=f"pod {name} Ready")


def test_each_volume_kind_is_readable_at_its_mount_path(
    control_plane: Any, daemon: VkubeletProcess, namespace: str
) -> None:
    base = f"/tmp/vk-e2e-{uuid.uuid4().hex[:8]}"
    control_plane.kubectl(
        "create", "configmap", "app", "-n", namespace, "--from-literal=app.yaml=debug: true"
    )
    control_plane.kubectl(
        "create", "secret", "generic", "db", "-n", namespace, "--from-literal=password=s3cr3t"
    )
    spec = pod_spec(NODE, ["sleep", "3600"])
    spec["containers"][0]["volumeMounts"] = [
        {"name": "cfg", "mountPath": f"{base}/cfg", "readOnly": True},
        {"name": "creds", "mountPath": f"{base}/creds"},
        {"name": "info", "mountPath": f"{base}/info"},
        {"name": "scratch", "mountPath": f"{base}/scratch"},
    ]
    spec["volumes"] = [
        {"name": "cfg", "configMap": {"name": "app"}},
        {"name": "creds", "secret": {"secretName": "db", "defaultMode": 0o400}},
        {
            "name": "info",
            "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]},
        },
        {"name": "scratch", "emptyDir": {}},
    ]
    start(control_plane, namespace, "reader", spec)

    assert exec_in(control_plane, namespace, "reader", f"cat {base}/cfg/app.yaml") == "debug: true"
    assert exec_in(control_plane, namespace, "reader", f"cat {base}/creds/password") == "s3cr3t"
    assert (
        exec_in(control_plane, namespace, "reader", f"stat -L -c %a {base}/creds/password").strip() == "400"
    )
    assert exec_in(control_plane, namespace, "reader", f"cat {base}/info/labels") == ""  # no labels
    exec_in(control_plane, namespace, "reader", f"echo hi > {base}/scratch/x")
    assert exec_in(control_plane, namespace, "reader", f"cat {base}/scratch/x") == "hi\n"
    refused = control_plane.kubectl(
        "exec", "-n", namespace, "reader", "--", "sh", "-c", f"echo x > {base}/cfg/new", check=False
    )
    assert refused.returncode != 0  # readOnly
    # The projected token volume of every pod, at its usual place.
    listing = exec_in(control_plane, namespace, "reader", f"ls {TOKEN_DIR}").split()
    assert sorted(listing) == ["ca.crt", "namespace", "token"]
    assert exec_in(control_plane, namespace, "reader", f"cat {TOKEN_DIR}/namespace") == namespace


def test_an_edited_config_map_shows_in_the_running_pod(
    control_plane: Any, daemon: VkubeletProcess, namespace: str
) -> None:
    base = f"/tmp/vk-e2e-{uuid.uuid4().hex[:8]}"
    control_plane.kubectl("create", "configmap", "live", "-n", namespace, "--from-literal=level=info")
    spec = pod_spec(NODE, ["sleep", "3600"])
    spec["containers"][0]["volumeMounts"] = [{"name": "cfg", "mountPath": base}]
    spec["volumes"] = [{"name": "cfg", "configMap": {"name": "live"}}]
    start(control_plane, namespace, "watcher", spec)
    assert exec_in(control_plane, namespace, "watcher", f"cat {base}/level") == "info"

    patch = json.dumps({"data": {"level": "debug"}})
    control_plane.kubectl("patch", "configmap", "live", "-n", namespace, "--type=merge", "-p", patch)
    edited = time.monotonic()
    wait_for(
        lambda: exec_in(control_plane, namespace, "watcher", f"cat {base}/level") == "debug",
        timeout=10,
        interval=0.5,
        what="the edited ConfigMap in the running pod",
    )
    print(f"edited ConfigMap visible in the pod after {time.monotonic() - edited:.1f}s")
    assert (
        pod_json(control_plane, namespace, "watcher")["status"]["containerStatuses"][0]["restartCount"] == 0
    )


def test_the_projected_token_authenticates_as_the_pods_service_account_until_the_pod_is_gone(
    control_plane: Any, daemon: VkubeletProcess, namespace: str
) -> None:
    start(control_plane, namespace, "caller", pod_spec(NODE, ["sleep", "3600"]))
    token = exec_in(control_plane, namespace, "caller", f"cat {TOKEN_DIR}/token")

    def review() -> dict[str, Any]:
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}
        result = control_plane.kubectl("create", "-o", "json", "-f", "-", input=json.dumps(body))
        status: dict[str, Any] = json.loads(result.stdout)["status"]
        return status

    # From inside the pod, as an in-cluster client would: the mounted CA and token, the address
    # in KUBERNETES_SERVICE_HOST/PORT. Authenticated as the pod's ServiceAccount; RBAC decides.
    call = (
        f"curl -s -o /dev/null -w '%{{http_code}}' --cacert {TOKEN_DIR}/ca.crt "
        f'-H "Authorization: Bearer $(cat {TOKEN_DIR}/token)" '
        f'"https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT/api/v1/namespaces/{namespace}/pods"'
    )
    assert exec_in(control_plane, namespace, "caller", call) == "403"
    control_plane.kubectl(
        "create",
        "rolebinding",
        "view",
        "-n",
        namespace,
        "--clusterrole=view",
        f"--serviceaccount={namespace}:default",
    )
    wait_for(
        lambda: exec_in(control_plane, namespace, "caller", call) == "200",
        timeout=30,
        what="RBAC to allow it",
    )

    status = review()
    assert status["authenticated"] is True
    assert status["user"]["username"] == f"system:serviceaccount:{namespace}:default"
    assert status["user"]["extra"]["authentication.kubernetes.io/pod-name"] == ["caller"]

    control_plane.kubectl(
        "delete", "pod", "caller", "-n", namespace, "--wait=true", "--timeout=60s", timeout=70
    )
    wait_for(
        lambda: not review().get("authenticated"), timeout=30, what="the bound token to stop authenticating"
    )


def test_a_missing_mandatory_config_map_holds_the_pod_until_it_exists(
    control_plane: Any, daemon: VkubeletProcess, namespace: str
) -> None:
    spec = pod_spec(NODE, ["sleep", "3600"])
    spec["containers"][0]["volumeMounts"] = [
        {"name": "cfg", "mountPath": f"/tmp/vk-e2e-{uuid.uuid4().hex[:8]}"}
    ]
    spec["volumes"] = [{"name": "cfg", "configMap": {"name": "later"}}]
    apply(
        control_plane,
        namespace,
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "held"}, "spec": spec},
    )

    def failed_mount() -> str | None:
        events = control_plane.kubectl(
            "get", "events", "-n", namespace, "--field-selector", "reason=FailedMount", "-o", "json"
        )
        messages = [e["message"] for e in json.loads(events.stdout)["items"]]
        return messages[0] if messages else None

    message = wait_for(failed_mount, timeout=30, what="a FailedMount event")
    assert 'configmap "later" not found' in message
    assert pod_json(control_plane, namespace, "held")["status"]["phase"] == "Pending"

    control_plane.kubectl("create", "configmap", "later", "-n", namespace, "--from-literal=k=v")
    wait_for(lambda: is_ready(pod_json(control_plane, namespace, "held")), timeout=120, what="pod held Ready")
