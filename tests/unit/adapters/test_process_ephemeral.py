"""The process provider's pure ephemeral-container rules: which specs are new, and what a pod
created again reports for one that already ran (never a second run)."""

from __future__ import annotations

from typing import Any

from vkubelet.adapters.process.ephemeral import earlier_state, new_specs, status
from vkubelet.domain.pod import Pod


def pod(*names: str, statuses: list[dict[str, Any]] | None = None) -> Pod:
    return Pod.from_manifest(
        {
            "metadata": {"namespace": "ns", "name": "p", "uid": "u"},
            "spec": {
                "containers": [{"name": "app"}],
                "ephemeralContainers": [{"name": name, "image": "busybox"} for name in names],
            },
            "status": {"ephemeralContainerStatuses": statuses or []},
        }
    )


def test_only_containers_not_started_yet_are_new_in_spec_order() -> None:
    assert [s["name"] for s in new_specs(pod("a", "b", "c"), {"app", "b"})] == ["a", "c"]
    assert (
        new_specs(
            Pod.from_manifest({"metadata": {"namespace": "ns", "name": "p", "uid": "u"}, "spec": {}}), set()
        )
        == []
    )


def test_one_that_never_ran_is_started() -> None:
    assert earlier_state(pod("dbg"), "dbg") is None
    waiting = [{"name": "dbg", "state": {"waiting": {"reason": "ContainerCreating"}}}]
    assert earlier_state(pod("dbg", statuses=waiting), "dbg") is None


def test_a_finished_one_keeps_its_state_and_a_lost_running_one_is_terminated_137() -> None:
    done = {"exitCode": 3, "reason": "Error", "finishedAt": "2025-01-01T00:00:09Z"}
    statuses = [
        {"name": "done", "state": {"terminated": done}},
        {"name": "lost", "state": {"running": {"startedAt": "2025-01-01T00:00:00Z"}}},
    ]
    assert earlier_state(pod("done", "lost", statuses=statuses), "done") == {"terminated": done}
    lost = earlier_state(pod("done", "lost", statuses=statuses), "lost")
    assert lost is not None
    assert (lost["terminated"]["exitCode"], lost["terminated"]["reason"]) == (137, "ContainerStatusUnknown")
    assert lost["terminated"]["startedAt"] == "2025-01-01T00:00:00Z"


def test_an_ephemeral_container_is_never_ready() -> None:
    assert status({"name": "dbg", "ready": True, "state": {"running": {}}})["ready"] is False
