"""The kubelet HTTP API's read-only use cases: pod lists, the stats summary, resource metrics.

The HTTP adapter (``vkubelet.adapters.kubeletapi.server``) owns routing, encoding and the mapping
of domain errors to status codes; this module decides *what* each route answers. A route whose
provider capability is absent raises :class:`NotSupported` (501 on the wire) rather than
returning an empty success, which is what upstream's mock did for exec and logs (its bug 20).

Returned mappings are fresh JSON-compatible objects meant to be serialised at once; their
leaves may be shared with the pods they were built from, so callers must not mutate them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from vkubelet.application.ports.provider import Provider
from vkubelet.domain.errors import NotSupported
from vkubelet.domain.pod import Pod
from vkubelet.domain.provider import Capability, MetricFamily


def pod_list(pods: Sequence[Pod]) -> dict[str, Any]:
    """A v1 PodList of ``pods``, ordered by namespace, name and UID for stable output."""
    ordered = sorted(pods, key=lambda pod: (pod.ref.namespace, pod.ref.name, pod.ref.uid))
    return {
        "apiVersion": "v1",
        "kind": "PodList",
        "metadata": {},
        "items": [dict(pod.manifest) for pod in ordered],
    }


class KubeletApi:
    """What the kubelet API's read-only routes answer, for one node."""

    def __init__(
        self,
        *,
        provider: Provider,
        node_pods: Callable[[], Sequence[Pod]],
        node_name: str,
    ) -> None:
        """``node_pods`` returns the pod controller's current view of the API pods bound to
        this node; it is called once per request and must not block."""
        self._provider = provider
        self._node_pods = node_pods
        self._node_name = node_name

    @property
    def node_name(self) -> str:
        return self._node_name

    async def pods(self) -> Mapping[str, Any]:
        """``GET /pods``: the API server's pods bound to this node, as a v1 PodList."""
        return pod_list(self._node_pods())

    async def running_pods(self) -> Mapping[str, Any]:
        """``GET /runningpods/``: the pods the provider runs, as a v1 PodList."""
        return pod_list(await self._provider.list_pods())

    async def stats_summary(self) -> Mapping[str, Any]:
        """``GET /stats/summary``: the provider's kubelet Summary, its ``node.nodeName`` filled
        in when the provider left it out."""
        self._require(Capability.STATS_SUMMARY, "the stats summary (/stats/summary)")
        summary = dict(await self._provider.stats_summary())
        node = dict(summary.get("node") or {})
        if not node.get("nodeName"):
            node["nodeName"] = self._node_name
        summary["node"] = node
        summary.setdefault("pods", [])
        return summary

    async def metrics_resource(self) -> Sequence[MetricFamily]:
        """``GET /metrics/resource``: node, pod and container usage as metric families."""
        self._require(Capability.METRICS_RESOURCE, "resource metrics (/metrics/resource)")
        return list(await self._provider.metrics_resource())

    def _require(self, capability: Capability, what: str) -> None:
        if capability not in self._provider.capabilities():
            raise NotSupported(
                f"the provider of node {self._node_name!r} does not support {what}: "
                f"it lacks the {capability.value!r} capability"
            )
