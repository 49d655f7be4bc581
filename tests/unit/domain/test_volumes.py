import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from vkubelet.domain.env import MISSING, EnvEventType, Found, Lookup, ReadFailed
from vkubelet.domain.pod import Pod
from vkubelet.domain.volumes import (
    DEFAULT_MODE,
    VOLUME_SOURCE_KINDS,
    EmptyDirVolume,
    FileVolume,
    PodVolumes,
    TokenRequestSpec,
    UnsupportedVolume,
    VolumeFailure,
    VolumeFile,
    VolumeReason,
    VolumeResolution,
    VolumeSources,
    dropped_volume_events,
    project_volumes,
    required_volume_sources,
    token_refresh_at,
    token_refresh_due,
    unknown_volume_kinds,
)

DEFAULT_TOKEN = TokenRequestSpec("", 3600, "token")


def make_pod(
    *volumes: Any,
    containers: list[dict[str, Any]] | None = None,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    **spec: Any,
) -> Pod:
    return Pod.from_manifest(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "namespace": "ns",
                "name": "web",
                "uid": "uid-1",
                "labels": dict(labels if labels is not None else {"app": "web"}),
                "annotations": dict(annotations if annotations is not None else {"team": "blue"}),
            },
            "spec": {
                "nodeName": "vk",
                "containers": containers if containers is not None else [{"name": "c", "image": "busybox"}],
                "volumes": list(volumes),
                **spec,
            },
        }
    )


def as_files(lookup: Lookup[Mapping[str, str | bytes]]) -> Lookup[Mapping[str, bytes]]:
    """A configmap's files as the ConfigSource gives them: str values (``data``) as UTF-8, bytes
    values (``binaryData``) as they are. Lets the tests write ``data`` as text."""
    if not isinstance(lookup, Found):
        return lookup
    return Found({k: v if isinstance(v, bytes) else v.encode() for k, v in lookup.data.items()})


def project(
    pod: Pod,
    *,
    config_maps: Mapping[str, Lookup[Mapping[str, str | bytes]]] | None = None,
    secrets: Mapping[str, Lookup[Mapping[str, bytes]]] | None = None,
    tokens: Mapping[TokenRequestSpec, Lookup[str]] | None = None,
    node_allocatable: Mapping[str, str] | None = None,
    native_kinds: frozenset[str] = frozenset(),
) -> VolumeResolution:
    return project_volumes(
        pod,
        config_maps={name: as_files(lookup) for name, lookup in (config_maps or {}).items()},
        secrets=secrets or {},
        tokens=tokens or {},
        node_allocatable=node_allocatable or {},
        native_kinds=native_kinds,
    )


def volumes_of(resolution: VolumeResolution) -> PodVolumes:
    assert resolution.failure is None, resolution.failure
    assert resolution.volumes is not None
    return resolution.volumes


def files_of(resolution: VolumeResolution, name: str) -> dict[str, tuple[bytes, int]]:
    """The files of volume ``name`` as {path: (data, mode)}."""
    (volume,) = [v for v in volumes_of(resolution).files if v.name == name]
    as_dict = {file.path: (file.data, file.mode) for file in volume.files}
    assert len(as_dict) == len(volume.files), "paths must be unique"
    return as_dict


def failure_of(resolution: VolumeResolution) -> VolumeFailure:
    assert resolution.volumes is None
    assert resolution.failure is not None
    return resolution.failure


def config_map_volume(name: str = "cfg", cm: str | None = "app-config", **fields: Any) -> dict[str, Any]:
    return {"name": name, "configMap": {"name": cm, **fields}}


def secret_volume(name: str = "creds", secret: str | None = "db", **fields: Any) -> dict[str, Any]:
    return {"name": name, "secret": {"secretName": secret, **fields}}


def downward_volume(*items: Mapping[str, Any], name: str = "info", **fields: Any) -> dict[str, Any]:
    return {"name": name, "downwardAPI": {"items": list(items), **fields}}


# Sources are Any: the validation tests pass malformed ones on purpose.
def projected_volume(*sources: Any, name: str = "all", **fields: Any) -> dict[str, Any]:
    return {"name": name, "projected": {"sources": list(sources), **fields}}


def field_item(path: str, field_path: str, **fields: Any) -> dict[str, Any]:
    return {"path": path, "fieldRef": {"apiVersion": "v1", "fieldPath": field_path}, **fields}


# What ServiceAccount admission adds to every pod (kube-api-access-<random>).
KUBE_API_ACCESS = projected_volume(
    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
    {"downwardAPI": {"items": [field_item("namespace", "metadata.namespace")]}},
    name="kube-api-access-7xk2p",
    defaultMode=420,
)
ROOT_CA: dict[str, Lookup[Mapping[str, str | bytes]]] = {
    "kube-root-ca.crt": Found({"ca.crt": "-----BEGIN CERTIFICATE-----\n"})
}


# -- required sources -----------------------------------------------------------------------


def test_required_sources_collects_objects_tokens_and_unsupported_volumes() -> None:
    pod = make_pod(
        config_map_volume("a", "cm-b"),
        config_map_volume("b", "cm-a"),
        secret_volume("c", "sec-b"),
        projected_volume(
            {"configMap": {"name": "cm-b"}},
            {"configMap": {"name": "cm-c"}},
            {"secret": {"name": "sec-a"}},
            {"serviceAccountToken": {"path": "token", "audience": "vault", "expirationSeconds": 7200}},
        ),
        KUBE_API_ACCESS,
        {"name": "data", "persistentVolumeClaim": {"claimName": "pvc"}},
        {"name": "host", "hostPath": {"path": "/var/log"}},
        {"name": "scratch", "emptyDir": {}},
        downward_volume(field_item("name", "metadata.name")),
    )
    assert required_volume_sources(pod) == VolumeSources(
        namespace="ns",
        config_maps=("cm-a", "cm-b", "cm-c", "kube-root-ca.crt"),
        secrets=("sec-a", "sec-b"),
        tokens=(TokenRequestSpec("", 3607, "token"), TokenRequestSpec("vault", 7200, "token")),
        service_account="default",
        unsupported=(
            UnsupportedVolume("data", "persistentVolumeClaim"),
            UnsupportedVolume("host", "hostPath"),
        ),
    )


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, "default"),
        ({"serviceAccountName": "builder"}, "builder"),
        ({"serviceAccount": "legacy"}, "legacy"),
        ({"serviceAccountName": "new", "serviceAccount": "old"}, "new"),
    ],
)
def test_required_sources_service_account(spec: dict[str, Any], expected: str) -> None:
    assert required_volume_sources(make_pod(**spec)).service_account == expected


