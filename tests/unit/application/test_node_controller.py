"""NodeController against in-memory fakes and a FakeClock (upstream node_test.go scenarios, §8,
plus its bugs 13-16): registration, adoption, status patches, pings with timeouts, the Lease,
recreation after a delete, shutdown. No network, no real sleeps.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from tests.fakes.clock import FakeClock
from vkubelet.application.node_controller import NodeController, NodeControllerSettings
from vkubelet.application.ports.cluster import EventType, Lease, ObjectRef
from vkubelet.domain.errors import Conflict, InvalidInput, NotFound, Transient
from vkubelet.domain.node import ready_condition
from vkubelet.domain.provider import NodeCondition, NodeTemplate, Taint

TAINT = Taint("virtual-kubelet.io/provider", "mock", "NoSchedule")
TEMPLATE = NodeTemplate(capacity={"cpu": "8", "memory": "32Gi", "pods": "110"}, architecture="arm64")


# --- fakes ---------------------------------------------------------------------------------------


class Failures:
    """Per-method scripted failures: ``inject(method, error, times)``; ``times=None`` = forever."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self._scripted: dict[str, list[BaseException]] = defaultdict(list)
        self._always: dict[str, BaseException] = {}
        self.gates: dict[str, asyncio.Event] = {}  # method -> blocks until set

    def inject(self, method: str, error: BaseException, *, times: int | None = 1) -> None:
        if times is None:
            self._always[method] = error
        else:
            self._scripted[method].extend([error] * times)

    def clear(self, method: str) -> None:
        self._always.pop(method, None)
        self._scripted.pop(method, None)

    async def enter(self, method: str) -> None:
        self.calls[method] += 1
        gate = self.gates.get(method)
        if gate is not None:
            await gate.wait()
        if method in self._always:
            raise self._always[method]
        if self._scripted[method]:
            raise self._scripted[method].pop(0)


def _merge_by_type(current: list[dict[str, Any]], patch: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    merged = [dict(item) for item in current]
    for item in patch:
        found = next((m for m in merged if m.get("type") == item.get("type")), None)
        if found is None:
            merged.append(dict(item))
        else:
            found.update(item)
    return merged


class Nodes:
    """A NodeGateway holding nodes in memory, merging patches the way the API server's
    strategic merge does for the fields vkubelet sends (conditions by type, maps by key, taints
    replaced, resourceVersion as a precondition)."""

    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}
        self.failures = Failures()
        self._uids = itertools.count(1)
        self._versions = itertools.count(1)

    def add(self, node: Mapping[str, Any]) -> dict[str, Any]:
        stored = copy.deepcopy(dict(node))
        meta = stored.setdefault("metadata", {})
        meta["uid"] = f"node-uid-{next(self._uids)}"
        meta["resourceVersion"] = str(next(self._versions))
        self.nodes[meta["name"]] = stored
        return copy.deepcopy(stored)

    def delete(self, name: str) -> None:
        """``kubectl delete node``."""
        del self.nodes[name]

    def _get(self, name: str) -> dict[str, Any]:
        if name not in self.nodes:
            raise NotFound(f"node {name}")
        return self.nodes[name]

    async def get_node(self, name: str) -> Mapping[str, Any]:
        await self.failures.enter("get_node")
        return copy.deepcopy(self._get(name))

    async def create_node(self, node: Mapping[str, Any]) -> Mapping[str, Any]:
        await self.failures.enter("create_node")
        if node["metadata"]["name"] in self.nodes:
            raise Conflict("already exists")
        return self.add(node)

    async def patch_node(self, name: str, patch: Mapping[str, Any]) -> Mapping[str, Any]:
        await self.failures.enter("patch_node")
        node = self._get(name)
        meta_patch = dict(patch.get("metadata", {}))
        expected = meta_patch.pop("resourceVersion", None)
        if expected is not None and expected != node["metadata"]["resourceVersion"]:
            raise Conflict("resourceVersion changed")
        for key, value in meta_patch.items():
            node["metadata"].setdefault(key, {}).update(value)
        node.setdefault("spec", {}).update(copy.deepcopy(patch.get("spec", {})))
        node["metadata"]["resourceVersion"] = str(next(self._versions))
        return copy.deepcopy(node)

    async def patch_node_status(self, name: str, patch: Mapping[str, Any]) -> Mapping[str, Any]:
        await self.failures.enter("patch_node_status")
        node = self._get(name)
        status = node.setdefault("status", {})
        for key, value in copy.deepcopy(dict(patch["status"])).items():
            if key == "conditions":
                status["conditions"] = _merge_by_type(status.get("conditions", []), value)
            elif isinstance(value, dict) and isinstance(status.get(key), dict):
                status[key].update(value)
            else:
                status[key] = value
        node["metadata"]["resourceVersion"] = str(next(self._versions))
        return copy.deepcopy(node)

    def ready(self, name: str = "vk-0") -> Mapping[str, Any]:
        condition = ready_condition(self.nodes[name]["status"]["conditions"])
        assert condition is not None
        return condition


