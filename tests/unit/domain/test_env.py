import copy
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from vkubelet.application.ports import cluster
from vkubelet.domain.env import (
    MISSING,
    EnvEventType,
    EnvFailure,
    EnvResolution,
    EnvSources,
    Found,
    Lookup,
    ReadFailed,
    Reason,
    ServiceInfo,
    expand,
    is_env_var_name,
    required_sources,
    resolve_environment,
    service_environment,
)
from vkubelet.domain.pod import Pod

KUBERNETES = ServiceInfo("kubernetes", "10.0.0.1", (("https", 443, "TCP"),))
KUBERNETES_ENV = {
    "KUBERNETES_SERVICE_HOST": "10.0.0.1",
    "KUBERNETES_SERVICE_PORT": "443",
    "KUBERNETES_SERVICE_PORT_HTTPS": "443",
    "KUBERNETES_PORT": "tcp://10.0.0.1:443",
    "KUBERNETES_PORT_443_TCP": "tcp://10.0.0.1:443",
    "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
    "KUBERNETES_PORT_443_TCP_PORT": "443",
    "KUBERNETES_PORT_443_TCP_ADDR": "10.0.0.1",
}


def make_pod(*containers: Mapping[str, Any], **spec: Any) -> Pod:
    return Pod.from_manifest(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "namespace": "ns",
                "name": "web",
                "uid": "uid-1",
                "labels": {"app": "web"},
                "annotations": {"team": "blue"},
            },
            "spec": {"nodeName": "vk", "containers": list(containers), **spec},
        }
    )


def container(name: str = "c", **fields: Any) -> dict[str, Any]:
    return {"name": name, "image": "busybox", **fields}


def resolve(
    pod: Pod,
    *,
    config_maps: Mapping[str, Lookup[Mapping[str, str]]] | None = None,
    secrets: Mapping[str, Lookup[Mapping[str, bytes]]] | None = None,
    services: Sequence[ServiceInfo] = (),
    master_services: Sequence[ServiceInfo] = (),
    host_ip: str = "192.168.1.10",
    pod_ip: str = "",
    node_allocatable: Mapping[str, str] | None = None,
    **extra: Any,
) -> EnvResolution:
    return resolve_environment(
        pod,
        config_maps=config_maps or {},
        secrets=secrets or {},
        services=services,
        master_services=master_services,
        host_ip=host_ip,
        pod_ip=pod_ip,
        node_allocatable=node_allocatable if node_allocatable is not None else {},
        **extra,
    )


def env_of(resolution: EnvResolution, field: str = "containers", index: int = 0) -> dict[str, str]:
    assert resolution.failure is None, resolution.failure
    assert resolution.pod is not None
    entries = resolution.pod.manifest["spec"][field][index]["env"]
    as_dict = {entry["name"]: entry["value"] for entry in entries}
    assert len(as_dict) == len(entries), "names must be unique"
    return as_dict


def names_of(resolution: EnvResolution) -> list[str]:
    assert resolution.pod is not None
    return [entry["name"] for entry in resolution.pod.manifest["spec"]["containers"][0]["env"]]


def reasons(resolution: EnvResolution) -> list[str]:
    return [event.reason for event in resolution.events]


def cm_ref(name: str, key: str, *, optional: bool | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": name, "key": key}
    if optional is not None:
        ref["optional"] = optional
    return {"configMapKeyRef": ref}


def secret_ref(name: str, key: str, *, optional: bool | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": name, "key": key}
    if optional is not None:
        ref["optional"] = optional
    return {"secretKeyRef": ref}


# -- $(VAR) expansion -----------------------------------------------------------------------

VARS = {"A": "alpha", "B": "beta", "EMPTY": ""}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", "plain"),
        ("$(A)", "alpha"),
        ("$(A)-$(B)", "alpha-beta"),
        ("x$(A)y", "xalphay"),
        ("$(EMPTY)", ""),
        ("$(UNDEFINED)", "$(UNDEFINED)"),
        ("$(A)$(UNDEFINED)", "alpha$(UNDEFINED)"),
        ("$$(A)", "$(A)"),
        ("$$$(A)", "$alpha"),
        ("$$", "$"),
        ("$$$$", "$$"),
        ("$", "$"),
        ("a$", "a$"),
        ("$A", "$A"),
        ("$ $", "$ $"),
        ("$(A", "$(A"),
        ("$(", "$("),
        ("$()", "$()"),
        ("$(A)$", "alpha$"),
        ("$(A$(B)", "$(A$(B)"),  # the name is "A$(B", undefined
    ],
)
def test_expand(text: str, expected: str) -> None:
    assert expand(text, VARS.get) == expected