def test_token_defaults_and_one_key_per_audience_and_expiration() -> None:
    pod = make_pod(
        projected_volume(
            {"serviceAccountToken": {"path": "a"}},
            {"serviceAccountToken": {"path": "b", "expirationSeconds": 3600, "audience": ""}},
            {"serviceAccountToken": {"path": "c", "audience": "vault"}},
            name="one",
        ),
        projected_volume({"serviceAccountToken": {"path": "a"}}, name="two"),
    )
    tokens = required_volume_sources(pod).tokens
    # One spec per (audience, expiration): the first source's path is the one kept.
    assert [(t.audience, t.expiration_seconds, t.path) for t in tokens] == [
        ("", 3600, "a"),
        ("vault", 3600, "c"),
    ]
    assert [t.audiences for t in tokens] == [(), ("vault",)]


def test_token_specs_are_keys_by_audience_and_expiration() -> None:
    assert TokenRequestSpec("", 3600, "a") == TokenRequestSpec("", 3600, "b")
    assert hash(TokenRequestSpec("", 3600, "a")) == hash(TokenRequestSpec("", 3600, "b"))
    assert TokenRequestSpec("", 3600, "a") != TokenRequestSpec("x", 3600, "a")
    assert TokenRequestSpec("", 3600, "a") != TokenRequestSpec("", 3607, "a")
    assert sorted(
        [TokenRequestSpec("b", 1, "z"), TokenRequestSpec("a", 2, "y"), TokenRequestSpec("a", 1, "x")]
    ) == [
        TokenRequestSpec("a", 1, "x"),
        TokenRequestSpec("a", 2, "y"),
        TokenRequestSpec("b", 1, "z"),
    ]


def test_required_sources_reports_unsupported_projections_and_kinds() -> None:
    pod = make_pod(
        projected_volume({"clusterTrustBundle": {"name": "b", "path": "ca"}}, name="bundle"),
        {"name": "disk", "csi": {"driver": "x"}},
        {"name": "eph", "ephemeral": {"volumeClaimTemplate": {}}},
    )
    assert required_volume_sources(pod).unsupported == (
        UnsupportedVolume("bundle", "projected.clusterTrustBundle"),
        UnsupportedVolume("disk", "csi"),
        UnsupportedVolume("eph", "ephemeral"),
    )


def test_required_sources_tolerates_malformed_entries() -> None:
    pod = make_pod(
        "junk",
        {"name": ""},
        {"name": "two", "configMap": {"name": "x"}, "secret": {"secretName": "y"}},
        {
            "name": "p",
            "projected": {
                "sources": ["junk", {"serviceAccountToken": {"path": "t", "expirationSeconds": 60}}]
            },
        },
        {"name": "q", "projected": {"sources": {"not": "a list"}}},
        config_map_volume("empty-name", ""),
        secret_volume("no-name", None),
    )
    assert required_volume_sources(pod) == VolumeSources("ns", (), (), (), "default", ())
    assert required_volume_sources(make_pod(volumes="junk")).config_maps == ()


# -- configMap and secret volumes -----------------------------------------------------------


def test_config_map_without_items_projects_every_key() -> None:
    resolution = project(
        make_pod(config_map_volume()),
        config_maps={"app-config": Found({"app.yaml": "port: 80\n", "greeting": "h\u00e9llo"})},
    )
    assert files_of(resolution, "cfg") == {
        "app.yaml": (b"port: 80\n", 0o644),
        "greeting": ("h\u00e9llo".encode(), 0o644),
    }
    assert volumes_of(resolution).files[0].kind == "configMap"
    assert resolution.events == ()


def test_secret_without_items_keeps_bytes_verbatim() -> None:
    resolution = project(
        make_pod(secret_volume()), secrets={"db": Found({"key": b"\x00\xff\xfe", "user": b"app"})}
    )
    assert files_of(resolution, "creds") == {"key": (b"\x00\xff\xfe", 0o644), "user": (b"app", 0o644)}
    assert volumes_of(resolution).files[0].kind == "secret"


def test_items_select_keys_paths_and_modes() -> None:
    volume = config_map_volume(
        items=[
            {"key": "app.yaml", "path": "conf/app.yaml"},
            {"key": "run.sh", "path": "bin/run", "mode": 0o755},
        ],
        defaultMode=0o600,
    )
    data = {"app.yaml": "a", "run.sh": "#!/bin/sh", "unlisted": "x"}
    resolution = project(make_pod(volume), config_maps={"app-config": Found(data)})
    assert files_of(resolution, "cfg") == {"conf/app.yaml": (b"a", 0o600), "bin/run": (b"#!/bin/sh", 0o755)}


def test_default_mode_applies_to_secret_volumes() -> None:
    volume = secret_volume(
        defaultMode=0o400, items=[{"key": "k", "path": "k"}, {"key": "j", "path": "j", "mode": 0}]
    )
    resolution = project(make_pod(volume), secrets={"db": Found({"k": b"1", "j": b"2"})})
    assert files_of(resolution, "creds") == {"k": (b"1", 0o400), "j": (b"2", 0)}


def test_a_repeated_item_path_keeps_the_last_file_like_the_kubelet() -> None:
    volume = config_map_volume(items=[{"key": "a", "path": "f"}, {"key": "b", "path": "./f", "mode": 0o600}])
    resolution = project(make_pod(volume), config_maps={"app-config": Found({"a": "1", "b": "2"})})
    assert files_of(resolution, "cfg") == {"f": (b"2", 0o600)}


# binaryData: the ConfigSource hands a configmap's binaryData keys over beside its data keys, as
# raw bytes; the projection treats both alike (PNG header and a stray 0xff: not UTF-8).
PNG = b"\x89PNG\r\n\x1a\n\x00\xff"
WITH_BINARY: Mapping[str, Lookup[Mapping[str, str | bytes]]] = {
    "app-config": Found({"app.conf": "a=1\n", "logo.png": PNG})
}


def test_binary_data_keys_are_files_with_their_bytes_verbatim() -> None:
    resolution = project(make_pod(config_map_volume(defaultMode=0o600)), config_maps=WITH_BINARY)
    assert files_of(resolution, "cfg") == {"app.conf": (b"a=1\n", 0o600), "logo.png": (PNG, 0o600)}


def test_an_item_naming_a_binary_data_key_counts_as_present_and_takes_its_mode() -> None:
    volume = config_map_volume(
        items=[{"key": "logo.png", "path": "img/logo.png", "mode": 0o400}, {"key": "app.conf", "path": "c"}]
    )
    resolution = project(make_pod(volume), config_maps=WITH_BINARY)
    assert files_of(resolution, "cfg") == {"img/logo.png": (PNG, 0o400), "c": (b"a=1\n", 0o644)}


