"""Pods as the domain sees them.

A pod crosses every boundary as its Kubernetes v1 JSON object (the API server's own format and
the provider protocol's wire format), so the domain keeps that mapping as the source of truth and
reads the few fields it decides on through typed accessors. Manifests are treated as immutable:
every change produces a new mapping (see :func:`with_status`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from vkubelet.domain.errors import InvalidInput

Manifest = Mapping[str, Any]


class PodPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    UNKNOWN = "Unknown"

    @property
    def is_terminal(self) -> bool:
        return self in (PodPhase.SUCCEEDED, PodPhase.FAILED)


@dataclass(frozen=True, slots=True)
class PodRef:
    """Identity of one pod incarnation: the UID tells a recreated pod of the same name apart."""

    namespace: str
    name: str
    uid: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name} ({self.uid})"


def parse_time(value: object) -> datetime | None:
    """Parse a Kubernetes RFC 3339 timestamp (``2024-01-02T03:04:05Z``); None when absent."""
    if not value:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"timestamp {value!r} is not a string")
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidInput(f"timestamp {value!r} is not RFC 3339") from exc


def format_time(value: datetime) -> str:
    """Format a UTC datetime the way the API server does (second precision, ``Z``)."""
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Pod:
    """A Kubernetes v1 Pod: its identity plus the full manifest."""

    ref: PodRef
    manifest: Manifest

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> Pod:
        """Wrap a decoded v1 Pod; raises InvalidInput naming the first missing identity field."""
        if not isinstance(manifest, Mapping):
            raise InvalidInput(f"pod must be a JSON object, got {type(manifest).__name__}")
        meta = manifest.get("metadata")
        if not isinstance(meta, Mapping):
            raise InvalidInput("pod has no metadata object")
        fields = {}
        for key in ("namespace", "name", "uid"):
            value = meta.get(key)
            if not isinstance(value, str) or not value:
                raise InvalidInput(f"pod metadata.{key} is missing or empty (got {value!r})")
            fields[key] = value
        return cls(PodRef(**fields), manifest)

    # -- metadata -------------------------------------------------------------------------
    @property
    def metadata(self) -> Manifest:
        meta: Manifest = self.manifest.get("metadata") or {}
        return meta

    @property
    def resource_version(self) -> str:
        return str(self.metadata.get("resourceVersion") or "")

    @property
    def labels(self) -> Mapping[str, str]:
        labels: Mapping[str, str] = self.metadata.get("labels") or {}
        return labels

    @property
    def annotations(self) -> Mapping[str, str]:
        annotations: Mapping[str, str] = self.metadata.get("annotations") or {}
        return annotations

    @property
    def deletion_timestamp(self) -> datetime | None:
        return parse_time(self.metadata.get("deletionTimestamp"))

    @property
    def deletion_grace_period_seconds(self) -> int | None:
        value = self.metadata.get("deletionGracePeriodSeconds")
        return int(value) if value is not None else None

    @property
    def creation_timestamp(self) -> datetime | None:
        return parse_time(self.metadata.get("creationTimestamp"))

    # -- spec -----------------------------------------------------------------------------
    @property
    def spec(self) -> Manifest:
        spec: Manifest = self.manifest.get("spec") or {}
        return spec

    @property
    def node_name(self) -> str:
        return str(self.spec.get("nodeName") or "")

    @property
    def restart_policy(self) -> str:
        return str(self.spec.get("restartPolicy") or "Always")

    @property
    def containers(self) -> Sequence[Manifest]:
        containers: Sequence[Manifest] = self.spec.get("containers") or ()
        return containers

    # -- status ---------------------------------------------------------------------------
    @property
    def status(self) -> Manifest:
        status: Manifest = self.manifest.get("status") or {}
        return status

    @property
    def phase(self) -> PodPhase:
        raw = self.status.get("phase") or "Pending"
        try:
            return PodPhase(raw)
        except ValueError:
            return PodPhase.UNKNOWN

    @property
    def is_terminal(self) -> bool:
        return self.phase.is_terminal


def with_status(pod: Pod, status: Manifest) -> Pod:
    """A copy of ``pod`` whose status is ``status`` (the original is left untouched)."""
    manifest = dict(pod.manifest)
    manifest["status"] = copy.deepcopy(dict(status))
    return Pod(pod.ref, manifest)


def sharing_unchanged(pod: Pod, previous: Pod | None) -> Pod:
    """``pod``, holding ``previous``'s spec object in place of an equal spec of its own.

    The API server sends the whole pod with every change, yet a pod's spec seldom changes after
    its creation (status patches, labels): an equal spec is then kept once, not once per copy
    (the API's latest and the one the provider was given). ``pod`` itself is left untouched.
    """
    if previous is None or previous.ref != pod.ref:
        return pod
    spec, old = pod.manifest.get("spec"), previous.manifest.get("spec")
    if spec is old or spec != old:
        return pod
    manifest = dict(pod.manifest)
    manifest["spec"] = old
    return Pod(pod.ref, manifest)
