"""Cluster-side ports: the Kubernetes API as the application needs it.

Gateways are bound to one node at construction. Objects cross as v1 JSON mappings (or domain
wrappers of them); client-library types never leave the adapter. Failures are domain errors:
NotFound (404), Conflict (409 or a failed precondition), Expired (410), InvalidInput (400/422),
Transient (everything retryable: 429, 5xx, network).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from vkubelet.domain.env import EnvEventType, ServiceInfo
from vkubelet.domain.pod import Pod, PodRef

# Defined in the domain (the env rules emit events too) and re-exported for the ports' users.
EventType = EnvEventType
__all__ = ["EventType", "ServiceInfo"]


class WatchEventType(StrEnum):
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"


@dataclass(frozen=True, slots=True)
class PodEvent:
    type: WatchEventType
    pod: Pod


class PodGateway(Protocol):
    """The pods bound to this node (``spec.nodeName=<node>``)."""

    async def list_node_pods(self) -> tuple[Sequence[Pod], str]:
        """All pods bound to the node, and the list's resourceVersion to watch from."""
        ...

    def watch_node_pods(self, resource_version: str) -> AsyncIterator[PodEvent]:
        """Changes after ``resource_version``. Raises Expired when it is too old (410).

        The iterator may end when the server closes the watch; the caller resumes from the last
        resourceVersion it saw.
        """
        ...

    async def get_pod(self, namespace: str, name: str) -> Pod:
        """A fresh read of one pod. Raises NotFound."""
        ...

    async def patch_pod_status(self, ref: PodRef, status: Mapping[str, Any]) -> Pod:
        """Merge ``status`` into the pod's status subresource (conditions by type, container
        statuses by name). Never writes metadata or spec. Raises NotFound, or Conflict when the
        pod with that name now has another UID.
        """
        ...

    async def delete_pod(self, ref: PodRef, *, grace_period_seconds: int) -> None:
        """Delete with a UID precondition, so a recreated pod of the same name survives.

        Raises NotFound (already gone) or Conflict (the name now belongs to another UID).
        """
        ...


class NodeGateway(Protocol):
    """The Node object. Manifests are v1 Node JSON."""

    async def get_node(self, name: str) -> Mapping[str, Any]:
        """Raises NotFound."""
        ...

    async def create_node(self, node: Mapping[str, Any]) -> Mapping[str, Any]:
        """Create the node (status included). Raises Conflict if it already exists."""
        ...

    async def patch_node(self, name: str, patch: Mapping[str, Any]) -> Mapping[str, Any]:
        """Strategic-merge-patch metadata/spec. Raises NotFound."""
        ...

    async def patch_node_status(self, name: str, patch: Mapping[str, Any]) -> Mapping[str, Any]:
        """Strategic-merge-patch the status subresource (conditions merged by type, so
        conditions other actors own survive). Raises NotFound when the node is gone.
        """
        ...


@dataclass(frozen=True, slots=True)
class Lease:
    """A coordination.k8s.io/v1 Lease: the node's heartbeat in kube-node-lease (named after the
    node, owned by it), or the leader-election lock of ``--leader-elect``.

    ``acquire_time`` and ``transitions`` (acquireTime, leaseTransitions) are written only when
    set, so the node lease leaves them alone."""

    name: str
    holder_identity: str
    duration_seconds: int
    renew_time: datetime
    owner_node_uid: str = ""
    resource_version: str = ""
    acquire_time: datetime | None = None
    transitions: int | None = None


class LeaseGateway(Protocol):
    """Leases of one namespace, chosen when the gateway is built (kube-node-lease for the node
    lease, the election namespace for the leader lease)."""

    async def get_lease(self, name: str) -> Lease:
        """Raises NotFound."""
        ...

    async def create_lease(self, lease: Lease) -> Lease:
        """Raises Conflict if it exists."""
        ...

    async def update_lease(self, lease: Lease) -> Lease:
        """Optimistic update: raises Conflict when ``lease.resource_version`` is stale."""
        ...


class ConfigSource(Protocol):
    """ConfigMaps, Secrets and Services for environment and volume resolution (read-only).

    Answers may come from a cache, so one can be a few seconds older than the object on the API
    server. ``fresh=True`` asks for an answer read from the API server after the call began
    (neither a cached answer nor one of a request already in flight); it also serves as the
    cached answer for later readers. The kubelet reads a pod's objects afresh like this when it
    first sees the pod, so a pod created just after its configmap was changed gets the new data.
    Services have no ``fresh``: the kubelet's service env comes from an informer, which lags too.
    """

    async def get_config_map(self, namespace: str, name: str, *, fresh: bool = False) -> Mapping[str, str]:
        """The configmap's ``data`` (what env reads; ``binaryData`` is not part of it, as in the
        kubelet). Raises NotFound."""
        ...

    async def get_config_map_files(
        self, namespace: str, name: str, *, fresh: bool = False
    ) -> Mapping[str, bytes]:
        """The configmap as a volume sees it: ``data`` encoded as UTF-8 plus ``binaryData``
        base64-decoded, in one key space (the API server keeps the two sets of keys disjoint).
        Raises NotFound, or InvalidInput naming the configmap and the key when a ``binaryData``
        value is not valid base64."""
        ...

    async def get_secret(self, namespace: str, name: str, *, fresh: bool = False) -> Mapping[str, bytes]:
        """The secret's decoded ``data``. Raises NotFound."""
        ...

    async def list_services(self, namespace: str) -> Sequence[ServiceInfo]:
        """Services of ``namespace`` that have a cluster IP."""
        ...


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    expires_at: datetime


class TokenIssuer(Protocol):
    """Service-account tokens for pods' projected volumes (the TokenRequest API)."""

    async def request_token(
        self, pod: PodRef, *, service_account: str, audiences: Sequence[str], expiration_seconds: int
    ) -> IssuedToken:
        """A token of ``service_account`` (in the pod's namespace) bound to the pod object and
        its UID, so it stops authenticating once the pod is deleted. ``audiences`` empty: the
        API server's own. The server may shorten ``expiration_seconds``; ``expires_at`` is what
        it granted. Raises NotFound when the ServiceAccount or the pod does not exist."""
        ...


@dataclass(frozen=True, slots=True)
class ObjectRef:
    kind: str
    namespace: str
    name: str
    uid: str
    api_version: str = "v1"

    @classmethod
    def for_pod(cls, ref: PodRef) -> ObjectRef:
        return cls("Pod", ref.namespace, ref.name, ref.uid)


class EventRecorder(Protocol):
    """Kubernetes Events. Best effort: never raises, never blocks the caller for long."""

    def record(self, obj: ObjectRef, *, type: EventType, reason: str, message: str) -> None: ...