@pytest.mark.parametrize("optional", [True, False])
def test_an_item_absent_from_data_and_binary_data_fails_unless_optional(optional: bool) -> None:
    volume = config_map_volume(
        items=[{"key": "logo.png", "path": "logo"}, {"key": "absent.bin", "path": "x"}], optional=optional
    )
    resolution = project(make_pod(volume), config_maps=WITH_BINARY)
    if optional:
        assert files_of(resolution, "cfg") == {"logo": (PNG, 0o644)}
    else:
        assert failure_of(resolution) == VolumeFailure(
            VolumeReason.FAILED_MOUNT,
            'MountVolume.SetUp failed for volume "cfg" : configmap references non-existent config key: '
            "absent.bin",
        )


def test_a_projected_config_map_source_carries_binary_data_with_the_projected_modes() -> None:
    pod = make_pod(
        projected_volume(
            {"configMap": {"name": "app-config", "items": [{"key": "logo.png", "path": "p/logo.png"}]}},
            {"configMap": {"name": "gone", "optional": True, "items": [{"key": "logo.png", "path": "q"}]}},
            defaultMode=0o440,
        )
    )
    resolution = project(pod, config_maps={**WITH_BINARY, "gone": MISSING})
    assert files_of(resolution, "all") == {"p/logo.png": (PNG, 0o440)}


@pytest.mark.parametrize(
    ("volume", "config_maps", "secrets", "message"),
    [
        (
            config_map_volume(items=[{"key": "absent", "path": "x"}]),
            {"app-config": Found({"k": "v"})},
            {},
            'MountVolume.SetUp failed for volume "cfg" : '
            "configmap references non-existent config key: absent",
        ),
        (
            secret_volume(items=[{"key": "absent", "path": "x"}]),
            {},
            {"db": Found({"k": b"v"})},
            'MountVolume.SetUp failed for volume "creds" : references non-existent secret key: absent',
        ),
    ],
)
def test_absent_listed_key_fails_a_mandatory_volume(
    volume: dict[str, Any], config_maps: Any, secrets: Any, message: str
) -> None:
    failure = failure_of(project(make_pod(volume), config_maps=config_maps, secrets=secrets))
    assert failure == VolumeFailure(VolumeReason.FAILED_MOUNT, message)


def test_absent_listed_key_of_an_optional_volume_is_skipped() -> None:
    volume = config_map_volume(
        items=[{"key": "absent", "path": "x"}, {"key": "k", "path": "y"}], optional=True
    )
    resolution = project(make_pod(volume), config_maps={"app-config": Found({"k": "v"})})
    assert files_of(resolution, "cfg") == {"y": (b"v", 0o644)}
    assert resolution.events == ()


@pytest.mark.parametrize(
    "volume",
    [
        config_map_volume(optional=True),
        config_map_volume(optional=True, items=[{"key": "k", "path": "k"}]),
        secret_volume(optional=True),
    ],
)
def test_missing_optional_object_gives_an_empty_volume(volume: dict[str, Any]) -> None:
    resolution = project(make_pod(volume), config_maps={"app-config": MISSING}, secrets={"db": MISSING})
    assert volumes_of(resolution).files == (
        FileVolume(volume["name"], next(iter(volume.keys() - {"name"})), ()),
    )
    assert resolution.events == ()


@pytest.mark.parametrize(
    ("volume", "message"),
    [
        (config_map_volume(), 'MountVolume.SetUp failed for volume "cfg" : configmap "app-config" not found'),
        (
            config_map_volume(optional=False),
            'MountVolume.SetUp failed for volume "cfg" : configmap "app-config" not found',
        ),
        (secret_volume(), 'MountVolume.SetUp failed for volume "creds" : secret "db" not found'),
    ],
)
def test_missing_mandatory_object_fails_with_the_kubelet_wording(
    volume: dict[str, Any], message: str
) -> None:
    failure = failure_of(
        project(make_pod(volume), config_maps={"app-config": MISSING}, secrets={"db": MISSING})
    )
    assert failure == VolumeFailure(VolumeReason.FAILED_MOUNT, message)


@pytest.mark.parametrize("optional", [True, False])
@pytest.mark.parametrize(
    ("volume", "config_maps", "secrets", "words"),
    [
        (
            config_map_volume,
            {"app-config": ReadFailed("forbidden")},
            {},
            ['configmap "app-config"', "forbidden"],
        ),
        (secret_volume, {}, {"db": ReadFailed("timeout")}, ['secret "db"', "timeout"]),
        (config_map_volume, {}, {}, ['configmap "app-config"', "not fetched"]),
        (secret_volume, {}, {}, ['secret "db"', "not fetched"]),
    ],
)
def test_unreadable_object_fails_even_when_optional(
    optional: bool, volume: Any, config_maps: Any, secrets: Any, words: list[str]
) -> None:
    failure = failure_of(
        project(make_pod(volume(optional=optional)), config_maps=config_maps, secrets=secrets)
    )
    assert failure.reason is VolumeReason.FAILED_MOUNT
    assert failure.message.startswith("MountVolume.SetUp failed for volume ")
    for word in words:
        assert word in failure.message


# -- downward API ---------------------------------------------------------------------------


def test_downward_api_metadata_fields() -> None:
    pod = make_pod(
        downward_volume(
            field_item("name", "metadata.name"),
            field_item("namespace", "metadata.namespace"),
            field_item("uid", "metadata.uid"),
            field_item("app", "metadata.labels['app']"),
            field_item("team", "metadata.annotations['team']"),
            field_item("absent", "metadata.labels['nope']"),
            {"path": "no-version", "fieldRef": {"fieldPath": "metadata.name"}},
        )
    )
    assert files_of(project(pod), "info") == {
        "name": (b"web", 0o644),
        "namespace": (b"ns", 0o644),
        "uid": (b"uid-1", 0o644),
        "app": (b"web", 0o644),
        "team": (b"blue", 0o644),
        "absent": (b"", 0o644),
        "no-version": (b"web", 0o644),
    }


def test_downward_api_renders_whole_maps_like_the_kubelet() -> None:
    pod = make_pod(
        downward_volume(
            field_item("labels", "metadata.labels"), field_item("annotations", "metadata.annotations")
        ),
        labels={"zone": "eu", "app": "web", "tier": "front end"},
        annotations={"note": 'say "hi"\nbye', "path": "C:\\dir\ttab"},
    )
    files = files_of(project(pod), "info")
    assert files["labels"] == (b'app="web"\ntier="front end"\nzone="eu"', 0o644)
    assert files["annotations"] == (b'note="say \\"hi\\"\\nbye"\npath="C:\\\\dir\\ttab"', 0o644)