class Leases:
    """A LeaseGateway with optimistic concurrency on resource_version."""

    def __init__(self) -> None:
        self.lease: Lease | None = None
        self.failures = Failures()
        self.writes: list[Lease] = []
        self._versions = itertools.count(1)

    def _store(self, lease: Lease) -> Lease:
        self.lease = Lease(
            name=lease.name,
            holder_identity=lease.holder_identity,
            duration_seconds=lease.duration_seconds,
            renew_time=lease.renew_time,
            owner_node_uid=lease.owner_node_uid,
            resource_version=str(next(self._versions)),
        )
        self.writes.append(self.lease)
        return self.lease

    def touch(self) -> None:
        """Someone else wrote the lease: our resource_version is now stale."""
        assert self.lease is not None
        self.lease = Lease(
            name=self.lease.name,
            holder_identity=self.lease.holder_identity,
            duration_seconds=self.lease.duration_seconds,
            renew_time=self.lease.renew_time,
            owner_node_uid=self.lease.owner_node_uid,
            resource_version=str(next(self._versions)),
        )

    async def get_lease(self, name: str) -> Lease:
        await self.failures.enter("get_lease")
        if self.lease is None:
            raise NotFound(f"lease {name}")
        return self.lease

    async def create_lease(self, lease: Lease) -> Lease:
        await self.failures.enter("create_lease")
        if self.lease is not None:
            raise Conflict("exists")
        return self._store(lease)

    async def update_lease(self, lease: Lease) -> Lease:
        await self.failures.enter("update_lease")
        if self.lease is None:
            raise NotFound(f"lease {lease.name}")
        if lease.resource_version != self.lease.resource_version:
            raise Conflict("stale resourceVersion")
        return self._store(lease)


class Provider:
    """NodeHealth whose ping can fail, hang (optionally ignoring cancellation) and is counted."""

    def __init__(self, template: NodeTemplate = TEMPLATE) -> None:
        self.template = template
        self.error: BaseException | None = None
        self.hang = False
        self.ignore_cancel = False
        self.release = asyncio.Event()
        self.pings = 0
        self.in_flight = 0
        self.max_in_flight = 0

    async def ping(self) -> None:
        self.pings += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            while self.hang:
                try:
                    await self.release.wait()
                    break
                except asyncio.CancelledError:
                    if not self.ignore_cancel:
                        raise
            if self.error is not None:
                raise self.error
        finally:
            self.in_flight -= 1

    async def node_template(self) -> NodeTemplate:
        return self.template


class Events:
    def __init__(self) -> None:
        self.recorded: list[tuple[ObjectRef, EventType, str, str]] = []

    def record(self, obj: ObjectRef, *, type: EventType, reason: str, message: str) -> None:
        self.recorded.append((obj, type, reason, message))

    @property
    def reasons(self) -> list[str]:
        return [reason for _, _, reason, _ in self.recorded]


# --- fixtures --------------------------------------------------------------------------------------


