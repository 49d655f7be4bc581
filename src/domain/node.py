"""The Node vkubelet registers, its conditions, and the patches that keep it current.

Everything here is pure: the node controller (application) supplies the provider's template,
the latest ping result and the time, and sends what these functions return to the API server.

Ownership. vkubelet writes only what it owns, so other actors' changes survive:

* labels: ``type``, ``kubernetes.io/{role,hostname,os,arch}``, the exclude-from-LB label and the
  template's labels (a strategic-merge patch of ``metadata.labels`` merges key by key);
* taints: the template's and vkubelet's own, recognised by key; every other taint on an existing
  node (cordon, not-ready, ...) is kept;
* status conditions: Ready, the default pressure/network conditions and the template's
  conditions. The status subresource is patched with a strategic merge patch, which merges
  ``conditions`` by ``type``: conditions set by others are left alone (upstream needed a
  three-way merge and two bookkeeping annotations for this, see TestManualConditionsPreserved);
* capacity, allocatable, addresses, nodeInfo and daemonEndpoints.

Known limit: a condition type or capacity key the template drops later stays on the node until
someone removes it (a strategic merge patch cannot delete what it does not name).

Readiness. Upstream never put provider health into a condition: a failed ping silently stopped
heartbeats, and a hung ping (no timeout) left the last good result in place forever (its bugs 13
and 14). Here the Ready condition says what happened: ``ProviderPingFailed``,
``ProviderPingTimeout`` (also when the last result is older than ``stale_after``),
``ProviderUnavailable`` (no answer yet) or ``KubeletShuttingDown``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from vkubelet.domain.pod import format_time
from vkubelet.domain.provider import NodeAddress, NodeCondition, NodeTemplate, Taint

KUBERNETES_VERSION = "v1.36.3"

READY = "Ready"
MEMORY_PRESSURE = "MemoryPressure"
DISK_PRESSURE = "DiskPressure"
PID_PRESSURE = "PIDPressure"
NETWORK_UNAVAILABLE = "NetworkUnavailable"

REASON_READY = "KubeletReady"
REASON_PING_FAILED = "ProviderPingFailed"
REASON_PING_TIMEOUT = "ProviderPingTimeout"
REASON_UNAVAILABLE = "ProviderUnavailable"
REASON_SHUTTING_DOWN = "KubeletShuttingDown"
REASON_PROVIDER_NOT_READY = "ProviderNotReady"

# The kubelet's own reasons and messages for the conditions that are False on a healthy node.
_DEFAULT_CONDITIONS: tuple[NodeCondition, ...] = (
    NodeCondition(
        MEMORY_PRESSURE, "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"
    ),
    NodeCondition(DISK_PRESSURE, "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    NodeCondition(PID_PRESSURE, "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    NodeCondition(NETWORK_UNAVAILABLE, "False", "RouteCreated", "the provider's network needs no routes"),
)

LABEL_TYPE = "type"
LABEL_ROLE = "kubernetes.io/role"
LABEL_HOSTNAME = "kubernetes.io/hostname"
LABEL_OS = "kubernetes.io/os"
LABEL_ARCH = "kubernetes.io/arch"
LABEL_EXCLUDE_LB = "node.kubernetes.io/exclude-from-external-load-balancers"

# The status fields vkubelet writes besides conditions.
_OWNED_STATUS_FIELDS = ("capacity", "allocatable", "addresses", "nodeInfo", "daemonEndpoints")


def kubelet_version(build_version: str) -> str:
    """The ``nodeInfo.kubeletVersion`` vkubelet reports, e.g. ``v1.36.3-vk-0.1.0``."""
    return f"{KUBERNETES_VERSION}-vk-{build_version}"


# --- ping results and readiness ------------------------------------------------------------


class PingOutcome(StrEnum):
    OK = "ok"
    FAILED = "failed"
    TIMEOUT = "timeout"


@dataclass(frozen=True, slots=True)
class PingResult:
    """The outcome of one provider ping, stamped with the monotonic time it was recorded."""

    outcome: PingOutcome
    at: float
    error_kind: str = ""  # the error's class name, for FAILED
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome is PingOutcome.OK

    @classmethod
    def succeeded(cls, *, at: float) -> PingResult:
        return cls(PingOutcome.OK, at)

    @classmethod
    def failed(cls, *, at: float, error: BaseException) -> PingResult:
        return cls(PingOutcome.FAILED, at, type(error).__name__, str(error))

    @classmethod
    def timed_out(cls, *, at: float, timeout: float) -> PingResult:
        return cls(PingOutcome.TIMEOUT, at, "Timeout", f"provider ping did not answer within {timeout:g} s")


@dataclass(frozen=True, slots=True)
class ReadyState:
    """What the Ready condition says."""

    ready: bool
    reason: str
    message: str

    @property
    def status(self) -> str:
        return "True" if self.ready else "False"

    @classmethod
    def not_ready(cls, *, reason: str, message: str) -> ReadyState:
        return cls(False, reason, message)


READY_STATE = ReadyState(True, REASON_READY, "kubelet is ready")


def ready_state(last_ping: PingResult | None, *, now_monotonic: float, stale_after: float) -> ReadyState:
    """Readiness from the provider's latest ping result.

    A result older than ``stale_after`` counts as a timeout whatever it said: the ping that
    should have replaced it is hanging (upstream kept the last good result forever, bug 13).
    """
    if last_ping is None:
        return ReadyState.not_ready(
            reason=REASON_UNAVAILABLE, message="the provider has not answered a ping yet"
        )
    age = now_monotonic - last_ping.at
    if age > stale_after:
        return ReadyState.not_ready(
            reason=REASON_PING_TIMEOUT, message=f"the provider has not answered a ping for {age:.0f} s"
        )
    if last_ping.outcome is PingOutcome.TIMEOUT:
        return ReadyState.not_ready(reason=REASON_PING_TIMEOUT, message=last_ping.message)
    if last_ping.outcome is PingOutcome.FAILED:
        detail = f"{last_ping.error_kind}: {last_ping.message}" if last_ping.message else last_ping.error_kind
        return ReadyState.not_ready(reason=REASON_PING_FAILED, message=f"provider ping failed: {detail}")
    return READY_STATE


# --- conditions --------------------------------------------------------------------------------


def node_conditions(
    template: NodeTemplate,
    *,
    ready: ReadyState,
    now: datetime,
    previous: Sequence[Mapping[str, Any]] = (),
) -> list[dict[str, Any]]:
    """The conditions vkubelet owns, as v1 NodeCondition JSON.

    * The template's conditions, then the kubelet's default pressure and network conditions for
      the types the template does not provide.
    * Ready, from ``ready``. When the ping is fine but the template carries a Ready condition
      that is not True, the provider knows better: Ready is False with the provider's reason.
    * ``lastHeartbeatTime`` is ``now``; ``lastTransitionTime`` is kept from ``previous`` (the
      node's current conditions) when the status of that type did not change, else ``now``.
    """
    provided = {c.type: c for c in template.conditions if c.type != READY}
    chosen: list[NodeCondition] = list(provided.values())
    chosen += [c for c in _DEFAULT_CONDITIONS if c.type not in provided]

    template_ready = next((c for c in template.conditions if c.type == READY), None)
    if ready.ready and template_ready is not None and template_ready.status != "True":
        chosen.append(
            NodeCondition(
                READY,
                "False",
                template_ready.reason or REASON_PROVIDER_NOT_READY,
                template_ready.message or "the provider reports the node not ready",
            )
        )
    else:
        chosen.append(NodeCondition(READY, ready.status, ready.reason, ready.message))

    stamp = format_time(now)
    conditions = [
        {
            "type": c.type,
            "status": c.status,
            "reason": c.reason,
            "message": c.message,
            "lastHeartbeatTime": stamp,
            "lastTransitionTime": stamp,
        }
        for c in chosen
    ]
    return carry_transition_times(previous, conditions)


def carry_transition_times(
    previous: Sequence[Mapping[str, Any]], conditions: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Copy of ``conditions`` whose ``lastTransitionTime`` comes from ``previous`` wherever the
    condition of that type had the same status there (a transition is a change of status, not
    of reason or message)."""
    before = {c.get("type"): c for c in previous if isinstance(c, Mapping)}
    carried: list[dict[str, Any]] = []
    for condition in conditions:
        updated = dict(condition)
        old = before.get(condition.get("type"))
        if old is not None and old.get("status") == condition.get("status") and old.get("lastTransitionTime"):
            updated["lastTransitionTime"] = old["lastTransitionTime"]
        carried.append(updated)
    return carried


def ready_condition(conditions: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The Ready condition among ``conditions``, if any."""
    return next((c for c in conditions if isinstance(c, Mapping) and c.get("type") == READY), None)


# --- the node manifest -------------------------------------------------------------------------


def build_node(
    template: NodeTemplate,
    *,
    name: str,
    provider: str,
    kubelet_port: int,
    taint: Taint | None,
    kubelet_version: str,
    internal_ip: str | None,
    ready: ReadyState,
    now: datetime,
    previous_conditions: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The v1 Node vkubelet registers (and recreates), status included.

    Labels: the role and exclude-from-external-load-balancers defaults can be overridden by the
    template; the identity labels (``type``, hostname, os, arch) cannot, since they must agree
    with the node's name and ``nodeInfo`` (upstream set no os/arch label at all, bug 22).

    Addresses: when ``internal_ip`` (where the kubelet API listens) is given it is the node's
    InternalIP, because the API server proxies logs/exec/stats to the address of the preferred
    type. One address per type: the status patch merges addresses by ``type``, so a second
    InternalIP from the provider's template made the API server reject every later status patch
    as a duplicate (422), and a restarted vkubelet exited.
    """
    labels: dict[str, str] = {LABEL_ROLE: "agent", LABEL_EXCLUDE_LB: "true"}
    labels.update(template.labels)
    labels.update(
        {
            LABEL_TYPE: "virtual-kubelet",
            LABEL_HOSTNAME: name,
            LABEL_OS: template.operating_system,
            LABEL_ARCH: template.architecture,
        }
    )

    taints = [t for t in template.taints if taint is None or (t.key, t.effect) != (taint.key, taint.effect)]
    if taint is not None:
        taints.append(taint)

    ours = [NodeAddress("InternalIP", internal_ip)] if internal_ip else []
    addresses = _unique_by_type(ours + list(template.addresses))

    metadata: dict[str, Any] = {"name": name, "labels": labels}
    if template.annotations:
        metadata["annotations"] = dict(template.annotations)
    spec: dict[str, Any] = {"taints": [t.to_manifest() for t in taints]}
    if template.provider_id:
        spec["providerID"] = template.provider_id

    capacity = dict(template.capacity)
    allocatable = dict(template.allocatable) if template.allocatable is not None else dict(capacity)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": metadata,
        "spec": spec,
        "status": {
            "capacity": capacity,
            "allocatable": allocatable,
            "addresses": [{"type": a.type, "address": a.address} for a in addresses],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}},
            "nodeInfo": {
                "operatingSystem": template.operating_system,
                "architecture": template.architecture,
                "kubeletVersion": kubelet_version,
                "containerRuntimeVersion": f"{provider}://virtual-kubelet",
            },
            "conditions": node_conditions(template, ready=ready, now=now, previous=previous_conditions),
        },
    }


