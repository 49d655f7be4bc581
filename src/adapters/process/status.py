"""Pod and container statuses computed from the provider's tables (:mod:`.records`)."""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

from vkubelet.adapters.process import ephemeral
from vkubelet.adapters.process.records import Container, PodEntry
from vkubelet.domain.container_status import final_phase, pod_phase
from vkubelet.domain.pod import Pod, PodPhase, format_time


def pod_status(entry: PodEntry, *, host_ip: str, now: datetime) -> dict[str, Any]:
    """The pod's status as the kubelet reports it; records condition transitions in ``entry``."""
    stamp = format_time(now)
    mains = [container_status(c) for c in entry.main_containers]
    inits = [container_status(c) for c in entry.init_containers]
    if entry.stopping.is_set() and all("terminated" in (s["state"]) for s in mains):
        phase = final_phase(mains)
    else:
        phase = pod_phase(
            mains,
            restart_policy=entry.pod.restart_policy,
            initialized=entry.initialized,
            init_failed=entry.init_failed,
        )
    ready = phase is PodPhase.RUNNING and all(s["ready"] for s in mains)
    not_ready_reason = "PodCompleted" if phase.is_terminal else "ContainersNotReady"
    wanted = [
        ("PodScheduled", True, ""),
        ("Initialized", entry.initialized, "ContainersNotInitialized"),
        ("ContainersReady", ready, not_ready_reason),
        ("Ready", ready, not_ready_reason),
    ]
    conditions = []
    for kind, ok, reason in wanted:
        value = "True" if ok else "False"
        previous = entry.transitions.get(kind)
        if previous is None or previous[0] != value:
            entry.transitions[kind] = (value, stamp)
        condition: dict[str, Any] = {
            "type": kind,
            "status": value,
            "lastProbeTime": None,
            "lastTransitionTime": entry.transitions[kind][1],
        }
        if not ok and reason:
            condition["reason"] = reason
        conditions.append(condition)
    status = copy.deepcopy(dict(entry.pod.status))
    status.update(
        {
            "phase": phase.value,
            "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}],
            "podIP": host_ip,
            "podIPs": [{"ip": host_ip}],
            "startTime": entry.start_time,
            "conditions": conditions,
            "containerStatuses": mains,
        }
    )
    if inits:
        status["initContainerStatuses"] = inits
    if entry.ephemeral_containers:
        status["ephemeralContainerStatuses"] = [
            ephemeral.status(container_status(c)) for c in entry.ephemeral_containers
        ]
    return status


def snapshot(entry: PodEntry) -> Pod:
    manifest = copy.deepcopy(dict(entry.pod.manifest))
    manifest["status"] = copy.deepcopy(entry.status)
    return Pod(entry.pod.ref, manifest)


def container_status(container: Container) -> dict[str, Any]:
    running = "running" in container.state
    return {
        "name": container.name,
        "image": str(container.spec.get("image") or ""),
        "imageID": "",
        "containerID": container.container_id,
        "restartCount": container.restart_count,
        "ready": running,
        "started": running,
        "state": copy.deepcopy(container.state),
        "lastState": copy.deepcopy(container.last_state),
    }