class Harness:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.nodes = Nodes()
        self.leases = Leases()
        self.provider = Provider()
        self.events = Events()
        self.controller = self.make()
        self.task: asyncio.Task[None] | None = None

    def make(self, **settings: Any) -> NodeController:
        arguments: dict[str, Any] = {
            "name": "vk-0",
            "provider": "mock",
            "taint": TAINT,
            "internal_ip": "10.0.0.7",
        }
        arguments.update(settings)
        return NodeController(
            nodes=self.nodes,
            leases=self.leases,
            provider=self.provider,
            clock=self.clock,
            events=self.events,
            settings=NodeControllerSettings(**arguments),
        )

    async def start(self) -> None:
        """Register, then run the loops in the background."""
        await self.controller.register()
        self.task = asyncio.create_task(self.controller.run())
        await self.clock.settle()

    async def advance(self, seconds: float, *, step: float = 0.5) -> None:
        """Advance in small steps so every wake-up chain completes in between."""
        remaining = seconds
        while remaining > 1e-9:
            delta = min(step, remaining)
            await self.clock.advance(delta)
            remaining -= delta

    def node(self) -> dict[str, Any]:
        return self.nodes.nodes["vk-0"]


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = Harness()
    yield harness
    harness.provider.release.set()
    await harness.controller.stop()
    if harness.task is not None:
        await harness.task
    await harness.clock.settle()


# --- registration ----------------------------------------------------------------------------------


async def test_registration_creates_node_with_labels_taint_os_arch_and_ready_after_good_ping(h: Harness) -> None:
    uid = await h.controller.register()

    node = h.node()
    assert uid == node["metadata"]["uid"] == h.controller.node_uid
    assert h.controller.ready.is_set()
    labels = node["metadata"]["labels"]
    assert labels["type"] == "virtual-kubelet"
    assert labels["kubernetes.io/role"] == "agent"
    assert labels["kubernetes.io/hostname"] == "vk-0"
    assert labels["kubernetes.io/os"] == "linux"
    assert labels["kubernetes.io/arch"] == "arm64"
    assert node["spec"]["taints"] == [TAINT.to_manifest()]
    assert node["status"]["nodeInfo"]["architecture"] == "arm64"
    assert node["status"]["addresses"][0] == {"type": "InternalIP", "address": "10.0.0.7"}
    ready = h.nodes.ready()
    assert (ready["status"], ready["reason"]) == ("True", "KubeletReady")
    assert h.provider.pings == 1


async def test_first_ping_failure_does_not_abort_registration(h: Harness) -> None:
    h.provider.error = ConnectionError("provider not up yet")

    uid = await h.controller.register()

    assert uid
    ready = h.nodes.ready()
    assert (ready["status"], ready["reason"]) == ("False", "ProviderPingFailed")
    assert "provider not up yet" in ready["message"]


async def test_transient_api_errors_during_registration_are_retried_with_backoff(h: Harness) -> None:
    h.nodes.failures.inject("get_node", Transient("apiserver restarting"), times=3)

    registering = asyncio.create_task(h.controller.register())
    await h.clock.settle()
    assert not registering.done()
    await h.advance(0.2 + 0.4 + 0.8)  # the retry policy's first three delays

    assert await registering == h.node()["metadata"]["uid"]
    assert h.nodes.failures.calls["get_node"] == 4


async def test_registration_is_cancellable_while_the_api_is_down(h: Harness) -> None:
    h.nodes.failures.inject("get_node", Transient("down"), times=None)

    registering = asyncio.create_task(h.controller.register())
    await h.advance(30)
    registering.cancel()
    with pytest.raises(asyncio.CancelledError):
        await registering
    assert h.clock.sleepers == 0
    assert not h.controller.ready.is_set()


async def test_registration_gives_up_on_errors_retrying_cannot_fix(h: Harness) -> None:
    h.nodes.failures.inject("create_node", InvalidInput("node name is invalid"))

    with pytest.raises(InvalidInput):
        await h.controller.register()


async def test_conflict_on_create_adopts_the_node_created_meanwhile(h: Harness) -> None:
    async def someone_else_creates_it() -> None:
        h.nodes.add({"metadata": {"name": "vk-0"}, "status": {}})

    h.nodes.failures.gates["create_node"] = asyncio.Event()
    registering = asyncio.create_task(h.controller.register())
    await h.clock.settle()
    await someone_else_creates_it()
    h.nodes.failures.gates["create_node"].set()
    await h.advance(1)

    assert await registering == h.node()["metadata"]["uid"]
    assert h.node()["metadata"]["labels"]["type"] == "virtual-kubelet"
    assert h.nodes.ready()["status"] == "True"


# --- adoption (TestManualConditionsPreserved / TestBeforeAnnotationsPreserved analogues) ---------


