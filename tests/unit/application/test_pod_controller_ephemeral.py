"""kubectl debug through the sync core: an ephemeral container added to a running pod reaches
the provider with ``update_pod`` (env resolved like any container's), and the provider's
``ephemeralContainerStatuses`` reach the API. Fake clock, hand-written fakes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from tests.unit.application.test_pod_controller import NS, RUNNING_WITH_CONTAINER, Harness

DEBUG = {
    "name": "dbg",
    "image": "busybox",
    "command": ["sh"],
    "stdin": True,
    "tty": True,
    "env": [{"name": "WHO", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
}


@pytest.fixture(params=[True, False], ids=["streaming", "polled"])
async def h(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    harness = Harness(streaming=bool(request.param))
    await harness.start()
    yield harness
    await harness.stop()


def ephemeral_statuses(h: Harness, name: str) -> Any:
    pod = h.api(name)
    return None if pod is None else pod.status.get("ephemeralContainerStatuses")


async def test_an_added_ephemeral_container_reaches_the_provider_and_its_status_the_api(h: Harness) -> None:
    pod = await h.run_pod("web")
    uid = pod.ref.uid
    h.provider.report(uid, RUNNING_WITH_CONTAINER)

    h.pods.update(NS, "web", lambda obj: obj["spec"].setdefault("ephemeralContainers", []).append(DEBUG))
    await h.eventually(lambda: h.provider.calls["update_pod"] >= 1, within=3, what="update_pod")
    given = h.provider.pods[uid].spec["ephemeralContainers"]
    assert [c["name"] for c in given] == ["dbg"]
    assert {"name": "WHO", "value": "web"} in given[0]["env"]  # resolved before the provider sees it
    assert h.provider.calls["create_pod"] == 1  # the pod is updated in place, not recreated

    running = {"running": {"startedAt": "2025-01-01T00:01:00Z"}}
    h.provider.report(
        uid,
        {
            **RUNNING_WITH_CONTAINER,
            "ephemeralContainerStatuses": [
                {"name": "dbg", "ready": False, "restartCount": 0, "state": running}
            ],
        },
    )
    await h.eventually(lambda: bool(ephemeral_statuses(h, "web")), within=10, what="ephemeral status")
    assert ephemeral_statuses(h, "web")[0]["state"] == running

    exited = {"terminated": {"exitCode": 0, "reason": "Completed"}}
    h.provider.report(
        uid,
        {
            **RUNNING_WITH_CONTAINER,
            "ephemeralContainerStatuses": [
                {"name": "dbg", "ready": False, "restartCount": 0, "state": exited}
            ],
        },
    )
    await h.eventually(
        lambda: ephemeral_statuses(h, "web")[0]["state"] == exited, within=10, what="ephemeral exited"
    )
    await h.advance(70)
    assert h.provider.calls["update_pod"] == 1  # the status changes are not spec changes
    assert h.phase("web") == "Running"
