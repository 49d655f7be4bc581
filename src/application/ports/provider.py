"""Provider-side ports: what a provider implements, in process or behind gRPC.

A provider is one object; which of these Protocols it honours beyond ``PodLifecycle`` is told
by ``Provider.capabilities()``. Every method may raise the domain errors of
``vkubelet.domain.errors``; anything else is treated as Transient.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from vkubelet.application.ports.streams import ContainerStreams
from vkubelet.domain.pod import Pod, PodRef
from vkubelet.domain.provider import Capability, MetricFamily, NodeTemplate
from vkubelet.domain.volumes import PodVolumes


class RunningPods(Protocol):
    """The pods a provider runs."""

    async def list_pods(self) -> Sequence[Pod]:
        """Every pod the provider runs for this node."""


class PodLifecycle(RunningPods, Protocol):
    """Runs pods. Keyed by pod UID, never by namespace/name alone.

    The pod handed in has its environment already resolved. It is immutable and may share
    structure with the controller's own pods: the provider must not mutate it and may keep it
    without copying (the controller never changes it afterwards either).
    """

    async def create_pod(self, pod: Pod) -> None:
        """Start ``pod``. Creating a UID that already exists must not start it twice."""

    async def update_pod(self, pod: Pod) -> None:
        """Apply a changed spec (containers, activeDeadlineSeconds, tolerations, labels, ...)."""

    async def delete_pod(self, pod: Pod) -> None:
        """Stop ``pod`` and forget it. Idempotent: may be called several times.

        Raises NotFound when the provider has no such pod, which callers count as success.
        After deleting, a provider with a status stream reports a terminal status for it.
        """

    async def get_pod(self, ref: PodRef) -> Pod:
        """The provider's copy of the pod, status included. Raises NotFound if it has none."""

    async def get_pod_status(self, ref: PodRef) -> Mapping[str, Any]:
        """The pod's current v1 PodStatus. Raises NotFound if the provider lost the pod."""


class PodVolumeSink(Protocol):
    """Takes the contents of pods' volumes (capability VOLUMES), which a provider cannot read
    from the API server itself; providers without it are never called and get no volumes."""

    async def set_pod_volumes(self, ref: PodRef, volumes: PodVolumes) -> None:
        """The whole current contents of the volumes of pod ``ref``, keyed by its UID.

        Called before ``create_pod`` of a new pod (keep them until the create arrives) and again
        whenever they change: a referenced ConfigMap or Secret was edited, a token refreshed.
        Running containers should see the new files swapped in atomically. Idempotent.
        """


class ContainerControl(Protocol):
    """Stops one container of a running pod (capability KILL_CONTAINER), as the kubelet does when
    a liveness or startup probe fails or a postStart hook fails."""

    async def kill_container(self, ref: PodRef, container: str, *, grace_period_seconds: int) -> None:
        """Stop ``container``'s process: SIGTERM (or the provider's equivalent), then a hard
        kill after ``grace_period_seconds``. Returns once the stop was initiated. The container
        then counts as exited (exit code 137 or 143, reason ``Error``) and the pod's
        ``restartPolicy`` applies exactly as for any other exit: restartCount increases and
        back-off (``CrashLoopBackOff``) as usual. NotFound: no such pod or container.
        """


class PodStatusSource(Protocol):
    """Pushes status changes (capability POD_STATUS_STREAM); providers without it are polled."""

    def pod_status_updates(self) -> AsyncIterator[Pod]:
        """Yield the provider's pod (with its new status) each time a status changes.

        The iterator ends or raises Transient when the source breaks; the caller reconnects.
        """
        ...


class NodeHealth(Protocol):
    """The provider's side of node liveness."""

    async def ping(self) -> None:
        """Return when the provider is healthy; raise (any error) when it is not. Cheap."""

    async def node_template(self) -> NodeTemplate:
        """Capacity, labels, taints, addresses, OS/arch of the node this provider backs."""