def test_downward_api_renders_empty_maps_as_empty_files() -> None:
    pod = make_pod(downward_volume(field_item("labels", "metadata.labels")), labels={})
    assert files_of(project(pod), "info") == {"labels": (b"", 0o644)}


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("plain", '"plain"'),
        ("caf\u00e9 \U0001f600", '"caf\u00e9 \U0001f600"'),  # printable non-ASCII stays as it is
        ("\x01\x1f\x7f", '"\\x01\\x1f\\x7f"'),
        ("\a\b\f\r\v", '"\\a\\b\\f\\r\\v"'),
        ("\u0085\u00a0\u00ad", '"\\u0085\\u00a0\\u00ad"'),  # C1 control, no-break space, soft hyphen
        ("a\u200bb\u2028", '"a\\u200bb\\u2028"'),
        ("\U000e0001", '"\\U000e0001"'),
        ("\ud800", '"\ufffd"'),  # a lone surrogate is U+FFFD by the time Go sees it
    ],
)
def test_downward_api_quotes_values_as_go_does(value: str, quoted: str) -> None:
    pod = make_pod(downward_volume(field_item("a", "metadata.annotations")), annotations={"k": value})
    assert files_of(project(pod), "info")["a"][0] == f"k={quoted}".encode()


def test_downward_api_modes() -> None:
    pod = make_pod(
        downward_volume(
            field_item("name", "metadata.name"),
            field_item("uid", "metadata.uid", mode=0o400),
            defaultMode=0o640,
        )
    )
    assert files_of(project(pod), "info") == {"name": (b"web", 0o640), "uid": (b"uid-1", 0o400)}


def resource_item(
    path: str, resource: str, divisor: str | None = None, container: str | None = "app"
) -> dict[str, Any]:
    ref: dict[str, Any] = {"resource": resource}
    if divisor is not None:
        ref["divisor"] = divisor
    if container is not None:
        ref["containerName"] = container
    return {"path": path, "resourceFieldRef": ref}


def test_downward_api_resource_fields() -> None:
    containers = [
        {"name": "app", "resources": {"limits": {"cpu": "500m"}, "requests": {"memory": "64Mi"}}},
        {"name": "sidecar", "resources": {"limits": {"memory": "128Mi"}}},
    ]
    pod = make_pod(
        downward_volume(
            resource_item("cpu", "limits.cpu", "1m"),
            resource_item("cpu-cores", "limits.cpu"),
            resource_item("mem-request", "requests.memory", "1Mi"),
            resource_item("mem-limit", "limits.memory", "1Gi"),  # falls back to node allocatable
            resource_item("sidecar-mem", "limits.memory", "1Mi", container="sidecar"),
        ),
        containers=containers,
    )
    files = files_of(project(pod, node_allocatable={"cpu": "4", "memory": "8Gi"}), "info")
    assert {path: data for path, (data, _) in files.items()} == {
        "cpu": b"500",
        "cpu-cores": b"1",
        "mem-request": b"64",
        "mem-limit": b"8",
        "sidecar-mem": b"128",
    }


@pytest.mark.parametrize(
    ("item", "words"),
    [
        (field_item("x", "spec.nodeName"), ["unsupported fieldPath: spec.nodeName"]),
        (field_item("x", "status.podIP"), ["unsupported fieldPath: status.podIP"]),
        (field_item("x", "spec.containers['a']"), ["does not support subscript"]),
        ({"path": "x", "fieldRef": {"apiVersion": "v2", "fieldPath": "metadata.name"}}, ["'v2'"]),
        ({"path": "x", "fieldRef": {"apiVersion": "v1"}}, ["no fieldPath"]),
        (resource_item("x", "limits.cpu", container=None), ["no containerName"]),
        (resource_item("x", "limits.cpu", container="ghost"), ["'ghost'"]),
        (resource_item("x", "limits.gpu"), ["'limits.gpu'"]),
        (resource_item("x", "limits.cpu", divisor="lots"), ["'lots'"]),
        ({"path": "x"}, ["exactly one of fieldRef and resourceFieldRef"]),
        (
            {"path": "x", **field_item("x", "metadata.name"), **resource_item("x", "limits.cpu")},
            ["exactly one"],
        ),
    ],
)
def test_invalid_downward_api_items_fail(item: dict[str, Any], words: list[str]) -> None:
    pod = make_pod(downward_volume(item), containers=[{"name": "app"}])
    failure = failure_of(project(pod))
    assert failure.reason is VolumeReason.INVALID_VOLUME
    assert failure.message.startswith('MountVolume.SetUp failed for volume "info" : ')
    for word in [*words, 'item "x"']:
        assert word in failure.message


# -- projected volumes ----------------------------------------------------------------------


def test_default_kube_api_access_volume_gives_token_ca_and_namespace() -> None:
    pod = make_pod(KUBE_API_ACCESS)
    sources = required_volume_sources(pod)
    assert [(t.audience, t.expiration_seconds, t.path) for t in sources.tokens] == [("", 3607, "token")]
    resolution = project(pod, config_maps=ROOT_CA, tokens={sources.tokens[0]: Found("eyJhbGciOi.jwt")})
    assert files_of(resolution, "kube-api-access-7xk2p") == {
        "token": (b"eyJhbGciOi.jwt", 0o644),
        "ca.crt": (b"-----BEGIN CERTIFICATE-----\n", 0o644),
        "namespace": (b"ns", 0o644),
    }
    assert [volume.kind for volume in volumes_of(resolution).files] == ["projected"]


def test_projected_merges_sources_with_one_default_mode() -> None:
    pod = make_pod(
        projected_volume(
            {"configMap": {"name": "cm"}},
            {"secret": {"name": "sec", "items": [{"key": "pw", "path": "auth/password", "mode": 0o400}]}},
            {"downwardAPI": {"items": [field_item("meta/name", "metadata.name")]}},
            {"serviceAccountToken": {"path": "auth/token", "audience": "vault", "expirationSeconds": 600}},
            defaultMode=0o640,
        )
    )
    resolution = project(
        pod,
        config_maps={"cm": Found({"settings": "s"})},
        secrets={"sec": Found({"pw": b"hunter2", "other": b"x"})},
        tokens={TokenRequestSpec("vault", 600, "token"): Found("vault-token")},
    )
    assert files_of(resolution, "all") == {
        "settings": (b"s", 0o640),
        "auth/password": (b"hunter2", 0o400),
        "meta/name": (b"web", 0o640),
        "auth/token": (b"vault-token", 0o640),
    }


def test_projected_sources_with_one_key_share_a_token_and_others_get_their_own() -> None:
    pod = make_pod(
        projected_volume(
            {"serviceAccountToken": {"path": "a"}},
            {"serviceAccountToken": {"path": "b", "expirationSeconds": 3600}},
            {"serviceAccountToken": {"path": "c", "audience": "vault"}},
        )
    )
    tokens: dict[TokenRequestSpec, Lookup[str]] = {
        DEFAULT_TOKEN: Found("api"),
        TokenRequestSpec("vault", 3600, "elsewhere"): Found("vault"),
    }
    files = files_of(project(pod, tokens=tokens), "all")
    assert {path: data for path, (data, _) in files.items()} == {"a": b"api", "b": b"api", "c": b"vault"}


