"""Pod volumes resolved the way the kubelet resolves them, for providers that cannot read the API
server themselves. Pure: the application fetches what :func:`required_volume_sources` names
(ConfigMaps, Secrets, service-account tokens) and :func:`project_volumes` turns the pod's
``spec.volumes`` into file contents, with the kubelet's rules for ``items``, ``defaultMode``,
``mode`` and ``optional``.

The result crosses the provider boundary as :class:`PodVolumes`: for every file-backed volume
(configMap, secret, downwardAPI, projected) the files with their bytes and modes; for every
emptyDir its medium and size limit. Mount points are not repeated here: they are the
containers' ``volumeMounts`` in the pod manifest. Volume kinds a provider cannot be handed
(persistentVolumeClaim, csi, hostPath, ...) are reported by name and kind so the application can
warn; they are never silently dropped. What the provider declares it handles natively from the
pod spec (``native_kinds``, names of :data:`VOLUME_SOURCE_KINDS`) is neither resolved nor
warned about, and :func:`dropped_volume_events` names what a provider that takes no volume
contents at all (no VOLUMES capability) would silently lose.

Files. A configMap/secret volume without ``items`` holds every key, named after it; with
``items`` only the listed keys, at their ``path``. A configMap's keys are those of ``data``
(written as UTF-8) and of ``binaryData`` (written as they are), alike. A file's mode is its
item's ``mode``, else the volume's ``defaultMode``, else 0644. A listed key that is absent fails
the volume unless the volume is ``optional``. Within one volume a repeated path keeps the last
file (the kubelet's payload is a map); in a projected volume it is an error instead, because the
sources would silently overwrite each other. Paths are checked as the kubelet's atomic writer
checks them (relative, no ``..`` element, no leading ``..`` that could hide the writer's
``..data`` link, at most 4096 characters and 255 per element) and cleaned (``a//./b`` is
``a/b``); a path that is both a file and another file's directory is an error too. Nothing is
written outside the volume.

Missing objects. An ``optional`` configMap/secret that does not exist gives an empty volume (or
no files from that projected source), with no event, as the kubelet mounts it. A mandatory one
fails with the kubelet's FailedMount wording (``MountVolume.SetUp failed for volume "cfg" :
configmap "app-config" not found``). An object that could not be read, or was not fetched, fails
even when optional: only "not found" is tolerated. Failures caused by the cluster's state
(missing objects, keys, tokens) have reason ``FailedMount``; failures of the manifest itself
(bad path, mode or field reference) have ``InvalidVolume``. The first failing volume, in declared
order, is the failure; the application records it and retries the sync.

Downward API in volumes accepts fewer fields than env: ``metadata.name``, ``.namespace``, ``.uid``,
``metadata.labels['k']``/``metadata.annotations['k']`` (empty when absent) and the whole
``metadata.labels``/``metadata.annotations``, rendered like the kubelet: one ``key="value"`` line
per key, sorted, the value quoted as Go's ``%q`` does, no trailing newline. ``resourceFieldRef``
must name its ``containerName`` and is computed as env computes it.

Service-account tokens (``projected.sources[].serviceAccountToken``): one TokenRequest per
(audience, expirationSeconds), bound to the pod; audience "" means the API server's own
audiences; expirationSeconds defaults to 3600. The API server rejects a pod or TokenRequest
asking for less than 600 seconds or more than 2^32, so such a source is an InvalidVolume error
here rather than a value we round. The token file has the projected ``defaultMode``, except that
the kubelet writes it 0600 when the pod has an fsGroup or all its containers run as one user.

fsGroup. When ``spec.securityContext.fsGroup`` is set, the kubelet hands the volume to that group
and adds group read to every file of these read-only volumes (0600 becomes 0640, 0644 stays);
the modes here already include that. Ownership itself (the group, and the token's owner when all
containers run as one user) is left to the provider, which has the pod.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from vkubelet.domain.env import (
    SUBSCRIPTED_FIELD_PATH,
    EnvEventType,
    Found,
    Lookup,
    Missing,
    ReadFailed,
    resource_field_value,
)
from vkubelet.domain.errors import InvalidInput
from vkubelet.domain.pod import Manifest, Pod

# The kubelet's default file mode for configMap/secret/downwardAPI/projected volumes (0644).
DEFAULT_MODE = 0o644


@dataclass(frozen=True, slots=True)
class VolumeFile:
    """One file of a volume: ``path`` is relative to the volume root, "/"-separated, never
    absolute and never containing a ``..`` element."""

    path: str
    data: bytes
    mode: int = DEFAULT_MODE


@dataclass(frozen=True, slots=True)
class FileVolume:
    """A configMap, secret, downwardAPI or projected volume, resolved to its files."""

    name: str
    kind: str
    files: tuple[VolumeFile, ...]


@dataclass(frozen=True, slots=True)
class EmptyDirVolume:
    """An emptyDir: ``medium`` is "" (the node's disk) or "Memory"; ``size_limit`` a quantity."""

    name: str
    medium: str = ""
    size_limit: str | None = None


@dataclass(frozen=True, slots=True)
class PodVolumes:
    """Everything a provider needs to materialise a pod's volumes."""

    files: tuple[FileVolume, ...] = ()
    empty_dirs: tuple[EmptyDirVolume, ...] = ()
    #: the pod's imagePullSecrets merged into one docker config JSON ({"auths": {...}}), b"" for none
    image_pull_secret: bytes = b""

    def digest(self) -> str:
        """A stable hash of the contents: equal volumes, equal digests (to detect a change)."""
        hasher = hashlib.sha256()
        for volume in sorted(self.files, key=lambda v: v.name):
            hasher.update(f"F{volume.name}\0{volume.kind}\0".encode())
            for file in sorted(volume.files, key=lambda f: f.path):
                hasher.update(f"{file.path}\0{file.mode:o}\0{len(file.data)}\0".encode())
                hasher.update(file.data)
        for empty in sorted(self.empty_dirs, key=lambda v: v.name):
            hasher.update(f"E{empty.name}\0{empty.medium}\0{empty.size_limit or ''}\0".encode())
        hasher.update(b"P" + self.image_pull_secret)
        return hasher.hexdigest()


# -- inputs -------------------------------------------------------------------------------

DEFAULT_SERVICE_ACCOUNT = "default"
# The API's default for serviceAccountToken.expirationSeconds, and the bounds it validates.
DEFAULT_TOKEN_EXPIRATION_SECONDS = 3600
MIN_TOKEN_EXPIRATION_SECONDS = 600
MAX_TOKEN_EXPIRATION_SECONDS = 1 << 32


@dataclass(frozen=True, slots=True, order=True)
class TokenRequestSpec:
    """A ``serviceAccountToken`` projection, and the key of the one token fetched for it.

    Equal, hashed and ordered by ``audience`` and ``expiration_seconds`` only: sources that
    differ in ``path`` alone share one TokenRequest, as the kubelet's token cache does.
    ``audience`` "" asks for the API server's own audiences.
    """

    audience: str
    expiration_seconds: int
    path: str = field(compare=False)

    @property
    def audiences(self) -> tuple[str, ...]:
        """The TokenRequest's ``spec.audiences``."""
        return (self.audience,) if self.audience else ()


@dataclass(frozen=True, slots=True)
class UnsupportedVolume:
    """A volume no provider can be handed: ``kind`` is its source's key (``hostPath``, ``csi``,
    ...), or ``projected.<source>`` for a projected volume with such a source."""

    name: str
    kind: str


@dataclass(frozen=True, slots=True)
class VolumeSources:
    """What the application must fetch before :func:`project_volumes`.

    ``config_maps``/``secrets`` are names in ``namespace``, sorted. ``tokens`` holds one spec
    per (audience, expiration), sorted: fetch one token of ``service_account`` for each.
    """

    namespace: str
    config_maps: tuple[str, ...]
    secrets: tuple[str, ...]
    tokens: tuple[TokenRequestSpec, ...]
    service_account: str
    unsupported: tuple[UnsupportedVolume, ...]


# -- outputs ------------------------------------------------------------------------------


class VolumeReason(StrEnum):
    # The kubelet's reason for any MountVolume.SetUp error.
    FAILED_MOUNT = "FailedMount"
    # The kubelet's warning when an imagePullSecret cannot be read; the pod still starts.
    FAILED_TO_RETRIEVE_IMAGE_PULL_SECRET = "FailedToRetrieveImagePullSecret"
    # Ours: the manifest cannot be projected as written (the API server normally rejects it).
    INVALID_VOLUME = "InvalidVolume"
    UNSUPPORTED_VOLUME = "UnsupportedVolume"


@dataclass(frozen=True, slots=True)
class VolumeEvent:
    type: EnvEventType
    reason: VolumeReason
    message: str


@dataclass(frozen=True, slots=True)
class VolumeFailure:
    reason: VolumeReason
    message: str


@dataclass(frozen=True, slots=True)
class VolumeResolution:
    """Either ``volumes`` (resolved) or ``failure`` is set; ``events`` in both cases."""

    volumes: PodVolumes | None
    events: tuple[VolumeEvent, ...]
    failure: VolumeFailure | None

    def __post_init__(self) -> None:
        if (self.volumes is None) == (self.failure is None):
            raise ValueError("exactly one of volumes and failure must be set")


# -- manifest access ----------------------------------------------------------------------

#: The volume source fields of a v1.Volume (its API field names): the kinds a volume can have.
VOLUME_SOURCE_KINDS = frozenset(
    {
        "awsElasticBlockStore",
        "azureDisk",
        "azureFile",
        "cephfs",
        "cinder",
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "fc",
        "flexVolume",
        "flocker",
        "gcePersistentDisk",
        "gitRepo",
        "glusterfs",
        "hostPath",
        "image",
        "iscsi",
        "nfs",
        "persistentVolumeClaim",
        "photonPersistentDisk",
        "portworxVolume",
        "projected",
        "quobyte",
        "rbd",
        "scaleIO",
        "secret",
        "storageos",
        "vsphereVolume",
    }
)

_FILE_KINDS = frozenset({"configMap", "secret", "downwardAPI", "projected"})
_EMPTY_DIR = "emptyDir"
_PROJECTION_KINDS = frozenset({"configMap", "secret", "downwardAPI", "serviceAccountToken"})
_NOT_FETCHED = ReadFailed("it was not fetched")

# One file before its path is checked: (path as written, data, mode).
_Entry = tuple[str, bytes, int]


class _Failed(Exception):
    """Internal: stops resolution; becomes the VolumeFailure."""

    def __init__(self, reason: VolumeReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _invalid(message: str) -> _Failed:
    return _Failed(VolumeReason.INVALID_VOLUME, message)


def _mapping(value: object, what: str) -> Manifest:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _invalid(f"{what} is not an object")
    return value


def _entries(value: object, what: str) -> Sequence[Manifest]:
    if value is None:
        return ()
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise _invalid(f"{what} is not a list")
    return [_mapping(item, f"an entry of {what}") for item in value]


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise _invalid(f"{what} is not a string (got {value!r})")
    return value


def _mode(value: object, *, default: int, what: str) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0o777:
        raise _invalid(f"{what} must be a number between 0 and 0777 (octal), both inclusive (got {value!r})")
    return value


def _list(value: object) -> Sequence[object]:
    return value if isinstance(value, list | tuple) else ()


_GO_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}


def _go_quote(text: str) -> str:
    """``text`` as Go's ``%q`` (strconv.Quote) writes it, so rendered labels match the kubelet's."""
    out = ['"']
    for char in text:
        code = ord(char)
        if 0xD800 <= code <= 0xDFFF:
            # A lone surrogate decodes to U+FFFD in Go's JSON; quote what the kubelet would see.
            char, code = "\ufffd", 0xFFFD
        if char in _GO_ESCAPES:
            out.append(_GO_ESCAPES[char])
        elif char.isprintable():  # Python's and Go's "printable" agree: not C* or Z*, but " "
            out.append(char)
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


_SURROGATE = re.compile("[\ud800-\udfff]")


def utf8_bytes(text: str) -> bytes:
    """``text`` as a file's bytes (UTF-8), the way the kubelet writes a Go string."""
    # A JSON string may carry a lone surrogate, which UTF-8 cannot encode; Go writes U+FFFD.
    return _SURROGATE.sub("\ufffd", text).encode()


@dataclass(frozen=True, slots=True)
class _Volume:
    """One ``spec.volumes`` entry, classified."""

    name: str
    kind: str
    source: Manifest

    @property
    def supported(self) -> bool:
        return self.kind in _FILE_KINDS or self.kind == _EMPTY_DIR

    @property
    def source_kind(self) -> str:
        """The v1.Volume field: ``projected`` also for a ``projected.<source>`` kind."""
        return self.kind.partition(".")[0]

    def native(self, native_kinds: frozenset[str]) -> bool:
        return self.source_kind in native_kinds


def _classify(entry: object) -> _Volume:
    if not isinstance(entry, Mapping):
        raise _invalid(f"a volume is not an object (got {entry!r})")
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise _invalid(f"a volume has no name (got {name!r})")
    kinds = sorted(key for key, value in entry.items() if key != "name" and value is not None)
    if len(kinds) > 1:
        raise _invalid(f"volume {_go_quote(name)} names more than one kind ({', '.join(kinds)})")
    # The API server defaults a volume without a source to an emptyDir.
    kind = kinds[0] if kinds else _EMPTY_DIR
    source = entry.get(kind)
    if not isinstance(source, Mapping):
        if source is not None and (kind in _FILE_KINDS or kind == _EMPTY_DIR):
            raise _invalid(f"{kind} of volume {_go_quote(name)} is not an object")
        return _Volume(name, kind, {})
    if kind != "projected":
        return _Volume(name, kind, source)
    for projection in _list(source.get("sources")):
        if isinstance(projection, Mapping):
            for key, value in projection.items():
                if key not in _PROJECTION_KINDS and value is not None:
                    return _Volume(name, f"projected.{key}", source)
    return _Volume(name, kind, source)


def _declared_volumes(pod: Pod) -> list[_Volume]:
    volumes = [_classify(entry) for entry in _entries(pod.spec.get("volumes"), "spec.volumes")]
    names: set[str] = set()
    for volume in volumes:
        if volume.name in names:
            raise _invalid(f"volume {_go_quote(volume.name)} is declared more than once")
        names.add(volume.name)
    return volumes


def _service_account(pod: Pod) -> str:
    # serviceAccount is the deprecated alias the API server still fills in.
    name = pod.spec.get("serviceAccountName") or pod.spec.get("serviceAccount")
    return name if isinstance(name, str) and name else DEFAULT_SERVICE_ACCOUNT


def _token_spec(source: Manifest) -> TokenRequestSpec:
    path = _text(source.get("path"), "serviceAccountToken path")
    audience = _text(source.get("audience") or "", "serviceAccountToken audience")
    expiration = source.get("expirationSeconds")
    if expiration is None:
        expiration = DEFAULT_TOKEN_EXPIRATION_SECONDS
    if isinstance(expiration, bool) or not isinstance(expiration, int):
        raise _invalid(f"serviceAccountToken expirationSeconds is not an integer (got {expiration!r})")
    # The API server's own bounds; it would reject the TokenRequest (and normally the pod).
    if expiration < MIN_TOKEN_EXPIRATION_SECONDS:
        raise _invalid(
            f"serviceAccountToken expirationSeconds {expiration} may not specify a duration "
            "less than 10 minutes"
        )
    if expiration > MAX_TOKEN_EXPIRATION_SECONDS:
        raise _invalid(
            f"serviceAccountToken expirationSeconds {expiration} may not specify a duration "
            "larger than 2^32 seconds"
        )
    return TokenRequestSpec(audience, expiration, path)


# -- what to fetch ------------------------------------------------------------------------


def required_volume_sources(pod: Pod, *, native_kinds: frozenset[str] = frozenset()) -> VolumeSources:
    """The objects and tokens the pod's volumes reference, and the volumes no provider can take.

    Volumes of ``native_kinds`` (the provider reads them from the pod spec) are passed over, as
    are malformed entries; :func:`project_volumes` reports the latter.
    """
    config_maps: set[str] = set()
    secrets: set[str] = set()
    tokens: set[TokenRequestSpec] = set()
    unsupported: list[UnsupportedVolume] = []

    def add(target: set[str], ref: object, key: str = "name") -> None:
        name = ref.get(key) if isinstance(ref, Mapping) else None
        if isinstance(name, str) and name:
            target.add(name)

    for pull in _list(pod.spec.get("imagePullSecrets")):
        add(secrets, pull)
    for entry in _list(pod.spec.get("volumes")):
        try:
            volume = _classify(entry)
        except _Failed:
            continue
        if volume.native(native_kinds):
            continue
        if not volume.supported:
            unsupported.append(UnsupportedVolume(volume.name, volume.kind))
        elif volume.kind == "configMap":
            add(config_maps, volume.source)
        elif volume.kind == "secret":
            add(secrets, volume.source, "secretName")
        elif volume.kind == "projected":
            for projection in _list(volume.source.get("sources")):
                if not isinstance(projection, Mapping):
                    continue
                add(config_maps, projection.get("configMap"))
                add(secrets, projection.get("secret"))
                token = projection.get("serviceAccountToken")
                if isinstance(token, Mapping):
                    with contextlib.suppress(_Failed):  # project_volumes reports it
                        tokens.add(_token_spec(token))
    return VolumeSources(
        namespace=pod.ref.namespace,
        config_maps=tuple(sorted(config_maps)),
        secrets=tuple(sorted(secrets)),
        tokens=tuple(sorted(tokens)),
        service_account=_service_account(pod),
        unsupported=tuple(unsupported),
    )


# -- projection ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _ObjectKind:
    field: str  # the volume / projection key
    noun: str  # as the kubelet's messages name it
    missing_key: str  # the kubelet's message for an absent listed key, before the key


_CONFIG_MAP = _ObjectKind("configMap", "configmap", "configmap references non-existent config key: ")
_SECRET = _ObjectKind("secret", "secret", "references non-existent secret key: ")


@dataclass(frozen=True, slots=True)
class _Inputs:
    pod: Pod
    config_maps: Mapping[str, Lookup[Mapping[str, bytes]]]
    secrets: Mapping[str, Lookup[Mapping[str, bytes]]]
    tokens: Mapping[TokenRequestSpec, Lookup[str]]
    node_allocatable: Mapping[str, str]
    fs_user: int | None
    fs_group: int | None


def project_volumes(
    pod: Pod,
    *,
    config_maps: Mapping[str, Lookup[Mapping[str, bytes]]],
    secrets: Mapping[str, Lookup[Mapping[str, bytes]]],
    tokens: Mapping[TokenRequestSpec, Lookup[str]],
    node_allocatable: Mapping[str, str],
    native_kinds: frozenset[str] = frozenset(),
) -> VolumeResolution:
    """Resolve every volume of ``pod``; see the module docstring for the rules.

    ``config_maps``/``secrets`` map names (in the pod's namespace) to what fetching them gave:
    the files of each, as bytes (a configmap's ``data`` encoded as UTF-8 together with its
    ``binaryData`` decoded; a secret's ``data`` decoded); ``tokens`` maps each of
    :attr:`VolumeSources.tokens` to the token, Missing when the service account does not
    exist. Anything not fetched counts as unreadable. Volumes of ``native_kinds`` are left out
    silently (the provider reads them from the pod spec); other unsupported volumes are left out
    with a Warning event each; whether that fails the pod is the caller's decision.
    """
    inputs = _Inputs(
        pod=pod,
        config_maps=config_maps,
        secrets=secrets,
        tokens=tokens,
        node_allocatable=node_allocatable,
        fs_user=_fs_user(pod),
        fs_group=_fs_group(pod),
    )
    events: list[VolumeEvent] = []
    files: list[FileVolume] = []
    empty_dirs: list[EmptyDirVolume] = []
    try:
        declared = _declared_volumes(pod)
    except _Failed as failed:
        return VolumeResolution(None, (), VolumeFailure(failed.reason, failed.message))
    for volume in declared:
        if volume.native(native_kinds):
            continue
        if not volume.supported:
            events.append(
                VolumeEvent(
                    EnvEventType.WARNING,
                    VolumeReason.UNSUPPORTED_VOLUME,
                    f"volume {_go_quote(volume.name)} of kind {volume.kind} cannot be handed to the provider",
                )
            )
            continue
        try:
            if volume.kind == _EMPTY_DIR:
                empty_dirs.append(_empty_dir(volume))
            else:
                files.append(FileVolume(volume.name, volume.kind, _volume_files(volume, inputs)))
        except _Failed as failed:
            message = f"MountVolume.SetUp failed for volume {_go_quote(volume.name)} : {failed.message}"
            return VolumeResolution(None, tuple(events), VolumeFailure(failed.reason, message))
    pull_secret = _image_pull_secret(pod, inputs, events)
    return VolumeResolution(PodVolumes(tuple(files), tuple(empty_dirs), pull_secret), tuple(events), None)


def dropped_volume_events(pod: Pod, *, native_kinds: frozenset[str] = frozenset()) -> tuple[VolumeEvent, ...]:
    """For a provider that takes no volume contents (no VOLUMES capability): one UnsupportedVolume
    Warning per volume of ``pod`` whose kind is not in ``native_kinds``, in declared order, since
    nobody would fill it. Malformed entries are passed over (vkubelet does not read them here)."""
    events: list[VolumeEvent] = []
    for entry in _list(pod.spec.get("volumes")):
        try:
            volume = _classify(entry)
        except _Failed:
            continue
        if volume.native(native_kinds):
            continue
        events.append(
            VolumeEvent(
                EnvEventType.WARNING,
                VolumeReason.UNSUPPORTED_VOLUME,
                f"volume {_go_quote(volume.name)} of kind {volume.source_kind} is not mounted: "
                "the provider does not take volume contents (no volumes capability)",
            )
        )
    return tuple(events)


def unknown_volume_kinds(kinds: Iterable[str]) -> tuple[str, ...]:
    """The names among ``kinds`` that are not v1.Volume source fields, sorted."""
    return tuple(sorted(set(kinds) - VOLUME_SOURCE_KINDS))


def _image_pull_secret(pod: Pod, inputs: _Inputs, events: list[VolumeEvent]) -> bytes:
    """The imagePullSecrets merged as the kubelet's keyring merges them: each registry from the
    first secret that names it. ``kubernetes.io/dockerconfigjson`` secrets hold ``{"auths":
    {...}}`` under ``.dockerconfigjson``; legacy ``kubernetes.io/dockercfg`` ones hold the bare
    registry map under ``.dockercfg``. An unreadable or malformed one is a warning, not a failure:
    the kubelet starts the pod and lets the pull decide."""
    auths: dict[str, Any] = {}
    unusable: list[str] = []
    for pull in _list(pod.spec.get("imagePullSecrets")):
        name = pull.get("name") if isinstance(pull, Mapping) else None
        if not isinstance(name, str) or not name:
            continue
        lookup = inputs.secrets.get(name, _NOT_FETCHED)
        registries = _registries(lookup.data) if isinstance(lookup, Found) else None
        if registries is None:
            unusable.append(name)
            continue
        for registry, entry in registries.items():
            auths.setdefault(registry, entry)
    if unusable:
        events.append(
            VolumeEvent(
                EnvEventType.WARNING,
                VolumeReason.FAILED_TO_RETRIEVE_IMAGE_PULL_SECRET,
                f"Unable to retrieve some image pull secrets ({', '.join(unusable)}); attempting to "
                "pull the image may not succeed.",
            )
        )
    if not auths:
        return b""
    return json.dumps({"auths": auths}, sort_keys=True, separators=(",", ":")).encode()


def _registries(data: Mapping[str, bytes]) -> dict[str, Any] | None:
    for key, wrapped in ((".dockerconfigjson", True), (".dockercfg", False)):
        if key not in data:
            continue
        try:
            decoded = json.loads(data[key])
        except ValueError:
            return None
        registries = decoded.get("auths") if wrapped and isinstance(decoded, Mapping) else decoded
        return dict(registries) if isinstance(registries, Mapping) else None
    return None


def _empty_dir(volume: _Volume) -> EmptyDirVolume:
    medium = _text(volume.source.get("medium") or "", "emptyDir medium")
    size_limit = volume.source.get("sizeLimit")
    if size_limit is not None and (isinstance(size_limit, bool) or not isinstance(size_limit, str | int)):
        raise _invalid(f"emptyDir sizeLimit is not a quantity (got {size_limit!r})")
    return EmptyDirVolume(volume.name, medium, None if size_limit is None else str(size_limit))


def _volume_files(volume: _Volume, inputs: _Inputs) -> tuple[VolumeFile, ...]:
    source = volume.source
    default_mode = _mode(source.get("defaultMode"), default=DEFAULT_MODE, what="defaultMode")
    if volume.kind == "configMap":
        entries = _object_files(_CONFIG_MAP, source, "name", default_mode=default_mode, inputs=inputs)
    elif volume.kind == "secret":
        entries = _object_files(_SECRET, source, "secretName", default_mode=default_mode, inputs=inputs)
    elif volume.kind == "downwardAPI":
        entries = _downward_files(source, default_mode=default_mode, inputs=inputs)
    else:
        entries = _projected_files(source, default_mode=default_mode, inputs=inputs)
    return _payload(entries, strict=volume.kind == "projected", fs_group=inputs.fs_group)


def _object_files(
    kind: _ObjectKind, source: Manifest, name_field: str, *, default_mode: int, inputs: _Inputs
) -> list[_Entry]:
    name = _text(source.get(name_field), f"{kind.field}.{name_field}")
    optional = source.get("optional") is True
    data = _object_data(kind, name, optional=optional, inputs=inputs)
    items = _entries(source.get("items"), f"{kind.field} items")
    if not items:
        return [(key, value, default_mode) for key, value in sorted(data.items())]
    entries: list[_Entry] = []
    for item in items:
        key = _text(item.get("key"), f"an item key of {kind.field} {_go_quote(name)}")
        path = _text(item.get("path"), f"the path of item {_go_quote(key)}")
        mode = _mode(item.get("mode"), default=default_mode, what=f"the mode of item {_go_quote(key)}")
        if key in data:
            entries.append((path, data[key], mode))
        elif not optional:
            raise _Failed(VolumeReason.FAILED_MOUNT, kind.missing_key + key)
    return entries


def _object_data(kind: _ObjectKind, name: str, *, optional: bool, inputs: _Inputs) -> Mapping[str, bytes]:
    objects = inputs.config_maps if kind is _CONFIG_MAP else inputs.secrets
    lookup = objects.get(name, _NOT_FETCHED)
    if isinstance(lookup, Found):
        return lookup.data
    if isinstance(lookup, Missing):
        if optional:
            return {}  # the kubelet mounts the volume empty
        raise _Failed(VolumeReason.FAILED_MOUNT, f"{kind.noun} {_go_quote(name)} not found")
    raise _Failed(
        VolumeReason.FAILED_MOUNT, f"failed to read {kind.noun} {_go_quote(name)}: {lookup.message}"
    )


def _downward_files(source: Manifest, *, default_mode: int, inputs: _Inputs) -> list[_Entry]:
    entries: list[_Entry] = []
    for item in _entries(source.get("items"), "downwardAPI items"):
        path = _text(item.get("path"), "the path of a downwardAPI item")
        what = f"downwardAPI item {_go_quote(path)}"
        mode = _mode(item.get("mode"), default=default_mode, what=f"the mode of {what}")
        field_ref, resource_ref = item.get("fieldRef"), item.get("resourceFieldRef")
        if (field_ref is None) == (resource_ref is None):
            raise _invalid(f"{what} must name exactly one of fieldRef and resourceFieldRef")
        if field_ref is not None:
            value = _field_value(_mapping(field_ref, f"fieldRef of {what}"), what=what, pod=inputs.pod)
        else:
            try:
                value = resource_field_value(
                    inputs.pod,
                    _mapping(resource_ref, f"resourceFieldRef of {what}"),
                    what=what,
                    container=None,
                    node_allocatable=inputs.node_allocatable,
                )
            except InvalidInput as exc:
                raise _invalid(str(exc)) from exc
        entries.append((path, utf8_bytes(value), mode))
    return entries


def _field_value(ref: Manifest, *, what: str, pod: Pod) -> str:
    api_version = ref.get("apiVersion") or "v1"
    if api_version != "v1":
        raise _invalid(f"fieldRef of {what} has unsupported apiVersion {api_version!r}")
    path = ref.get("fieldPath")
    if not isinstance(path, str):
        raise _invalid(f"fieldRef of {what} has no fieldPath")
    subscripted = SUBSCRIPTED_FIELD_PATH.fullmatch(path)
    if subscripted is not None:
        subject, key = subscripted.groups()
        if subject == "metadata.labels":
            return str(pod.labels.get(key, ""))
        if subject == "metadata.annotations":
            return str(pod.annotations.get(key, ""))
        raise _invalid(f"fieldRef of {what}: fieldPath {_go_quote(path)} does not support subscript")
    if path == "metadata.name":
        return pod.ref.name
    if path == "metadata.namespace":
        return pod.ref.namespace
    if path == "metadata.uid":
        return pod.ref.uid
    if path == "metadata.labels":
        return _format_map(pod.labels)
    if path == "metadata.annotations":
        return _format_map(pod.annotations)
    raise _invalid(f"fieldRef of {what}: unsupported fieldPath: {path}")


def _format_map(values: Mapping[str, Any]) -> str:
    return "\n".join(f"{key}={_go_quote(str(values[key]))}" for key in sorted(values))


def _projected_files(source: Manifest, *, default_mode: int, inputs: _Inputs) -> list[_Entry]:
    entries: list[_Entry] = []
    for index, projection in enumerate(_entries(source.get("sources"), "projected sources")):
        kinds = sorted(key for key, value in projection.items() if value is not None)
        if not kinds:
            continue  # the API server accepts an empty source and the kubelet skips it
        if len(kinds) > 1:
            raise _invalid(f"projected source {index} names more than one kind ({', '.join(kinds)})")
        kind = kinds[0]
        body = _mapping(projection[kind], f"projected source {index} ({kind})")
        if kind == "configMap":
            entries += _object_files(_CONFIG_MAP, body, "name", default_mode=default_mode, inputs=inputs)
        elif kind == "secret":
            entries += _object_files(_SECRET, body, "name", default_mode=default_mode, inputs=inputs)
        elif kind == "downwardAPI":
            entries += _downward_files(body, default_mode=default_mode, inputs=inputs)
        elif kind == "serviceAccountToken":
            entries.append(_token_file(body, default_mode=default_mode, inputs=inputs))
        else:  # _classify reported it as unsupported; never reached
            raise _invalid(f"projected source {index} has unsupported kind {kind}")
    return entries


def _token_file(source: Manifest, *, default_mode: int, inputs: _Inputs) -> _Entry:
    spec = _token_spec(source)
    lookup = inputs.tokens.get(spec, _NOT_FETCHED)
    if isinstance(lookup, Missing):
        account = _service_account(inputs.pod)
        raise _Failed(
            VolumeReason.FAILED_MOUNT,
            f"failed to fetch token: serviceaccounts {_go_quote(account)} not found",
        )
    if isinstance(lookup, ReadFailed):
        raise _Failed(VolumeReason.FAILED_MOUNT, f"failed to fetch token: {lookup.message}")
    # With an fsUser or fsGroup the kubelet writes 0600 and lets fsGroup ownership add group read.
    owned = inputs.fs_user is not None or inputs.fs_group is not None
    return spec.path, utf8_bytes(lookup.data), 0o600 if owned else default_mode


_MAX_PATH_LENGTH = 4096
_MAX_FILE_NAME_LENGTH = 255


def _clean_path(path: str) -> str:
    """The atomic writer's checks, then ``path.Clean``; raises InvalidVolume."""
    if not path:
        raise _invalid("invalid path: must not be empty")
    if path.startswith("/"):
        raise _invalid(f"invalid path: must be relative path: {path}")
    if len(path) > _MAX_PATH_LENGTH:
        raise _invalid(f"invalid path: must be less than or equal to {_MAX_PATH_LENGTH} characters")
    if "\0" in path:
        raise _invalid(f"invalid path: must not contain a NUL character: {_go_quote(path)}")
    elements = path.split("/")
    if ".." in elements:
        raise _invalid(f"invalid path: must not contain '..': {path}")
    if any(len(element) > _MAX_FILE_NAME_LENGTH for element in elements):
        raise _invalid(
            f"invalid path: filenames must be less than or equal to {_MAX_FILE_NAME_LENGTH} characters"
        )
    cleaned = [element for element in elements if element not in ("", ".")]
    if not cleaned:
        raise _invalid(f"invalid path: must name a file below the volume: {path}")
    # Checked after cleaning: "./..data" would otherwise replace the writer's ..data link.
    if cleaned[0].startswith(".."):
        raise _invalid(f"invalid path: must not start with '..': {path}")
    return "/".join(cleaned)


def _payload(entries: Sequence[_Entry], *, strict: bool, fs_group: int | None) -> tuple[VolumeFile, ...]:
    files: dict[str, VolumeFile] = {}
    for path, data, mode in entries:
        cleaned = _clean_path(path)
        if strict and cleaned in files:
            raise _invalid(f"invalid path: conflicting duplicate paths: {cleaned}")
        # fsGroup ownership adds group read to every file of these read-only volumes.
        files[cleaned] = VolumeFile(cleaned, data, (mode | 0o440) if fs_group is not None else mode)
    for path in files:
        parent = path
        while "/" in parent:
            parent = parent.rpartition("/")[0]
            if parent in files:
                raise _invalid(f"invalid path: {parent} is both a file and the directory of {path}")
    return tuple(sorted(files.values(), key=lambda file: file.path))


# -- ownership ----------------------------------------------------------------------------

_CONTAINER_FIELDS = ("initContainers", "containers", "ephemeralContainers")


def _security_id(context: object, name: str) -> int | None:
    value = context.get(name) if isinstance(context, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _fs_group(pod: Pod) -> int | None:
    return _security_id(pod.spec.get("securityContext"), "fsGroup")


def _fs_user(pod: Pod) -> int | None:
    """The kubelet's FsUser: the effective runAsUser when every container has the same one."""
    pod_user = _security_id(pod.spec.get("securityContext"), "runAsUser")
    users: set[int] = set()
    for containers in _CONTAINER_FIELDS:
        for container in _list(pod.spec.get(containers)):
            context = container.get("securityContext") if isinstance(container, Mapping) else None
            user = _security_id(context, "runAsUser")
            if user is None:
                user = pod_user
            if user is None:
                return None
            users.add(user)
    return users.pop() if len(users) == 1 else None


# -- token refresh ------------------------------------------------------------------------

TOKEN_MAX_AGE = timedelta(hours=24)


def token_refresh_at(
    *, issued_at: datetime, expires_at: datetime, jitter: timedelta = timedelta(0)
) -> datetime:
    """When the kubelet refreshes a projected token: once it is older than 80% of its lifetime
    or older than 24 hours, whichever comes first.

    ``issued_at`` is the start of the lifetime the API server granted (``expires_at`` minus the
    granted seconds). The remaining 20% is counted in whole seconds, truncated, as the kubelet
    does. ``jitter`` (the kubelet draws up to 10 s at random) moves the moment earlier; the domain
    has no randomness of its own.
    """
    lifetime_seconds = max(0, (expires_at - issued_at) // timedelta(seconds=1))
    margin = timedelta(seconds=lifetime_seconds * 20 // 100)
    return min(expires_at - margin, issued_at + TOKEN_MAX_AGE) - jitter


def token_refresh_due(
    *, issued_at: datetime, expires_at: datetime, now: datetime, jitter: timedelta = timedelta(0)
) -> bool:
    """True once ``now`` is past :func:`token_refresh_at` (strictly, as the kubelet compares)."""
    return now > token_refresh_at(issued_at=issued_at, expires_at=expires_at, jitter=jitter)