async def test_adopting_existing_node_preserves_conditions_annotations_and_taints_of_others(h: Harness) -> None:
    existing = h.nodes.add(
        {
            "metadata": {
                "name": "vk-0",
                "labels": {"team": "infra", "kubernetes.io/hostname": "vk-0"},
                "annotations": {"example.com/before": "kept"},
            },
            "spec": {"taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]},
            "status": {
                "conditions": [
                    {"type": "example.com/Manual", "status": "True", "reason": "SetByHand", "message": "hi"},
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "lastTransitionTime": "2024-06-01T00:00:00Z",
                    },
                ]
            },
        }
    )

    await h.start()
    uid = h.controller.node_uid
    await h.advance(130)  # status patches at 60 s and 120 s

    node = h.node()
    assert uid == existing["metadata"]["uid"]  # adopted, not recreated
    assert node["metadata"]["annotations"] == {"example.com/before": "kept"}
    assert node["metadata"]["labels"]["team"] == "infra"
    assert node["metadata"]["labels"]["kubernetes.io/os"] == "linux"  # spec/labels reconciled (bug 15)
    assert node["spec"]["taints"] == [
        {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
        TAINT.to_manifest(),
    ]
    conditions = {c["type"]: c for c in node["status"]["conditions"]}
    assert conditions["example.com/Manual"]["reason"] == "SetByHand"
    assert conditions["Ready"]["lastTransitionTime"] == "2024-06-01T00:00:00Z"  # still True: kept
    assert conditions["Ready"]["lastHeartbeatTime"] == "2025-01-01T00:02:00Z"


async def test_adoption_retries_when_someone_changes_the_taints_meanwhile(h: Harness) -> None:
    h.nodes.add({"metadata": {"name": "vk-0"}, "spec": {"taints": []}, "status": {}})
    real_patch = h.nodes.patch_node
    raced = False

    async def patch_after_a_concurrent_cordon(name: str, patch: Mapping[str, Any]) -> Mapping[str, Any]:
        nonlocal raced
        if not raced:
            raced = True
            cordon = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}
            await real_patch(name, {"spec": {"taints": [cordon]}})
        return await real_patch(name, patch)

    h.nodes.patch_node = patch_after_a_concurrent_cordon  # type: ignore[method-assign]
    registering = asyncio.create_task(h.controller.register())
    await h.advance(1)
    await registering

    assert {t["key"] for t in h.node()["spec"]["taints"]} == {"node.kubernetes.io/unschedulable", TAINT.key}


# --- status ------------------------------------------------------------------------------------------


async def test_status_is_patched_every_status_interval(h: Harness) -> None:
    await h.start()
    writes = h.nodes.failures.calls["patch_node_status"]

    await h.advance(59)
    assert h.nodes.failures.calls["patch_node_status"] == writes
    await h.advance(1)
    assert h.nodes.failures.calls["patch_node_status"] == writes + 1
    assert h.nodes.ready()["lastHeartbeatTime"] == "2025-01-01T00:01:00Z"


async def test_failed_ping_turns_node_not_ready_at_once_with_the_error(h: Harness) -> None:
    await h.start()
    h.provider.error = RuntimeError("backend 503")

    await h.advance(10)  # next ping; the Ready flip patches immediately, not after 60 s

    ready = h.nodes.ready()
    assert (ready["status"], ready["reason"]) == ("False", "ProviderPingFailed")
    assert "RuntimeError: backend 503" in ready["message"]
    assert ready["lastTransitionTime"] == "2025-01-01T00:00:10Z"
    assert "NodeNotReady" in h.events.reasons


async def test_hung_ping_turns_node_not_ready_but_lease_keeps_renewing(h: Harness) -> None:
    await h.start()
    h.provider.hang = True

    await h.advance(15)  # ping at 10 s hangs, times out at 15 s

    ready = h.nodes.ready()
    assert (ready["status"], ready["reason"]) == ("False", "ProviderPingTimeout")
    assert "5 s" in ready["message"]
    renewals_before = len(h.leases.writes)
    await h.advance(60)  # the provider stays hung
    assert len(h.leases.writes) == renewals_before + 6
    assert h.nodes.ready()["reason"] == "ProviderPingTimeout"


