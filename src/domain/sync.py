"""What to do with one pod: the pure heart of the pod controller.

The controller keeps, per pod UID, the API server's latest copy of the pod and the provider's
latest copy, and asks :func:`decide` what to do next. The decision is level-triggered: it
depends only on the two copies (plus a few facts the controller remembers), never on which
event woke the controller, so a missed or duplicated event cannot leave a pod behind.

Differences from upstream, on purpose:

- A terminating pod's API object is removed as soon as the provider reports its containers
  stopped (or it no longer has the pod), not only when the whole grace period has elapsed
  (upstream bug 9); the grace period stays the upper bound.
- A pod the provider lost is re-created, except a started ``restartPolicy: Never`` pod, which
  is marked Failed (a kubelet never restarts those).
- A transient provider error never marks a pod Failed (upstream bug 12); only errors that
  retrying cannot fix do.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from vkubelet.domain.errors import (
    DomainError,
    InvalidInput,
    NotSupported,
    Permanent,
)
from vkubelet.domain.pod import Manifest, Pod, PodPhase, format_time

# The pod fields the API server lets change after creation; a difference in any of them is a
# spec change the provider must hear about. Status and resourceVersion are not among them.
UPDATABLE_FIELDS = (
    ("spec", "containers"),
    ("spec", "initContainers"),
    ("spec", "ephemeralContainers"),
    ("spec", "activeDeadlineSeconds"),
    ("spec", "tolerations"),
    ("metadata", "labels"),
    ("metadata", "annotations"),
)

# Status fields the provider owns. Anything else in the API status (conditions that other
# controllers add, nominatedNodeName, resize) is left alone: the patch merges, never replaces.
PROVIDER_STATUS_FIELDS = (
    "phase",
    "reason",
    "message",
    "hostIP",
    "hostIPs",
    "podIP",
    "podIPs",
    "startTime",
    "conditions",
    "containerStatuses",
    "initContainerStatuses",
    "ephemeralContainerStatuses",
    "qosClass",
)


# Fields vkubelet itself may have written (a failure reason, CreateContainerConfigError
# waiting states): when the provider's status lacks them, they are stale and get removed.
CLEARED_WHEN_UNREPORTED = frozenset({"reason", "message", "containerStatuses", "initContainerStatuses"})


class Action(StrEnum):
    NOTHING = "nothing"
    CREATE = "create"
    CHECK_UPDATE = "check-update"  # the unresolved spec changed: resolve env, then compare
    DELETE_IN_PROVIDER = "delete-in-provider"
    DELETE_IN_API = "delete-in-api"
    WAIT_FOR_TERMINATION = "wait-for-termination"
    MARK_LOST = "mark-lost"


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    # When to look at this pod again even if nothing happens (grace deadlines), in seconds.
    recheck_after: float | None = None
    why: str = ""


def _field(manifest: Manifest, path: tuple[str, str]) -> Any:
    section = manifest.get(path[0]) or {}
    return section.get(path[1])


def spec_key(pod: Pod) -> str:
    """A digest of the updatable fields in canonical form, for "did the spec change since we
    applied it". A digest, not the canonical JSON itself: the controller keeps one per pod, and
    the JSON of a pod's containers is kilobytes."""
    fields = {"/".join(path): _field(pod.manifest, path) for path in UPDATABLE_FIELDS}
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()


def _sorted_env(containers: Any) -> Any:
    if not isinstance(containers, list):
        return containers
    normalised = []
    for container in containers:
        if isinstance(container, Mapping) and isinstance(container.get("env"), list):
            container = dict(container)
            container["env"] = sorted(
                container["env"], key=lambda var: (str(var.get("name")), str(var.get("value")))
            )
        normalised.append(container)
    return normalised