def test_projected_optional_missing_source_contributes_nothing() -> None:
    pod = make_pod(
        projected_volume(
            {"configMap": {"name": "gone", "optional": True}},
            {"secret": {"name": "gone-too", "optional": True, "items": [{"key": "k", "path": "k"}]}},
            {"configMap": {"name": "cm"}},
        )
    )
    resolution = project(
        pod, config_maps={"gone": MISSING, "cm": Found({"k": "v"})}, secrets={"gone-too": MISSING}
    )
    assert files_of(resolution, "all") == {"k": (b"v", 0o644)}


def test_projected_missing_mandatory_source_fails() -> None:
    pod = make_pod(KUBE_API_ACCESS)
    failure = failure_of(
        project(
            pod,
            config_maps={"kube-root-ca.crt": MISSING},
            tokens={TokenRequestSpec("", 3607, "token"): Found("t")},
        )
    )
    assert failure == VolumeFailure(
        VolumeReason.FAILED_MOUNT,
        'MountVolume.SetUp failed for volume "kube-api-access-7xk2p" : '
        'configmap "kube-root-ca.crt" not found',
    )


@pytest.mark.parametrize(
    "sources",
    [
        [
            {"configMap": {"name": "cm", "items": [{"key": "k", "path": "same"}]}},
            {"secret": {"name": "sec", "items": [{"key": "k", "path": "same"}]}},
        ],
        [{"configMap": {"name": "cm"}}, {"secret": {"name": "sec"}}],  # both have key "k"
        [{"configMap": {"name": "cm", "items": [{"key": "k", "path": "k"}, {"key": "k", "path": "./k"}]}}],
        [
            {"serviceAccountToken": {"path": "k"}},
            {"downwardAPI": {"items": [field_item("k", "metadata.name")]}},
        ],
    ],
)
def test_projected_duplicate_paths_are_invalid(sources: list[dict[str, Any]]) -> None:
    pod = make_pod(projected_volume(*sources))
    failure = failure_of(
        project(
            pod,
            config_maps={"cm": Found({"k": "1"})},
            secrets={"sec": Found({"k": b"2"})},
            tokens={DEFAULT_TOKEN: Found("t")},
        )
    )
    assert failure.reason is VolumeReason.INVALID_VOLUME
    assert "duplicate" in failure.message and '"all"' in failure.message


def test_projected_source_with_two_kinds_is_invalid_and_an_empty_one_is_skipped() -> None:
    both = projected_volume({"configMap": {"name": "cm"}, "secret": {"name": "sec"}})
    failure = failure_of(project(make_pod(both), config_maps={"cm": Found({})}, secrets={"sec": Found({})}))
    assert failure.reason is VolumeReason.INVALID_VOLUME and "configMap, secret" in failure.message
    empty = projected_volume({}, {"configMap": None}, {"configMap": {"name": "cm"}})
    assert files_of(project(make_pod(empty), config_maps={"cm": Found({"k": "v"})}), "all") == {
        "k": (b"v", 0o644)
    }


@pytest.mark.parametrize(
    ("lookup", "message"),
    [
        (MISSING, 'failed to fetch token: serviceaccounts "builder" not found'),
        (ReadFailed("connection refused"), "failed to fetch token: connection refused"),
        (None, "failed to fetch token: it was not fetched"),
    ],
)
def test_token_that_cannot_be_had_fails_the_volume(lookup: Lookup[str] | None, message: str) -> None:
    pod = make_pod(projected_volume({"serviceAccountToken": {"path": "token"}}), serviceAccountName="builder")
    tokens = {} if lookup is None else {DEFAULT_TOKEN: lookup}
    failure = failure_of(project(pod, tokens=tokens))
    assert failure == VolumeFailure(
        VolumeReason.FAILED_MOUNT, f'MountVolume.SetUp failed for volume "all" : {message}'
    )


@pytest.mark.parametrize(
    ("expiration", "words"),
    [
        (599, "less than 10 minutes"),
        (60, "less than 10 minutes"),
        ((1 << 32) + 1, "larger than 2^32 seconds"),
        ("3600", "not an integer"),
        (True, "not an integer"),
    ],
)
def test_token_expiration_outside_the_api_bounds_is_invalid(expiration: object, words: str) -> None:
    pod = make_pod(
        projected_volume({"serviceAccountToken": {"path": "token", "expirationSeconds": expiration}})
    )
    assert required_volume_sources(pod).tokens == ()
    failure = failure_of(
        project(pod, tokens={TokenRequestSpec("", 600, "token"): Found("t"), DEFAULT_TOKEN: Found("t")})
    )
    assert failure.reason is VolumeReason.INVALID_VOLUME and words in failure.message


@pytest.mark.parametrize("expiration", [600, 1 << 32])
def test_token_expiration_bounds_are_inclusive(expiration: int) -> None:
    pod = make_pod(
        projected_volume({"serviceAccountToken": {"path": "token", "expirationSeconds": expiration}})
    )
    (spec,) = required_volume_sources(pod).tokens
    assert spec.expiration_seconds == expiration
    assert files_of(project(pod, tokens={spec: Found("t")}), "all") == {"token": (b"t", 0o644)}


def test_projected_volume_with_an_unsupported_source_is_left_out_with_a_warning() -> None:
    pod = make_pod(
        projected_volume(
            {"configMap": {"name": "cm"}}, {"podCertificate": {"signerName": "x"}}, name="certs"
        ),
        config_map_volume("cfg", "cm"),
    )
    resolution = project(pod, config_maps={"cm": Found({"k": "v"})})
    assert [volume.name for volume in volumes_of(resolution).files] == ["cfg"]
    assert [event.message for event in resolution.events] == [
        'volume "certs" of kind projected.podCertificate cannot be handed to the provider'
    ]


# -- token file mode and fsGroup ------------------------------------------------------------

TOKEN_ONLY = projected_volume(
    {"serviceAccountToken": {"path": "token"}}, {"configMap": {"name": "cm"}}, defaultMode=0o644
)


def user(uid: int | None, name: str = "c") -> dict[str, Any]:
    return {"name": name} if uid is None else {"name": name, "securityContext": {"runAsUser": uid}}


