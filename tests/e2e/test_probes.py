"""Issue 13 end to end: probes and lifecycle hooks run by vkubelet's core for the process
provider, on the whole local cluster (scheduler, EndpointSlice controller, default admission).

The process provider's pods share the host network and file system, so a readiness file or a
hook's marker is a host path under this module's work directory.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_whole_cluster import apply, is_ready, pod_spec, pods
from tests.e2e.vkubelet_process import (
    VkubeletProcess,
    free_port,
    process_provider_daemon,
    scratch_namespace,
    wait_for,
)

NODE = "vk-e2e-probes"
daemon = process_provider_daemon(NODE, {"cpu": "4", "memory": "8Gi", "pods": "20"})


@pytest.fixture
def namespace(control_plane: Any) -> Iterator[str]:
    with scratch_namespace(control_plane, "probe") as name:
        yield name


@pytest.fixture
def marks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("marks")


def events(control_plane: Any, namespace: str, pod: str) -> list[dict[str, Any]]:
    listed = control_plane.kubectl(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={pod}", "-o", "json"
    )
    items: list[dict[str, Any]] = json.loads(listed.stdout)["items"]
    return items


def pod_json(control_plane: Any, namespace: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(
        control_plane.kubectl("get", f"pod/{name}", "-n", namespace, "-o", "json").stdout
    )
    return found


def ready_endpoints(control_plane: Any, namespace: str, service: str) -> dict[str, bool]:
    slices = control_plane.kubectl(
        "get", "endpointslices", "-n", namespace, "-l", f"kubernetes.io/service-name={service}", "-o", "json"
    )
    return {
        e["targetRef"]["name"]: bool(e.get("conditions", {}).get("ready"))
        for item in json.loads(slices.stdout)["items"]
        for e in item.get("endpoints") or []
    }


def test_readiness_probe_holds_a_deployment_out_of_its_service_until_the_file_appears(
    control_plane: Any, daemon: VkubeletProcess, namespace: str, marks: Path
) -> None:
    flag = marks / "ready"
    spec = pod_spec(NODE, ["sleep", "3600"])
    spec["containers"][0]["readinessProbe"] = {
        "exec": {"command": ["test", "-f", str(flag)]},
        "periodSeconds": 2,
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "gated"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "gated"}},
            "template": {"metadata": {"labels": {"app": "gated"}}, "spec": spec},
        },
    }
    apply(control_plane, namespace, deployment)
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "gated"},
        "spec": {"selector": {"app": "gated"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    apply(control_plane, namespace, service)

    def running_pod() -> dict[str, Any] | None:
        found = [
            p for p in pods(control_plane, namespace, "app=gated") if p["status"].get("phase") == "Running"
        ]
        return found[0] if found else None

    pod = wait_for(running_pod, timeout=60, what="the gated pod Running")
    name = pod["metadata"]["name"]
    # Running, listed in the EndpointSlice, but not ready: probes have run and failed.
    wait_for(
        lambda: ready_endpoints(control_plane, namespace, "gated") == {name: False} or None,
        timeout=30,
        what="the pod listed as not ready",
    )
    wait_for(
        lambda: any(e["reason"] == "Unhealthy" for e in events(control_plane, namespace, name)) or None,
        timeout=30,
        what="an Unhealthy event",
    )
    current = pod_json(control_plane, namespace, name)
    assert not is_ready(current)
    assert current["status"]["containerStatuses"][0]["ready"] is False
    message = next(e["message"] for e in events(control_plane, namespace, name) if e["reason"] == "Unhealthy")
    assert message.startswith("Readiness probe failed")

    flag.touch()
    touched = time.monotonic()
    wait_for(lambda: is_ready(pod_json(control_plane, namespace, name)) or None, timeout=10, what="Ready")
    became_ready = time.monotonic() - touched
    print(f"readiness: Ready {became_ready:.2f} s after the file appeared (periodSeconds 2)")
    assert became_ready <= 2 + 1
    wait_for(
        lambda: ready_endpoints(control_plane, namespace, "gated") == {name: True} or None,
        timeout=10,
        what="the pod listed as ready",
    )


def test_http_and_tcp_probes_reach_the_pods_port(
    control_plane: Any, daemon: VkubeletProcess, namespace: str, marks: Path
) -> None:
    port = free_port()
    (marks / "healthz").write_text("ok")
    spec = pod_spec(
        NODE, ["python3", "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(marks)]
    )
    spec["containers"][0]["ports"] = [{"name": "web", "containerPort": port}]
    spec["containers"][0]["readinessProbe"] = {
        "httpGet": {"path": "/healthz", "port": "web"},
        "periodSeconds": 1,
    }
    spec["containers"][0]["livenessProbe"] = {"tcpSocket": {"port": port}, "periodSeconds": 1}
    apply(
        control_plane,
        namespace,
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"}, "spec": spec},
    )
    wait_for(
        lambda: is_ready(pod_json(control_plane, namespace, "web")) or None, timeout=60, what="web Ready"
    )

    (marks / "healthz").unlink()  # now a 404
    wait_for(
        lambda: not is_ready(pod_json(control_plane, namespace, "web")) or None,
        timeout=15,
        what="web unready",
    )
    messages = [e["message"] for e in events(control_plane, namespace, "web") if e["reason"] == "Unhealthy"]
    assert "Readiness probe failed: HTTP probe failed with statuscode: 404" in messages
    status = pod_json(control_plane, namespace, "web")["status"]["containerStatuses"][0]
    assert status["restartCount"] == 0  # the TCP liveness probe keeps passing


def test_a_failing_liveness_probe_restarts_the_container(
    control_plane: Any, daemon: VkubeletProcess, namespace: str, marks: Path
) -> None:
    alive = marks / "alive"
    spec = pod_spec(NODE, ["sh", "-c", f"touch {alive}; exec sleep 3600"])
    spec["containers"][0]["livenessProbe"] = {
        "exec": {"command": ["test", "-f", str(alive)]},
        "periodSeconds": 1,
        "failureThreshold": 2,
    }
    apply(
        control_plane,
        namespace,
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "live"}, "spec": spec},
    )
    wait_for(
        lambda: is_ready(pod_json(control_plane, namespace, "live")) or None, timeout=60, what="live Ready"
    )

    # Make the probe fail once: the restarted container touches the file again and lives.
    alive.unlink()
    wait_for(
        lambda: (
            pod_json(control_plane, namespace, "live")["status"]["containerStatuses"][0]["restartCount"] >= 1
            or None
        ),
        timeout=30,
        what="restartCount 1",
    )
    reasons = {e["reason"]: e["message"] for e in events(control_plane, namespace, "live")}
    assert reasons["Unhealthy"].startswith("Liveness probe failed")
    assert reasons["Killing"] == "Container app failed liveness probe, will be restarted"
    wait_for(
        lambda: is_ready(pod_json(control_plane, namespace, "live")) or None, timeout=60, what="live again"
    )
    status = pod_json(control_plane, namespace, "live")["status"]["containerStatuses"][0]
    assert status["lastState"]["terminated"]["exitCode"] in (137, 143)


def test_pre_stop_runs_before_the_process_is_signalled(
    control_plane: Any, daemon: VkubeletProcess, namespace: str, marks: Path
) -> None:
    log = marks / "order.log"
    script = f"trap 'echo term >> {log}; exit 0' TERM; while true; do sleep 0.1; done"
    spec = pod_spec(NODE, ["sh", "-c", script], terminationGracePeriodSeconds=10)
    spec["containers"][0]["lifecycle"] = {
        "postStart": {"exec": {"command": ["sh", "-c", f"echo poststart >> {log}"]}},
        "preStop": {"exec": {"command": ["sh", "-c", f"echo prestop >> {log}"]}},
    }
    apply(
        control_plane,
        namespace,
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hooks"}, "spec": spec},
    )
    wait_for(
        lambda: is_ready(pod_json(control_plane, namespace, "hooks")) or None, timeout=60, what="hooks Ready"
    )
    wait_for(
        lambda: (log.exists() and "poststart" in log.read_text()) or None, timeout=10, what="postStart ran"
    )

    control_plane.kubectl("delete", "pod", "hooks", "-n", namespace, "--wait=false")
    wait_for(
        lambda: (log.exists() and "term" in log.read_text()) or None, timeout=30, what="the process got TERM"
    )
    assert log.read_text().split() == ["poststart", "prestop", "term"]