async def test_ping_recovery_turns_node_ready_again(h: Harness) -> None:
    await h.start()
    h.provider.hang = True
    await h.advance(15)
    assert h.nodes.ready()["status"] == "False"

    h.provider.hang = False
    await h.advance(10)  # next ping at 25 s succeeds

    ready = h.nodes.ready()
    assert (ready["status"], ready["reason"]) == ("True", "KubeletReady")
    assert ready["lastTransitionTime"] == "2025-01-01T00:00:25Z"
    assert h.events.reasons[-1] == "NodeReady"


async def test_at_most_one_ping_in_flight_when_the_provider_ignores_cancellation(h: Harness) -> None:
    await h.start()
    h.provider.hang = True
    h.provider.ignore_cancel = True

    await h.advance(120)

    assert h.provider.pings == 2  # the registration ping, then one call that never returns
    assert h.provider.max_in_flight == 1
    assert h.controller.last_ping is not None
    assert h.controller.last_ping.outcome == "timeout"
    assert h.nodes.ready()["reason"] == "ProviderPingTimeout"

    h.provider.release.set()  # the stuck call finally returns; pings resume one at a time
    h.provider.hang = False
    await h.advance(20)
    assert h.provider.max_in_flight == 1
    assert h.nodes.ready()["status"] == "True"


async def test_ping_gap_stays_under_two_and_a_half_intervals(h: Harness) -> None:
    """TestPingAfterStatusUpdate analogue: status patches do not delay pings."""
    await h.start()
    times: list[float] = []
    original = h.provider.ping

    async def timed_ping() -> None:
        times.append(h.clock.monotonic())
        await original()

    h.provider.ping = timed_ping  # type: ignore[method-assign]
    await h.advance(200)

    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps and max(gaps) < 25


async def test_deleted_node_is_recreated_on_next_status_patch_and_lease_owner_follows(h: Harness) -> None:
    await h.start()
    first_uid = h.controller.node_uid
    assert h.leases.lease is not None and h.leases.lease.owner_node_uid == first_uid

    h.nodes.delete("vk-0")  # kubectl delete node vk-0
    await h.advance(60)

    node = h.node()
    assert node["metadata"]["uid"] != first_uid
    assert node["metadata"]["labels"]["type"] == "virtual-kubelet"
    assert node["spec"]["taints"] == [TAINT.to_manifest()]
    assert h.nodes.ready()["status"] == "True"
    assert h.controller.node_uid == node["metadata"]["uid"]
    assert "NodeRecreated" in h.events.reasons
    await h.advance(10)
    assert h.leases.lease.owner_node_uid == node["metadata"]["uid"]


async def test_failed_status_patch_is_retried_soon(h: Harness) -> None:
    await h.start()
    h.nodes.failures.inject("patch_node_status", Transient("etcd timeout"))
    calls = h.nodes.failures.calls["patch_node_status"]

    await h.advance(61)

    assert h.nodes.failures.calls["patch_node_status"] == calls + 2  # failed at 60 s, retried at 60.2 s
    assert h.nodes.ready()["lastHeartbeatTime"] == "2025-01-01T00:01:00Z"


async def test_template_update_is_patched_soon(h: Harness) -> None:
    await h.start()
    h.controller.update_template(
        NodeTemplate(
            capacity={"cpu": "16"},
            conditions=(NodeCondition("example.com/Quota", "True", "QuotaLow", "low"),),
        )
    )
    await h.advance(0.5)

    assert h.node()["status"]["capacity"]["cpu"] == "16"
    assert {c["type"] for c in h.node()["status"]["conditions"]} >= {"example.com/Quota", "Ready"}


# --- lease -------------------------------------------------------------------------------------------


async def test_lease_is_created_with_owner_and_holder_and_renewed_every_10s(h: Harness) -> None:
    await h.start()

    lease = h.leases.lease
    assert lease is not None
    assert lease.name == "vk-0"
    assert lease.holder_identity == "vk-0"
    assert lease.duration_seconds == 40
    assert lease.owner_node_uid == h.node()["metadata"]["uid"]
    await h.advance(50)
    renew_times = [w.renew_time for w in h.leases.writes]
    assert len(renew_times) == 6
    assert [(b - a).total_seconds() for a, b in itertools.pairwise(renew_times)] == [10.0] * 5


