"""The kubelet HTTP API's read-only use cases: pod lists, the stats summary, resource metrics.

The HTTP adapter (``vkubelet.adapters.kubeletapi.server``) owns routing, encoding and the mapping
of domain errors to status codes; this module decides *what* each route answers. A route whose
provider capability is absent raises :class:`NotSupported` (501 on the wire) rather than
returning an empty success, which is what upstream's mock did for exec and logs (its bug 20).

Returned mappings are fresh JSON-compatible objects meant to be serialised at once; their
leaves may be shared with the pods they were built from, so callers must not mutate them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from vkubelet.application.ports.provider import KubeletApiProvider
from vkubelet.application.ports.streams import ByteStream, LogOptions, StreamIO
from vkubelet.domain.errors import InvalidInput, NotFound, NotSupported
from vkubelet.domain.pod import Pod, PodRef
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
        provider: KubeletApiProvider,
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

    async def container_logs(
        self, *, namespace: str, pod: str, container: str, options: LogOptions
    ) -> AsyncIterator[bytes]:
        """``GET /containerLogs/{namespace}/{pod}/{container}``: the provider's log stream.

        Raises NotSupported without the LOGS capability, NotFound for a pod this node does not
        know, InvalidInput for a container the pod does not declare. ``limit_bytes`` is enforced
        here whatever the provider does with it. Closing the returned iterator (the client went
        away) closes the provider's stream.
        """
        self._require(Capability.LOGS, "container logs (/containerLogs)")
        ref = await self._find_pod(namespace, pod, container)
        return _limited(self._provider.container_logs(ref, container, options), options.limit_bytes)

    async def _find_pod(self, namespace: str, name: str, container: str) -> PodRef:
        pods = [p for p in self._node_pods() if p.ref.namespace == namespace and p.ref.name == name]
        if not pods:  # the provider may still run a pod the API server no longer has
            pods = [
                p
                for p in await self._provider.list_pods()
                if p.ref.namespace == namespace and p.ref.name == name
            ]
        if not pods:
            raise NotFound(f"pod {namespace}/{name} not found on node {self._node_name}")
        found = pods[0]
        spec = found.manifest.get("spec") or {}
        declared = {
            str(c.get("name"))
            for key in ("containers", "initContainers", "ephemeralContainers")
            for c in spec.get(key) or ()
        }
        if declared and container not in declared:
            raise InvalidInput(
                f"container {container!r} is not valid for pod {namespace}/{name} "
                f"(containers: {', '.join(sorted(declared))})"
            )
        return found.ref

    # -- exec, attach, port-forward -------------------------------------------------------------
    # The adapter resolves the target with ``stream_target`` *before* upgrading the connection,
    # so a missing capability, pod or container still answers a plain 501/404; the session
    # methods below then hand the negotiated streams to the provider.

    def stream_target(
        self, capability: Capability, *, namespace: str, pod: str, uid: str | None, container: str | None
    ) -> PodRef:
        """The pod (and, when given, container) a streaming request addresses, among the pods
        bound to this node. Raises NotSupported when the provider lacks ``capability``, NotFound
        when no pod (with that UID) is bound here, InvalidInput for an undeclared container."""
        self._require(capability, _STREAM_WHAT.get(capability, capability.value))
        for candidate in self._node_pods():
            ref = candidate.ref
            if ref.namespace != namespace or ref.name != pod or (uid and ref.uid != uid):
                continue
            if container is not None and container not in _container_names(candidate):
                raise InvalidInput(f"container {container!r} is not valid for pod {namespace}/{pod}")
            return ref
        raise NotFound(f"pod {namespace}/{pod}{f' with UID {uid}' if uid else ''} not found on this node")

    async def exec_in_container(
        self, ref: PodRef, container: str, command: Sequence[str], io: StreamIO
    ) -> int:
        """Run ``command`` in ``container`` with the session's streams; its exit code."""
        self._require(Capability.EXEC, _STREAM_WHAT[Capability.EXEC])
        return await self._provider.exec_in_container(ref, container, list(command), io)

    async def attach_to_container(self, ref: PodRef, container: str, io: StreamIO) -> int:
        """Attach the session's streams to the container's main process; its exit code."""
        self._require(Capability.ATTACH, _STREAM_WHAT[Capability.ATTACH])
        return await self._provider.attach_to_container(ref, container, io)

    async def port_forward(self, ref: PodRef, port: int, stream: ByteStream) -> None:
        """Connect one forwarded connection to ``port`` in the pod until either side closes."""
        self._require(Capability.PORT_FORWARD, _STREAM_WHAT[Capability.PORT_FORWARD])
        await self._provider.port_forward(ref, port, stream)

    def _require(self, capability: Capability, what: str) -> None:
        if capability not in self._provider.capabilities():
            raise NotSupported(
                f"the provider of node {self._node_name!r} does not support {what}: "
                f"it lacks the {capability.value!r} capability"
            )


async def _limited(chunks: AsyncIterator[bytes], limit: int | None) -> AsyncIterator[bytes]:
    """``chunks`` cut after ``limit`` bytes (None: all); closes ``chunks`` when done or closed."""
    remaining = limit
    try:
        async for chunk in chunks:
            if remaining is not None:
                chunk = chunk[:remaining]
                remaining -= len(chunk)
            if chunk:
                yield chunk
            if remaining is not None and remaining <= 0:
                return
    finally:
        close = getattr(chunks, "aclose", None)  # async generators; a plain iterator has nothing to close
        if close is not None:
            await close()


_STREAM_WHAT = {
    Capability.EXEC: "exec (/exec)",
    Capability.ATTACH: "attach (/attach)",
    Capability.PORT_FORWARD: "port-forward (/portForward)",
}


def _container_names(pod: Pod) -> set[str]:
    spec = pod.spec
    names: set[str] = set()
    for key in ("containers", "initContainers", "ephemeralContainers"):
        for container in spec.get(key) or ():
            if isinstance(container, Mapping) and isinstance(container.get("name"), str):
                names.add(container["name"])
    return names
