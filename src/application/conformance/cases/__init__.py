"""The conformance cases, in the order the kit runs them (``CASES``); each module holds one group
and each case's docstring says what it proves (``docs/conformance.md`` lists them)."""

from __future__ import annotations

from vkubelet.application.conformance.cases.containers import (
    exec_exit_code_and_stdin,
    kill_container_restarts,
    logs_contain_output,
    metrics_resource_has_pod,
    stats_summary_has_pod,
    volumes_accepted,
)
from vkubelet.application.conformance.cases.node import describe_consistent, node_status_stream
from vkubelet.application.conformance.cases.pods import (
    create_and_get,
    create_idempotent,
    delete_idempotent,
    delete_removes,
    invalid_input_rejected,
    ping,
    same_name_distinct_uids,
    status_reaches_running,
    status_stream_running,
    unknown_not_found,
    update_accepted,
)
from vkubelet.application.conformance.harness import CaseSpec
from vkubelet.domain.provider import Capability

CASES: tuple[CaseSpec, ...] = (
    CaseSpec("describe_consistent", "capabilities match what the methods do", describe_consistent),
    CaseSpec("ping", "ping answers", ping),
    CaseSpec("create_and_get", "a created pod is seen by get/get_status/list", create_and_get),
    CaseSpec("create_idempotent", "creating a UID twice leaves one pod", create_idempotent),
    CaseSpec("status_reaches_running", "polled status reaches Running", status_reaches_running),
    CaseSpec(
        "status_stream_running",
        "the status stream reports Running",
        status_stream_running,
        Capability.POD_STATUS_STREAM,
    ),
    CaseSpec(
        "node_status_stream",
        "the node status stream stays open and sends whole templates",
        node_status_stream,
        Capability.NODE_STATUS_STREAM,
    ),
    CaseSpec("update_accepted", "update_pod is accepted", update_accepted),
    CaseSpec("delete_removes", "a deleted pod is gone and reported terminal", delete_removes),
    CaseSpec("delete_idempotent", "a second delete is NotFound or success", delete_idempotent),
    CaseSpec("unknown_not_found", "an unknown UID is NotFound", unknown_not_found),
    CaseSpec("same_name_distinct_uids", "pods are keyed by UID", same_name_distinct_uids),
    CaseSpec(
        "stats_summary_has_pod", "the Summary lists the pod", stats_summary_has_pod, Capability.STATS_SUMMARY
    ),
    CaseSpec(
        "metrics_resource_has_pod",
        "resource metrics carry the pod",
        metrics_resource_has_pod,
        Capability.METRICS_RESOURCE,
    ),
    CaseSpec("logs_contain_output", "logs hold the container's output", logs_contain_output, Capability.LOGS),
    CaseSpec(
        "exec_exit_code_and_stdin",
        "exec returns exit codes and passes stdin",
        exec_exit_code_and_stdin,
        Capability.EXEC,
    ),
    CaseSpec(
        "volumes_accepted",
        "volume contents are taken before the create and swapped in place",
        volumes_accepted,
        Capability.VOLUMES,
    ),
    CaseSpec(
        "kill_container_restarts",
        "a killed container restarts per restartPolicy",
        kill_container_restarts,
        Capability.KILL_CONTAINER,
    ),
    CaseSpec("invalid_input_rejected", "a pod without a UID is InvalidInput", invalid_input_rejected),
)


__all__ = ["CASES"]
