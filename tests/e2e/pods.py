"""Pods the e2e tests share."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from tests.e2e.test_whole_cluster import apply, is_ready, pod_spec
from tests.e2e.vkubelet_process import scratch_namespace, wait_for


@contextlib.contextmanager
def namespace_with_ready_pod(control_plane: Any, *, prefix: str, node: str, pod: str) -> Iterator[str]:
    """A scratch namespace holding ``pod`` (``sleep 3600`` on ``node``, scheduled, with its
    ServiceAccount token volume), yielded once the pod is Ready; deleted afterwards."""
    with scratch_namespace(control_plane, prefix) as name:
        apply(
            control_plane,
            name,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": pod},
                "spec": pod_spec(node, ["sleep", "3600"]),
            },
        )

        def ready() -> bool:
            found = json.loads(control_plane.kubectl("get", f"pod/{pod}", "-n", name, "-o", "json").stdout)
            return is_ready(found)

        wait_for(ready, timeout=60, what=f"pod {pod} Ready")
        yield name
