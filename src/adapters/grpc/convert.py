"""Domain values <-> protocol messages, shared by the client and the server.

Decoding never trusts the peer: malformed JSON, a pod without identity, a wrong JSON type
all raise InvalidInput naming the call, so a misbehaving peer cannot crash the caller.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from vkubelet.adapters.grpc._generated import provider_pb2 as pb
from vkubelet.application.ports.streams import LogOptions
from vkubelet.domain.errors import InvalidInput
from vkubelet.domain.pod import Pod, PodRef
from vkubelet.domain.provider import (
    Capability,
    MetricFamily,
    MetricSample,
    NodeAddress,
    NodeCondition,
    NodeTemplate,
    Taint,
)
from vkubelet.domain.volumes import EmptyDirVolume, FileVolume, PodVolumes, VolumeFile

PROTOCOL_REVISION = 3  # the revision of provider.proto this package implements (its header)

_CAPABILITY_TO_PROTO: dict[Capability, int] = {
    Capability.POD_STATUS_STREAM: pb.CAPABILITY_POD_STATUS_STREAM,
    Capability.NODE_STATUS_STREAM: pb.CAPABILITY_NODE_STATUS_STREAM,
    Capability.LOGS: pb.CAPABILITY_LOGS,
    Capability.EXEC: pb.CAPABILITY_EXEC,
    Capability.ATTACH: pb.CAPABILITY_ATTACH,
    Capability.PORT_FORWARD: pb.CAPABILITY_PORT_FORWARD,
    Capability.STATS_SUMMARY: pb.CAPABILITY_STATS_SUMMARY,
    Capability.METRICS_RESOURCE: pb.CAPABILITY_METRICS_RESOURCE,
    Capability.VOLUMES: pb.CAPABILITY_VOLUMES,
    Capability.KILL_CONTAINER: pb.CAPABILITY_KILL_CONTAINER,
    Capability.PROBES: pb.CAPABILITY_PROBES,
}
_CAPABILITY_FROM_PROTO = {number: capability for capability, number in _CAPABILITY_TO_PROTO.items()}


# -- JSON ---------------------------------------------------------------------------------------
def encode_json(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def decode_object(data: bytes, *, call: str, what: str) -> dict[str, Any]:
    """A JSON object from the peer; InvalidInput naming ``call`` when it is anything else."""
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{call}: {what} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidInput(f"{call}: {what} must be a JSON object, got {type(value).__name__}")
    return value


def decode_pod(data: bytes, *, call: str) -> Pod:
    manifest = decode_object(data, call=call, what="pod")
    try:
        return Pod.from_manifest(manifest)
    except InvalidInput as exc:
        raise InvalidInput(f"{call}: {exc}") from exc


# -- identity -----------------------------------------------------------------------------------
def ref_to_proto(ref: PodRef) -> pb.PodRef:
    return pb.PodRef(namespace=ref.namespace, name=ref.name, uid=ref.uid)


def ref_from_proto(message: pb.PodRef, *, call: str) -> PodRef:
    if not message.uid:
        raise InvalidInput(f"{call}: the pod reference has no uid")
    return PodRef(namespace=message.namespace, name=message.name, uid=message.uid)


# -- volumes ------------------------------------------------------------------------------------
def volumes_to_proto(volumes: PodVolumes) -> pb.PodVolumes:
    return pb.PodVolumes(
        files=[
            pb.FileVolume(
                name=volume.name,
                kind=volume.kind,
                files=[pb.VolumeFile(path=f.path, data=f.data, mode=f.mode) for f in volume.files],
            )
            for volume in volumes.files
        ],
        empty_dirs=[
            pb.EmptyDirVolume(name=e.name, medium=e.medium, size_limit=e.size_limit or "")
            for e in volumes.empty_dirs
        ],
        image_pull_secret=volumes.image_pull_secret,
    )


def volumes_from_proto(message: pb.PodVolumes, *, call: str) -> PodVolumes:
    """Decode, refusing paths that would leave the volume (the provider writes them to disk)."""
    files = []
    for volume in message.files:
        where = f"{call}: volume {volume.name!r}"
        for file in volume.files:
            if not file.path or file.path.startswith("/") or ".." in file.path.split("/"):
                raise InvalidInput(f"{where}: file path {file.path!r} leaves the volume")
            if file.mode > 0o7777:
                raise InvalidInput(f"{where}: file {file.path!r} has mode {file.mode:o}")
        files.append(
            FileVolume(
                name=volume.name,
                kind=volume.kind,
                files=tuple(VolumeFile(path=f.path, data=f.data, mode=f.mode) for f in volume.files),
            )
        )
    empty_dirs = tuple(
        EmptyDirVolume(name=e.name, medium=e.medium, size_limit=e.size_limit or None)
        for e in message.empty_dirs
    )
    return PodVolumes(files=tuple(files), empty_dirs=empty_dirs, image_pull_secret=message.image_pull_secret)


# -- Describe -----------------------------------------------------------------------------------
def capabilities_to_proto(capabilities: Iterable[Capability]) -> list[Any]:
    return sorted(_CAPABILITY_TO_PROTO[c] for c in capabilities)


def capabilities_from_proto(values: Iterable[int]) -> frozenset[Capability]:
    # Values from a newer protocol revision are not ours to use: ignored, as the .proto says.
    return frozenset(_CAPABILITY_FROM_PROTO[v] for v in values if v in _CAPABILITY_FROM_PROTO)


def native_volume_kinds_to_proto(kinds: Iterable[str]) -> list[str]:
    return sorted(kinds)


def native_volume_kinds_from_proto(values: Iterable[str]) -> frozenset[str]:
    # Kept as sent: a name that is no volume kind matches no volume (the conformance kit flags it).
    return frozenset(values)


def template_to_proto(template: NodeTemplate) -> pb.NodeTemplate:
    return pb.NodeTemplate(
        capacity=dict(template.capacity),
        allocatable=dict(template.allocatable or {}),
        labels=dict(template.labels),
        annotations=dict(template.annotations),
        taints=[pb.Taint(key=t.key, value=t.value, effect=t.effect) for t in template.taints],
        addresses=[pb.NodeAddress(type=a.type, address=a.address) for a in template.addresses],
        conditions=[
            pb.NodeCondition(type=c.type, status=c.status, reason=c.reason, message=c.message)
            for c in template.conditions
        ],
        operating_system=template.operating_system,
        architecture=template.architecture,
        provider_id=template.provider_id,
    )


def template_from_proto(message: pb.NodeTemplate) -> NodeTemplate:
    return NodeTemplate(
        capacity=dict(message.capacity),
        allocatable=dict(message.allocatable) or None,
        labels=dict(message.labels),
        annotations=dict(message.annotations),
        taints=tuple(Taint(key=t.key, value=t.value, effect=t.effect) for t in message.taints),
        addresses=tuple(NodeAddress(type=a.type, address=a.address) for a in message.addresses),
        conditions=tuple(
            NodeCondition(type=c.type, status=c.status, reason=c.reason, message=c.message)
            for c in message.conditions
        ),
        operating_system=message.operating_system or "linux",
        architecture=message.architecture or "amd64",
        provider_id=message.provider_id,
    )


# -- metrics ------------------------------------------------------------------------------------
def families_to_proto(families: Sequence[MetricFamily]) -> list[pb.MetricFamily]:
    result = []
    for family in families:
        samples = []
        for sample in family.samples:
            message = pb.MetricSample(labels=dict(sample.labels), value=sample.value)
            if sample.timestamp_ms is not None:
                message.timestamp_ms = sample.timestamp_ms
            samples.append(message)
        result.append(pb.MetricFamily(name=family.name, help=family.help, type=family.type, samples=samples))
    return result


def families_from_proto(messages: Iterable[pb.MetricFamily]) -> list[MetricFamily]:
    return [
        MetricFamily(
            name=m.name,
            help=m.help,
            type=m.type,
            samples=tuple(
                MetricSample(
                    labels=dict(s.labels),
                    value=s.value,
                    timestamp_ms=s.timestamp_ms if s.HasField("timestamp_ms") else None,
                )
                for s in m.samples
            ),
        )
        for m in messages
    ]


# -- logs ---------------------------------------------------------------------------------------
def log_request(ref: PodRef, container: str, options: LogOptions) -> pb.ContainerLogsRequest:
    request = pb.ContainerLogsRequest(
        pod=ref_to_proto(ref),
        container=container,
        follow=options.follow,
        timestamps=options.timestamps,
        previous=options.previous,
    )
    if options.tail_lines is not None:
        request.tail_lines = options.tail_lines
    if options.since_seconds is not None:
        request.since_seconds = options.since_seconds
    if options.limit_bytes is not None:
        request.limit_bytes = options.limit_bytes
    if options.since_time is not None:
        since = options.since_time if options.since_time.tzinfo else options.since_time.replace(tzinfo=UTC)
        request.since_time.FromDatetime(since.astimezone(UTC))
    return request


def log_options_from_proto(request: pb.ContainerLogsRequest) -> LogOptions:
    since_time: datetime | None = None
    if request.HasField("since_time"):
        since_time = request.since_time.ToDatetime(tzinfo=UTC)
    return LogOptions(
        follow=request.follow,
        tail_lines=request.tail_lines if request.HasField("tail_lines") else None,
        since_seconds=request.since_seconds if request.HasField("since_seconds") else None,
        since_time=since_time,
        timestamps=request.timestamps,
        limit_bytes=request.limit_bytes if request.HasField("limit_bytes") else None,
        previous=request.previous,
    )
