"""The fakes of the cluster ports behave like the API server where it matters.

Every other unit test trusts these fakes, so their merge, precondition, deletion and watch
semantics are pinned here against what kube-apiserver does.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.fakes.clock import FakeClock
from tests.fakes.cluster import (
    FakeConfigSource,
    FakeEventRecorder,
    FakeLeaseGateway,
    FakeNodeGateway,
    FakePodGateway,
    strategic_merge,
)
from vkubelet.application.ports.cluster import (
    EventType,
    Lease,
    ObjectRef,
    PodEvent,
    ServiceInfo,
    WatchEventType,
)
from vkubelet.domain.errors import Conflict, Expired, InvalidInput, NotFound, Transient
from vkubelet.domain.pod import PodRef


def pod_manifest(name: str = "web", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"containers": [{"name": "app", "image": "nginx"}], **spec},
    }


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def pods(clock: FakeClock) -> FakePodGateway:
    return FakePodGateway(node_name="vk", clock=clock)


# -- pods: store, list, resourceVersion ------------------------------------------------------


async def test_create_assigns_identity_and_increasing_resource_versions(pods: FakePodGateway) -> None:
    first = pods.create(pod_manifest("a"))
    second = pods.create(pod_manifest("b"))
    assert first.ref.uid and second.ref.uid and first.ref.uid != second.ref.uid
    assert int(second.resource_version) > int(first.resource_version)
    assert first.node_name == "vk" and first.phase.value == "Pending"
    with pytest.raises(Conflict):
        pods.create(pod_manifest("a"))


async def test_list_returns_only_this_nodes_pods_and_the_current_rv(pods: FakePodGateway) -> None:
    pods.create(pod_manifest("mine"))
    pods.create(pod_manifest("theirs", nodeName="other"))
    pods.create(pod_manifest("pending", nodeName=""))
    listed, rv = await pods.list_node_pods()
    assert [p.ref.name for p in listed] == ["mine"]
    assert rv == pods.resource_version


async def test_get_pod_reads_any_pod_and_raises_not_found(pods: FakePodGateway) -> None:
    created = pods.create(pod_manifest("web"))
    assert (await pods.get_pod("ns", "web")).ref == created.ref
    with pytest.raises(NotFound):
        await pods.get_pod("ns", "missing")


async def test_returned_pods_are_copies(pods: FakePodGateway) -> None:
    pods.create(pod_manifest("web"))
    pod = await pods.get_pod("ns", "web")
    pod.manifest["metadata"]["labels"] = {"mutated": "yes"}
    assert (await pods.get_pod("ns", "web")).labels == {}


# -- pods: status patch ----------------------------------------------------------------------


async def test_status_patch_merges_conditions_by_type_and_replaces_container_statuses(
    pods: FakePodGateway,
) -> None:
    pod = pods.create(
        {
            **pod_manifest("web"),
            "status": {
                "phase": "Pending",
                "conditions": [
                    {"type": "PodScheduled", "status": "True"},
                    {"type": "Ready", "status": "False", "reason": "Starting"},
                ],
                "containerStatuses": [
                    {"name": "app", "ready": False, "state": {"waiting": {"reason": "Creating"}}},
                    {"name": "sidecar", "ready": True},
                ],
            },
        }
    )
    updated = await pods.patch_pod_status(
        pod.ref,
        {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}, {"type": "Initialized", "status": "True"}],
            "containerStatuses": [
                {"name": "app", "ready": True, "state": {"waiting": None, "running": {"startedAt": "t"}}}
            ],
        },
    )
    status = updated.status
    assert status["phase"] == "Running"
    assert status["conditions"] == [
        {"type": "PodScheduled", "status": "True"},
        {"type": "Ready", "status": "True", "reason": "Starting"},  # fields merge, like SMP
        {"type": "Initialized", "status": "True"},
    ]
    # containerStatuses has no patchMergeKey on the real server: the patch's list replaces it.
    assert status["containerStatuses"] == [
        {"name": "app", "ready": True, "state": {"running": {"startedAt": "t"}}},
    ]
    assert int(updated.resource_version) > int(pod.resource_version)
    assert (await pods.get_pod("ns", "web")).status == status


async def test_status_patch_keeps_metadata_and_spec(pods: FakePodGateway) -> None:
    pod = pods.create(
        {**pod_manifest("web"), "metadata": {"name": "web", "namespace": "ns", "labels": {"a": "1"}}}
    )
    updated = await pods.patch_pod_status(pod.ref, {"phase": "Running"})
    assert updated.labels == {"a": "1"} and updated.spec == pod.spec


async def test_status_patch_checks_existence_and_uid(pods: FakePodGateway) -> None:
    pod = pods.create(pod_manifest("web"))
    with pytest.raises(NotFound):
        await pods.patch_pod_status(PodRef("ns", "gone", "u"), {"phase": "Running"})
    with pytest.raises(Conflict):
        await pods.patch_pod_status(PodRef("ns", "web", "another-uid"), {"phase": "Running"})
    assert (await pods.get_pod("ns", "web")).status == pod.status


async def test_keyed_list_item_without_its_merge_key_is_rejected(pods: FakePodGateway) -> None:
    pod = pods.create(pod_manifest("web"))
    with pytest.raises(InvalidInput, match="merge key 'type'"):
        await pods.patch_pod_status(pod.ref, {"conditions": [{"status": "True"}]})


def test_strategic_merge_directives_and_deletion() -> None:
    current = {"conditions": [{"type": "A"}, {"type": "B"}], "message": "x", "map": {"k": 1, "j": 2}}
    merged = strategic_merge(
        current,
        {"conditions": [{"type": "A", "$patch": "delete"}], "message": None, "map": {"j": None, "l": 3}},
        {"conditions": "type"},
    )
    assert merged == {"conditions": [{"type": "B"}], "map": {"k": 1, "l": 3}}
    replaced = strategic_merge(
        current, {"conditions": [{"type": "C"}, {"$patch": "replace"}]}, {"conditions": "type"}
    )
    assert replaced["conditions"] == [{"type": "C"}]
    assert current["conditions"] == [{"type": "A"}, {"type": "B"}], "the input is not mutated"


# -- pods: delete ----------------------------------------------------------------------------


async def test_graceful_delete_marks_the_pod_and_keeps_it(pods: FakePodGateway, clock: FakeClock) -> None:
    pod = pods.create(pod_manifest("web"))
    await pods.delete_pod(pod.ref, grace_period_seconds=30)
    marked = await pods.get_pod("ns", "web")
    assert marked.deletion_grace_period_seconds == 30
    assert marked.deletion_timestamp == datetime(2025, 1, 1, 0, 0, 30, tzinfo=UTC)
    # A later delete may only shorten the grace period...
    await pods.delete_pod(pod.ref, grace_period_seconds=60)
    assert (await pods.get_pod("ns", "web")).deletion_grace_period_seconds == 30
    await pods.delete_pod(pod.ref, grace_period_seconds=10)
    shortened = await pods.get_pod("ns", "web")
    assert shortened.deletion_grace_period_seconds == 10
    assert shortened.deletion_timestamp == datetime(2025, 1, 1, 0, 0, 10, tzinfo=UTC)
    # ...and grace 0 removes it.
    await pods.delete_pod(pod.ref, grace_period_seconds=0)
    assert pods.get("ns", "web") is None
    with pytest.raises(NotFound):
        await pods.delete_pod(pod.ref, grace_period_seconds=0)


async def test_delete_has_a_uid_precondition(pods: FakePodGateway) -> None:
    old = pods.create(pod_manifest("web"))
    pods.force_delete("ns", "web")
    new = pods.create(pod_manifest("web"))
    with pytest.raises(Conflict):
        await pods.delete_pod(old.ref, grace_period_seconds=0)
    assert pods.get("ns", "web") is not None and new.ref.uid != old.ref.uid


@pytest.mark.parametrize("status", [{"phase": "Succeeded"}, {"phase": "Failed"}])
async def test_terminal_pods_are_removed_at_once_whatever_the_grace(
    pods: FakePodGateway, status: dict[str, str]
) -> None:
    pod = pods.create({**pod_manifest("done"), "status": status})
    await pods.delete_pod(pod.ref, grace_period_seconds=30)
    assert pods.get("ns", "done") is None


async def test_kubectl_style_delete_uses_the_pods_termination_grace(pods: FakePodGateway) -> None:
    pods.create(pod_manifest("web", terminationGracePeriodSeconds=5))
    pods.graceful_delete("ns", "web")
    pod = pods.get("ns", "web")
    assert pod is not None and pod.deletion_grace_period_seconds == 5


async def test_finalizers_keep_a_deleted_pod_until_removed(pods: FakePodGateway) -> None:
    manifest = pod_manifest("web")
    manifest["metadata"]["finalizers"] = ["example.com/hold"]
    pod = pods.create(manifest)
    await pods.delete_pod(pod.ref, grace_period_seconds=0)
    held = pods.get("ns", "web")
    assert held is not None and held.deletion_grace_period_seconds == 0
    pods.remove_finalizers("ns", "web")
    assert pods.get("ns", "web") is None


# -- pods: watch -----------------------------------------------------------------------------


async def next_events(watch: Any, count: int) -> list[PodEvent]:
    return [await asyncio.wait_for(watch.__anext__(), 1) for _ in range(count)]


async def test_watch_replays_after_the_rv_then_follows_live_changes(pods: FakePodGateway) -> None:
    pod = pods.create(pod_manifest("web"))
    _, rv = await pods.list_node_pods()
    await pods.patch_pod_status(pod.ref, {"phase": "Running"})
    watch = pods.watch_node_pods(rv)
    [replayed] = await next_events(watch, 1)
    assert replayed.type is WatchEventType.MODIFIED and replayed.pod.phase.value == "Running"
    await pods.delete_pod(pod.ref, grace_period_seconds=0)
    [deleted] = await next_events(watch, 1)
    assert deleted.type is WatchEventType.DELETED and deleted.pod.ref == pod.ref
    assert int(deleted.pod.resource_version) > int(replayed.pod.resource_version)
    await watch.aclose()
    assert pods.open_watches == 0


async def test_watch_reports_pods_entering_and_leaving_the_node_selection(pods: FakePodGateway) -> None:
    watch = pods.watch_node_pods(pods.resource_version)
    pods.create(pod_manifest("elsewhere", nodeName="other"))
    pods.create(pod_manifest("unbound", nodeName=""))
    pods.update("ns", "unbound", lambda obj: obj["spec"].update(nodeName="vk"))  # binding
    [added] = await next_events(watch, 1)
    assert added.type is WatchEventType.ADDED and added.pod.ref.name == "unbound"
    await watch.aclose()


async def test_watch_from_an_expired_rv_raises_expired(pods: FakePodGateway) -> None:
    pods.create(pod_manifest("web"))
    _, rv = await pods.list_node_pods()
    pods.create(pod_manifest("web2"))
    pods.expire_history()
    with pytest.raises(Expired):
        await pods.watch_node_pods(rv).__anext__()
    current = pods.watch_node_pods(pods.resource_version)  # a fresh RV still works
    pods.create(pod_manifest("web3"))
    [event] = await next_events(current, 1)
    assert event.pod.ref.name == "web3"
    await current.aclose()


async def test_closed_and_broken_watches(pods: FakePodGateway, clock: FakeClock) -> None:
    seen: list[PodEvent] = []

    async def consume() -> None:
        async for event in pods.watch_node_pods(pods.resource_version):
            seen.append(event)

    task = asyncio.create_task(consume())
    await clock.settle()
    assert pods.open_watches == 1
    pods.close_watches()
    await clock.settle()
    assert task.done() and task.exception() is None
    broken = asyncio.create_task(consume())
    await clock.settle()
    pods.break_watches(Expired("410 in the stream"))
    await clock.settle()
    assert isinstance(broken.exception(), Expired)


# -- failure injection and call logs ---------------------------------------------------------


async def test_injected_failures_hit_the_next_calls_then_stop(pods: FakePodGateway) -> None:
    pod = pods.create(pod_manifest("web"))
    pods.inject_failure("patch_pod_status", Transient("503"), times=2)
    for _ in range(2):
        with pytest.raises(Transient):
            await pods.patch_pod_status(pod.ref, {"phase": "Running"})
    await pods.patch_pod_status(pod.ref, {"phase": "Running"})
    assert len(pods.calls_to("patch_pod_status")) == 3
    assert pods.calls_to("patch_pod_status")[0].args == {"ref": pod.ref, "status": {"phase": "Running"}}


async def test_injected_failures_can_target_one_object(pods: FakePodGateway) -> None:
    a = pods.create(pod_manifest("a"))
    b = pods.create(pod_manifest("b"))
    pods.inject_failure("delete_pod", Transient("x"), times=None, name="a")
    await pods.delete_pod(b.ref, grace_period_seconds=0)
    for _ in range(3):
        with pytest.raises(Transient):
            await pods.delete_pod(a.ref, grace_period_seconds=0)
    pods.clear_failures()
    await pods.delete_pod(a.ref, grace_period_seconds=0)


async def test_injected_watch_failure_surfaces_on_iteration(pods: FakePodGateway) -> None:
    pods.inject_failure("watch_node_pods", Transient("connection reset"))
    watch = pods.watch_node_pods("1")
    with pytest.raises(Transient):
        await watch.__anext__()


def test_injecting_into_an_unknown_method_is_an_error(pods: FakePodGateway) -> None:
    with pytest.raises(ValueError, match="no port method"):
        pods.inject_failure("patch_status", Transient("typo"))
    with pytest.raises(ValueError, match="cannot match"):
        pods.inject_failure("get_pod", Transient("x"), node="vk")


# -- nodes -----------------------------------------------------------------------------------


def node_manifest() -> dict[str, Any]:
    return {
        "metadata": {"name": "vk", "labels": {"type": "virtual-kubelet"}, "annotations": {"a": "1"}},
        "spec": {"taints": [{"key": "virtual-kubelet.io/provider", "value": "mock", "effect": "NoSchedule"}]},
        "status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
            "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
            "capacity": {"cpu": "8", "memory": "16Gi"},
        },
    }


async def test_node_create_get_and_conflict() -> None:
    nodes = FakeNodeGateway()
    with pytest.raises(NotFound):
        await nodes.get_node("vk")
    created = await nodes.create_node(node_manifest())
    assert created["metadata"]["uid"] and created["metadata"]["resourceVersion"]
    assert (await nodes.get_node("vk"))["status"]["capacity"] == {"cpu": "8", "memory": "16Gi"}
    with pytest.raises(Conflict):
        await nodes.create_node(node_manifest())


async def test_node_patch_merges_labels_and_annotations_and_replaces_taints() -> None:
    nodes = FakeNodeGateway()
    await nodes.create_node(node_manifest())
    patched = await nodes.patch_node(
        "vk",
        {
            "metadata": {"labels": {"zone": "z1"}, "annotations": {"a": None}},
            "spec": {"taints": [{"key": "new", "effect": "NoExecute"}]},
            "status": {"capacity": {"cpu": "1"}},  # ignored on the main resource
        },
    )
    assert patched["metadata"]["labels"] == {"type": "virtual-kubelet", "zone": "z1"}
    assert patched["metadata"]["annotations"] == {}
    assert patched["spec"]["taints"] == [{"key": "new", "effect": "NoExecute"}]
    assert patched["status"]["capacity"] == {"cpu": "8", "memory": "16Gi"}


async def test_node_patch_honours_a_resource_version_precondition() -> None:
    nodes = FakeNodeGateway()
    created = await nodes.create_node(node_manifest())
    rv = created["metadata"]["resourceVersion"]
    nodes.set_by_other_actor("vk", {"spec": {"taints": []}})
    with pytest.raises(Conflict):
        await nodes.patch_node("vk", {"metadata": {"resourceVersion": rv, "labels": {"x": "y"}}})


async def test_node_status_patch_merges_conditions_and_keeps_other_actors() -> None:
    nodes = FakeNodeGateway()
    await nodes.create_node(node_manifest())
    nodes.set_by_other_actor("vk", {"status": {"conditions": [{"type": "DiskPressure", "status": "False"}]}})
    patched = await nodes.patch_node_status(
        "vk",
        {
            "status": {
                "conditions": [{"type": "Ready", "status": "False", "reason": "ProviderUnreachable"}],
                "addresses": [
                    {"type": "InternalIP", "address": "10.0.0.2"},
                    {"type": "Hostname", "address": "vk"},
                ],
                "capacity": {"cpu": "4"},
            }
        },
    )
    status = patched["status"]
    assert [c["type"] for c in status["conditions"]] == ["Ready", "DiskPressure"]
    assert nodes.condition("vk", "Ready") == {
        "type": "Ready",
        "status": "False",
        "reason": "ProviderUnreachable",
    }
    assert status["addresses"] == [
        {"type": "InternalIP", "address": "10.0.0.2"},
        {"type": "Hostname", "address": "vk"},
    ]
    assert status["capacity"] == {"cpu": "4", "memory": "16Gi"}, "maps merge key by key, as in SMP"
    assert patched["metadata"]["labels"] == {"type": "virtual-kubelet"}


async def test_node_status_patch_must_be_an_object_patch_and_node_must_exist() -> None:
    nodes = FakeNodeGateway()
    with pytest.raises(NotFound):
        await nodes.patch_node_status("vk", {"status": {}})
    await nodes.create_node(node_manifest())
    with pytest.raises(InvalidInput, match="status"):
        await nodes.patch_node_status("vk", {"conditions": []})


async def test_deleted_node_is_not_found_and_can_be_recreated() -> None:
    nodes = FakeNodeGateway()
    first = await nodes.create_node(node_manifest())
    nodes.delete("vk")
    with pytest.raises(NotFound):
        await nodes.patch_node_status("vk", {"status": {"conditions": []}})
    second = await nodes.create_node(node_manifest())
    assert second["metadata"]["uid"] != first["metadata"]["uid"]
    assert [call.method for call in nodes.calls] == ["create_node", "patch_node_status", "create_node"]


async def test_node_failure_injection() -> None:
    nodes = FakeNodeGateway()
    nodes.inject_failure("create_node", Transient("apiserver down"))
    with pytest.raises(Transient):
        await nodes.create_node(node_manifest())
    await nodes.create_node(node_manifest())


# -- leases ----------------------------------------------------------------------------------


def lease(rv: str = "") -> Lease:
    return Lease(
        name="vk",
        holder_identity="vk",
        duration_seconds=40,
        renew_time=datetime(2025, 1, 1, tzinfo=UTC),
        resource_version=rv,
    )


async def test_lease_optimistic_concurrency() -> None:
    leases = FakeLeaseGateway()
    with pytest.raises(NotFound):
        await leases.get_lease("vk")
    with pytest.raises(NotFound):
        await leases.update_lease(lease("1"))
    created = await leases.create_lease(lease())
    with pytest.raises(Conflict):
        await leases.create_lease(lease())
    renewed = await leases.update_lease(created)
    assert renewed.resource_version != created.resource_version
    with pytest.raises(Conflict):
        await leases.update_lease(created)  # stale now
    leases.put(lease())  # someone else writes it
    with pytest.raises(Conflict):
        await leases.update_lease(renewed)
    assert (await leases.get_lease("vk")).resource_version == leases.leases["vk"].resource_version


async def test_lease_calls_can_be_slowed_down_on_the_clock(clock: FakeClock) -> None:
    leases = FakeLeaseGateway(clock=clock, delay=5.0)
    task = asyncio.create_task(leases.create_lease(lease()))
    await clock.advance(4.9)
    assert not task.done() and "vk" not in leases.leases
    await clock.advance(0.1)
    assert task.done() and "vk" in leases.leases


async def test_lease_failure_injection() -> None:
    leases = FakeLeaseGateway()
    await leases.create_lease(lease())
    leases.inject_failure("get_lease", Transient("timeout"), times=1)
    with pytest.raises(Transient):
        await leases.get_lease("vk")
    assert (await leases.get_lease("vk")).name == "vk"


# -- config ----------------------------------------------------------------------------------


async def test_config_source_lookups_and_per_object_failures() -> None:
    config = FakeConfigSource()
    config.add_config_map("ns", "cfg", {"k": "v"})
    config.add_secret("ns", "sec", {"password": "hunter2"})
    config.add_service("ns", ServiceInfo("api", "10.96.0.10", (("http", 80, "TCP"),)))
    config.add_service("ns", ServiceInfo("headless", "None", ()))
    assert await config.get_config_map("ns", "cfg") == {"k": "v"}
    assert await config.get_secret("ns", "sec") == {"password": b"hunter2"}
    assert [s.name for s in await config.list_services("ns")] == ["api"]
    with pytest.raises(NotFound):
        await config.get_config_map("ns", "missing")
    with pytest.raises(NotFound):
        await config.get_secret("other", "sec")

    config.add_config_map("ns", "other", {})
    config.inject_failure("get_config_map", Transient("x"), namespace="ns", name="cfg")
    assert await config.get_config_map("ns", "other") == {}
    with pytest.raises(Transient):
        await config.get_config_map("ns", "cfg")
    assert await config.get_config_map("ns", "cfg") == {"k": "v"}


async def test_config_source_files_view_merges_binary_data_that_env_does_not_see() -> None:
    config = FakeConfigSource()
    config.add_config_map("ns", "cfg", {"k": "v\u00e9"}, binary_data={"b": b"\x00\xff"})
    assert await config.get_config_map_files("ns", "cfg") == {"k": "v\u00e9".encode(), "b": b"\x00\xff"}
    assert await config.get_config_map("ns", "cfg") == {"k": "v\u00e9"}
    with pytest.raises(NotFound):
        await config.get_config_map_files("ns", "missing")
    config.inject_failure("get_config_map_files", Transient("x"), name="cfg")
    assert await config.get_config_map("ns", "cfg") == {"k": "v\u00e9"}  # the other view is unaffected
    with pytest.raises(Transient):
        await config.get_config_map_files("ns", "cfg")


async def test_config_source_with_a_ttl_serves_stale_answers_unless_asked_fresh() -> None:
    clock = FakeClock()
    config = FakeConfigSource(clock=clock, ttl_seconds=5)
    config.add_config_map("ns", "cfg", {"k": "old"})
    assert await config.get_config_map("ns", "cfg") == {"k": "old"}
    config.add_config_map("ns", "cfg", {"k": "new"})
    assert await config.get_config_map_files("ns", "cfg") == {"k": b"old"}  # one entry, both views
    assert await config.get_config_map("ns", "cfg", fresh=True) == {"k": "new"}
    assert await config.get_config_map("ns", "cfg") == {"k": "new"}  # the fresh answer is cached
    with pytest.raises(NotFound):
        await config.get_secret("ns", "sec")
    config.add_secret("ns", "sec", {"pw": "x"})
    with pytest.raises(NotFound):
        await config.get_secret("ns", "sec")  # a missing one is cached too
    await clock.advance(5)
    assert await config.get_secret("ns", "sec") == {"pw": b"x"}


# -- events ----------------------------------------------------------------------------------


def test_event_recorder_keeps_events_per_object() -> None:
    recorder = FakeEventRecorder()
    a = ObjectRef.for_pod(PodRef("ns", "a", "uid-a"))
    b = ObjectRef.for_pod(PodRef("ns", "b", "uid-b"))
    recorder.record(a, type=EventType.WARNING, reason="MandatoryConfigMapNotFound", message="cfg")
    recorder.record(b, type=EventType.NORMAL, reason="Created", message="")
    recorder.record(a, type=EventType.NORMAL, reason="Started", message="")
    assert recorder.reasons_for("uid-a") == ["MandatoryConfigMapNotFound", "Started"]
    assert recorder.events[0] == (a, EventType.WARNING, "MandatoryConfigMapNotFound", "cfg")
    recorder.clear()
    assert recorder.events == []