def test_expand_does_not_expand_substituted_values() -> None:
    assert expand("$(A)", {"A": "$(B)", "B": "no"}.get) == "$(B)"


# -- names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("FOO", True),
        ("foo_bar", True),
        ("my.env-name", True),
        ("_X1", True),
        (".x", True),
        ("1ABC", False),
        ("A B", False),
        ("A=B", False),
        ("", False),
        (".", False),
        ("..", False),
        ("..x", False),
        ("é", False),
    ],
)
def test_is_env_var_name(name: str, valid: bool) -> None:
    assert is_env_var_name(name) is valid


# -- required sources -----------------------------------------------------------------------


def test_required_sources_collects_every_container_kind() -> None:
    pod = make_pod(
        container(
            "app",
            envFrom=[{"configMapRef": {"name": "cm-a"}}, {"secretRef": {"name": "sec-a"}}],
            env=[{"name": "X", "valueFrom": cm_ref("cm-b", "k")}],
        ),
        initContainers=[container("init", env=[{"name": "Y", "valueFrom": secret_ref("sec-b", "k")}])],
        ephemeralContainers=[container("debug", envFrom=[{"configMapRef": {"name": "cm-c"}}])],
    )
    assert required_sources(pod) == EnvSources(
        namespace="ns",
        config_maps=("cm-a", "cm-b", "cm-c"),
        secrets=("sec-a", "sec-b"),
        service_links=True,
    )


@pytest.mark.parametrize(("enable", "expected"), [(True, True), (False, False), (None, True)])
def test_required_sources_service_links(enable: bool | None, expected: bool) -> None:
    spec = {} if enable is None else {"enableServiceLinks": enable}
    assert required_sources(make_pod(container(), **spec)).service_links is expected


def test_required_sources_tolerates_malformed_entries() -> None:
    pod = make_pod(
        container(env=["junk", {"name": "X", "valueFrom": {"configMapKeyRef": "junk"}}], envFrom=5),
        container("b", env={"not": "a list"}, envFrom=[None, {"configMapRef": {"name": ""}}]),
    )
    assert required_sources(pod) == EnvSources("ns", (), (), True)


# -- env, envFrom, precedence ---------------------------------------------------------------


def test_literal_and_empty_values() -> None:
    pod = make_pod(
        container(env=[{"name": "A", "value": "1"}, {"name": "EMPTY"}, {"name": "E2", "value": ""}])
    )
    assert env_of(resolve(pod)) == {"A": "1", "EMPTY": "", "E2": ""}


def test_two_config_maps_and_a_secret() -> None:
    pod = make_pod(
        container(
            env=[
                {"name": "FROM_A", "valueFrom": cm_ref("cm-a", "one")},
                {"name": "FROM_B", "valueFrom": cm_ref("cm-b", "two")},
                {"name": "PASSWORD", "valueFrom": secret_ref("creds", "password")},
            ]
        )
    )
    resolution = resolve(
        pod,
        config_maps={"cm-a": Found({"one": "1"}), "cm-b": Found({"two": "2"})},
        secrets={"creds": Found({"password": b"s3cr\xc3\xa9t"})},
    )
    assert env_of(resolution) == {"FROM_A": "1", "FROM_B": "2", "PASSWORD": "s3cr\u00e9t"}
    assert resolution.events == ()


def test_secret_values_that_are_not_utf8_are_replaced() -> None:
    pod = make_pod(container(env=[{"name": "RAW", "valueFrom": secret_ref("s", "k")}]))
    assert env_of(resolve(pod, secrets={"s": Found({"k": b"a\xffb"})}))["RAW"] == "a\ufffdb"


def test_env_from_with_prefix_and_sorted_keys() -> None:
    pod = make_pod(
        container(
            envFrom=[
                {"configMapRef": {"name": "cm"}, "prefix": "CM_"},
                {"secretRef": {"name": "sec"}},
            ]
        )
    )
    resolution = resolve(
        pod,
        config_maps={"cm": Found({"b": "2", "a": "1"})},
        secrets={"sec": Found({"TOKEN": b"t"})},
    )
    assert names_of(resolution) == ["CM_a", "CM_b", "TOKEN"]
    assert env_of(resolution) == {"CM_a": "1", "CM_b": "2", "TOKEN": "t"}


