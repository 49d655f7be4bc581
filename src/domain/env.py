"""Container environments resolved the way the kubelet resolves them: envFrom, env, the downward
API and service links, with ``$(VAR)`` expansion. Pure: the application fetches what
:func:`required_sources` names and passes the results to :func:`resolve_environment`.

Order and precedence. Each container's variables are collected into one ordered table: service
variables first (services sorted by name), then every ``envFrom`` source in declared order (keys
sorted within a source), then ``env`` in declared order. A later definition of a name replaces
the value but keeps the position where the name first appeared, so the output is deterministic
and a runtime that honours only the last duplicate sees the kubelet's precedence (env > envFrom >
services). Upstream emitted the table in Go map order and needed a sort to compare pods (its
bug 21); ours is stable, so equal inputs give equal manifests.

Expansion. Only literal ``env[].value`` is expanded, against the table as it stands at that
point (services and everything declared earlier); values from envFrom and valueFrom are taken
verbatim, as the kubelet does. :func:`expand` is public so a provider can expand command/args.

Missing references. An optional configmap/secret (or key) that is missing or unreadable skips
the variable and yields a Warning event; a mandatory one stops resolution with an
:class:`EnvFailure` carrying the upstream reason (``MandatoryConfigMapNotFound``, ...), and no
pod. The application records the failure as a Warning event too, and retries the sync. A name the
application did not fetch counts as unreadable (``FailedToRead...``), never as absent.

Downward API, ``fieldRef`` (apiVersion ``v1`` or empty): ``metadata.name``, ``.namespace``,
``.uid``, ``metadata.labels['k']`` and ``metadata.annotations['k']`` (empty when the key is
absent), ``spec.nodeName`` (alias ``spec.host``), ``spec.serviceAccountName``, ``status.hostIP``,
``status.hostIPs``, ``status.podIP``, ``status.podIPs``; also ``spec.restartPolicy``,
``spec.schedulerName`` and ``status.phase``, which upstream resolved (the API server rejects them
for env, so they only reach us from hand-written manifests). Upstream resolved every IP to empty
(bug 21); the IPs here are the caller's ``host_ip``/``pod_ip``. A pod has no IP before the
provider created it, so at create time ``pod_ip`` is normally empty and the variable is "".
Any other path is a failure (``InvalidFieldRef``), never a silently dropped variable.

Downward API, ``resourceFieldRef`` (upstream dropped it silently; we follow the kubelet):

* resources ``limits.``/``requests.`` + ``cpu``, ``memory``, ``ephemeral-storage`` or
  ``hugepages-<size>``; ``containerName`` defaults to the container being resolved, otherwise it
  is looked up among regular, init and ephemeral containers.
* a limit that is absent or zero falls back to the node's allocatable amount of that resource
  (the kubelet defaults limits this way before answering), and to 0 when the node does not
  report it; hugepages never fall back (they are never overcommitted).
* an absent request falls back to the container's own declared limit (what the API server's
  defaulting does), not to node allocatable, and is 0 when no limit is declared either.
* the divisor defaults to 1 (a zero divisor counts as 1). cpu is ``ceil(milli(value) /
  milli(divisor))`` and everything else ``ceil(ceil(value) / ceil(divisor))``, where milli and
  ceil round up as ``Quantity.MilliValue()``/``Value()`` do: 500m / 1 -> "1", 500m / 1m -> "500",
  64Mi / 1Mi -> "64". The arithmetic is exact (the kubelet divides float64s).
* pod-level resources (``spec.resources``, alpha upstream) are not consulted.

Service links: the ``kubernetes`` service among ``master_services`` is always present; services
of the pod's namespace are added when ``spec.enableServiceLinks`` is true or absent and replace a
master service of the same name. Services without a cluster IP (empty or ``None``) are skipped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction
from typing import Generic, TypeAlias, TypeVar

from vkubelet.domain.errors import InvalidInput
from vkubelet.domain.pod import Manifest, Pod
from vkubelet.domain.quantity import ceil_milli_value, ceil_value, parse_quantity

# -- inputs -------------------------------------------------------------------------------

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Found(Generic[T]):
    """The object was read; ``data`` is its ``data`` (secret values decoded from base64)."""

    data: T


@dataclass(frozen=True, slots=True)
class Missing:
    """The object does not exist (the API answered 404)."""


@dataclass(frozen=True, slots=True)
class ReadFailed:
    """The object could not be read (transport error, forbidden, ...)."""

    message: str


Lookup: TypeAlias = Found[T] | Missing | ReadFailed

MISSING = Missing()


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    """What env-var service links need of a Service."""

    name: str
    cluster_ip: str
    ports: tuple[tuple[str, int, str], ...]  # (name, port, protocol)


@dataclass(frozen=True, slots=True)
class EnvSources:
    """What the application must fetch before :func:`resolve_environment`.

    ``config_maps``/``secrets`` are names in ``namespace``, sorted; ``service_links`` says whether
    the services of ``namespace`` are needed (the master ``kubernetes`` service always is).
    """

    namespace: str
    config_maps: tuple[str, ...]
    secrets: tuple[str, ...]
    service_links: bool


# -- outputs ------------------------------------------------------------------------------


class Reason(StrEnum):
    # Upstream's event reasons, verbatim.
    OPTIONAL_CONFIG_MAP_NOT_FOUND = "OptionalConfigMapNotFound"
    OPTIONAL_SECRET_NOT_FOUND = "OptionalSecretNotFound"
    OPTIONAL_CONFIG_MAP_KEY_NOT_FOUND = "OptionalConfigMapKeyNotFound"
    OPTIONAL_SECRET_KEY_NOT_FOUND = "OptionalSecretKeyNotFound"
    FAILED_TO_READ_OPTIONAL_CONFIG_MAP = "FailedToReadOptionalConfigMap"
    FAILED_TO_READ_OPTIONAL_SECRET = "FailedToReadOptionalSecret"
    MANDATORY_CONFIG_MAP_NOT_FOUND = "MandatoryConfigMapNotFound"
    MANDATORY_SECRET_NOT_FOUND = "MandatorySecretNotFound"
    MANDATORY_CONFIG_MAP_KEY_NOT_FOUND = "MandatoryConfigMapKeyNotFound"
    MANDATORY_SECRET_KEY_NOT_FOUND = "MandatorySecretKeyNotFound"
    FAILED_TO_READ_MANDATORY_CONFIG_MAP = "FailedToReadMandatoryConfigMap"
    FAILED_TO_READ_MANDATORY_SECRET = "FailedToReadMandatorySecret"
    INVALID_ENVIRONMENT_VARIABLE_NAMES = "InvalidEnvironmentVariableNames"
    # Ours, where upstream dropped the variable silently or ignored the entry.
    INVALID_FIELD_REF = "InvalidFieldRef"
    INVALID_RESOURCE_FIELD_REF = "InvalidResourceFieldRef"
    INVALID_ENV_SOURCE = "InvalidEnvSource"


class EnvEventType(StrEnum):
    """The Kubernetes event types; the EventRecorder port uses this enum too."""

    NORMAL = "Normal"
    WARNING = "Warning"


@dataclass(frozen=True, slots=True)
class EnvEvent:
    type: EnvEventType
    reason: Reason
    message: str


@dataclass(frozen=True, slots=True)
class EnvFailure:
    reason: Reason
    message: str


@dataclass(frozen=True, slots=True)
class EnvResolution:
    """Either ``pod`` (resolved) or ``failure`` is set; ``events`` in both cases."""

    pod: Pod | None
    events: tuple[EnvEvent, ...]
    failure: EnvFailure | None

    def __post_init__(self) -> None:
        if (self.pod is None) == (self.failure is None):
            raise ValueError("exactly one of pod and failure must be set")


# -- $(VAR) expansion ---------------------------------------------------------------------


def expand(text: str, lookup: Callable[[str], str | None]) -> str:
    """Expand ``$(NAME)`` references with the kubelet's rules.

    ``$$`` is an escaped ``$``; ``$(NAME)`` becomes ``lookup(NAME)`` or stays verbatim when that
    is None; an unterminated ``$(``, a ``$`` before any other character and a trailing ``$`` stay
    as written.
    """
    out: list[str] = []
    i, end = 0, len(text)
    while i < end:
        char = text[i]
        if char != "$" or i + 1 == end:
            out.append(char)
            i += 1
            continue
        following = text[i + 1]
        if following == "$":
            out.append("$")
            i += 2
        elif following == "(" and (close := text.find(")", i + 2)) >= 0:
            value = lookup(text[i + 2 : close])
            out.append(text[i : close + 1] if value is None else value)
            i = close + 1
        else:
            # Not a reference: keep the "$"; what follows is copied on the next iterations.
            out.append("$")
            i += 1
    return "".join(out)


# -- names --------------------------------------------------------------------------------

_ENV_VAR_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")


def is_env_var_name(name: str) -> bool:
    """The API server's rule for environment variable names (``IsEnvVarName``)."""
    return _ENV_VAR_NAME.fullmatch(name) is not None and not name.startswith("..") and name != "."


def _env_name(name: str) -> str:
    return name.upper().replace("-", "_")


# -- service links ------------------------------------------------------------------------

MASTER_SERVICE_NAMES = frozenset({"kubernetes"})


def service_environment(
    *,
    services: Sequence[ServiceInfo],
    master_services: Sequence[ServiceInfo],
    enable_service_links: bool,
) -> dict[str, str]:
    """The service-link variables of a pod, services sorted by name (see the module docstring).

    ``master_services`` may hold the whole default namespace: only master names are taken.
    """
    chosen: dict[str, ServiceInfo] = {}
    for service in master_services:
        if service.name in MASTER_SERVICE_NAMES and _has_cluster_ip(service):
            chosen.setdefault(service.name, service)
    if enable_service_links:
        for service in services:
            if _has_cluster_ip(service):
                chosen[service.name] = service
    env: dict[str, str] = {}
    for name in sorted(chosen):
        env.update(_service_variables(chosen[name]))
    return env


def _has_cluster_ip(service: ServiceInfo) -> bool:
    return service.cluster_ip not in ("", "None")


def _service_variables(service: ServiceInfo) -> Iterator[tuple[str, str]]:
    prefix = _env_name(service.name)
    ip = service.cluster_ip
    yield f"{prefix}_SERVICE_HOST", ip
    if not service.ports:
        return
    yield f"{prefix}_SERVICE_PORT", str(service.ports[0][1])
    for port_name, port, _ in service.ports:
        if port_name:
            yield f"{prefix}_SERVICE_PORT_{_env_name(port_name)}", str(port)
    # Docker-link style variables; an IPv6 address is bracketed like a URL host.
    host = f"[{ip}]" if ":" in ip else ip
    for index, (_, port, protocol) in enumerate(service.ports):
        proto = (protocol or "TCP").lower()
        url = f"{proto}://{host}:{port}"
        if index == 0:
            yield f"{prefix}_PORT", url
        port_prefix = f"{prefix}_PORT_{port}_{proto.upper()}"
        yield port_prefix, url
        yield f"{port_prefix}_PROTO", proto
        yield f"{port_prefix}_PORT", str(port)
        yield f"{port_prefix}_ADDR", ip


# -- manifest access ----------------------------------------------------------------------

_CONTAINER_FIELDS = (
    ("initContainers", "init container"),
    ("containers", "container"),
    ("ephemeralContainers", "ephemeral container"),
)


class _Failed(Exception):
    """Internal: stops resolution; becomes the EnvFailure."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _mapping(value: object, what: str) -> Manifest:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _Failed(Reason.INVALID_ENV_SOURCE, f"{what} is not an object")
    return value


def _entries(value: object, what: str) -> Sequence[Manifest]:
    if value is None:
        return ()
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise _Failed(Reason.INVALID_ENV_SOURCE, f"{what} is not a list")
    return [_mapping(item, f"an entry of {what}") for item in value]


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise _Failed(Reason.INVALID_ENV_SOURCE, f"{what} is not a string (got {value!r})")
    return value


def _list(value: object) -> Sequence[object]:
    return value if isinstance(value, list | tuple) else ()


def _service_links_enabled(pod: Pod) -> bool:
    # Absent means true: the API server defaults it so, and upstream left that as a TODO.
    return pod.spec.get("enableServiceLinks") is not False


def _containers(spec: Manifest) -> Iterator[tuple[str, str, int, Manifest]]:
    """(field, kind, index, container) for every container, init first, ephemeral last."""
    for field, kind in _CONTAINER_FIELDS:
        for index, container in enumerate(_entries(spec.get(field), f"spec.{field}")):
            yield field, kind, index, container


# -- what to fetch ------------------------------------------------------------------------


def required_sources(pod: Pod) -> EnvSources:
    """The configmaps and secrets the containers reference, and whether service links apply.

    Malformed entries are passed over here; :func:`resolve_environment` reports them.
    """
    config_maps: set[str] = set()
    secrets: set[str] = set()

    def add(target: set[str], ref: object) -> None:
        if isinstance(ref, Mapping) and isinstance(ref.get("name"), str) and ref["name"]:
            target.add(ref["name"])

    try:
        containers = list(_containers(pod.spec))
    except _Failed:
        containers = []
    for _, _, _, container in containers:
        for source in _list(container.get("envFrom")):
            if isinstance(source, Mapping):
                add(config_maps, source.get("configMapRef"))
                add(secrets, source.get("secretRef"))
        for var in _list(container.get("env")):
            value_from = var.get("valueFrom") if isinstance(var, Mapping) else None
            if isinstance(value_from, Mapping):
                add(config_maps, value_from.get("configMapKeyRef"))
                add(secrets, value_from.get("secretKeyRef"))
    return EnvSources(
        namespace=pod.ref.namespace,
        config_maps=tuple(sorted(config_maps)),
        secrets=tuple(sorted(secrets)),
        service_links=_service_links_enabled(pod),
    )


# -- resolution ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Kind:
    """How one kind of object (configmap or secret) is named in messages and events."""

    noun: str
    field: str  # the envFrom / valueFrom field naming it
    key_field: str
    optional_not_found: Reason
    mandatory_not_found: Reason
    optional_key_not_found: Reason
    mandatory_key_not_found: Reason
    optional_unreadable: Reason
    mandatory_unreadable: Reason


_CONFIG_MAP = _Kind(
    noun="configmap",
    field="configMapRef",
    key_field="configMapKeyRef",
    optional_not_found=Reason.OPTIONAL_CONFIG_MAP_NOT_FOUND,
    mandatory_not_found=Reason.MANDATORY_CONFIG_MAP_NOT_FOUND,
    optional_key_not_found=Reason.OPTIONAL_CONFIG_MAP_KEY_NOT_FOUND,
    mandatory_key_not_found=Reason.MANDATORY_CONFIG_MAP_KEY_NOT_FOUND,
    optional_unreadable=Reason.FAILED_TO_READ_OPTIONAL_CONFIG_MAP,
    mandatory_unreadable=Reason.FAILED_TO_READ_MANDATORY_CONFIG_MAP,
)
_SECRET = _Kind(
    noun="secret",
    field="secretRef",
    key_field="secretKeyRef",
    optional_not_found=Reason.OPTIONAL_SECRET_NOT_FOUND,
    mandatory_not_found=Reason.MANDATORY_SECRET_NOT_FOUND,
    optional_key_not_found=Reason.OPTIONAL_SECRET_KEY_NOT_FOUND,
    mandatory_key_not_found=Reason.MANDATORY_SECRET_KEY_NOT_FOUND,
    optional_unreadable=Reason.FAILED_TO_READ_OPTIONAL_SECRET,
    mandatory_unreadable=Reason.FAILED_TO_READ_MANDATORY_SECRET,
)

_NOT_FETCHED = ReadFailed("it was not fetched")


@dataclass(frozen=True, slots=True)
class _Context:
    """Everything a container's resolution reads; ``events`` is the one accumulator."""

    pod: Pod
    config_maps: Mapping[str, Lookup[Mapping[str, str]]]
    secrets: Mapping[str, Lookup[Mapping[str, bytes]]]
    host_ips: tuple[str, ...]
    pod_ips: tuple[str, ...]
    node_allocatable: Mapping[str, str]
    events: list[EnvEvent]

    def warn(self, reason: Reason, message: str) -> None:
        self.events.append(EnvEvent(EnvEventType.WARNING, reason, message))

    def lookup(self, kind: _Kind, name: str) -> Lookup[Mapping[str, str]]:
        if kind is _CONFIG_MAP:
            return self.config_maps.get(name, _NOT_FETCHED)
        secret = self.secrets.get(name, _NOT_FETCHED)
        if isinstance(secret, Found):
            return Found({key: _decode(value) for key, value in secret.data.items()})
        return secret


def _decode(value: bytes) -> str:
    # Env values are text; invalid UTF-8 becomes U+FFFD, as it would in the JSON sent onwards.
    return value.decode("utf-8", errors="replace")


def resolve_environment(
    pod: Pod,
    *,
    config_maps: Mapping[str, Lookup[Mapping[str, str]]],
    secrets: Mapping[str, Lookup[Mapping[str, bytes]]],
    services: Sequence[ServiceInfo],
    master_services: Sequence[ServiceInfo],
    host_ip: str,
    pod_ip: str,
    node_allocatable: Mapping[str, str],
    host_ips: Sequence[str] = (),
    pod_ips: Sequence[str] = (),
) -> EnvResolution:
    """Resolve every container's environment; see the module docstring for the rules.

    ``config_maps``/``secrets`` map names (in the pod's namespace) to what fetching them gave;
    ``services`` are the pod namespace's. ``host_ips``/``pod_ips`` are the dual-stack lists for
    ``status.hostIPs``/``status.podIPs`` and default to the single address. ``pod`` is not
    modified; the resolved pod is a new manifest whose containers carry ``env`` as a
    ``{name, value}`` list and no ``envFrom``.
    """
    context = _Context(
        pod=pod,
        config_maps=config_maps,
        secrets=secrets,
        host_ips=tuple(host_ips) or ((host_ip,) if host_ip else ()),
        pod_ips=tuple(pod_ips) or ((pod_ip,) if pod_ip else ()),
        node_allocatable=node_allocatable,
        events=[],
    )
    service_env = service_environment(
        services=services,
        master_services=master_services,
        enable_service_links=_service_links_enabled(pod),
    )
    # Read from the original (a resourceFieldRef may read any container); write new container
    # mappings into new lists. Everything else is shared with the original: manifests are
    # immutable, and a deep copy of each pod was the largest cost of a 5,000-pod burst.
    spec = dict(pod.spec)
    copied_lists: set[str] = set()
    try:
        for field, kind, index, container in _containers(pod.spec):
            label = f"{kind} {container.get('name', '')!r}"
            env = _resolve_container(container, label=label, service_env=service_env, context=context)
            if field not in copied_lists:
                spec[field] = list(spec[field])
                copied_lists.add(field)
            resolved = {key: value for key, value in container.items() if key != "envFrom"}
            resolved["env"] = [{"name": name, "value": value} for name, value in env.items()]
            spec[field][index] = resolved
    except _Failed as failed:
        return EnvResolution(None, tuple(context.events), EnvFailure(failed.reason, failed.message))
    manifest = dict(pod.manifest)
    if copied_lists:
        manifest["spec"] = spec
    return EnvResolution(Pod(pod.ref, manifest), tuple(context.events), None)


def _resolve_container(
    container: Manifest, *, label: str, service_env: Mapping[str, str], context: _Context
) -> dict[str, str]:
    env = dict(service_env)
    for source in _entries(container.get("envFrom"), f"envFrom of {label}"):
        _apply_env_from(source, env, label=label, context=context)
    for var in _entries(container.get("env"), f"env of {label}"):
        name = _text(var.get("name"), f"an env name of {label}")
        value = var.get("value")
        value_from = var.get("valueFrom")
        if value:
            env[name] = expand(_text(value, f"env var {name!r} of {label}"), env.get)
        elif value_from is not None:
            what = f"env var {name!r} of {label}"
            source = _mapping(value_from, what)
            resolved = _value_from(source, what=what, container=container, context=context)
            if resolved is not None:
                env[name] = resolved
        else:
            env[name] = ""
    return env


def _apply_env_from(source: Manifest, env: dict[str, str], *, label: str, context: _Context) -> None:
    kinds = [kind for kind in (_CONFIG_MAP, _SECRET) if source.get(kind.field) is not None]
    if len(kinds) != 1:
        raise _Failed(
            Reason.INVALID_ENV_SOURCE,
            f"an envFrom entry of {label} must name exactly one of configMapRef and secretRef",
        )
    kind = kinds[0]
    ref = _mapping(source[kind.field], f"envFrom {kind.field} of {label}")
    name = _text(ref.get("name"), f"envFrom {kind.field} name of {label}")
    prefix = _text(source.get("prefix") or "", f"envFrom prefix of {label}")
    optional = ref.get("optional") is True
    data = _fetch(kind, name, optional=optional, what=f"envFrom of {label}", context=context)
    if data is None:
        return
    invalid: list[str] = []
    for key in sorted(data):
        full = prefix + key
        if is_env_var_name(full):
            env[full] = data[key]
        else:
            invalid.append(full)
    if invalid:
        context.warn(
            Reason.INVALID_ENVIRONMENT_VARIABLE_NAMES,
            f"keys [{', '.join(invalid)}] from the envFrom {kind.noun} {name!r} of {label} were "
            "skipped since they are not valid environment variable names",
        )


def _fetch(
    kind: _Kind, name: str, *, optional: bool, what: str, context: _Context
) -> Mapping[str, str] | None:
    """The object's data; None (with an event) when optional and unavailable."""
    match context.lookup(kind, name):
        case Found(data):
            return data
        case Missing():
            reason = kind.optional_not_found if optional else kind.mandatory_not_found
            message = f"{kind.noun} {name!r} not found, referenced by {what}"
        case ReadFailed(error):
            reason = kind.optional_unreadable if optional else kind.mandatory_unreadable
            message = f"failed to read {kind.noun} {name!r}, referenced by {what}: {error}"
    if not optional:
        raise _Failed(reason, message)
    context.warn(reason, message + "; skipped")
    return None


def _value_from(value_from: Manifest, *, what: str, container: Manifest, context: _Context) -> str | None:
    """The variable's value, or None when an optional reference is unavailable."""
    for kind in (_CONFIG_MAP, _SECRET):
        if value_from.get(kind.key_field) is not None:
            ref = _mapping(value_from[kind.key_field], f"{kind.key_field} of {what}")
            return _key_ref(kind, ref, what=what, context=context)
    if value_from.get("fieldRef") is not None:
        return _field_ref(_mapping(value_from["fieldRef"], f"fieldRef of {what}"), what=what, context=context)
    if value_from.get("resourceFieldRef") is not None:
        ref = _mapping(value_from["resourceFieldRef"], f"resourceFieldRef of {what}")
        return _resource_field_ref(ref, what=what, container=container, context=context)
    raise _Failed(
        Reason.INVALID_ENV_SOURCE,
        f"valueFrom of {what} names no supported source (got {sorted(value_from)})",
    )


def _key_ref(kind: _Kind, ref: Manifest, *, what: str, context: _Context) -> str | None:
    name = _text(ref.get("name"), f"{kind.key_field} name of {what}")
    key = _text(ref.get("key"), f"{kind.key_field} key of {what}")
    optional = ref.get("optional") is True
    data = _fetch(kind, name, optional=optional, what=what, context=context)
    if data is None:
        return None
    if key in data:
        return data[key]
    message = f"key {key!r} not found in {kind.noun} {name!r}, referenced by {what}"
    if not optional:
        raise _Failed(kind.mandatory_key_not_found, message)
    context.warn(kind.optional_key_not_found, message + "; skipped")
    return None


# -- downward API: fieldRef ---------------------------------------------------------------

# Shared with volumes: ``metadata.labels['key']`` and the like.
SUBSCRIPTED_FIELD_PATH = re.compile(r"(.+?)\['(.*)'\]", re.DOTALL)


def _field_ref(ref: Manifest, *, what: str, context: _Context) -> str:
    api_version = ref.get("apiVersion") or "v1"
    path = ref.get("fieldPath")
    if api_version != "v1":
        raise _Failed(
            Reason.INVALID_FIELD_REF, f"fieldRef of {what} has unsupported apiVersion {api_version!r}"
        )
    if not isinstance(path, str):
        raise _Failed(Reason.INVALID_FIELD_REF, f"fieldRef of {what} has no fieldPath")
    pod = context.pod
    subscripted = SUBSCRIPTED_FIELD_PATH.fullmatch(path)
    if subscripted is not None:
        field, key = subscripted.groups()
        if field == "metadata.labels":
            return str(pod.labels.get(key, ""))
        if field == "metadata.annotations":
            return str(pod.annotations.get(key, ""))
    simple: dict[str, Callable[[], str]] = {
        "metadata.name": lambda: pod.ref.name,
        "metadata.namespace": lambda: pod.ref.namespace,
        "metadata.uid": lambda: pod.ref.uid,
        "spec.nodeName": lambda: pod.node_name,
        "spec.host": lambda: pod.node_name,
        "spec.serviceAccountName": lambda: str(pod.spec.get("serviceAccountName") or ""),
        "spec.restartPolicy": lambda: str(pod.spec.get("restartPolicy") or ""),
        "spec.schedulerName": lambda: str(pod.spec.get("schedulerName") or ""),
        "status.phase": lambda: str(pod.status.get("phase") or ""),
        "status.hostIP": lambda: context.host_ips[0] if context.host_ips else "",
        "status.hostIPs": lambda: ",".join(context.host_ips),
        "status.podIP": lambda: context.pod_ips[0] if context.pod_ips else "",
        "status.podIPs": lambda: ",".join(context.pod_ips),
    }
    resolve = simple.get(path)
    if resolve is None:
        raise _Failed(Reason.INVALID_FIELD_REF, f"fieldRef of {what} has unsupported fieldPath {path!r}")
    return resolve()


# -- downward API: resourceFieldRef -------------------------------------------------------

_FALLS_BACK_TO_ALLOCATABLE = frozenset({"cpu", "memory", "ephemeral-storage"})


def _resource_field_ref(ref: Manifest, *, what: str, container: Manifest, context: _Context) -> str:
    try:
        return resource_field_value(
            context.pod, ref, what=what, container=container, node_allocatable=context.node_allocatable
        )
    except InvalidInput as exc:
        raise _Failed(Reason.INVALID_RESOURCE_FIELD_REF, str(exc)) from exc


def resource_field_value(
    pod: Pod,
    ref: Manifest,
    *,
    what: str,
    container: Manifest | None,
    node_allocatable: Mapping[str, str],
) -> str:
    """A ``resourceFieldRef``'s value with the rules of the module docstring (shared with volumes).

    ``container`` answers an empty ``containerName``; None (downward-API volumes, which must name
    their container) makes that an error. Raises InvalidInput naming ``what``.
    """
    resource = ref.get("resource")
    bucket, _, name = resource.partition(".") if isinstance(resource, str) else ("", "", "")
    if bucket not in ("limits", "requests") or not (
        name in _FALLS_BACK_TO_ALLOCATABLE or name.startswith("hugepages-")
    ):
        raise InvalidInput(f"resourceFieldRef of {what} has unsupported resource {resource!r}")
    target_name = ref.get("containerName") or ""
    if not target_name and container is None:
        raise InvalidInput(f"resourceFieldRef of {what} has no containerName")
    target = _find_container(pod, target_name) if target_name else container
    if target is None:
        raise InvalidInput(f"resourceFieldRef of {what} names unknown container {target_name!r}")
    try:
        divisor = parse_quantity(ref.get("divisor") or "1") or Fraction(1)
        amount = _container_resource(target, bucket=bucket, name=name, allocatable=node_allocatable)
    except InvalidInput as exc:
        raise InvalidInput(f"resourceFieldRef of {what}: {exc}") from exc
    # cpu is counted in millicores, the rest in whole units, each rounded up as the API does.
    scale = ceil_milli_value if name == "cpu" else ceil_value
    units = scale(divisor)
    if units <= 0:
        raise InvalidInput(
            f"resourceFieldRef of {what} has a divisor that is not positive ({ref.get('divisor')!r})"
        )
    return str(math.ceil(Fraction(scale(amount), units)))


def _find_container(pod: Pod, name: str) -> Manifest | None:
    try:
        for _, _, _, container in _containers(pod.spec):
            if container.get("name") == name:
                return container
    except _Failed:
        pass
    return None


def _container_resource(
    container: Manifest, *, bucket: str, name: str, allocatable: Mapping[str, str]
) -> Fraction:
    resources = container.get("resources")
    resources = resources if isinstance(resources, Mapping) else {}

    def declared(section: str) -> Fraction | None:
        values = resources.get(section)
        raw = values.get(name) if isinstance(values, Mapping) else None
        if raw is None:
            return None
        try:
            return parse_quantity(raw)
        except InvalidInput as exc:
            raise InvalidInput(f"{section}.{name} of the container: {exc}") from exc

    limit = declared("limits")
    if bucket == "requests":
        request = declared("requests")
        return request if request is not None else (limit or Fraction(0))
    if not limit and name in _FALLS_BACK_TO_ALLOCATABLE:
        node = allocatable.get(name)
        if node is None:
            return Fraction(0)
        try:
            return parse_quantity(node)
        except InvalidInput as exc:
            raise InvalidInput(f"node allocatable {name}: {exc}") from exc
    return limit or Fraction(0)
