"""The node configuration file (``--provider-config``) of the mock and the process provider.

A module of its own, beside the adapter packages rather than inside ``mock``, because both
providers read it and the adapter packages import none of each other (an import-linter
contract). The format is upstream's mock provider's: a JSON object keyed by node name, so one
file can describe several nodes::

    {
      "vk-0": {
        "cpu": "2", "memory": "32Gi", "pods": "128",
        "others": {"nvidia.com/gpu": "1"},
        "providerID": "mock://vk-0",
        "labels": {"topology.kubernetes.io/zone": "zone-a"},
        "taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}],
        "architecture": "arm64",
        "operatingSystem": "linux",
        "nativeVolumeKinds": ["persistentVolumeClaim", "hostPath"]
      }
    }

A node name the file does not list takes the ``"*"`` entry when there is one (ours, not
upstream's): one file then serves every replica of a StatefulSet whose pods register nodes named
after themselves (deploy/statefulset/). ``--provider process`` reads the same file without this
fallback.

``cpu``, ``memory``, ``pods``, ``others`` and ``providerID`` are upstream's keys; ``labels``,
``taints``, ``architecture``, ``operatingSystem``, ``volumes`` and ``nativeVolumeKinds`` are
ours. Absent keys take
defaults: cpu ``20``, memory ``100Gi``, pods ``20``, no extra resources, no provider ID, no
labels or taints, the host's architecture under its Go name (``amd64``, ``arm64``, ...) rather
than upstream's hard-coded amd64, the operating system the caller passes (the CLI's ``--os``,
``linux``), ``volumes`` false and no native volume kinds.

``"volumes": true`` is a **benchmarking and testing aid**: the mock then declares the VOLUMES
capability, so vkubelet resolves every pod's ConfigMap, Secret, downward-API and projected
service-account token volumes (GETs and one TokenRequest per pod) and hands the contents over
with ``set_pod_volumes``, as it does for a provider that mounts them. The mock still runs
nothing and mounts nothing: it only keeps the last contents per pod UID (dropped when the pod
is deleted). It measures what volumes cost vkubelet itself (bench/volumes.py) without real
processes. Without the key the mock answers ``set_pod_volumes`` with NotSupported and vkubelet
never resolves volumes for it.

``"nativeVolumeKinds"`` lists v1.Volume source field names (``persistentVolumeClaim``, ``csi``,
``hostPath``, ``nfs``, ...) that the mock declares it handles itself from the pod spec, as a
cloud provider with its own storage would: vkubelet then neither resolves nor warns about those
volumes (it warns about every other one it cannot hand over). A name that is no volume kind is
an error.

Where we differ from upstream (its bug 20), every problem is reported as a
:class:`MockConfigError` whose message names the file, the key and the offending value, meant to
stop the process at startup:

* no config path at all: the defaults (upstream fails reading the empty path);
* a file that lacks the node (and has no ``"*"`` entry): an error naming the node and listing
  the node keys the file has (upstream silently leaves the config empty and then fails with
  ``invalid CPU value``);
* unreadable file, unparsable JSON, a value of the wrong JSON type, a resource quantity that is
  not a Kubernetes quantity, a taint with an unknown effect, an unknown volume kind: an error.

Keys we do not know inside a node's object are logged as a warning and ignored, as Go's JSON
decoder ignores them, so files written for upstream keep loading while typos stay visible.

Quantities are checked by shape only (a regular expression for the Kubernetes quantity syntax:
a non-negative decimal number with an optional binary ``Ki..Ei``, decimal ``n u m k M G T P E``
or exponent suffix); the values are passed to the API server as written.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vkubelet.adapters.system import host_architecture
from vkubelet.domain.errors import InvalidInput
from vkubelet.domain.names import TAINT_EFFECTS, is_resource_quantity, label_problems, taint_problems
from vkubelet.domain.provider import Taint
from vkubelet.domain.volumes import VOLUME_SOURCE_KINDS, unknown_volume_kinds

log = logging.getLogger(__name__)

DEFAULT_CPU = "20"
DEFAULT_MEMORY = "100Gi"
DEFAULT_PODS = "20"

#: The entry for every node name the file does not list.
ANY_NODE = "*"

_KNOWN_KEYS = frozenset(
    {
        "cpu",
        "memory",
        "pods",
        "others",
        "providerID",
        "labels",
        "taints",
        "architecture",
        "operatingSystem",
        "volumes",
        "nativeVolumeKinds",
    }
)
# A lower-case Go GOOS/GOARCH-like word: "linux", "windows", "amd64", "ppc64le", ...
_PLATFORM_WORD = re.compile(r"^[a-z0-9][a-z0-9_]*$")


class MockConfigError(InvalidInput):
    """The mock provider's configuration is unusable; the message says where and why."""