class NodeStatusSource(Protocol):
    """Pushes node changes (capability NODE_STATUS_STREAM); providers without it are not asked,
    and their node keeps the template read at registration."""

    def node_status_updates(self) -> AsyncIterator[NodeTemplate]:
        """Yield the provider's **whole** node template each time it changes: capacity,
        allocatable, conditions, addresses, labels and taints together, never a delta (a key or
        condition left out is not removed from the Node, see :mod:`vkubelet.domain.node`).

        The stream may start with the current template; it need not replay changes made while
        nobody listened: whenever the caller subscribes (at startup, after every break) it also
        reads :meth:`NodeHealth.node_template`. The iterator ends or raises Transient when the
        source breaks; the caller reconnects with backoff. A provider whose template never
        changes may send it once and keep the stream open.
        """
        ...


class Capabilities(Protocol):
    """Which optional parts of the contract a provider implements."""

    def capabilities(self) -> frozenset[Capability]:
        """The optional parts this provider implements.

        Constant while the connection to the provider lasts; they may change only when a
        :class:`ProviderConnection` comes back (a new provider version behind the same
        address). The kubelet API and the node controller read them at each use; the pod
        controller reads them once, at start (status stream or polling, probes, kill), so
        such a change reaches it only with a vkubelet restart (the gRPC client warns).
        """
        ...

    def native_volume_kinds(self) -> frozenset[str]:
        """The volume kinds this provider handles itself from the pod spec it gets, e.g. a cloud
        provider mapping ``persistentVolumeClaim``, ``csi``, ``hostPath`` or ``nfs`` to its own
        storage. Names are v1.Volume source fields (API field names, e.g. "persistentVolumeClaim",
        see :data:`vkubelet.domain.volumes.VOLUME_SOURCE_KINDS`). Constant for its lifetime.

        vkubelet neither resolves these volumes nor warns about them; any other kind it cannot
        resolve (or, without VOLUMES, any other volume at all) gets an UnsupportedVolume event.
        Empty for a provider that mounts only what vkubelet resolves.
        """
        ...


class ProviderConnection(Protocol):
    """The link to a provider that runs elsewhere (the gRPC provider). An in-process provider
    has no link to wait for or lose: it is wired with ``AlwaysConnected``."""

    async def connect(self) -> None:
        """Return once the provider has answered; raise Transient while it cannot be reached
        yet (the caller retries with back-off)."""
        ...

    def add_reconnect_hook(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run ``hook`` each time the link comes back after a break: the provider may have lost
        or kept pods meanwhile, and status changes made while away were never reported."""
        ...


class NodeProvider(NodeHealth, NodeStatusSource, Capabilities, Protocol):
    """What the node controller asks of a provider: liveness, the template and, only with
    NODE_STATUS_STREAM, the template's changes."""


class Stats(Protocol):
    """Resource usage (capabilities STATS_SUMMARY and METRICS_RESOURCE)."""

    async def stats_summary(self) -> Mapping[str, Any]:
        """The kubelet stats/v1alpha1 Summary as JSON-compatible data."""

    async def metrics_resource(self) -> Sequence[MetricFamily]:
        """Node, pod and container CPU/memory usage with kubelet metric and label names."""


class KubeletApiProvider(RunningPods, Stats, ContainerStreams, Capabilities, Protocol):
    """What the kubelet API reads from a provider: its pods, their usage, the container streams."""


class Provider(
    PodLifecycle,
    PodVolumeSink,
    ContainerControl,
    PodStatusSource,
    NodeProvider,
    Stats,
    ContainerStreams,
    Protocol,
):
    """Everything vkubelet asks of a provider. Optional parts are listed by ``capabilities``;
    vkubelet never calls a method whose capability is absent (such methods raise NotSupported)."""

    async def close(self) -> None:
        """Release resources at shutdown. Pods keep running."""