def test_env_overrides_env_from_and_keeps_first_position() -> None:
    pod = make_pod(
        container(
            envFrom=[{"configMapRef": {"name": "cm"}}],
            env=[{"name": "NEW", "value": "n"}, {"name": "SHARED", "value": "from-env"}],
        )
    )
    resolution = resolve(pod, config_maps={"cm": Found({"SHARED": "from-cm", "OTHER": "o"})})
    assert names_of(resolution) == ["OTHER", "SHARED", "NEW"]
    assert env_of(resolution)["SHARED"] == "from-env"


def test_later_env_from_overrides_earlier() -> None:
    pod = make_pod(container(envFrom=[{"configMapRef": {"name": "one"}}, {"configMapRef": {"name": "two"}}]))
    resolution = resolve(pod, config_maps={"one": Found({"X": "1"}), "two": Found({"X": "2"})})
    assert env_of(resolution) == {"X": "2"}


def test_duplicate_env_names_last_wins_in_first_position() -> None:
    pod = make_pod(
        container(env=[{"name": "A", "value": "1"}, {"name": "B", "value": "2"}, {"name": "A", "value": "3"}])
    )
    resolution = resolve(pod)
    assert names_of(resolution) == ["A", "B"]
    assert env_of(resolution) == {"A": "3", "B": "2"}


def test_invalid_env_from_names_are_skipped_with_an_event() -> None:
    pod = make_pod(
        container(
            envFrom=[{"configMapRef": {"name": "cm"}, "prefix": "P_"}, {"secretRef": {"name": "sec"}}],
        )
    )
    resolution = resolve(
        pod,
        config_maps={"cm": Found({"ok": "1", "bad key": "2", "a=b": "3"})},
        secrets={"sec": Found({"1BAD": b"x", "GOOD": b"y"})},
    )
    assert env_of(resolution) == {"P_ok": "1", "GOOD": "y"}
    assert reasons(resolution) == ["InvalidEnvironmentVariableNames"] * 2
    first, second = resolution.events
    assert first.type is EnvEventType.WARNING
    assert (
        "P_a=b, P_bad key" in first.message and "'cm'" in first.message and "container 'c'" in first.message
    )
    assert "1BAD" in second.message and "secret 'sec'" in second.message


def test_prefix_can_make_a_key_valid() -> None:
    pod = make_pod(container(envFrom=[{"configMapRef": {"name": "cm"}, "prefix": "X"}]))
    assert env_of(resolve(pod, config_maps={"cm": Found({"1": "one"})})) == {"X1": "one"}


def test_env_from_values_are_not_expanded() -> None:
    pod = make_pod(
        container(envFrom=[{"configMapRef": {"name": "cm"}}], env=[{"name": "B", "value": "$(A)"}])
    )
    resolution = resolve(pod, config_maps={"cm": Found({"A": "$(B)"})})
    assert env_of(resolution) == {"A": "$(B)", "B": "$(B)"}


def test_value_from_values_are_not_expanded() -> None:
    pod = make_pod(
        container(env=[{"name": "A", "value": "a"}, {"name": "B", "valueFrom": cm_ref("cm", "k")}])
    )
    assert env_of(resolve(pod, config_maps={"cm": Found({"k": "$(A)"})}))["B"] == "$(A)"


def test_composition_against_earlier_variables() -> None:
    pod = make_pod(
        container(
            envFrom=[{"configMapRef": {"name": "cm"}}],
            env=[
                {"name": "HOST", "value": "db"},
                {"name": "URL", "value": "postgres://$(USER)@$(HOST):$(PORT)/$(LATER)"},
                {"name": "LATER", "value": "x"},
                {"name": "PRICE", "value": "$$5 and $$(HOST)"},
                {"name": "API", "value": "$(KUBERNETES_SERVICE_HOST)"},
                {"name": "HOST", "value": "$(HOST)-2"},
            ],
        )
    )
    resolution = resolve(pod, config_maps={"cm": Found({"USER": "app"})}, master_services=[KUBERNETES])
    env = env_of(resolution)
    assert env["URL"] == "postgres://app@db:$(PORT)/$(LATER)"
    assert env["PRICE"] == "$5 and $(HOST)"
    assert env["API"] == "10.0.0.1"
    assert env["HOST"] == "db-2"


# -- missing references: every reason -------------------------------------------------------

CM_ENV = [{"name": "V", "valueFrom": cm_ref("cm", "key")}]
CM_ENV_OPTIONAL = [{"name": "V", "valueFrom": cm_ref("cm", "key", optional=True)}]
SECRET_ENV = [{"name": "V", "valueFrom": secret_ref("sec", "key", optional=False)}]
SECRET_ENV_OPTIONAL = [{"name": "V", "valueFrom": secret_ref("sec", "key", optional=True)}]