def is_quantity(value: str) -> bool:
    """True when ``value`` is a non-negative Kubernetes resource quantity (the domain's rule)."""
    return is_resource_quantity(value)


@dataclass(frozen=True, slots=True)
class MockNodeConfig:
    """One node's entry of the config file, with defaults applied and every value checked."""

    cpu: str = DEFAULT_CPU
    memory: str = DEFAULT_MEMORY
    pods: str = DEFAULT_PODS
    others: Mapping[str, str] = field(default_factory=dict)
    provider_id: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    architecture: str = field(default_factory=host_architecture)
    operating_system: str = "linux"
    #: declare Capability.VOLUMES and keep the contents handed over (a benchmarking/testing aid)
    volumes: bool = False
    #: volume kinds (v1.Volume source fields) the mock declares it handles itself
    native_volume_kinds: frozenset[str] = frozenset()

    @property
    def capacity(self) -> dict[str, str]:
        """The node's capacity (and allocatable): cpu, memory, pods, then the extra resources."""
        return {"cpu": self.cpu, "memory": self.memory, "pods": self.pods, **self.others}


def load_mock_config(
    path: str | os.PathLike[str] | None, *, node_name: str, operating_system: str = "linux"
) -> MockNodeConfig:
    """Read ``node_name``'s entry from the file at ``path``; the defaults when ``path`` is empty.

    ``operating_system`` is the default for a missing ``operatingSystem`` key. Raises
    :class:`MockConfigError`.
    """
    if path is None or str(path) == "":
        return MockNodeConfig(operating_system=_platform_word(operating_system, "operating system", "--os"))
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MockConfigError(f"mock provider config {source}: cannot read it: {exc}") from exc
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MockConfigError(f"mock provider config {source}: not valid JSON: {exc}") from exc
    return parse_mock_config(
        document, node_name=node_name, source=source, operating_system=operating_system, any_node=True
    )


def parse_mock_config(
    document: object,
    *,
    node_name: str,
    source: str = "<config>",
    operating_system: str = "linux",
    any_node: bool = False,
) -> MockNodeConfig:
    """Validate a decoded config document and return ``node_name``'s entry (see the module doc).

    With ``any_node``, a node the document does not list takes its ``"*"`` entry, if any.
    """
    if not isinstance(document, Mapping):
        raise MockConfigError(
            f"mock provider config {source}: must be a JSON object keyed by node name, "
            f"got {_json_type(document)}"
        )
    key = node_name
    if node_name not in document and any_node and ANY_NODE in document:
        key = ANY_NODE
    if key not in document:
        present = ", ".join(sorted(repr(str(name)) for name in document)) or "none"
        fallback = f" or a {ANY_NODE!r} key for any node" if any_node else ""
        raise MockConfigError(
            f"mock provider config {source}: has no entry for node {node_name!r} "
            f"(node keys present: {present}); add a {node_name!r} key{fallback} "
            "or run without a config file"
        )
    entry = document[key]
    where = f"mock provider config {source}, node {key!r}"
    if not isinstance(entry, Mapping):
        raise MockConfigError(f"{where}: must be a JSON object, got {_json_type(entry)}")
    unknown = sorted(str(key) for key in entry if key not in _KNOWN_KEYS)
    if unknown:
        log.warning(
            "%s: ignoring unknown keys %s (known keys: %s)",
            where,
            ", ".join(unknown),
            ", ".join(sorted(_KNOWN_KEYS)),
        )

    cpu = _quantity(entry, "cpu", DEFAULT_CPU, where)
    memory = _quantity(entry, "memory", DEFAULT_MEMORY, where)
    pods = _quantity(entry, "pods", DEFAULT_PODS, where)
    others = _others(entry.get("others"), where)
    provider_id = _string(entry, "providerID", "", where)
    labels = _labels(entry.get("labels"), where)
    taints = _taints(entry.get("taints"), where)
    architecture = _platform_word(
        _string(entry, "architecture", "", where) or host_architecture(), "architecture", where
    )
    configured_os = _string(entry, "operatingSystem", "", where)
    if configured_os:
        os_name = _platform_word(configured_os, "operatingSystem", where)
    else:
        os_name = _platform_word(operating_system, "operating system", "--os")
    volumes = _boolean(entry, "volumes", False, where)
    native_volume_kinds = _volume_kinds(entry.get("nativeVolumeKinds"), where)
    return MockNodeConfig(
        cpu=cpu,
        memory=memory,
        pods=pods,
        others=others,
        provider_id=provider_id,
        labels=labels,
        taints=taints,
        architecture=architecture,
        operating_system=os_name,
        volumes=volumes,
        native_volume_kinds=native_volume_kinds,
    )


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object" if isinstance(value, Mapping) else type(value).__name__


