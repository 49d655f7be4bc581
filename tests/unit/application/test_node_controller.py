"""NodeController against in-memory fakes and a FakeClock (upstream node_test.go scenarios, §8,
plus its bugs 13-16): registration, adoption, status patches, pings with timeouts, the Lease,
recreation after a delete, the provider's node status stream, shutdown. No network, no real
sleeps.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Mapping
from datetime import timedelta
from typing import Any

import pytest
from tests.fakes.clock import FakeClock
from tests.fakes.cluster import FakeEventRecorder, FakeLeaseGateway, FakeNodeGateway

from vkubelet.application.node_controller import NodeController, NodeControllerSettings
from vkubelet.application.ports.cluster import Lease
from vkubelet.domain.errors import InvalidInput, Transient
from vkubelet.domain.provider import Capability, NodeAddress, NodeCondition, NodeTemplate, Taint

TAINT = Taint("virtual-kubelet.io/provider", "mock", "NoSchedule")
TEMPLATE = NodeTemplate(capacity={"cpu": "8", "memory": "32Gi", "pods": "110"}, architecture="arm64")


# --- fakes ---------------------------------------------------------------------------------------
# The shared cluster fakes, plus what these scenarios need on top: calls that hang until a gate
# opens, and a log of every lease write.


class Nodes(FakeNodeGateway):
    def __init__(self, *, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.gates: dict[str, asyncio.Event] = {}  # port method -> blocks until set

    async def _gate(self, method: str) -> None:
        gate = self.gates.get(method)
        if gate is not None:
            await gate.wait()

    async def get_node(self, name: str) -> Mapping[str, Any]:
        await self._gate("get_node")
        return await super().get_node(name)

    async def create_node(self, node: Mapping[str, Any]) -> Mapping[str, Any]:
        await self._gate("create_node")
        return await super().create_node(node)

    async def patch_node(self, name: str, patch: Mapping[str, Any]) -> Mapping[str, Any]:
        await self._gate("patch_node")
        return await super().patch_node(name, patch)

    async def patch_node_status(self, name: str, patch: Mapping[str, Any]) -> Mapping[str, Any]:
        await self._gate("patch_node_status")
        return await super().patch_node_status(name, patch)

    async def add(self, node: Mapping[str, Any]) -> Mapping[str, Any]:
        """Another actor creates the node."""
        return await FakeNodeGateway.create_node(self, node)

    def count(self, method: str) -> int:
        return len(self.calls_to(method))

    def ready(self, name: str = "vk-0") -> Mapping[str, Any]:
        condition = self.condition(name, "Ready")
        assert condition is not None
        return condition


class Leases(FakeLeaseGateway):
    def __init__(self, *, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.writes: list[Lease] = []

    async def create_lease(self, lease: Lease) -> Lease:
        stored = await super().create_lease(lease)
        self.writes.append(stored)
        return stored

    async def update_lease(self, lease: Lease) -> Lease:
        stored = await super().update_lease(lease)
        self.writes.append(stored)
        return stored

    @property
    def lease(self) -> Lease | None:
        return self.leases.get("vk-0")

    def count(self, method: str) -> int:
        return len(self.calls_to(method))


class Provider:
    """NodeProvider whose ping can fail, hang (optionally ignoring cancellation) and is counted.

    With ``node_stream`` it declares NODE_STATUS_STREAM: ``push`` sends a template down the
    stream, ``break_stream`` makes the open stream raise (or, with None, end). Template reads
    and subscriptions are counted, and a template read can be held at ``read_gate``.
    """

    def __init__(self, template: NodeTemplate = TEMPLATE) -> None:
        self.template = template
        self.error: BaseException | None = None
        self.hang = False
        self.ignore_cancel = False
        self.release = asyncio.Event()
        self.pings = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.node_stream = False
        self.template_reads = 0
        self.subscriptions = 0
        self.read_gate: asyncio.Event | None = None
        self._stream: asyncio.Queue[NodeTemplate | BaseException | None] = asyncio.Queue()

    def capabilities(self) -> frozenset[Capability]:
        return frozenset({Capability.NODE_STATUS_STREAM}) if self.node_stream else frozenset()

    def native_volume_kinds(self) -> frozenset[str]:
        return frozenset()

    def push(self, template: NodeTemplate) -> None:
        """The backing system's node changed: the provider's template and its stream follow."""
        self.template = template
        self._stream.put_nowait(template)

    def break_stream(self, error: BaseException | None) -> None:
        self._stream.put_nowait(error)

    async def node_status_updates(self) -> AsyncIterator[NodeTemplate]:
        self.subscriptions += 1
        while True:
            item = await self._stream.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

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
        self.template_reads += 1
        answer = self.template  # what the provider knew when the call arrived
        if self.read_gate is not None:
            await self.read_gate.wait()
        return answer


# --- fixtures --------------------------------------------------------------------------------------


class Harness:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.nodes = Nodes(clock=self.clock)
        self.leases = Leases(clock=self.clock)
        self.provider = Provider()
        self.events = FakeEventRecorder()
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
        return self.nodes.node("vk-0")

    @property
    def event_reasons(self) -> list[str]:
        return [event.reason for event in self.events.events]


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


async def test_registration_creates_node_with_labels_taint_os_arch_and_ready_after_good_ping(
    h: Harness,
) -> None:
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
    h.nodes.inject_failure("get_node", Transient("apiserver restarting"), times=3)

    registering = asyncio.create_task(h.controller.register())
    await h.clock.settle()
    assert not registering.done()
    await h.advance(0.2 + 0.4 + 0.8)  # the retry policy's first three delays

    assert await registering == h.node()["metadata"]["uid"]
    assert h.nodes.count("get_node") == 4


async def test_registration_after_a_long_api_outage_uses_a_fresh_ping(h: Harness) -> None:
    h.nodes.inject_failure("get_node", Transient("apiserver restarting"), times=8)

    registering = asyncio.create_task(h.controller.register())
    await h.advance(60)
    await registering

    assert h.provider.pings > 1
    assert h.nodes.ready()["status"] == "True"  # not "no answer for 60 s"


async def test_registration_is_cancellable_while_the_api_is_down(h: Harness) -> None:
    h.nodes.inject_failure("get_node", Transient("down"), times=None)

    registering = asyncio.create_task(h.controller.register())
    await h.advance(30)
    registering.cancel()
    with pytest.raises(asyncio.CancelledError):
        await registering
    assert h.clock.sleepers == 0
    assert not h.controller.ready.is_set()


async def test_registration_gives_up_on_errors_retrying_cannot_fix(h: Harness) -> None:
    h.nodes.inject_failure("create_node", InvalidInput("node name is invalid"))

    with pytest.raises(InvalidInput):
        await h.controller.register()


async def test_conflict_on_create_adopts_the_node_created_meanwhile(h: Harness) -> None:
    async def someone_else_creates_it() -> None:
        await h.nodes.add({"metadata": {"name": "vk-0"}, "status": {}})

    h.nodes.gates["create_node"] = asyncio.Event()
    registering = asyncio.create_task(h.controller.register())
    await h.clock.settle()
    await someone_else_creates_it()
    h.nodes.gates["create_node"].set()
    await h.advance(1)

    assert await registering == h.node()["metadata"]["uid"]
    assert h.node()["metadata"]["labels"]["type"] == "virtual-kubelet"
    assert h.nodes.ready()["status"] == "True"


# --- adoption (TestManualConditionsPreserved / TestBeforeAnnotationsPreserved analogues) ---------


async def test_adopting_existing_node_preserves_conditions_annotations_and_taints_of_others(
    h: Harness,
) -> None:
    existing = await h.nodes.add(
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
    await h.nodes.add({"metadata": {"name": "vk-0"}, "spec": {"taints": []}, "status": {}})
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
    writes = h.nodes.count("patch_node_status")

    await h.advance(59)
    assert h.nodes.count("patch_node_status") == writes
    await h.advance(1)
    assert h.nodes.count("patch_node_status") == writes + 1
    assert h.nodes.ready()["lastHeartbeatTime"] == "2025-01-01T00:01:00Z"


async def test_failed_ping_turns_node_not_ready_at_once_with_the_error(h: Harness) -> None:
    await h.start()
    h.provider.error = RuntimeError("backend 503")

    await h.advance(10)  # next ping; the Ready flip patches immediately, not after 60 s

    ready = h.nodes.ready()
    assert (ready["status"], ready["reason"]) == ("False", "ProviderPingFailed")
    assert "RuntimeError: backend 503" in ready["message"]
    assert ready["lastTransitionTime"] == "2025-01-01T00:00:10Z"
    assert "NodeNotReady" in h.event_reasons


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
    assert h.event_reasons[-1] == "NodeReady"


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
    assert "NodeRecreated" in h.event_reasons
    await h.advance(10)
    assert h.leases.lease.owner_node_uid == node["metadata"]["uid"]


async def test_node_recreated_by_someone_else_gets_our_labels_and_taint_back(h: Harness) -> None:
    await h.start()
    first_uid = h.controller.node_uid
    h.nodes.delete("vk-0")
    await h.nodes.add({"metadata": {"name": "vk-0", "labels": {"owner": "ops"}}, "spec": {}, "status": {}})

    await h.advance(60)

    node = h.node()
    assert node["metadata"]["uid"] != first_uid
    assert node["metadata"]["labels"]["owner"] == "ops"
    assert node["metadata"]["labels"]["type"] == "virtual-kubelet"
    assert node["spec"]["taints"] == [TAINT.to_manifest()]
    assert h.controller.node_uid == node["metadata"]["uid"]
    await h.advance(10)
    assert h.leases.lease is not None
    assert h.leases.lease.owner_node_uid == node["metadata"]["uid"]


async def test_failed_status_patch_is_retried_soon(h: Harness) -> None:
    await h.start()
    h.nodes.inject_failure("patch_node_status", Transient("etcd timeout"))
    calls = h.nodes.count("patch_node_status")

    await h.advance(61)

    assert h.nodes.count("patch_node_status") == calls + 2  # failed at 60 s, retried at 60.2 s
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


# --- the provider's node status stream -----------------------------------------------------------

SMALL = NodeTemplate(
    capacity={"cpu": "4", "memory": "8Gi", "pods": "110"},
    addresses=(NodeAddress("Hostname", "backend-a"),),
    architecture="arm64",
)
GPU_TAINT = Taint("example.com/gpu", "true", "NoSchedule")
QUOTA = NodeCondition("example.com/QuotaExceeded", "True", "QuotaLow", "98% of the quota is used")
CORDON = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}  # set by someone else


def streaming(h: Harness, template: NodeTemplate = SMALL) -> Provider:
    h.provider.node_stream = True
    h.provider.template = template
    return h.provider


def taints_of(node: Mapping[str, Any]) -> list[Any]:
    return list(node["spec"].get("taints") or [])


async def test_template_pushed_by_the_provider_reaches_the_node_within_a_second(h: Harness) -> None:
    provider = streaming(h)
    await h.start()
    h.nodes.set_by_other_actor("vk-0", {"spec": {"taints": [*taints_of(h.node()), CORDON]}})
    assert h.node()["status"]["capacity"]["cpu"] == "4"

    provider.push(
        NodeTemplate(
            capacity={"cpu": "8", "memory": "16Gi", "pods": "110"},
            taints=(GPU_TAINT,),
            conditions=(QUOTA,),
            addresses=(NodeAddress("Hostname", "backend-b"),),
            architecture="arm64",
        )
    )
    await h.advance(1)  # the periodic status patch is 59 s away: only the stream can do this

    node = h.node()
    assert node["status"]["capacity"] == {"cpu": "8", "memory": "16Gi", "pods": "110"}
    assert node["status"]["allocatable"]["cpu"] == "8"
    quota = next(c for c in node["status"]["conditions"] if c["type"] == QUOTA.type)
    assert (quota["status"], quota["reason"]) == ("True", "QuotaLow")
    assert h.nodes.ready()["status"] == "True"
    assert {"type": "Hostname", "address": "backend-b"} in node["status"]["addresses"]
    assert {"type": "InternalIP", "address": "10.0.0.7"} in node["status"]["addresses"]
    # The provider's new taint is added; vkubelet's own and the other actor's are kept.
    taints = taints_of(node)
    assert GPU_TAINT.to_manifest() in taints
    assert TAINT.to_manifest() in taints
    assert CORDON in taints


async def test_an_unchanged_template_from_the_stream_patches_nothing(h: Harness) -> None:
    provider = streaming(h)
    await h.start()
    await h.advance(1)
    patches = (h.nodes.count("patch_node_status"), h.nodes.count("patch_node"))

    provider.push(SMALL)
    await h.advance(1)

    assert (h.nodes.count("patch_node_status"), h.nodes.count("patch_node")) == patches


async def test_a_broken_node_stream_is_reopened_with_backoff_and_the_template_read_again(
    h: Harness,
) -> None:
    provider = streaming(h)
    await h.start()
    assert (provider.subscriptions, provider.template_reads) == (1, 2)  # register, then subscribe
    # Changed while the stream is down: never streamed, so only the re-read can bring it.
    provider.template = NodeTemplate(capacity={"cpu": "16", "memory": "8Gi", "pods": "110"})
    provider.break_stream(Transient("provider restarting"))

    await h.clock.advance(0.19)
    assert provider.subscriptions == 1  # waiting out the first backoff (0.2 s)
    await h.clock.advance(0.02)
    assert (provider.subscriptions, provider.template_reads) == (2, 3)
    await h.clock.settle()
    assert h.node()["status"]["capacity"]["cpu"] == "16"

    provider.break_stream(RuntimeError("a bug in the provider"))  # not a domain error either
    await h.clock.advance(0.39)
    assert provider.subscriptions == 2  # nothing came through: the backoff grew to 0.4 s
    await h.clock.advance(0.02)
    assert provider.subscriptions == 3

    provider.break_stream(None)  # the provider ends the stream
    await h.clock.advance(0.81)
    assert provider.subscriptions == 4
    assert h.task is not None and not h.task.done()  # the controller keeps running

    provider.push(NodeTemplate(capacity={"cpu": "32", "memory": "8Gi", "pods": "110"}))
    await h.advance(1)
    assert h.node()["status"]["capacity"]["cpu"] == "32"


async def test_a_node_stream_that_delivered_starts_its_backoff_over(h: Harness) -> None:
    provider = streaming(h)
    await h.start()
    for _ in range(3):  # three subscriptions that deliver nothing: 0.2, 0.4, 0.8 s
        provider.break_stream(Transient("flaky"))
        await h.advance(2, step=0.1)
    assert provider.subscriptions == 4

    provider.push(NodeTemplate(capacity={"cpu": "5", "memory": "8Gi", "pods": "110"}))
    await h.clock.settle()
    provider.break_stream(Transient("flaky"))
    await h.clock.advance(0.21)

    assert provider.subscriptions == 5  # after 0.2 s again, not 1.6 s


async def test_a_template_streamed_during_the_re_read_wins_over_its_answer(h: Harness) -> None:
    provider = streaming(h)
    await h.start()
    provider.read_gate = asyncio.Event()  # the next template read hangs
    provider.break_stream(Transient("provider restarting"))
    await h.clock.advance(0.21)
    assert provider.subscriptions == 2 and provider.template_reads == 3  # re-read in flight

    provider.push(NodeTemplate(capacity={"cpu": "8", "memory": "8Gi", "pods": "110"}))
    await h.clock.settle()
    provider.read_gate.set()  # answers with the template from before the push
    await h.advance(1)

    assert h.node()["status"]["capacity"]["cpu"] == "8"


async def test_a_provider_that_drops_the_capability_is_no_longer_asked(h: Harness) -> None:
    provider = streaming(h)
    await h.start()
    provider.node_stream = False  # say, a new provider version behind the same address
    provider.break_stream(Transient("provider restarting"))

    await h.advance(59)
    assert provider.subscriptions == 1  # the check after the backoff found it gone

    provider.node_stream = True
    await h.advance(61)  # looked at again one status interval later
    assert provider.subscriptions == 2


async def test_provider_without_the_node_status_capability_is_never_asked(h: Harness) -> None:
    assert Capability.NODE_STATUS_STREAM not in h.provider.capabilities()
    await h.start()

    await h.advance(130)

    assert h.provider.subscriptions == 0
    assert h.provider.template_reads == 1  # at registration only
    assert h.nodes.count("patch_node_status") == 2  # the controller did run: at 60 s and 120 s


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
    h.leases.put(
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
    assert h.leases.lease is not None
    h.leases.put(h.leases.lease)  # another writer bumped the resourceVersion

    await h.advance(10)

    assert h.leases.count("update_lease") == 2  # the conflicting try, then the retry
    assert h.leases.count("get_lease") == 2  # at creation, and after the conflict
    assert h.leases.lease is not None
    assert h.leases.lease.renew_time == h.clock.now()


async def test_lease_api_errors_back_off_without_a_hot_loop(h: Harness) -> None:
    await h.start()
    h.leases.inject_failure("update_lease", Transient("apiserver unavailable"), times=None)

    await h.advance(70)

    # first failure at 10 s; then 0.2, 0.4, 0.8, 1.6, 3.2, 6.4 (12.6 s) and every 7 s after that
    calls = h.leases.count("update_lease")
    assert calls == 1 + 6 + int((70 - 10 - 12.6) // 7)
    assert h.clock.sleepers <= 4  # one sleep per loop (bug 16: no double sleep), plus timers

    h.leases.clear_failures()
    await h.advance(7)
    assert h.leases.lease is not None
    assert h.leases.lease.renew_time > h.clock.now() - timedelta(seconds=7)


async def test_deleted_lease_is_recreated(h: Harness) -> None:
    await h.start()
    h.leases.delete("vk-0")  # garbage-collected with a deleted node, say

    await h.advance(10)

    assert h.leases.lease is not None
    assert h.leases.lease.renew_time == h.clock.now()
    assert h.leases.lease.owner_node_uid == h.controller.node_uid


async def test_slow_lease_api_keeps_the_10s_cadence(h: Harness) -> None:
    h.leases.delay = 3.0  # every lease call takes 3 s
    await h.start()

    await h.advance(47)

    renew_times = [w.renew_time for w in h.leases.writes]
    assert [(b - a).total_seconds() for a, b in itertools.pairwise(renew_times)] == [10.0] * 4


async def test_hung_lease_api_is_abandoned_and_retried(h: Harness) -> None:
    await h.start()
    h.leases.delay = 3600.0  # the API server stops answering lease calls

    await h.advance(60)
    attempts = h.leases.count("update_lease")
    assert 3 <= attempts <= 6  # each call abandoned after api_timeout (10 s), then a short backoff

    h.leases.delay = 0.0
    await h.advance(10)
    assert h.leases.lease is not None
    assert h.leases.lease.renew_time >= h.clock.now() - timedelta(seconds=10)


async def test_slow_status_patch_does_not_stall_the_lease(h: Harness) -> None:
    await h.start()
    h.nodes.gates["patch_node_status"] = asyncio.Event()  # every status patch hangs

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
    h.nodes.gates["patch_node_status"] = asyncio.Event()

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