def specs_equal(resolved_api_pod: Pod, provider_pod: Pod) -> bool:
    """True when the provider's copy already has every updatable field of the API pod.

    Env lists are compared without regard to order: resolution may order them differently
    from the copy the provider stored (upstream's "resolved env order" fix).
    """
    for path in UPDATABLE_FIELDS:
        ours = _field(resolved_api_pod.manifest, path)
        theirs = _field(provider_pod.manifest, path)
        if path[1] in ("containers", "initContainers", "ephemeralContainers"):
            ours, theirs = _sorted_env(ours), _sorted_env(theirs)
        if (ours or None) != (theirs or None):
            return False
    return True


def containers_stopped(pod: Pod) -> bool:
    """True when no container of ``pod`` is running (terminal phase, or all terminated/waiting).

    An empty container-status list counts as stopped, as upstream: nothing is known to run.
    """
    if pod.is_terminal:
        return True
    for status in pod.status.get("containerStatuses") or ():
        state = status.get("state") or {}
        if "terminated" not in state and "waiting" not in state:
            return False
    return True


def was_started(pod: Pod) -> bool:
    """Whether the API copy shows the pod ran at some point (so losing it is a failure)."""
    status = pod.status
    return bool(status.get("startTime")) or pod.phase is PodPhase.RUNNING


def decide(
    *,
    api_pod: Pod | None,
    provider_pod: Pod | None,
    applied_spec_key: str | None,
    deleted_in_provider: bool,
    now: datetime,
) -> Decision:
    """Choose the next step for one pod UID.

    ``applied_spec_key`` is the :func:`spec_key` of the API pod last created or updated in the
    provider (None if never); ``deleted_in_provider`` says the provider already acknowledged a
    delete of this UID.
    """
    if api_pod is None:
        if provider_pod is not None and not deleted_in_provider:
            return Decision(Action.DELETE_IN_PROVIDER, why="the pod is gone from the API server")
        return Decision(Action.NOTHING, why="gone everywhere")

    deletion = api_pod.deletion_timestamp
    if deletion is not None:
        provider_done = provider_pod is None or (deleted_in_provider and containers_stopped(provider_pod))
        remaining = (deletion - now).total_seconds()
        if provider_pod is not None and not deleted_in_provider:
            return Decision(
                Action.DELETE_IN_PROVIDER, recheck_after=max(remaining, 0.0), why="deletion requested"
            )
        if provider_done or remaining <= 0:
            return Decision(Action.DELETE_IN_API, why="containers stopped or grace period over")
        return Decision(
            Action.WAIT_FOR_TERMINATION, recheck_after=remaining, why="waiting for containers to stop"
        )

    if api_pod.is_terminal:
        return Decision(Action.NOTHING, why="terminal pods are never (re)started")

    if provider_pod is None:
        if deleted_in_provider:
            return Decision(Action.NOTHING, why="deleted in provider; waiting for the API delete")
        if applied_spec_key is not None and was_started(api_pod) and api_pod.restart_policy == "Never":
            return Decision(Action.MARK_LOST, why="the provider lost a started restartPolicy=Never pod")
        return Decision(Action.CREATE, why="the provider does not have the pod")

    if applied_spec_key != spec_key(api_pod):
        return Decision(Action.CHECK_UPDATE, why="the spec differs from what was last applied")
    return Decision(Action.NOTHING, why="in sync")


# -- status -------------------------------------------------------------------------------


def status_patch(api_pod: Pod, provider_status: Manifest) -> dict[str, Any] | None:
    """The status fields to write so the API pod shows the provider's status; None if in sync.

    A terminal API status is never overwritten, and a provider status never moves a pod back
    from a terminal phase. Only :data:`PROVIDER_STATUS_FIELDS` are written; the rest of the
    API status is untouched (the gateway merges conditions by type).
    """
    if api_pod.is_terminal:
        return None
    current = api_pod.status
    patch: dict[str, Any] = {}
    for key in PROVIDER_STATUS_FIELDS:
        if key not in provider_status:
            if key in CLEARED_WHEN_UNREPORTED and current.get(key) is not None:
                patch[key] = None  # e.g. our own ProviderFailed reason, once the pod runs
            continue
        wanted = provider_status[key]
        if key == "conditions":
            if _conditions_in_sync(current.get("conditions") or [], wanted or []):
                continue
            wanted = _clearing_stale_details(current.get("conditions") or [], wanted or [])
        elif current.get(key) == wanted:
            continue
        patch[key] = wanted
    return patch or None


