"""Leases, coordination.k8s.io/v1 (implements ``LeaseGateway``): the node leases of
``kube-node-lease``, and with ``namespace=`` the leader-election lock of ``--leader-elect``.

``renewTime`` is a MicroTime: the server wants microseconds, ``2024-05-01T10:00:00.123456Z``.
Updates are JSON merge patches that carry ``metadata.resourceVersion``: the server applies them
only if the lease is still at that version (409 otherwise, reported as Conflict), and fields
this gateway does not manage (labels, ``acquireTime``, ...) are left alone, which a PUT of our
partial view would not do.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from vkubelet.adapters.kubernetes.client import MERGE_PATCH, KubeClient
from vkubelet.application.ports.cluster import Lease
from vkubelet.domain.errors import InvalidInput
from vkubelet.domain.pod import parse_time

NODE_LEASE_NAMESPACE = "kube-node-lease"


def format_micro_time(value: datetime) -> str:
    """A Kubernetes MicroTime; naive datetimes are taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class KubernetesLeaseGateway:
    """``LeaseGateway`` over the coordination.k8s.io/v1 Leases of one namespace."""

    def __init__(self, client: KubeClient, *, namespace: str = NODE_LEASE_NAMESPACE) -> None:
        self._client = client
        self._namespace = namespace
        self._base = f"/apis/coordination.k8s.io/v1/namespaces/{quote(namespace, safe='')}/leases"

    def _what(self, name: str) -> str:
        return f"lease {self._namespace}/{name}"

    async def get_lease(self, name: str) -> Lease:
        manifest = await self._client.request(
            "GET", f"{self._base}/{quote(name, safe='')}", what=self._what(name)
        )
        return lease_from_manifest(manifest)

    async def create_lease(self, lease: Lease) -> Lease:
        body: dict[str, Any] = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": lease.name, "namespace": self._namespace},
            "spec": _spec(lease),
        }
        if lease.owner_node_uid:
            body["metadata"]["ownerReferences"] = [_owner_reference(lease)]
        manifest = await self._client.request("POST", self._base, what=self._what(lease.name), body=body)
        return lease_from_manifest(manifest)

    async def update_lease(self, lease: Lease) -> Lease:
        metadata: dict[str, Any] = {}
        if lease.resource_version:
            metadata["resourceVersion"] = lease.resource_version
        if lease.owner_node_uid:
            metadata["ownerReferences"] = [_owner_reference(lease)]
        body: dict[str, Any] = {"spec": _spec(lease)}
        if metadata:
            body["metadata"] = metadata
        manifest = await self._client.request(
            "PATCH",
            f"{self._base}/{quote(lease.name, safe='')}",
            what=self._what(lease.name),
            body=body,
            content_type=MERGE_PATCH,
        )
        return lease_from_manifest(manifest)


def _spec(lease: Lease) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "holderIdentity": lease.holder_identity,
        "leaseDurationSeconds": int(lease.duration_seconds),
        "renewTime": format_micro_time(lease.renew_time),
    }
    if lease.acquire_time is not None:
        spec["acquireTime"] = format_micro_time(lease.acquire_time)
    if lease.transitions is not None:
        spec["leaseTransitions"] = int(lease.transitions)
    return spec


def _owner_reference(lease: Lease) -> dict[str, Any]:
    # The node owns its lease: deleting the node garbage-collects the lease (as the kubelet does).
    return {"apiVersion": "v1", "kind": "Node", "name": lease.name, "uid": lease.owner_node_uid}


def lease_from_manifest(manifest: dict[str, Any]) -> Lease:
    meta = manifest.get("metadata") or {}
    spec = manifest.get("spec") or {}
    renew_time = parse_time(spec.get("renewTime"))
    if renew_time is None:
        renew_time = datetime.fromtimestamp(0, UTC)
    elif renew_time.tzinfo is None:
        renew_time = renew_time.replace(tzinfo=UTC)
    name = meta.get("name")
    if not name:
        raise InvalidInput("lease has no metadata.name")
    owner_uid = ""
    for ref in meta.get("ownerReferences") or ():
        if ref.get("kind") == "Node" and ref.get("name") == name:
            owner_uid = str(ref.get("uid") or "")
            break
    acquire_time = parse_time(spec.get("acquireTime"))
    if acquire_time is not None and acquire_time.tzinfo is None:
        acquire_time = acquire_time.replace(tzinfo=UTC)
    transitions = spec.get("leaseTransitions")
    return Lease(
        name=str(name),
        holder_identity=str(spec.get("holderIdentity") or ""),
        duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
        renew_time=renew_time,
        owner_node_uid=owner_uid,
        resource_version=str(meta.get("resourceVersion") or ""),
        acquire_time=acquire_time,
        transitions=int(transitions) if transitions is not None else None,
    )
