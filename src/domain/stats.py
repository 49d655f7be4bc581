"""The kubelet's resource-usage shapes, shared by every provider that measures usage.

A provider computes one :class:`NodeUsage` and a :class:`PodUsage` per pod at one instant and
renders both views from it, so the stats/v1alpha1 Summary (:func:`summary`) and the
/metrics/resource families (:func:`resource_metrics`) always agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from vkubelet.domain.pod import PodRef, format_time
from vkubelet.domain.provider import MetricFamily, MetricSample


@dataclass(frozen=True, slots=True)
class ContainerUsage:
    """One container's usage at one instant."""

    name: str
    start_time: datetime
    nano_cores: int  # instantaneous rate, in billionths of a core
    core_nano_seconds: int  # cumulative CPU time since the container started
    working_set_bytes: int
    usage_bytes: int  # working set + page cache


@dataclass(frozen=True, slots=True)
class PodUsage:
    ref: PodRef
    start_time: datetime
    containers: tuple[ContainerUsage, ...]

    @property
    def nano_cores(self) -> int:
        return sum(c.nano_cores for c in self.containers)

    @property
    def core_nano_seconds(self) -> int:
        return sum(c.core_nano_seconds for c in self.containers)

    @property
    def working_set_bytes(self) -> int:
        return sum(c.working_set_bytes for c in self.containers)

    @property
    def usage_bytes(self) -> int:
        return sum(c.usage_bytes for c in self.containers)


@dataclass(frozen=True, slots=True)
class NodeUsage:
    name: str
    start_time: datetime
    nano_cores: int
    core_nano_seconds: int  # cumulative: must never go backwards, even when pods go away
    working_set_bytes: int
    usage_bytes: int


def node_usage(
    name: str, *, start_time: datetime, pods: Sequence[PodUsage], retired_core_nano_seconds: int = 0
) -> NodeUsage:
    """The node as the sum of its pods, plus the CPU time of pods already gone."""
    return NodeUsage(
        name=name,
        start_time=start_time,
        nano_cores=sum(p.nano_cores for p in pods),
        core_nano_seconds=retired_core_nano_seconds + sum(p.core_nano_seconds for p in pods),
        working_set_bytes=sum(p.working_set_bytes for p in pods),
        usage_bytes=sum(p.usage_bytes for p in pods),
    )


def summary(node: NodeUsage, pods: Sequence[PodUsage], *, now: datetime) -> dict[str, Any]:
    """A kubelet stats/v1alpha1 Summary as JSON-compatible data."""
    stamp = format_time(now)
    pod_entries = []
    for usage in pods:
        containers = [
            {
                "name": c.name,
                "startTime": format_time(c.start_time),
                "cpu": _cpu(stamp, c.nano_cores, c.core_nano_seconds),
                "memory": _memory(stamp, c.usage_bytes, c.working_set_bytes),
            }
            for c in usage.containers
        ]
        pod_entries.append(
            {
                "podRef": {"name": usage.ref.name, "namespace": usage.ref.namespace, "uid": usage.ref.uid},
                "startTime": format_time(usage.start_time),
                "containers": containers,
                "cpu": _cpu(stamp, usage.nano_cores, usage.core_nano_seconds),
                "memory": _memory(stamp, usage.usage_bytes, usage.working_set_bytes),
            }
        )
    return {
        "node": {
            "nodeName": node.name,
            "startTime": format_time(node.start_time),
            "cpu": _cpu(stamp, node.nano_cores, node.core_nano_seconds),
            "memory": _memory(stamp, node.usage_bytes, node.working_set_bytes),
        },
        "pods": pod_entries,
    }


def resource_metrics(node: NodeUsage, pods: Sequence[PodUsage], *, now: datetime) -> list[MetricFamily]:
    """The kubelet's /metrics/resource families, with its metric and label names."""
    timestamp_ms = int(now.timestamp() * 1000)

    def sample(labels: Mapping[str, str], value: float) -> MetricSample:
        return MetricSample(labels=dict(labels), value=value, timestamp_ms=timestamp_ms)

    pod_cpu, pod_memory = [], []
    container_cpu, container_memory, container_start = [], [], []
    for usage in pods:
        pod_labels = {"namespace": usage.ref.namespace, "pod": usage.ref.name}
        pod_cpu.append(sample(pod_labels, usage.core_nano_seconds / 1e9))
        pod_memory.append(sample(pod_labels, float(usage.working_set_bytes)))
        for c in usage.containers:
            labels = {"container": c.name, **pod_labels}
            container_cpu.append(sample(labels, c.core_nano_seconds / 1e9))
            container_memory.append(sample(labels, float(c.working_set_bytes)))
            container_start.append(sample(labels, c.start_time.timestamp()))
    return [
        MetricFamily(
            "node_cpu_usage_seconds_total",
            "Cumulative cpu time consumed by the node in core-seconds",
            "counter",
            (sample({}, node.core_nano_seconds / 1e9),),
        ),
        MetricFamily(
            "node_memory_working_set_bytes",
            "Current working set of the node in bytes",
            "gauge",
            (sample({}, float(node.working_set_bytes)),),
        ),
        MetricFamily(
            "pod_cpu_usage_seconds_total",
            "Cumulative cpu time consumed by the pod in core-seconds",
            "counter",
            tuple(pod_cpu),
        ),
        MetricFamily(
            "pod_memory_working_set_bytes",
            "Current working set of the pod in bytes",
            "gauge",
            tuple(pod_memory),
        ),
        MetricFamily(
            "container_cpu_usage_seconds_total",
            "Cumulative cpu time consumed by the container in core-seconds",
            "counter",
            tuple(container_cpu),
        ),
        MetricFamily(
            "container_memory_working_set_bytes",
            "Current working set of the container in bytes",
            "gauge",
            tuple(container_memory),
        ),
        MetricFamily(
            "container_start_time_seconds",
            "Start time of the container since unix epoch in seconds",
            "gauge",
            tuple(container_start),
        ),
        MetricFamily(
            "scrape_error",
            "1 if there was an error while getting container metrics, 0 otherwise",
            "gauge",
            (MetricSample(labels={}, value=0.0),),
        ),
    ]


def _cpu(stamp: str, nano_cores: int, core_nano_seconds: int) -> dict[str, Any]:
    return {"time": stamp, "usageNanoCores": nano_cores, "usageCoreNanoSeconds": core_nano_seconds}


def _memory(stamp: str, usage_bytes: int, working_set_bytes: int) -> dict[str, Any]:
    return {"time": stamp, "usageBytes": usage_bytes, "workingSetBytes": working_set_bytes}
