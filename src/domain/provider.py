"""What a provider tells vkubelet about itself: capabilities, the node template, metrics."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class Capability(StrEnum):
    """Optional parts of the provider contract. Absent ones answer 501 on the kubelet API."""

    POD_STATUS_STREAM = "pod-status-stream"  # pushes status changes; otherwise vkubelet polls
    NODE_STATUS_STREAM = "node-status-stream"
    LOGS = "logs"
    EXEC = "exec"
    ATTACH = "attach"
    PORT_FORWARD = "port-forward"
    STATS_SUMMARY = "stats-summary"
    METRICS_RESOURCE = "metrics-resource"
    VOLUMES = "volumes"  # takes resolved volume contents (set_pod_volumes)
    KILL_CONTAINER = "kill-container"  # stops one container (kill_container); restartPolicy applies
    PROBES = "probes"  # runs probes and lifecycle hooks itself; vkubelet's core leaves them alone


@dataclass(frozen=True, slots=True)
class Taint:
    key: str
    value: str
    effect: str  # NoSchedule, PreferNoSchedule or NoExecute

    def to_manifest(self) -> dict[str, str]:
        return {"key": self.key, "value": self.value, "effect": self.effect}

    def __str__(self) -> str:
        return f"{self.key}={self.value}:{self.effect}"


@dataclass(frozen=True, slots=True)
class NodeAddress:
    type: str  # InternalIP, ExternalIP, Hostname, ...
    address: str


@dataclass(frozen=True, slots=True)
class NodeCondition:
    type: str
    status: str  # "True", "False", "Unknown"
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class NodeTemplate:
    """The provider's part of the Node: what it can run and how it is reached.

    vkubelet adds its own labels, the taint, the kubelet endpoint and the Ready condition.
    """

    capacity: Mapping[str, str]
    allocatable: Mapping[str, str] | None = None  # None: same as capacity
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    addresses: tuple[NodeAddress, ...] = ()
    conditions: tuple[NodeCondition, ...] = ()
    operating_system: str = "linux"
    architecture: str = "amd64"
    provider_id: str = ""


@dataclass(frozen=True, slots=True)
class MetricSample:
    labels: Mapping[str, str]
    value: float
    timestamp_ms: int | None = None


@dataclass(frozen=True, slots=True)
class MetricFamily:
    """One Prometheus metric family, as /metrics/resource renders it."""

    name: str
    help: str
    type: str  # "counter" or "gauge"
    samples: tuple[MetricSample, ...]