def cm_from(optional: bool) -> list[dict[str, Any]]:
    return [{"configMapRef": {"name": "cm", "optional": optional}}]


def secret_from(optional: bool) -> list[dict[str, Any]]:
    return [{"secretRef": {"name": "sec", "optional": optional}}]


OPTIONAL_CASES = [
    # (env, envFrom, config_maps, secrets, reason, words in the message)
    (CM_ENV_OPTIONAL, None, {"cm": MISSING}, {}, "OptionalConfigMapNotFound", ["'cm'", "'V'"]),
    (CM_ENV_OPTIONAL, None, {}, {}, "FailedToReadOptionalConfigMap", ["'cm'", "not fetched"]),
    (CM_ENV_OPTIONAL, None, {"cm": Found({})}, {}, "OptionalConfigMapKeyNotFound", ["'key'", "'cm'"]),
    (
        CM_ENV_OPTIONAL,
        None,
        {"cm": ReadFailed("forbidden")},
        {},
        "FailedToReadOptionalConfigMap",
        ["'cm'", "forbidden"],
    ),
    (SECRET_ENV_OPTIONAL, None, {}, {"sec": MISSING}, "OptionalSecretNotFound", ["'sec'"]),
    (SECRET_ENV_OPTIONAL, None, {}, {"sec": Found({})}, "OptionalSecretKeyNotFound", ["'key'", "'sec'"]),
    (SECRET_ENV_OPTIONAL, None, {}, {"sec": ReadFailed("boom")}, "FailedToReadOptionalSecret", ["boom"]),
    (None, cm_from(True), {"cm": MISSING}, {}, "OptionalConfigMapNotFound", ["envFrom", "'cm'"]),
    (None, cm_from(True), {"cm": ReadFailed("x")}, {}, "FailedToReadOptionalConfigMap", ["envFrom"]),
    (None, secret_from(True), {}, {"sec": MISSING}, "OptionalSecretNotFound", ["envFrom", "'sec'"]),
    (None, secret_from(True), {}, {"sec": ReadFailed("x")}, "FailedToReadOptionalSecret", ["envFrom"]),
]


@pytest.mark.parametrize(("env", "env_from", "config_maps", "secrets", "reason", "words"), OPTIONAL_CASES)
def test_optional_references_skip_the_variable_with_an_event(
    env: Any, env_from: Any, config_maps: Any, secrets: Any, reason: str, words: list[str]
) -> None:
    fields: dict[str, Any] = {"env": [*(env or []), {"name": "KEPT", "value": "k"}]}
    if env_from:
        fields["envFrom"] = env_from
    resolution = resolve(make_pod(container("app", **fields)), config_maps=config_maps, secrets=secrets)
    assert env_of(resolution) == {"KEPT": "k"}
    assert reasons(resolution) == [reason]
    (event,) = resolution.events
    assert event.type is EnvEventType.WARNING
    for word in [*words, "container 'app'"]:
        assert word in event.message


MANDATORY_CASES = [
    (CM_ENV, None, {"cm": MISSING}, {}, "MandatoryConfigMapNotFound", ["'cm'", "'V'"]),
    (CM_ENV, None, {"cm": Found({"other": "x"})}, {}, "MandatoryConfigMapKeyNotFound", ["'key'", "'cm'"]),
    (CM_ENV, None, {"cm": ReadFailed("timeout")}, {}, "FailedToReadMandatoryConfigMap", ["timeout"]),
    (CM_ENV, None, {}, {}, "FailedToReadMandatoryConfigMap", ["not fetched"]),
    (SECRET_ENV, None, {}, {"sec": MISSING}, "MandatorySecretNotFound", ["'sec'"]),
    (SECRET_ENV, None, {}, {"sec": Found({})}, "MandatorySecretKeyNotFound", ["'key'", "'sec'"]),
    (SECRET_ENV, None, {}, {"sec": ReadFailed("denied")}, "FailedToReadMandatorySecret", ["denied"]),
    (None, cm_from(False), {"cm": MISSING}, {}, "MandatoryConfigMapNotFound", ["envFrom", "'cm'"]),
    (None, cm_from(False), {"cm": ReadFailed("x")}, {}, "FailedToReadMandatoryConfigMap", ["envFrom"]),
    (None, secret_from(False), {}, {"sec": MISSING}, "MandatorySecretNotFound", ["envFrom"]),
    (None, secret_from(False), {}, {"sec": ReadFailed("x")}, "FailedToReadMandatorySecret", ["envFrom"]),
]