@pytest.mark.parametrize(
    ("security", "containers", "token_mode", "file_mode"),
    [
        (None, [user(None)], 0o644, 0o644),
        ({"fsGroup": 2000}, [user(None)], 0o640, 0o644),  # 0600 plus the group read fsGroup adds
        ({"runAsUser": 1000}, [user(None), user(None, "b")], 0o600, 0o644),
        (None, [user(1000), user(1000, "b")], 0o600, 0o644),
        ({"runAsUser": 1000}, [user(1000), user(0, "b")], 0o644, 0o644),  # two users: no fsUser
        (None, [user(1000), user(None, "b")], 0o644, 0o644),  # one container without a user
        ({"runAsGroup": 3000}, [user(None)], 0o644, 0o644),
    ],
)
def test_token_mode_follows_fs_user_and_fs_group(
    security: dict[str, int] | None, containers: list[dict[str, Any]], token_mode: int, file_mode: int
) -> None:
    spec: dict[str, Any] = {} if security is None else {"securityContext": security}
    pod = make_pod(TOKEN_ONLY, containers=containers, **spec)
    files = files_of(
        project(pod, config_maps={"cm": Found({"k": "v"})}, tokens={DEFAULT_TOKEN: Found("t")}), "all"
    )
    assert files == {"token": (b"t", token_mode), "k": (b"v", file_mode)}


def test_init_containers_count_for_the_fs_user() -> None:
    pod = make_pod(TOKEN_ONLY, containers=[user(1000)], initContainers=[user(None, "init")])
    files = files_of(project(pod, config_maps={"cm": Found({})}, tokens={DEFAULT_TOKEN: Found("t")}), "all")
    assert files["token"][1] == 0o644


def test_fs_group_adds_group_read_to_every_file_volume() -> None:
    pod = make_pod(
        secret_volume(
            defaultMode=0o400, items=[{"key": "k", "path": "k"}, {"key": "x", "path": "x", "mode": 0o700}]
        ),
        downward_volume(field_item("name", "metadata.name", mode=0o600)),
        securityContext={"fsGroup": 2000},
    )
    resolution = project(pod, secrets={"db": Found({"k": b"1", "x": b"2"})})
    assert files_of(resolution, "creds") == {"k": (b"1", 0o440), "x": (b"2", 0o740)}
    assert files_of(resolution, "info") == {"name": (b"web", 0o640)}


# -- emptyDir -------------------------------------------------------------------------------


def test_empty_dirs_keep_medium_and_size_limit_as_written() -> None:
    pod = make_pod(
        {"name": "cache", "emptyDir": {}},
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "512Mi"}},
        {"name": "implicit"},  # the API server defaults a volume without a source to emptyDir
    )
    assert volumes_of(project(pod)) == PodVolumes(
        files=(),
        empty_dirs=(
            EmptyDirVolume("cache"),
            EmptyDirVolume("shm", "Memory", "512Mi"),
            EmptyDirVolume("implicit"),
        ),
    )


def test_empty_dir_with_a_malformed_size_limit_is_invalid() -> None:
    failure = failure_of(project(make_pod({"name": "x", "emptyDir": {"sizeLimit": ["1Gi"]}})))
    assert failure.reason is VolumeReason.INVALID_VOLUME and "sizeLimit" in failure.message


# -- paths ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/etc/passwd", "must be relative path: /etc/passwd"),
        ("../escape", "must not contain '..'"),
        ("a/../../escape", "must not contain '..'"),
        ("a/..", "must not contain '..'"),
        ("..data", "must not start with '..'"),
        ("..x/y", "must not start with '..'"),
        ("./..data", "must not start with '..'"),
        ("", "must not be empty"),
        (".", "must name a file"),
        ("./", "must name a file"),
        ("a\0b", "NUL"),
        ("x" * 256, "filenames must be less than or equal to 255"),
        ("a/" * 2048 + "b", "must be less than or equal to 4096"),
    ],
)
def test_invalid_paths_fail_the_volume(path: str, words: str) -> None:
    pod = make_pod(config_map_volume(items=[{"key": "k", "path": path}]))
    failure = failure_of(project(pod, config_maps={"app-config": Found({"k": "v"})}))
    assert failure.reason is VolumeReason.INVALID_VOLUME
    assert failure.message.startswith('MountVolume.SetUp failed for volume "cfg" : invalid path: ')
    assert words in failure.message


@pytest.mark.parametrize(
    "volume",
    [
        downward_volume(field_item("/abs", "metadata.name")),
        projected_volume({"serviceAccountToken": {"path": "../token"}}),
        config_map_volume(),  # a key that is not a safe file name, without items
    ],
)
def test_every_kind_of_path_is_checked(volume: dict[str, Any]) -> None:
    resolution = project(
        make_pod(volume),
        config_maps={"app-config": Found({"../../etc/cron.d/x": "boom"})},
        tokens={DEFAULT_TOKEN: Found("t")},
    )
    assert failure_of(resolution).reason is VolumeReason.INVALID_VOLUME


@pytest.mark.parametrize(
    ("path", "cleaned"),
    [("a//b", "a/b"), ("./a", "a"), ("a/./b/", "a/b"), ("a/..b", "a/..b"), ("...a/b", None)],
)
def test_paths_are_cleaned(path: str, cleaned: str | None) -> None:
    pod = make_pod(config_map_volume(items=[{"key": "k", "path": path}]))
    resolution = project(pod, config_maps={"app-config": Found({"k": "v"})})
    if cleaned is None:
        assert failure_of(resolution).reason is VolumeReason.INVALID_VOLUME
    else:
        assert files_of(resolution, "cfg") == {cleaned: (b"v", 0o644)}


def test_a_path_that_is_both_a_file_and_a_directory_is_invalid() -> None:
    pod = make_pod(
        config_map_volume(items=[{"key": "k", "path": "conf"}, {"key": "k", "path": "conf/app/x"}])
    )
    failure = failure_of(project(pod, config_maps={"app-config": Found({"k": "v"})}))
    assert failure.reason is VolumeReason.INVALID_VOLUME and "conf is both a file" in failure.message


# -- unsupported kinds and malformed volumes ------------------------------------------------


def test_unsupported_kinds_warn_and_are_left_out_without_failing_the_pod() -> None:
    pod = make_pod(
        {"name": "data", "persistentVolumeClaim": {"claimName": "pvc"}},
        config_map_volume(),
        {"name": "logs", "hostPath": {"path": "/var/log"}},
        {"name": "scratch", "emptyDir": {}},
    )
    resolution = project(pod, config_maps={"app-config": Found({"k": "v"})})
    volumes = volumes_of(resolution)
    assert [v.name for v in volumes.files] == ["cfg"]
    assert [v.name for v in volumes.empty_dirs] == ["scratch"]
    assert [(e.type, e.reason, e.message) for e in resolution.events] == [
        (
            EnvEventType.WARNING,
            VolumeReason.UNSUPPORTED_VOLUME,
            'volume "data" of kind persistentVolumeClaim cannot be handed to the provider',
        ),
        (
            EnvEventType.WARNING,
            VolumeReason.UNSUPPORTED_VOLUME,
            'volume "logs" of kind hostPath cannot be handed to the provider',
        ),
    ]


