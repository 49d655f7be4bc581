"""Issue 12 end to end: a projected service-account token is refreshed in the running pod.

Long by design: the API server grants no token shorter than 600 s and vkubelet refreshes at 80 %
of the lifetime, as the kubelet does, so the test waits about 8 minutes (480 s) for the new
token. It runs in the default e2e tier all the same: nothing shorter proves the refresh.

The pod is scheduled onto the process provider's node; what it sees is read with `kubectl exec`.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.test_pod_inputs import exec_in, pod_json, start
from tests.e2e.test_whole_cluster import pod_spec
from tests.e2e.vkubelet_process import VkubeletProcess, process_provider_daemon, scratch_namespace, wait_for

pytestmark = pytest.mark.slow

NODE = "vk-e2e-refresh"
POD = "holder"
AUDIENCE = "vk-e2e-refresh-audience"
EXPIRATION_SECONDS = 600
# vkubelet's refresh moment: 80 % of the lifetime after issue (the kubelet's rule).
REFRESH_AFTER = 0.8 * EXPIRATION_SECONDS

daemon = process_provider_daemon(NODE, {"cpu": "2", "memory": "4Gi", "pods": "10"})


@pytest.fixture
def namespace(control_plane: Any) -> Iterator[str]:
    with scratch_namespace(control_plane, "tr") as name:
        yield name


def jwt_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT (its middle part, base64url without padding)."""
    header, payload, signature = token.split(".")
    assert header and signature
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


def token_review(control_plane: Any, token: str, *, audiences: list[str]) -> dict[str, Any]:
    body = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token, "audiences": audiences},
    }
    result = control_plane.kubectl("create", "-o", "json", "-f", "-", input=json.dumps(body))
    status: dict[str, Any] = json.loads(result.stdout)["status"]
    return status


def test_a_short_lived_projected_token_is_refreshed_at_80_percent_without_restarting_the_pod(
    control_plane: Any, daemon: VkubeletProcess, namespace: str
) -> None:
    base = f"/tmp/vk-e2e-{uuid.uuid4().hex[:8]}"
    token_dir, pid_file = f"{base}/token", f"{base}/scratch/pid"
    # "$$$$" is the shell's "$$" after the kubelet's $(VAR) expansion ("$$" escapes "$"): the
    # container's main process records its PID, then becomes the sleep.
    spec = pod_spec(NODE, ["sh", "-c", f"echo $$$$ > {pid_file} && exec sleep 3600"])
    spec["containers"][0]["volumeMounts"] = [
        {"name": "token", "mountPath": token_dir},
        {"name": "scratch", "mountPath": f"{base}/scratch"},
    ]
    spec["volumes"] = [
        {
            "name": "token",
            "projected": {
                "sources": [
                    {
                        "serviceAccountToken": {
                            "audience": AUDIENCE,
                            "expirationSeconds": EXPIRATION_SECONDS,
                            "path": "token",
                        }
                    }
                ]
            },
        },
        {"name": "scratch", "emptyDir": {}},
    ]
    start(control_plane, namespace, POD, spec)

    def read(path: str) -> str:
        return exec_in(control_plane, namespace, POD, f"cat {path}")

    def container_status() -> dict[str, Any]:
        status: dict[str, Any] = pod_json(control_plane, namespace, POD)["status"]["containerStatuses"][0]
        return status

    uid = pod_json(control_plane, namespace, POD)["metadata"]["uid"]
    started_at = container_status()["state"]["running"]["startedAt"]
    pid = wait_for(lambda: read(pid_file).strip(), timeout=30, what="the container's PID file")
    first_version = exec_in(control_plane, namespace, POD, f"readlink {token_dir}/..data").strip()
    first = read(f"{token_dir}/token")
    read_at = time.monotonic()

    def refreshed() -> str | None:
        token = read(f"{token_dir}/token")
        return token if token and token != first else None

    second = wait_for(
        refreshed,
        timeout=EXPIRATION_SECONDS,
        interval=5,
        what="the projected token to be refreshed",
    )
    seen_after = time.monotonic() - read_at

    before, after = jwt_claims(first), jwt_claims(second)
    delay = after["iat"] - before["iat"]
    print(
        f"token refreshed {delay}s after the first was issued (expected ~{REFRESH_AFTER:.0f}s); "
        f"seen in the pod {seen_after:.1f}s after the first read"
    )
    assert REFRESH_AFTER - 5 <= delay <= REFRESH_AFTER + 60
    for claims in (before, after):
        assert claims["aud"] == [AUDIENCE]
        assert claims["exp"] - claims["iat"] == EXPIRATION_SECONDS
        bound = claims["kubernetes.io"]
        assert bound["namespace"] == namespace
        assert bound["pod"] == {"name": POD, "uid": uid}
        assert bound["serviceaccount"]["name"] == "default"

    review = token_review(control_plane, second, audiences=[AUDIENCE])
    assert review["authenticated"] is True
    assert review["audiences"] == [AUDIENCE]
    assert review["user"]["username"] == f"system:serviceaccount:{namespace}:default"
    assert review["user"]["extra"]["authentication.kubernetes.io/pod-uid"] == [uid]

    # The same container, not a restart: same start, same main process, still the sleep.
    status = container_status()
    assert status["restartCount"] == 0
    assert status["state"]["running"]["startedAt"] == started_at
    assert read(pid_file).strip() == pid
    assert "sleep" in exec_in(control_plane, namespace, POD, f"tr '\\0' ' ' < /proc/{pid}/cmdline")

    # Swapped the kubelet's way: ..data points at a new version dir, the file is a link
    # through ..data, and the old version is gone.
    second_version = exec_in(control_plane, namespace, POD, f"readlink {token_dir}/..data").strip()
    assert second_version.startswith("..") and second_version != first_version
    assert exec_in(control_plane, namespace, POD, f"readlink {token_dir}/token").strip() == "..data/token"
    listing = exec_in(control_plane, namespace, POD, f"ls -a {token_dir}").split()
    assert sorted(listing) == sorted([".", "..", "..data", second_version, "token"])