def _quantity_value(value: object, key: str, where: str) -> str:
    # Plain JSON numbers are accepted too ("cpu": 4), though upstream only takes strings.
    if isinstance(value, int | float) and not isinstance(value, bool):
        text = str(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise MockConfigError(f'{where}: {key} must be a quantity string such as "4" or "8Gi", got {value!r}')
    if not is_quantity(text):
        raise MockConfigError(
            f'{where}: {key}={value!r} is not a valid resource quantity (examples: "2", "500m", "32Gi")'
        )
    return text


def _quantity(entry: Mapping[str, Any], key: str, default: str, where: str) -> str:
    value = entry.get(key)
    if value is None or value == "":
        return default
    return _quantity_value(value, key, where)


def _string(entry: Mapping[str, Any], key: str, default: str, where: str) -> str:
    value = entry.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise MockConfigError(f"{where}: {key} must be a string, got {value!r}")
    return value


def _boolean(entry: Mapping[str, Any], key: str, default: bool, where: str) -> bool:
    value = entry.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise MockConfigError(f"{where}: {key} must be true or false, got {value!r}")
    return value


def _platform_word(value: str, what: str, where: str) -> str:
    if not _PLATFORM_WORD.match(value):
        raise MockConfigError(
            f"{where}: {what} {value!r} must be a lower-case word such as 'linux' or 'amd64'"
        )
    return value


def _others(value: object, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise MockConfigError(
            f"{where}: others must be an object of resource name to quantity, got {value!r}"
        )
    result: dict[str, str] = {}
    for name, quantity in value.items():
        if not isinstance(name, str) or not name:
            raise MockConfigError(f"{where}: others has an empty or non-string resource name {name!r}")
        if name in ("cpu", "memory", "pods"):
            raise MockConfigError(f"{where}: others.{name} repeats a top-level key; set {name!r} directly")
        result[name] = _quantity_value(quantity, f"others[{name!r}]", where)
    return result


def _labels(value: object, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise MockConfigError(f"{where}: labels must be an object of string to string, got {value!r}")
    labels: dict[str, str] = {}
    for key, label in value.items():
        if not isinstance(key, str) or not key or not isinstance(label, str):
            raise MockConfigError(
                f"{where}: labels entry {key!r}: {label!r} must map a non-empty string to a string"
            )
        labels[key] = label
    problems = label_problems(labels)
    if problems:
        raise MockConfigError(f"{where}: labels: {'; '.join(problems)}")
    return labels


def _volume_kinds(value: object, where: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, list) or not all(isinstance(kind, str) for kind in value):
        raise MockConfigError(
            f'{where}: nativeVolumeKinds must be an array of volume kinds such as ["hostPath"], got {value!r}'
        )
    unknown = unknown_volume_kinds(value)
    if unknown:
        names = ", ".join(repr(kind) for kind in unknown)
        verb = "is not a volume kind" if len(unknown) == 1 else "are not volume kinds"
        raise MockConfigError(
            f"{where}: nativeVolumeKinds: {names} {verb} "
            f"(the v1.Volume source fields are {', '.join(sorted(VOLUME_SOURCE_KINDS))})"
        )
    return frozenset(value)


def _taints(value: object, where: str) -> tuple[Taint, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise MockConfigError(f"{where}: taints must be an array of {{key, value, effect}}, got {value!r}")
    taints: list[Taint] = []
    for index, item in enumerate(value):
        label = f"{where}: taints[{index}]"
        if not isinstance(item, Mapping):
            raise MockConfigError(f"{label} must be an object with key, value and effect, got {item!r}")
        key, taint_value, effect = item.get("key"), item.get("value", ""), item.get("effect")
        if not isinstance(key, str) or not key:
            raise MockConfigError(f"{label}: key must be a non-empty string, got {key!r}")
        if not isinstance(taint_value, str):
            raise MockConfigError(f"{label}: value must be a string, got {taint_value!r}")
        if effect not in TAINT_EFFECTS:
            raise MockConfigError(
                f"{label}: effect {effect!r} must be one of {', '.join(sorted(TAINT_EFFECTS))}"
            )
        problems = taint_problems(key=key, value=taint_value, effect=effect)
        if problems:
            raise MockConfigError(f"{label}: {'; '.join(problems)}")
        taints.append(Taint(key=key, value=taint_value, effect=str(effect)))
    return tuple(taints)