def _clearing_stale_details(current: Sequence[Manifest], wanted: Sequence[Manifest]) -> list[Manifest]:
    """``wanted`` with ``reason: null``/``message: null`` where the API's condition still has
    one the provider no longer reports: conditions merge by type, so a key left out of the
    patch would stay (a Ready=True condition still saying ContainersNotReady) and the status
    would never look in sync again, re-patched on every sync."""
    by_type = {c.get("type"): c for c in current}
    cleared: list[Manifest] = []
    for condition in wanted:
        existing = by_type.get(condition.get("type")) or {}
        stale = {k: None for k in ("reason", "message") if k not in condition and existing.get(k) is not None}
        cleared.append({**condition, **stale} if stale else condition)
    return cleared


def _conditions_in_sync(current: Sequence[Manifest], wanted: Sequence[Manifest]) -> bool:
    by_type = {c.get("type"): c for c in current}
    for condition in wanted:
        existing = by_type.get(condition.get("type"))
        if existing is None:
            return False
        for key in ("status", "reason", "message"):
            if existing.get(key) != condition.get(key):
                return False
    return True


# -- failures -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FailurePolicy:
    """How a failed provider call shows on the pod, and whether to try again."""

    retry: bool
    status: dict[str, Any]


def provider_failure(pod: Pod, error: DomainError | None, *, message: str) -> FailurePolicy:
    """Retry-or-fail for a failed create/update.

    Errors retrying cannot fix (Permanent, InvalidInput, NotSupported) mark the pod Failed with
    reason ``ProviderFailed``, whatever its restart policy. Everything else is transient: the
    pod stays Pending with the reason shown, and the controller retries with backoff; it is
    never marked Failed for a transient error (upstream bug 12 did so for restartPolicy Never).
    """
    fatal = isinstance(error, Permanent | InvalidInput | NotSupported)
    phase = PodPhase.FAILED if fatal else PodPhase.PENDING
    if not fatal and pod.phase is not PodPhase.PENDING:
        phase = pod.phase  # a running pod whose update failed is still running
    return FailurePolicy(
        retry=not fatal,
        status={"phase": phase.value, "reason": "ProviderFailed", "message": message},
    )


def config_failure_status(pod: Pod, *, reason: str, message: str) -> dict[str, Any]:
    """Status for a pod whose environment cannot be resolved (missing configmap/secret).

    Like the kubelet's CreateContainerConfigError: Pending, each container waiting with the
    reason, and the pod message saying which reference is missing.
    """
    statuses = [
        {
            "name": container.get("name", ""),
            "image": container.get("image", ""),
            "imageID": "",
            "ready": False,
            "restartCount": 0,
            "started": False,
            "state": {"waiting": {"reason": "CreateContainerConfigError", "message": message}},
        }
        for container in pod.containers
    ]
    return {
        "phase": PodPhase.PENDING.value,
        "reason": reason,
        "message": message,
        "containerStatuses": statuses,
    }


def lost_pod_status(pod: Pod, *, now: datetime) -> dict[str, Any]:
    """Status for a started ``restartPolicy: Never`` pod that the provider no longer has."""
    finished = format_time(now)
    statuses = []
    for status in pod.status.get("containerStatuses") or ():
        state = status.get("state") or {}
        if "terminated" in state:
            statuses.append(status)
            continue
        started = (state.get("running") or {}).get("startedAt")
        terminated = {
            "exitCode": 137,
            "reason": "NotFound",
            "message": "Container was not found and was likely deleted",
            "finishedAt": finished,
        }
        if started:
            terminated["startedAt"] = started
        statuses.append({**status, "ready": False, "started": False, "state": {"terminated": terminated}})
    return {
        "phase": PodPhase.FAILED.value,
        "reason": "NotFound",
        "message": "The pod status was not found and may have been deleted from the provider",
        "containerStatuses": statuses,
    }
