"""The pure pod-sync decisions (upstream-behavior.md §2.5-2.9 scenarios, minus its bugs)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from vkubelet.domain.errors import InvalidInput, NotSupported, Permanent, Transient
from vkubelet.domain.pod import Pod, format_time
from vkubelet.domain.sync import (
    Action,
    config_failure_status,
    containers_stopped,
    decide,
    lost_pod_status,
    provider_failure,
    spec_key,
    specs_equal,
    status_patch,
)

NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)


def make_pod(
    *,
    uid: str = "u1",
    phase: str | None = None,
    deletion_in: float | None = None,
    containers: list[dict[str, Any]] | None = None,
    restart_policy: str = "Always",
    status: dict[str, Any] | None = None,
    **spec_extra: Any,
) -> Pod:
    metadata: dict[str, Any] = {"namespace": "ns", "name": "p", "uid": uid, "resourceVersion": "5"}
    if deletion_in is not None:
        metadata["deletionTimestamp"] = format_time(NOW + timedelta(seconds=deletion_in))
        metadata["deletionGracePeriodSeconds"] = 30
    spec = {
        "containers": containers or [{"name": "c", "image": "busybox"}],
        "restartPolicy": restart_policy,
        **spec_extra,
    }
    manifest: dict[str, Any] = {"metadata": metadata, "spec": spec, "status": dict(status or {})}
    if phase:
        manifest["status"]["phase"] = phase
    return Pod.from_manifest(manifest)


RUNNING_STATUS = {
    "phase": "Running",
    "startTime": "2025-01-01T11:00:00Z",
    "containerStatuses": [{"name": "c", "state": {"running": {"startedAt": "2025-01-01T11:00:00Z"}}}],
}


def test_new_pod_is_created() -> None:
    d = decide(
        api_pod=make_pod(), provider_pod=None, applied_spec_key=None, deleted_in_provider=False, now=NOW
    )
    assert d.action is Action.CREATE


def test_pod_in_sync_does_nothing() -> None:
    pod = make_pod()
    d = decide(
        api_pod=pod, provider_pod=pod, applied_spec_key=spec_key(pod), deleted_in_provider=False, now=NOW
    )
    assert d.action is Action.NOTHING


def test_changed_spec_asks_for_an_update_check() -> None:
    old = make_pod()
    new = make_pod(activeDeadlineSeconds=30)
    d = decide(
        api_pod=new, provider_pod=old, applied_spec_key=spec_key(old), deleted_in_provider=False, now=NOW
    )
    assert d.action is Action.CHECK_UPDATE


def test_status_only_change_does_not_change_the_spec_key() -> None:
    assert spec_key(make_pod()) == spec_key(make_pod(status=RUNNING_STATUS))


@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
def test_terminal_pods_are_never_recreated(phase: str) -> None:
    d = decide(
        api_pod=make_pod(phase=phase),
        provider_pod=None,
        applied_spec_key=None,
        deleted_in_provider=False,
        now=NOW,
    )
    assert d.action is Action.NOTHING


def test_pod_gone_from_api_is_deleted_in_provider() -> None:
    d = decide(
        api_pod=None, provider_pod=make_pod(), applied_spec_key="x", deleted_in_provider=False, now=NOW
    )
    assert d.action is Action.DELETE_IN_PROVIDER


def test_dangling_pod_already_deleted_is_left_alone() -> None:
    d = decide(
        api_pod=None, provider_pod=make_pod(), applied_spec_key=None, deleted_in_provider=True, now=NOW
    )
    assert d.action is Action.NOTHING


def test_graceful_delete_first_deletes_in_provider_with_the_grace_deadline() -> None:
    pod = make_pod(deletion_in=30, status=RUNNING_STATUS)
    d = decide(
        api_pod=pod, provider_pod=pod, applied_spec_key=spec_key(pod), deleted_in_provider=False, now=NOW
    )
    assert d.action is Action.DELETE_IN_PROVIDER
    assert d.recheck_after == 30


def test_api_object_goes_as_soon_as_containers_stopped_not_after_full_grace() -> None:
    """Upstream bug 9: it always waited the whole grace period."""
    api = make_pod(deletion_in=30, status=RUNNING_STATUS)
    stopped = make_pod(
        deletion_in=30,
        status={
            "phase": "Succeeded",
            "containerStatuses": [{"name": "c", "state": {"terminated": {"exitCode": 0}}}],
        },
    )
    d = decide(api_pod=api, provider_pod=stopped, applied_spec_key="k", deleted_in_provider=True, now=NOW)
    assert d.action is Action.DELETE_IN_API


def test_still_running_after_provider_delete_waits_until_grace_deadline() -> None:
    api = make_pod(deletion_in=30, status=RUNNING_STATUS)
    d = decide(api_pod=api, provider_pod=api, applied_spec_key="k", deleted_in_provider=True, now=NOW)
    assert d.action is Action.WAIT_FOR_TERMINATION
    assert d.recheck_after == 30


def test_grace_period_over_deletes_api_object_even_if_provider_still_runs() -> None:
    api = make_pod(deletion_in=-1, status=RUNNING_STATUS)
    d = decide(api_pod=api, provider_pod=api, applied_spec_key="k", deleted_in_provider=True, now=NOW)
    assert d.action is Action.DELETE_IN_API


def test_terminating_pod_the_provider_never_had_is_deleted_from_api_at_once() -> None:
    api = make_pod(deletion_in=30)
    d = decide(api_pod=api, provider_pod=None, applied_spec_key=None, deleted_in_provider=False, now=NOW)
    assert d.action is Action.DELETE_IN_API


def test_lost_started_never_pod_is_marked_failed_others_recreated() -> None:
    never = make_pod(restart_policy="Never", status=RUNNING_STATUS)
    always = make_pod(status=RUNNING_STATUS)
    lost = decide(api_pod=never, provider_pod=None, applied_spec_key="k", deleted_in_provider=False, now=NOW)
    recreate = decide(
        api_pod=always, provider_pod=None, applied_spec_key="k", deleted_in_provider=False, now=NOW
    )
    assert lost.action is Action.MARK_LOST
    assert recreate.action is Action.CREATE


def test_specs_equal_ignores_resolved_env_order() -> None:
    a = make_pod(
        containers=[{"name": "c", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}]
    )
    b = make_pod(
        containers=[{"name": "c", "env": [{"name": "B", "value": "2"}, {"name": "A", "value": "1"}]}]
    )
    assert specs_equal(a, b)


@pytest.mark.parametrize(
    "change",
    [
        {"containers": [{"name": "c", "image": "other"}]},
        {"activeDeadlineSeconds": 5},
        {"tolerations": [{"key": "k", "operator": "Exists"}]},
    ],
)
def test_specs_equal_sees_updatable_field_changes(change: dict[str, Any]) -> None:
    assert not specs_equal(make_pod(**change), make_pod())


def test_label_change_is_a_spec_change() -> None:
    plain = make_pod()
    manifest = dict(plain.manifest)
    manifest["metadata"] = {**plain.metadata, "labels": {"a": "b"}}
    labelled = Pod(plain.ref, manifest)
    assert not specs_equal(labelled, plain)
    assert spec_key(labelled) != spec_key(plain)


def test_empty_container_statuses_count_as_stopped() -> None:
    assert containers_stopped(make_pod())
    assert not containers_stopped(make_pod(status=RUNNING_STATUS))


# -- status -------------------------------------------------------------------------------


def test_status_patch_only_carries_provider_fields_that_differ() -> None:
    api = make_pod(status={"phase": "Pending", "nominatedNodeName": "x"})
    patch = status_patch(api, {**RUNNING_STATUS, "podIP": "10.0.0.1"})
    assert patch is not None
    assert patch["phase"] == "Running"
    assert patch["podIP"] == "10.0.0.1"
    assert "nominatedNodeName" not in patch


def test_status_in_sync_gives_no_patch() -> None:
    api = make_pod(status=RUNNING_STATUS)
    assert status_patch(api, RUNNING_STATUS) is None


def test_conditions_compared_by_type_ignoring_timestamps() -> None:
    api = make_pod(status={"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "a"}]})
    same = {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "b"}]}
    flipped = {"conditions": [{"type": "Ready", "status": "False"}]}
    assert status_patch(api, same) is None
    assert status_patch(api, flipped) == flipped


def test_a_reason_the_provider_no_longer_reports_is_cleared_then_in_sync() -> None:
    """Ready False with a reason, then True without one: the patch must null the reason and
    message (conditions merge by type), or the pod says Ready=True/ContainersNotReady and is
    re-patched on every sync."""
    unready = {"type": "Ready", "status": "False", "reason": "ContainersNotReady", "message": "[app]"}
    api = make_pod(status={"conditions": [unready]})
    patch = status_patch(api, {"conditions": [{"type": "Ready", "status": "True"}]})
    assert patch == {"conditions": [{"type": "Ready", "status": "True", "reason": None, "message": None}]}
    patched = make_pod(
        status={"conditions": [{"type": "Ready", "status": "True"}]}
    )  # as the server merges it
    assert status_patch(patched, {"conditions": [{"type": "Ready", "status": "True"}]}) is None


def test_terminal_api_status_is_never_overwritten() -> None:
    assert status_patch(make_pod(phase="Failed"), RUNNING_STATUS) is None


# -- failures -----------------------------------------------------------------------------


def test_transient_error_never_fails_a_restart_never_pod() -> None:
    """Upstream bug 12: one transient CreatePod error failed restartPolicy=Never pods forever."""
    pod = make_pod(restart_policy="Never")
    policy = provider_failure(pod, Transient("provider restarting"), message="provider restarting")
    assert policy.retry
    assert policy.status["phase"] == "Pending"
    assert policy.status["reason"] == "ProviderFailed"


@pytest.mark.parametrize("error", [Permanent("bad image"), InvalidInput("bad spec"), NotSupported("no gpus")])
def test_errors_retrying_cannot_fix_fail_the_pod(error: Exception) -> None:
    policy = provider_failure(make_pod(), error, message=str(error))  # type: ignore[arg-type]
    assert not policy.retry
    assert policy.status["phase"] == "Failed"


def test_unclassified_error_is_treated_as_transient() -> None:
    assert provider_failure(make_pod(), None, message="boom").retry


def test_config_failure_status_says_why() -> None:
    status = config_failure_status(
        make_pod(), reason="MandatoryConfigMapNotFound", message='configmap "cm" not found'
    )
    assert status["phase"] == "Pending"
    waiting = status["containerStatuses"][0]["state"]["waiting"]
    assert waiting["reason"] == "CreateContainerConfigError"
    assert "cm" in waiting["message"]


def test_lost_pod_status_terminates_running_containers_with_137() -> None:
    status = lost_pod_status(make_pod(status=RUNNING_STATUS), now=NOW)
    assert status["phase"] == "Failed"
    terminated = status["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 137
    assert terminated["startedAt"] == "2025-01-01T11:00:00Z"


# -- ephemeral containers (kubectl debug) -----------------------------------------------------
DEBUG = {"name": "dbg", "image": "busybox", "command": ["sh"], "stdin": True, "tty": True}


def test_an_added_ephemeral_container_is_a_spec_change_the_provider_hears_about() -> None:
    # kubectl debug writes spec.ephemeralContainers through the ephemeralcontainers subresource.
    running = make_pod(status=RUNNING_STATUS)
    debugged = make_pod(status=RUNNING_STATUS, ephemeralContainers=[DEBUG])
    d = decide(
        api_pod=debugged,
        provider_pod=running,
        applied_spec_key=spec_key(running),
        deleted_in_provider=False,
        now=NOW,
    )
    assert d.action is Action.CHECK_UPDATE
    assert not specs_equal(debugged, running)
    assert specs_equal(debugged, make_pod(ephemeralContainers=[DEBUG]))


def test_ephemeral_container_statuses_are_written_from_the_provider() -> None:
    api = make_pod(status=RUNNING_STATUS, ephemeralContainers=[DEBUG])
    running = [{"name": "dbg", "state": {"running": {"startedAt": "2025-01-01T12:00:00Z"}}}]
    patch = status_patch(api, {**RUNNING_STATUS, "ephemeralContainerStatuses": running})
    assert patch == {"ephemeralContainerStatuses": running}

    exited = [{"name": "dbg", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]
    shown = make_pod(
        status={**RUNNING_STATUS, "ephemeralContainerStatuses": running}, ephemeralContainers=[DEBUG]
    )
    assert status_patch(shown, {**RUNNING_STATUS, "ephemeralContainerStatuses": exited}) == {
        "ephemeralContainerStatuses": exited
    }
    # A provider that does not report them leaves what the API shows alone.
    assert status_patch(shown, RUNNING_STATUS) is None