def status_patch(
    previous_conditions: Sequence[Mapping[str, Any]], desired: Mapping[str, Any]
) -> dict[str, Any]:
    """A strategic-merge patch of ``nodes/<name>/status`` that moves the node to ``desired``
    (a :func:`build_node` manifest) while touching only what vkubelet owns.

    ``previous_conditions`` are the node's current conditions: transition times are kept from
    them when a status did not change. Conditions of other types are not named, so the server
    keeps them.
    """
    status = desired.get("status", {})
    patch: dict[str, Any] = {
        "conditions": carry_transition_times(previous_conditions, status.get("conditions", ())),
    }
    for field in _OWNED_STATUS_FIELDS:
        if field in status:
            patch[field] = status[field]
    return {"status": patch}


def adoption_patch(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any] | None:
    """A strategic-merge patch of an existing node's metadata and spec towards ``desired``, or
    None when it already agrees (upstream never reconciled an adopted node's spec, bug 15).

    * Labels and annotations: only vkubelet's keys are named (maps merge key by key).
    * Taints: a list without a merge strategy is replaced whole, so the patch carries the
      existing taints whose keys vkubelet does not own plus vkubelet's taints, and the node's
      ``resourceVersion`` as a precondition: a concurrent taint change makes the patch fail
      with Conflict instead of being lost, and the caller retries from a fresh read.
    * providerID is immutable once set, so it is only written when the node has none.
    """
    meta = existing.get("metadata", {})
    spec = existing.get("spec", {})
    want_meta = desired.get("metadata", {})
    want_spec = desired.get("spec", {})
    patch_meta: dict[str, Any] = {}
    patch_spec: dict[str, Any] = {}

    for key in ("labels", "annotations"):
        have: Mapping[str, Any] = meta.get(key) or {}
        changed = {k: v for k, v in (want_meta.get(key) or {}).items() if have.get(k) != v}
        if changed:
            patch_meta[key] = changed

    ours: list[dict[str, Any]] = list(want_spec.get("taints") or [])
    our_keys = {t.get("key") for t in ours}
    current: list[Mapping[str, Any]] = list(spec.get("taints") or [])
    merged = [dict(t) for t in current if t.get("key") not in our_keys] + ours
    if _taint_set(merged) != _taint_set(current):
        patch_spec["taints"] = merged
        if meta.get("resourceVersion"):
            patch_meta["resourceVersion"] = meta["resourceVersion"]

    if want_spec.get("providerID") and not spec.get("providerID"):
        patch_spec["providerID"] = want_spec["providerID"]

    if not patch_spec and not patch_meta:
        return None
    patch: dict[str, Any] = {}
    if patch_meta:
        patch["metadata"] = patch_meta
    if patch_spec:
        patch["spec"] = patch_spec
    return patch


def _taint_set(taints: Sequence[Mapping[str, Any]]) -> frozenset[tuple[Any, Any, Any]]:
    return frozenset((t.get("key"), t.get("value", ""), t.get("effect")) for t in taints)


def node_uid(node: Mapping[str, Any]) -> str:
    return str(node.get("metadata", {}).get("uid", ""))


def conditions_of(node: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The node's status conditions (empty when it has none)."""
    conditions = (node.get("status") or {}).get("conditions") or []
    return [c for c in conditions if isinstance(c, Mapping)]


def _unique_by_type(addresses: list[NodeAddress]) -> list[NodeAddress]:
    """The first address of each type, in order."""
    seen: set[str] = set()
    unique = []
    for address in addresses:
        if address.type not in seen:
            seen.add(address.type)
            unique.append(address)
    return unique