@pytest.mark.parametrize(("env", "env_from", "config_maps", "secrets", "reason", "words"), MANDATORY_CASES)
def test_mandatory_references_fail_the_resolution(
    env: Any, env_from: Any, config_maps: Any, secrets: Any, reason: str, words: list[str]
) -> None:
    fields: dict[str, Any] = {"env": env or []}
    if env_from:
        fields["envFrom"] = env_from
    resolution = resolve(make_pod(container("app", **fields)), config_maps=config_maps, secrets=secrets)
    assert resolution.pod is None
    assert resolution.failure is not None
    assert resolution.failure.reason == reason
    for word in [*words, "container 'app'"]:
        assert word in resolution.failure.message


def test_every_upstream_reason_is_covered() -> None:
    covered = {case[4] for case in OPTIONAL_CASES + MANDATORY_CASES} | {"InvalidEnvironmentVariableNames"}
    upstream = {reason.value for reason in Reason} - {
        "InvalidFieldRef",
        "InvalidResourceFieldRef",
        "InvalidEnvSource",
    }
    assert covered == upstream


def test_absent_optional_flag_means_mandatory() -> None:
    pod = make_pod(container(envFrom=[{"configMapRef": {"name": "cm"}}]))
    failure = resolve(pod, config_maps={"cm": MISSING}).failure
    assert failure is not None and failure.reason == "MandatoryConfigMapNotFound"


def test_failure_keeps_the_events_seen_before_it() -> None:
    pod = make_pod(
        container(env=[{"name": "A", "valueFrom": cm_ref("gone", "k", optional=True)}]),
        container("second", env=[{"name": "B", "valueFrom": secret_ref("sec", "k")}]),
    )
    resolution = resolve(pod, config_maps={"gone": MISSING}, secrets={"sec": MISSING})
    assert reasons(resolution) == ["OptionalConfigMapNotFound"]
    assert resolution.failure == EnvFailure(
        Reason.MANDATORY_SECRET_NOT_FOUND,
        "secret 'sec' not found, referenced by env var 'B' of container 'second'",
    )


# -- fieldRef -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("metadata.name", "web"),
        ("metadata.namespace", "ns"),
        ("metadata.uid", "uid-1"),
        ("metadata.labels['app']", "web"),
        ("metadata.labels['absent']", ""),
        ("metadata.annotations['team']", "blue"),
        ("metadata.annotations['absent']", ""),
        ("spec.nodeName", "vk"),
        ("spec.host", "vk"),
        ("spec.serviceAccountName", "robot"),
        ("spec.restartPolicy", "Never"),
        ("status.hostIP", "192.168.1.10"),
        ("status.hostIPs", "192.168.1.10"),
        ("status.podIP", ""),
        ("status.podIPs", ""),
    ],
)
def test_field_ref_paths(path: str, expected: str) -> None:
    pod = make_pod(
        container(env=[{"name": "V", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}]),
        serviceAccountName="robot",
        restartPolicy="Never",
    )
    assert env_of(resolve(pod))["V"] == expected


def test_field_ref_ips_come_from_the_caller() -> None:
    paths = ["status.hostIP", "status.hostIPs", "status.podIP", "status.podIPs"]
    pod = make_pod(container(env=[{"name": p, "valueFrom": {"fieldRef": {"fieldPath": p}}} for p in paths]))
    resolution = resolve(pod, host_ip="10.1.0.1", pod_ip="10.2.0.7", pod_ips=["10.2.0.7", "fd00::7"])
    assert env_of(resolution) == {
        "status.hostIP": "10.1.0.1",
        "status.hostIPs": "10.1.0.1",
        "status.podIP": "10.2.0.7",
        "status.podIPs": "10.2.0.7,fd00::7",
    }


def test_field_ref_label_key_with_dots_and_slashes() -> None:
    pod = Pod.from_manifest(
        {
            "metadata": {
                "namespace": "ns",
                "name": "p",
                "uid": "u",
                "labels": {"app.kubernetes.io/name": "x"},
            },
            "spec": {
                "containers": [
                    container(
                        env=[
                            {
                                "name": "N",
                                "valueFrom": {
                                    "fieldRef": {"fieldPath": "metadata.labels['app.kubernetes.io/name']"}
                                },
                            }
                        ]
                    )
                ]
            },
        }
    )
    assert env_of(resolve(pod))["N"] == "x"