def test_native_kinds_are_skipped_silently_and_other_unsupported_kinds_still_warn() -> None:
    pod = make_pod(
        {"name": "data", "persistentVolumeClaim": {"claimName": "pvc"}},
        {"name": "logs", "hostPath": {"path": "/var/log"}},
        projected_volume({"clusterTrustBundle": {"name": "b", "path": "ca"}}, name="bundle"),
        config_map_volume(),
        {"name": "disk", "csi": {"driver": "x"}},
    )
    native = frozenset({"persistentVolumeClaim", "hostPath", "projected", "configMap"})
    sources = required_volume_sources(pod, native_kinds=native)
    # A native configMap is the provider's to read: not fetched here.
    assert sources.unsupported == (UnsupportedVolume("disk", "csi"),) and sources.config_maps == ()
    resolution = project(pod, native_kinds=native)
    assert volumes_of(resolution) == PodVolumes()
    assert [e.message for e in resolution.events] == [
        'volume "disk" of kind csi cannot be handed to the provider'
    ]


def test_dropped_volumes_are_every_non_native_volume_in_declared_order() -> None:
    pod = make_pod(
        KUBE_API_ACCESS,
        {"name": "data", "persistentVolumeClaim": {"claimName": "pvc"}},
        {"name": "scratch", "emptyDir": {}},
        {"name": "defaulted"},  # the API server's emptyDir
        projected_volume({"clusterTrustBundle": {"name": "b", "path": "ca"}}, name="bundle"),
        "junk",
    )
    events = dropped_volume_events(pod, native_kinds=frozenset({"persistentVolumeClaim"}))
    assert {(e.type, e.reason) for e in events} == {(EnvEventType.WARNING, VolumeReason.UNSUPPORTED_VOLUME)}
    suffix = "is not mounted: the provider does not take volume contents (no volumes capability)"
    assert [e.message for e in events] == [
        f'volume "kube-api-access-7xk2p" of kind projected {suffix}',
        f'volume "scratch" of kind emptyDir {suffix}',
        f'volume "defaulted" of kind emptyDir {suffix}',
        f'volume "bundle" of kind projected {suffix}',
    ]
    assert (
        dropped_volume_events(pod, native_kinds=frozenset({"persistentVolumeClaim", "projected", "emptyDir"}))
        == ()
    )
    assert dropped_volume_events(make_pod()) == ()


def test_volume_kinds_are_the_v1_volume_source_fields() -> None:
    assert {"persistentVolumeClaim", "csi", "hostPath", "nfs", "configMap", "emptyDir"} <= VOLUME_SOURCE_KINDS
    assert unknown_volume_kinds(["hostPath", "hostpath", "pvc", "projected.secret"]) == (
        "hostpath",
        "projected.secret",
        "pvc",
    )


def test_events_before_a_failure_are_kept() -> None:
    pod = make_pod({"name": "data", "csi": {"driver": "x"}}, config_map_volume())
    resolution = project(pod, config_maps={"app-config": MISSING})
    assert failure_of(resolution).reason is VolumeReason.FAILED_MOUNT
    assert [event.reason for event in resolution.events] == [VolumeReason.UNSUPPORTED_VOLUME]


def test_the_first_failing_volume_is_reported() -> None:
    pod = make_pod(config_map_volume("one", "a"), config_map_volume("two", "b"))
    failure = failure_of(project(pod, config_maps={"a": MISSING, "b": MISSING}))
    assert '"one"' in failure.message and '"two"' not in failure.message


@pytest.mark.parametrize(
    ("volumes", "words"),
    [
        (
            [{"name": "x", "configMap": {"name": "a"}, "secret": {"secretName": "b"}}],
            "more than one kind (configMap, secret)",
        ),
        ([config_map_volume("x"), secret_volume("x")], '"x" is declared more than once'),
        ([{"configMap": {"name": "a"}}], "no name"),
        (["junk"], "not an object"),
        ([config_map_volume(defaultMode=0o1000)], "between 0 and 0777"),
        ([config_map_volume(defaultMode=-1)], "between 0 and 0777"),
        ([config_map_volume(defaultMode="0644")], "between 0 and 0777"),
        ([config_map_volume(items=[{"key": "k", "path": "k", "mode": True}])], "between 0 and 0777"),
        ([config_map_volume(items="k")], "not a list"),
        ([config_map_volume(cm=None)], "configMap.name"),
        ([secret_volume(secret=None)], "secret.secretName"),
        ([projected_volume("junk")], "not an object"),
        ([{"name": "x", "secret": "db"}], 'secret of volume "x" is not an object'),
    ],
)
def test_malformed_volumes_are_invalid(volumes: list[Any], words: str) -> None:
    failure = failure_of(project(make_pod(*volumes), config_maps={"app-config": Found({"k": "v"})}))
    assert failure.reason is VolumeReason.INVALID_VOLUME
    assert words in failure.message


def test_pod_without_volumes() -> None:
    assert project(make_pod()) == VolumeResolution(PodVolumes(), (), None)
    assert (
        project(Pod.from_manifest({"metadata": {"namespace": "n", "name": "p", "uid": "u"}})).volumes
        == PodVolumes()
    )


def test_resolution_holds_exactly_one_of_volumes_and_failure() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        VolumeResolution(None, (), None)
    with pytest.raises(ValueError, match="exactly one"):
        VolumeResolution(PodVolumes(), (), VolumeFailure(VolumeReason.INVALID_VOLUME, "x"))


# -- digest ---------------------------------------------------------------------------------

BASE = PodVolumes(
    files=(
        FileVolume("a", "configMap", (VolumeFile("x", b"1"), VolumeFile("y", b"2", 0o600))),
        FileVolume("b", "secret", (VolumeFile("z", b"3"),)),
    ),
    empty_dirs=(EmptyDirVolume("e"), EmptyDirVolume("m", "Memory", "1Gi")),
)


def test_digest_ignores_order() -> None:
    reordered = PodVolumes(
        files=(
            FileVolume("b", "secret", (VolumeFile("z", b"3"),)),
            FileVolume("a", "configMap", (VolumeFile("y", b"2", 0o600), VolumeFile("x", b"1"))),
        ),
        empty_dirs=(EmptyDirVolume("m", "Memory", "1Gi"), EmptyDirVolume("e")),
    )
    assert reordered.digest() == BASE.digest()
    assert BASE.digest() == BASE.digest() and len(BASE.digest()) == 64


