"""The Node manifest, its conditions, readiness from pings, and the patches (upstream §3.1-3.4
scenarios, minus bugs 13, 14, 15 and 22)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from vkubelet.domain.node import (
    READY_STATE,
    REASON_PING_FAILED,
    REASON_PING_TIMEOUT,
    REASON_READY,
    REASON_UNAVAILABLE,
    PingOutcome,
    PingResult,
    ReadyState,
    adoption_patch,
    build_node,
    kubelet_version,
    node_conditions,
    ready_condition,
    ready_state,
    status_patch,
)
from vkubelet.domain.pod import format_time
from vkubelet.domain.provider import NodeAddress, NodeCondition, NodeTemplate, Taint

NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=1)
TAINT = Taint("virtual-kubelet.io/provider", "mock", "NoSchedule")
TEMPLATE = NodeTemplate(
    capacity={"cpu": "20", "memory": "100Gi", "pods": "110"},
    labels={"example.com/zone": "a"},
    addresses=(NodeAddress("Hostname", "vk-0"),),
    operating_system="linux",
    architecture="arm64",
    provider_id="mock://vk-0",
)


def make_node(template: NodeTemplate = TEMPLATE, **overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "name": "vk-0",
        "provider": "mock",
        "kubelet_port": 10250,
        "taint": TAINT,
        "kubelet_version": kubelet_version("0.1.0"),
        "internal_ip": "10.0.0.7",
        "ready": READY_STATE,
        "now": NOW,
    }
    arguments.update(overrides)
    return build_node(template, **arguments)


def by_type(conditions: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in conditions}


# --- the manifest ------------------------------------------------------------------------------


def test_node_has_virtual_kubelet_labels_including_os_and_arch() -> None:
    labels = make_node()["metadata"]["labels"]
    assert labels == {
        "type": "virtual-kubelet",
        "kubernetes.io/role": "agent",
        "kubernetes.io/hostname": "vk-0",
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "arm64",
        "node.kubernetes.io/exclude-from-external-load-balancers": "true",
        "example.com/zone": "a",
    }


def test_template_may_override_role_but_not_identity_labels() -> None:
    template = NodeTemplate(
        capacity={},
        labels={"kubernetes.io/role": "virtual", "kubernetes.io/hostname": "other", "type": "x"},
    )
    labels = make_node(template)["metadata"]["labels"]
    assert labels["kubernetes.io/role"] == "virtual"
    assert labels["kubernetes.io/hostname"] == "vk-0"
    assert labels["type"] == "virtual-kubelet"


def test_taints_are_template_taints_plus_ours_without_duplicates() -> None:
    template = NodeTemplate(
        capacity={},
        taints=(Taint("gpu", "true", "NoSchedule"), Taint(TAINT.key, "old", TAINT.effect)),
    )
    assert make_node(template)["spec"]["taints"] == [
        {"key": "gpu", "value": "true", "effect": "NoSchedule"},
        TAINT.to_manifest(),
    ]


def test_disabled_taint_leaves_only_template_taints() -> None:
    assert make_node(taint=None)["spec"]["taints"] == []


def test_status_carries_capacity_endpoint_node_info_and_no_phase() -> None:
    node = make_node()
    status = node["status"]
    assert node["spec"]["providerID"] == "mock://vk-0"
    assert status["capacity"] == {"cpu": "20", "memory": "100Gi", "pods": "110"}
    assert status["allocatable"] == status["capacity"]
    assert status["daemonEndpoints"] == {"kubeletEndpoint": {"Port": 10250}}
    assert status["nodeInfo"]["operatingSystem"] == "linux"
    assert status["nodeInfo"]["architecture"] == "arm64"
    assert status["nodeInfo"]["kubeletVersion"] == "v1.36.3-vk-0.1.0"
    assert "phase" not in status


def test_internal_ip_is_added_first_when_missing() -> None:
    assert make_node()["status"]["addresses"] == [
        {"type": "InternalIP", "address": "10.0.0.7"},
        {"type": "Hostname", "address": "vk-0"},
    ]


def test_internal_ip_already_in_template_is_not_duplicated() -> None:
    template = NodeTemplate(capacity={}, addresses=(NodeAddress("InternalIP", "10.0.0.7"),))
    assert make_node(template)["status"]["addresses"] == [{"type": "InternalIP", "address": "10.0.0.7"}]


def test_no_internal_ip_keeps_template_addresses() -> None:
    assert make_node(internal_ip=None)["status"]["addresses"] == [{"type": "Hostname", "address": "vk-0"}]


def test_explicit_allocatable_is_kept() -> None:
    template = NodeTemplate(capacity={"cpu": "4"}, allocatable={"cpu": "3"})
    assert make_node(template)["status"]["allocatable"] == {"cpu": "3"}


# --- conditions -----------------------------------------------------------------------------------


def test_ready_node_has_kubelet_ready_and_default_conditions() -> None:
    conditions = by_type(node_conditions(TEMPLATE, ready=READY_STATE, now=NOW))
    assert conditions["Ready"]["status"] == "True"
    assert conditions["Ready"]["reason"] == REASON_READY
    assert conditions["Ready"]["message"] == "kubelet is ready"
    assert {t: c["reason"] for t, c in conditions.items() if t != "Ready"} == {
        "MemoryPressure": "KubeletHasSufficientMemory",
        "DiskPressure": "KubeletHasNoDiskPressure",
        "PIDPressure": "KubeletHasSufficientPID",
        "NetworkUnavailable": "RouteCreated",
    }
    assert all(c["status"] == "False" for t, c in conditions.items() if t != "Ready")
    assert all(c["lastHeartbeatTime"] == format_time(NOW) for c in conditions.values())
    assert all(c["lastTransitionTime"] == format_time(NOW) for c in conditions.values())


def test_template_conditions_replace_defaults_of_the_same_type() -> None:
    template = NodeTemplate(
        capacity={},
        conditions=(
            NodeCondition("DiskPressure", "True", "ProviderDiskFull", "full"),
            NodeCondition("example.com/Quota", "False", "Fine", "ok"),
        ),
    )
    conditions = by_type(node_conditions(template, ready=READY_STATE, now=NOW))
    assert conditions["DiskPressure"]["reason"] == "ProviderDiskFull"
    assert conditions["example.com/Quota"]["status"] == "False"
    assert conditions["MemoryPressure"]["reason"] == "KubeletHasSufficientMemory"
    assert len(conditions) == 6


def test_provider_not_ready_condition_wins_over_a_good_ping() -> None:
    template = NodeTemplate(capacity={}, conditions=(NodeCondition("Ready", "False", "Draining", "busy"),))
    ready = by_type(node_conditions(template, ready=READY_STATE, now=NOW))["Ready"]
    assert (ready["status"], ready["reason"], ready["message"]) == ("False", "Draining", "busy")


def test_failed_ping_state_is_not_masked_by_provider_ready_condition() -> None:
    template = NodeTemplate(capacity={}, conditions=(NodeCondition("Ready", "True", "Fine", "ok"),))
    state = ReadyState.not_ready(reason=REASON_PING_FAILED, message="boom")
    ready = by_type(node_conditions(template, ready=state, now=NOW))["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", REASON_PING_FAILED)


def test_transition_time_is_kept_while_status_does_not_change() -> None:
    first = node_conditions(TEMPLATE, ready=READY_STATE, now=NOW)
    second = by_type(node_conditions(TEMPLATE, ready=READY_STATE, now=LATER, previous=first))
    assert second["Ready"]["lastTransitionTime"] == format_time(NOW)
    assert second["Ready"]["lastHeartbeatTime"] == format_time(LATER)


def test_transition_time_moves_when_status_changes_but_not_for_a_new_reason() -> None:
    first = node_conditions(TEMPLATE, ready=READY_STATE, now=NOW)
    failed = ReadyState.not_ready(reason=REASON_PING_FAILED, message="x")
    second = node_conditions(TEMPLATE, ready=failed, now=LATER, previous=first)
    assert by_type(second)["Ready"]["lastTransitionTime"] == format_time(LATER)
    assert by_type(second)["MemoryPressure"]["lastTransitionTime"] == format_time(NOW)
    timeout = ReadyState.not_ready(reason=REASON_PING_TIMEOUT, message="y")
    third = by_type(
        node_conditions(TEMPLATE, ready=timeout, now=LATER + timedelta(minutes=1), previous=second)
    )
    assert third["Ready"]["lastTransitionTime"] == format_time(LATER)
    assert third["Ready"]["reason"] == REASON_PING_TIMEOUT


# --- ping freshness -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("last_ping", "now", "expected_ready", "expected_reason"),
    [
        (None, 0.0, False, REASON_UNAVAILABLE),
        (PingResult.succeeded(at=100.0), 105.0, True, REASON_READY),
        (PingResult.succeeded(at=100.0), 120.0, True, REASON_READY),  # exactly stale_after: fresh
        (PingResult.succeeded(at=100.0), 120.5, False, REASON_PING_TIMEOUT),  # a hung ping (bug 13)
        (PingResult.failed(at=100.0, error=RuntimeError("down")), 101.0, False, REASON_PING_FAILED),
        (PingResult.timed_out(at=100.0, timeout=5), 101.0, False, REASON_PING_TIMEOUT),
        (PingResult.failed(at=100.0, error=RuntimeError("down")), 200.0, False, REASON_PING_TIMEOUT),
    ],
)
def test_ready_state_from_ping(
    last_ping: PingResult | None, now: float, expected_ready: bool, expected_reason: str
) -> None:
    state = ready_state(last_ping, now_monotonic=now, stale_after=20.0)
    assert (state.ready, state.reason) == (expected_ready, expected_reason)


def test_failed_ping_message_names_the_error() -> None:
    result = PingResult.failed(at=0.0, error=ConnectionError("provider socket closed"))
    assert result.outcome is PingOutcome.FAILED and not result.ok
    state = ready_state(result, now_monotonic=1.0, stale_after=20.0)
    assert state.message == "provider ping failed: ConnectionError: provider socket closed"
    assert state.status == "False"


def test_timed_out_ping_message_names_the_timeout() -> None:
    state = ready_state(PingResult.timed_out(at=0.0, timeout=5), now_monotonic=0.0, stale_after=20.0)
    assert state.message == "provider ping did not answer within 5 s"


# --- patches ---------------------------------------------------------------------------------------


def test_status_patch_touches_only_owned_fields_and_keeps_transition_times() -> None:
    previous = make_node()["status"]["conditions"]
    desired = make_node(now=LATER)
    patch = status_patch(previous, desired)
    assert set(patch) == {"status"}
    assert set(patch["status"]) == {
        "conditions",
        "capacity",
        "allocatable",
        "addresses",
        "nodeInfo",
        "daemonEndpoints",
    }
    ready = ready_condition(patch["status"]["conditions"])
    assert ready is not None
    assert ready["lastTransitionTime"] == format_time(NOW)
    assert ready["lastHeartbeatTime"] == format_time(LATER)


def test_status_patch_names_no_condition_owned_by_others() -> None:
    previous = [
        *make_node()["status"]["conditions"],
        {"type": "example.com/Checked", "status": "True", "reason": "ByOperator"},
    ]
    patch = status_patch(previous, make_node(now=LATER))
    assert "example.com/Checked" not in {c["type"] for c in patch["status"]["conditions"]}


def existing_node(**metadata: Any) -> dict[str, Any]:
    node = make_node()
    node["metadata"].update({"uid": "uid-1", "resourceVersion": "41", **metadata})
    return node


def test_adoption_patch_is_none_for_a_node_that_already_agrees() -> None:
    assert adoption_patch(existing_node(), make_node()) is None


def test_adoption_patch_sets_missing_labels_and_our_taint_keeping_others_taints() -> None:
    existing = existing_node(labels={"kubernetes.io/hostname": "vk-0", "team": "x"})
    existing["spec"] = {"taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]}
    patch = adoption_patch(existing, make_node())
    assert patch is not None
    labels = patch["metadata"]["labels"]
    assert "team" not in labels  # others' labels are not named, so they survive the merge
    assert "kubernetes.io/hostname" not in labels  # already right
    assert labels["kubernetes.io/os"] == "linux" and labels["kubernetes.io/arch"] == "arm64"
    assert patch["spec"]["taints"] == [
        {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
        TAINT.to_manifest(),
    ]
    assert patch["metadata"]["resourceVersion"] == "41"  # the taint list is replaced: precondition
    assert patch["spec"]["providerID"] == "mock://vk-0"


def test_adoption_patch_replaces_our_stale_taint_value() -> None:
    existing = existing_node()
    existing["spec"]["taints"] = [{"key": TAINT.key, "value": "old-provider", "effect": "NoSchedule"}]
    patch = adoption_patch(existing, make_node())
    assert patch is not None
    assert patch["spec"]["taints"] == [TAINT.to_manifest()]


def test_adoption_patch_never_changes_an_existing_provider_id() -> None:
    existing = existing_node()
    existing["spec"]["providerID"] = "aws:///i-123"
    assert adoption_patch(existing, make_node()) is None


def test_internal_ip_replaces_the_providers_so_addresses_stay_unique_by_type() -> None:
    """A second InternalIP made the API server reject status patches (merge key `type`)."""
    template = NodeTemplate(
        capacity={"cpu": "1"},
        addresses=(
            NodeAddress("InternalIP", "127.0.0.1"),
            NodeAddress("Hostname", "h"),
            NodeAddress("Hostname", "h2"),
        ),
    )
    node = build_node(
        template,
        name="vk",
        provider="p",
        kubelet_port=10250,
        taint=None,
        kubelet_version="v1",
        internal_ip="198.18.0.2",
        ready=READY_STATE,
        now=datetime(2025, 1, 1, tzinfo=UTC),
    )
    assert node["status"]["addresses"] == [
        {"type": "InternalIP", "address": "198.18.0.2"},
        {"type": "Hostname", "address": "h"},
    ]