async def test_existing_lease_is_taken_over_and_its_owner_set(h: Harness) -> None:
    h.leases._store(
        Lease(
            name="vk-0",
            holder_identity="someone-else",
            duration_seconds=15,
            renew_time=h.clock.now(),
        )
    )
    await h.start()

    lease = h.leases.lease
    assert lease is not None
    assert (lease.holder_identity, lease.duration_seconds) == ("vk-0", 40)
    assert lease.owner_node_uid == h.controller.node_uid


async def test_lease_conflict_is_resolved_by_rereading(h: Harness) -> None:
    await h.start()
    h.leases.touch()  # another writer bumped the resourceVersion

    await h.advance(10)

    assert h.leases.failures.calls["update_lease"] == 2  # the conflicting try, then the retry
    assert h.leases.failures.calls["get_lease"] == 2  # at creation, and after the conflict
    assert h.leases.lease is not None
    assert h.leases.lease.renew_time == h.clock.now()


async def test_lease_api_errors_back_off_without_a_hot_loop(h: Harness) -> None:
    await h.start()
    h.leases.failures.inject("update_lease", Transient("apiserver unavailable"), times=None)

    await h.advance(70)

    # first failure at 10 s; then 0.2, 0.4, 0.8, 1.6, 3.2, 6.4 (12.6 s) and every 7 s after that
    calls = h.leases.failures.calls["update_lease"]
    assert calls == 1 + 6 + int((70 - 10 - 12.6) // 7)
    assert h.clock.sleepers <= 4  # one sleep per loop (bug 16: no double sleep), plus timers

    h.leases.failures.clear("update_lease")
    await h.advance(7)
    assert h.leases.lease is not None
    assert h.leases.lease.renew_time > h.clock.now() - __import__("datetime").timedelta(seconds=7)


async def test_deleted_lease_is_recreated(h: Harness) -> None:
    await h.start()
    h.leases.lease = None  # garbage-collected with a deleted node, say

    await h.advance(10)

    assert h.leases.lease is not None
    assert h.leases.lease.renew_time == h.clock.now()
    assert h.leases.lease.owner_node_uid == h.controller.node_uid


async def test_slow_status_patch_does_not_stall_the_lease(h: Harness) -> None:
    await h.start()
    h.nodes.failures.gates["patch_node_status"] = asyncio.Event()  # every status patch hangs

    await h.advance(90)

    assert len(h.leases.writes) == 10  # renewals at 0, 10, ..., 90


# --- shutdown ----------------------------------------------------------------------------------------


async def test_mark_not_ready_patches_ready_false_and_the_loops_keep_it(h: Harness) -> None:
    await h.start()

    assert await h.controller.mark_not_ready()

    ready = h.nodes.ready()
    assert (ready["status"], ready["reason"]) == ("False", "KubeletShuttingDown")
    await h.advance(70)  # pings still succeed, status loop still patches
    assert h.nodes.ready()["reason"] == "KubeletShuttingDown"


async def test_mark_not_ready_gives_up_after_its_deadline(h: Harness) -> None:
    await h.start()
    h.nodes.failures.gates["patch_node_status"] = asyncio.Event()

    marking = asyncio.create_task(h.controller.mark_not_ready("Maintenance", "going away", deadline=2))
    await h.advance(2)

    assert marking.done()
    assert await marking is False


async def test_mark_not_ready_before_registration_is_a_no_op(h: Harness) -> None:
    assert await h.controller.mark_not_ready() is False


async def test_stop_ends_run_cleanly(h: Harness) -> None:
    await h.start()
    await h.advance(25)
    assert h.task is not None

    await h.controller.stop()
    await h.task

    assert h.task.exception() is None
    await h.clock.settle()
    assert h.clock.sleepers == 0


async def test_cancelling_run_stops_every_loop(h: Harness) -> None:
    await h.start()
    assert h.task is not None
    h.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await h.task
    h.task = None
    await h.clock.settle()
    assert h.clock.sleepers == 0


def test_settings_reject_nonsense() -> None:
    with pytest.raises(InvalidInput):
        NodeControllerSettings(name="vk-0", provider="mock", ping_timeout=0)
    with pytest.raises(InvalidInput):
        NodeControllerSettings(name="", provider="mock")
    with pytest.raises(InvalidInput):
        NodeControllerSettings(name="vk-0", provider="mock", kubelet_port=0)