@pytest.mark.parametrize(
    "changed",
    [
        PodVolumes(
            (
                FileVolume("a", "configMap", (VolumeFile("x", b"0"), VolumeFile("y", b"2", 0o600))),
                BASE.files[1],
            ),
            BASE.empty_dirs,
        ),
        PodVolumes(
            (
                FileVolume("a", "configMap", (VolumeFile("x", b"1"), VolumeFile("y", b"2", 0o644))),
                BASE.files[1],
            ),
            BASE.empty_dirs,
        ),
        PodVolumes(
            (
                FileVolume("a", "configMap", (VolumeFile("x", b"1"), VolumeFile("w", b"2", 0o600))),
                BASE.files[1],
            ),
            BASE.empty_dirs,
        ),
        PodVolumes((BASE.files[0], FileVolume("b", "projected", BASE.files[1].files)), BASE.empty_dirs),
        PodVolumes(
            (BASE.files[0], FileVolume("b", "secret", (VolumeFile("z", b"3"), VolumeFile("q", b"")))),
            BASE.empty_dirs,
        ),
        PodVolumes(BASE.files, (EmptyDirVolume("e"), EmptyDirVolume("m", "", "1Gi"))),
        PodVolumes(BASE.files, (EmptyDirVolume("e"), EmptyDirVolume("m", "Memory", "2Gi"))),
        PodVolumes(BASE.files, (EmptyDirVolume("e"),)),
    ],
)
def test_digest_changes_with_any_byte_mode_path_or_volume(changed: PodVolumes) -> None:
    assert changed.digest() != BASE.digest()


def test_digest_of_resolved_volumes_follows_the_source_data() -> None:
    pod = make_pod(config_map_volume())
    first = volumes_of(project(pod, config_maps={"app-config": Found({"a": "1", "b": "2"})}))
    same = volumes_of(project(pod, config_maps={"app-config": Found({"b": "2", "a": "1"})}))
    edited = volumes_of(project(pod, config_maps={"app-config": Found({"a": "1", "b": "3"})}))
    assert first.digest() == same.digest() != edited.digest()


# -- token refresh --------------------------------------------------------------------------

ISSUED = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("lifetime", "refresh_after"),
    [
        (timedelta(hours=1), timedelta(minutes=48)),  # 80% of the lifetime
        (timedelta(seconds=3607), timedelta(seconds=3607 - 721)),  # 20% counted in whole seconds
        (timedelta(minutes=10), timedelta(minutes=8)),
        (timedelta(hours=30), timedelta(hours=24)),  # 80% would be 24 h exactly
        (timedelta(hours=48), timedelta(hours=24)),  # 24 h comes before 80%
        (timedelta(days=365), timedelta(hours=24)),
    ],
)
def test_token_refresh_at_80_percent_or_24_hours(lifetime: timedelta, refresh_after: timedelta) -> None:
    expires = ISSUED + lifetime
    assert token_refresh_at(issued_at=ISSUED, expires_at=expires) == ISSUED + refresh_after
    boundary = ISSUED + refresh_after
    assert not token_refresh_due(issued_at=ISSUED, expires_at=expires, now=boundary)
    assert token_refresh_due(issued_at=ISSUED, expires_at=expires, now=boundary + timedelta(microseconds=1))
    assert not token_refresh_due(issued_at=ISSUED, expires_at=expires, now=ISSUED)


def test_token_refresh_jitter_moves_it_earlier() -> None:
    expires = ISSUED + timedelta(hours=1)
    jitter = timedelta(seconds=7)
    assert (
        token_refresh_at(issued_at=ISSUED, expires_at=expires, jitter=jitter)
        == ISSUED + timedelta(minutes=48) - jitter
    )
    now = ISSUED + timedelta(minutes=48) - timedelta(seconds=3)
    assert not token_refresh_due(issued_at=ISSUED, expires_at=expires, now=now)
    assert token_refresh_due(issued_at=ISSUED, expires_at=expires, now=now, jitter=jitter)


def test_default_mode_constant_is_the_kubelet_default() -> None:
    assert DEFAULT_MODE == 0o644 == 420


# -- imagePullSecrets -------------------------------------------------------------------------


def _pull_pod(*names: str) -> Pod:
    return Pod.from_manifest(
        {
            "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": {
                "containers": [{"name": "c", "image": "registry.example/app:1"}],
                "imagePullSecrets": [{"name": n} for n in names],
            },
        }
    )


def _docker_config(auths: dict[str, object]) -> dict[str, bytes]:
    return {".dockerconfigjson": json.dumps({"auths": auths}).encode()}


def test_image_pull_secrets_are_fetched_and_merged_first_one_wins() -> None:
    pod = _pull_pod("primary", "legacy")
    assert required_volume_sources(pod).secrets == ("legacy", "primary")
    resolution = project_volumes(
        pod,
        config_maps={},
        secrets={
            "primary": Found(_docker_config({"registry.example": {"auth": "cHJpbWFyeQ=="}})),
            "legacy": Found(
                {
                    ".dockercfg": json.dumps(
                        {"registry.example": {"auth": "bGVnYWN5"}, "other.example": {"auth": "b3RoZXI="}}
                    ).encode()
                }
            ),
        },
        tokens={},
        node_allocatable={},
    )
    assert resolution.volumes is not None and resolution.events == ()
    merged = json.loads(resolution.volumes.image_pull_secret)
    assert merged == {
        "auths": {"registry.example": {"auth": "cHJpbWFyeQ=="}, "other.example": {"auth": "b3RoZXI="}}
    }


def test_a_missing_or_malformed_pull_secret_warns_and_does_not_fail_the_pod() -> None:
    pod = _pull_pod("gone", "garbled", "fine")
    resolution = project_volumes(
        pod,
        config_maps={},
        secrets={
            "gone": MISSING,
            "garbled": Found({".dockerconfigjson": b"{not json"}),
            "fine": Found(_docker_config({"r.example": {"auth": "eA=="}})),
        },
        tokens={},
        node_allocatable={},
    )
    assert resolution.failure is None and resolution.volumes is not None
    (event,) = resolution.events
    assert event.reason == "FailedToRetrieveImagePullSecret"
    assert "(gone, garbled)" in event.message
    assert json.loads(resolution.volumes.image_pull_secret) == {"auths": {"r.example": {"auth": "eA=="}}}


def test_no_pull_secrets_means_empty_bytes_and_the_digest_sees_a_change() -> None:
    pod = _pull_pod()
    resolution = project_volumes(pod, config_maps={}, secrets={}, tokens={}, node_allocatable={})
    assert resolution.volumes is not None and resolution.volumes.image_pull_secret == b""
    assert PodVolumes().digest() != PodVolumes(image_pull_secret=b"{}").digest()
