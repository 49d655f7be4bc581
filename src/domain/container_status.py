"""Pod phase and conditions from container states, by the kubelet's rules (``getPhase``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from vkubelet.domain.pod import PodPhase


def pod_phase(
    containers: Sequence[Mapping[str, Any]],
    *,
    restart_policy: str,
    initialized: bool,
    init_failed: bool,
) -> PodPhase:
    """The phase of a pod whose regular containers have the v1 statuses ``containers``.

    A container waiting after a previous run (crash-loop back-off) counts as stopped, not as
    waiting, so a restarting pod stays Running as on a real node.
    """
    if init_failed:
        return PodPhase.FAILED
    if not initialized:
        return PodPhase.PENDING
    running = waiting = stopped = succeeded = 0
    for status in containers:
        state = status.get("state") or {}
        if "running" in state:
            running += 1
        elif "terminated" in state:
            stopped += 1
            if state["terminated"].get("exitCode") == 0:
                succeeded += 1
        elif (status.get("lastState") or {}).get("terminated"):
            stopped += 1
        else:
            waiting += 1
    if waiting:
        return PodPhase.PENDING
    if running:
        return PodPhase.RUNNING
    if not stopped:
        return PodPhase.PENDING
    if restart_policy == "Always":
        return PodPhase.RUNNING  # every container is about to be restarted
    if stopped == succeeded:
        return PodPhase.SUCCEEDED
    if restart_policy == "Never":
        return PodPhase.FAILED
    return PodPhase.RUNNING  # OnFailure: the failed ones restart


def final_phase(containers: Sequence[Mapping[str, Any]]) -> PodPhase:
    """The phase of a deleted pod once every container stopped: Failed if any failed."""
    for status in containers:
        terminated = (status.get("state") or {}).get("terminated") or {}
        if terminated.get("exitCode", 0) != 0:
            return PodPhase.FAILED
    return PodPhase.SUCCEEDED


def exit_code(returncode: int) -> int:
    """A process return code as a container runtime reports it (killed by signal N: 128 + N)."""
    return returncode if returncode >= 0 else 128 - returncode


def terminated_reason(code: int) -> str:
    return "Completed" if code == 0 else "Error"