@pytest.mark.parametrize(
    ("field_ref", "words"),
    [
        ({"fieldPath": "metadata.generateName"}, ["'metadata.generateName'"]),
        ({"fieldPath": "metadata.labels"}, ["'metadata.labels'"]),
        ({"fieldPath": "spec.containers['c']"}, ["spec.containers"]),
        ({"apiVersion": "v2", "fieldPath": "metadata.name"}, ["'v2'"]),
        ({}, ["fieldPath"]),
    ],
)
def test_unsupported_field_ref_fails(field_ref: dict[str, str], words: list[str]) -> None:
    pod = make_pod(container(env=[{"name": "V", "valueFrom": {"fieldRef": field_ref}}]))
    failure = resolve(pod).failure
    assert failure is not None and failure.reason == "InvalidFieldRef"
    for word in [*words, "'V'", "container 'c'"]:
        assert word in failure.message


# -- resourceFieldRef -----------------------------------------------------------------------


def resource_env(
    resource: str, divisor: str | None = None, container_name: str | None = None
) -> dict[str, Any]:
    ref: dict[str, Any] = {"resource": resource}
    if divisor is not None:
        ref["divisor"] = divisor
    if container_name is not None:
        ref["containerName"] = container_name
    return {"name": "V", "valueFrom": {"resourceFieldRef": ref}}


RESOURCES = {
    "limits": {"cpu": "500m", "memory": "64Mi", "ephemeral-storage": "1Gi", "hugepages-2Mi": "4Mi"},
    "requests": {"cpu": "250m", "memory": "32Mi", "ephemeral-storage": "512Mi"},
}
ALLOCATABLE = {"cpu": "4", "memory": "8Gi", "ephemeral-storage": "100Gi"}


@pytest.mark.parametrize(
    ("resources", "resource", "divisor", "expected"),
    [
        (RESOURCES, "limits.cpu", None, "1"),
        (RESOURCES, "limits.cpu", "1", "1"),
        (RESOURCES, "limits.cpu", "1m", "500"),
        (RESOURCES, "limits.cpu", "0", "1"),  # a zero divisor counts as 1
        (RESOURCES, "requests.cpu", "1m", "250"),
        (RESOURCES, "requests.cpu", None, "1"),
        (RESOURCES, "limits.memory", None, str(64 * 2**20)),
        (RESOURCES, "limits.memory", "1Mi", "64"),
        (RESOURCES, "limits.memory", "1M", "68"),  # 67.1 rounds up
        (RESOURCES, "requests.memory", "1Mi", "32"),
        (RESOURCES, "limits.ephemeral-storage", "1Gi", "1"),
        (RESOURCES, "requests.ephemeral-storage", "1Mi", "512"),
        (RESOURCES, "limits.hugepages-2Mi", "1Mi", "4"),
        (RESOURCES, "requests.hugepages-2Mi", "1Mi", "4"),  # request falls back to the limit
        # Absent limits fall back to node allocatable; absent requests to the declared limit.
        ({}, "limits.cpu", None, "4"),
        ({}, "limits.cpu", "1m", "4000"),
        ({}, "limits.memory", "1Gi", "8"),
        ({}, "limits.ephemeral-storage", "1Gi", "100"),
        ({"limits": {"cpu": "0"}}, "limits.cpu", None, "4"),  # zero counts as absent
        ({}, "requests.cpu", None, "0"),
        ({}, "requests.memory", None, "0"),
        ({"limits": {"cpu": "2"}}, "requests.cpu", "1m", "2000"),
        ({"limits": {"memory": "1Gi"}}, "requests.memory", "1Mi", "1024"),
        ({}, "limits.hugepages-1Gi", None, "0"),  # hugepages never fall back
    ],
)
def test_resource_field_ref(
    resources: Mapping[str, Any], resource: str, divisor: str | None, expected: str
) -> None:
    pod = make_pod(container(resources=resources, env=[resource_env(resource, divisor)]))
    assert env_of(resolve(pod, node_allocatable=ALLOCATABLE))["V"] == expected


def test_resource_field_ref_without_allocatable_is_zero() -> None:
    pod = make_pod(container(env=[resource_env("limits.memory")]))
    assert env_of(resolve(pod, node_allocatable={}))["V"] == "0"


def test_resource_field_ref_of_another_container() -> None:
    pod = make_pod(
        container("app", env=[resource_env("limits.memory", "1Mi", container_name="sidecar")]),
        container("sidecar", resources={"limits": {"memory": "128Mi"}}),
        initContainers=[container("setup", resources={"limits": {"cpu": "2"}})],
    )
    assert env_of(resolve(pod))["V"] == "128"
    pod = make_pod(
        container("app", env=[resource_env("limits.cpu", "1m", container_name="setup")]),
        initContainers=[container("setup", resources={"limits": {"cpu": "2"}})],
    )
    assert env_of(resolve(pod))["V"] == "2000"


@pytest.mark.parametrize(
    ("env", "resources", "allocatable", "words"),
    [
        (resource_env("limits.gpu"), {}, {}, ["'limits.gpu'"]),
        (resource_env("cpu"), {}, {}, ["'cpu'"]),
        (resource_env("limits.cpu", container_name="nope"), {}, {}, ["'nope'"]),
        (resource_env("limits.cpu", divisor="lots"), {}, {}, ["'lots'"]),
        (resource_env("limits.cpu", divisor="-1"), {}, {}, ["divisor"]),
        (resource_env("limits.cpu"), {"limits": {"cpu": "1x"}}, {}, ["limits.cpu", "'1x'"]),
        (resource_env("requests.memory"), {"requests": {"memory": "?"}}, {}, ["requests.memory", "'?'"]),
        (resource_env("limits.cpu"), {}, {"cpu": "many"}, ["node allocatable", "'many'"]),
    ],
)
def test_invalid_resource_field_ref_fails(
    env: dict[str, Any], resources: Mapping[str, Any], allocatable: Mapping[str, str], words: list[str]
) -> None:
    pod = make_pod(container(resources=resources, env=[env]))
    failure = resolve(pod, node_allocatable=allocatable).failure
    assert failure is not None and failure.reason == "InvalidResourceFieldRef"
    for word in [*words, "'V'", "container 'c'"]:
        assert word in failure.message


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ({"name": "V", "valueFrom": {"fileKeyRef": {"path": "x"}}}, ["fileKeyRef"]),
        ({"value": "no name"}, ["env name"]),
        ({"name": "V", "value": 5}, ["not a string"]),
    ],
)
def test_unsupported_env_entries_fail(entry: dict[str, Any], words: list[str]) -> None:
    failure = resolve(make_pod(container(env=[entry]))).failure
    assert failure is not None and failure.reason == "InvalidEnvSource"
    for word in words:
        assert word in failure.message


def test_env_from_naming_no_source_fails() -> None:
    failure = resolve(make_pod(container(envFrom=[{"prefix": "X_"}]))).failure
    assert failure is not None and failure.reason == "InvalidEnvSource"


# -- service links --------------------------------------------------------------------------

WEB = ServiceInfo("web-front", "10.0.0.20", (("http", 80, "TCP"), ("", 53, "UDP")))
WEB_ENV = {
    "WEB_FRONT_SERVICE_HOST": "10.0.0.20",
    "WEB_FRONT_SERVICE_PORT": "80",
    "WEB_FRONT_SERVICE_PORT_HTTP": "80",
    "WEB_FRONT_PORT": "tcp://10.0.0.20:80",
    "WEB_FRONT_PORT_80_TCP": "tcp://10.0.0.20:80",
    "WEB_FRONT_PORT_80_TCP_PROTO": "tcp",
    "WEB_FRONT_PORT_80_TCP_PORT": "80",
    "WEB_FRONT_PORT_80_TCP_ADDR": "10.0.0.20",
    "WEB_FRONT_PORT_53_UDP": "udp://10.0.0.20:53",
    "WEB_FRONT_PORT_53_UDP_PROTO": "udp",
    "WEB_FRONT_PORT_53_UDP_PORT": "53",
    "WEB_FRONT_PORT_53_UDP_ADDR": "10.0.0.20",
}
HEADLESS = ServiceInfo("headless", "None", (("", 80, "TCP"),))
NO_IP = ServiceInfo("pending", "", (("", 80, "TCP"),))


@pytest.mark.parametrize(
    ("enable", "expected"),
    [(None, {**KUBERNETES_ENV, **WEB_ENV}), (True, {**KUBERNETES_ENV, **WEB_ENV}), (False, KUBERNETES_ENV)],
)
def test_service_links(enable: bool | None, expected: dict[str, str]) -> None:
    spec = {} if enable is None else {"enableServiceLinks": enable}
    pod = make_pod(container(), **spec)
    resolution = resolve(pod, services=[WEB, HEADLESS, NO_IP], master_services=[KUBERNETES])
    assert env_of(resolution) == expected


def test_service_variables_are_ordered_by_service_then_kind() -> None:
    env = service_environment(services=[WEB], master_services=[KUBERNETES], enable_service_links=True)
    assert list(env) == [*KUBERNETES_ENV, *WEB_ENV]
    assert list(env) == list(
        service_environment(services=[WEB], master_services=[KUBERNETES], enable_service_links=True)
    )


def test_only_master_names_are_taken_from_master_services() -> None:
    other = ServiceInfo("other", "10.0.0.9", (("", 1, "TCP"),))
    env = service_environment(services=[], master_services=[other, KUBERNETES], enable_service_links=True)
    assert env == KUBERNETES_ENV


def test_a_namespace_service_replaces_the_master_one_of_the_same_name() -> None:
    own = ServiceInfo("kubernetes", "10.9.9.9", (("", 8443, "TCP"),))
    env = service_environment(services=[own], master_services=[KUBERNETES], enable_service_links=True)
    assert env["KUBERNETES_SERVICE_HOST"] == "10.9.9.9"
    env = service_environment(services=[own], master_services=[KUBERNETES], enable_service_links=False)
    assert env["KUBERNETES_SERVICE_HOST"] == "10.0.0.1"


def test_ipv6_service_and_default_protocol() -> None:
    v6 = ServiceInfo("db", "fd00::10", (("", 5432, ""),))
    env = service_environment(services=[v6], master_services=[], enable_service_links=True)
    assert env["DB_PORT"] == "tcp://[fd00::10]:5432"
    assert env["DB_PORT_5432_TCP_ADDR"] == "fd00::10"


def test_env_overrides_service_variables() -> None:
    pod = make_pod(container(env=[{"name": "KUBERNETES_SERVICE_HOST", "value": "mine"}]))
    resolution = resolve(pod, master_services=[KUBERNETES])
    assert env_of(resolution)["KUBERNETES_SERVICE_HOST"] == "mine"
    assert names_of(resolution) == list(KUBERNETES_ENV)


def test_service_info_is_re_exported_by_the_cluster_port() -> None:
    assert cluster.ServiceInfo is ServiceInfo


# -- every container kind, immutability, determinism ----------------------------------------


def full_pod() -> Pod:
    return make_pod(
        container(
            "app",
            envFrom=[{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
            env=[
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "GREETING", "value": "hi $(POD)"},
            ],
        ),
        initContainers=[container("init", env=[{"name": "TOKEN", "valueFrom": secret_ref("sec", "token")}])],
        ephemeralContainers=[
            container(
                "debug",
                env=[
                    {
                        "name": "MEM",
                        "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Gi"}},
                    }
                ],
            )
        ],
    )


def resolve_full(pod: Pod) -> EnvResolution:
    return resolve(
        pod,
        config_maps={"cm": Found({"B": "2", "A": "1"})},
        secrets={"sec": Found({"token": b"t0k"})},
        master_services=[KUBERNETES],
        node_allocatable=ALLOCATABLE,
    )


def test_init_regular_and_ephemeral_containers_are_resolved() -> None:
    resolution = resolve_full(full_pod())
    assert env_of(resolution, "initContainers") == {**KUBERNETES_ENV, "TOKEN": "t0k"}
    assert env_of(resolution) == {
        **KUBERNETES_ENV,
        "CM_A": "1",
        "CM_B": "2",
        "POD": "web",
        "GREETING": "hi web",
    }
    assert env_of(resolution, "ephemeralContainers") == {**KUBERNETES_ENV, "MEM": "8"}
    assert resolution.pod is not None
    for field in ("initContainers", "containers", "ephemeralContainers"):
        assert "envFrom" not in resolution.pod.manifest["spec"][field][0]


def test_the_input_manifest_is_not_mutated() -> None:
    pod = full_pod()
    before = copy.deepcopy(pod.manifest)
    resolution = resolve_full(pod)
    assert pod.manifest == before
    assert resolution.pod is not None and resolution.pod.ref == pod.ref
    assert resolution.pod.manifest["metadata"] == before["metadata"]
    resolution.pod.manifest["spec"]["containers"][0]["env"].append({"name": "X", "value": "y"})
    assert pod.manifest == before


def test_output_is_deterministic() -> None:
    first = resolve_full(full_pod())
    second = resolve_full(full_pod())
    assert first == second
    assert names_of(first) == [*KUBERNETES_ENV, "CM_A", "CM_B", "POD", "GREETING"]


def test_a_pod_without_containers_resolves_to_a_copy() -> None:
    pod = Pod.from_manifest({"metadata": {"namespace": "ns", "name": "p", "uid": "u"}})
    resolution = resolve(pod)
    assert resolution.pod is not None and resolution.pod.manifest == pod.manifest
    assert resolution.pod.manifest is not pod.manifest


def test_resolution_requires_exactly_one_outcome() -> None:
    with pytest.raises(ValueError):
        EnvResolution(None, (), None)
