"""LeaderElector and the write fences, against FakeLeaseGateway and a FakeClock.

Two electors share one fake Lease store the way two replicas share the API server; time only
moves through ``clock.advance``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from tests.fakes.clock import FakeClock
from tests.fakes.cluster import (
    FakeConfigSource,
    FakeEventRecorder,
    FakeLeaseGateway,
    FakeNodeGateway,
    FakePodGateway,
)
from tests.fakes.provider import FakeProvider

from vkubelet.application.environment import EnvironmentResolver
from vkubelet.application.fencing import (
    FencedEventRecorder,
    FencedLeaseGateway,
    FencedNodeGateway,
    FencedPodGateway,
    FencedProvider,
)
from vkubelet.application.leader import ElectionSettings, LeaderElector
from vkubelet.application.pod_controller import PodController, PodControllerSettings
from vkubelet.application.ports.cluster import EventType, Lease, ObjectRef
from vkubelet.domain.errors import Transient
from vkubelet.domain.leader import ElectionTiming, LeadershipLost, NotLeader, Verdict
from vkubelet.domain.pod import Pod

LEASE = "vkubelet-vk-node"
TIMING = ElectionTiming(lease_duration=15, renew_deadline=10, retry_period=2)


def elector(leases: FakeLeaseGateway, clock: FakeClock, identity: str) -> LeaderElector:
    return LeaderElector(
        leases=leases,
        clock=clock,
        settings=ElectionSettings(
            lease_name=LEASE, namespace="vkubelet-system", identity=identity, timing=TIMING
        ),
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def leases(clock: FakeClock) -> FakeLeaseGateway:
    return FakeLeaseGateway(clock=clock)


@contextlib.asynccontextmanager
async def running(*electors: LeaderElector) -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks = [asyncio.create_task(e.run(), name=e.identity) for e in electors]
    try:
        yield tasks
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_the_first_candidate_creates_the_lease_and_leads(
    clock: FakeClock, leases: FakeLeaseGateway
) -> None:
    a = elector(leases, clock, "a")
    async with running(a):
        await clock.settle()
        assert a.leading.is_set() and a.is_leader()
    lease = leases.leases[LEASE]
    assert (lease.holder_identity, lease.duration_seconds, lease.transitions) == ("a", 15, 0)
    assert lease.acquire_time == lease.renew_time == clock.now()


async def test_the_leader_renews_every_retry_period(clock: FakeClock, leases: FakeLeaseGateway) -> None:
    a = elector(leases, clock, "a")
    async with running(a):
        await clock.settle()
        acquired = leases.leases[LEASE].acquire_time
        await clock.advance(2)
        assert leases.leases[LEASE].renew_time == clock.now()
        await clock.advance(20)
        assert a.is_leader()
    lease = leases.leases[LEASE]
    assert lease.acquire_time == acquired and lease.transitions == 0
    assert len(leases.calls_to("update_lease")) == 11


async def test_a_standby_sees_a_live_holder_and_writes_nothing(
    clock: FakeClock, leases: FakeLeaseGateway
) -> None:
    a, b = elector(leases, clock, "a"), elector(leases, clock, "b")
    async with running(a):
        await clock.settle()
        async with running(b):
            await clock.advance(60)
            assert not b.leading.is_set() and not b.is_leader()
            assert b.holder == "a"
            with pytest.raises(NotLeader, match="held by a"):
                b.check("patch a pod")
    writers = {call.args["lease"].holder_identity for call in leases.calls if call.method != "get_lease"}
    assert writers == {"a"}


async def test_a_standby_takes_over_one_lease_duration_after_the_last_renewal_it_saw(
    clock: FakeClock, leases: FakeLeaseGateway
) -> None:
    a, b = elector(leases, clock, "a"), elector(leases, clock, "b")
    async with running(a) as (leader,):
        await clock.settle()
        async with running(b):
            await clock.advance(4)
            leader.cancel()  # kill -9: no release
            await asyncio.gather(leader, return_exceptions=True)
            last_renewal = clock.monotonic()
            await clock.advance(14)
            assert not b.leading.is_set()
            await clock.advance(3)  # 15 s after b last saw a renewal, plus a retry period at most
            assert b.leading.is_set() and b.is_leader()
            assert clock.monotonic() - last_renewal <= 15 + 2
    lease = leases.leases[LEASE]
    assert (lease.holder_identity, lease.transitions) == ("b", 1)


async def test_of_two_candidates_one_wins_the_optimistic_write(
    clock: FakeClock, leases: FakeLeaseGateway
) -> None:
    leases.put(
        Lease(name=LEASE, holder_identity="", duration_seconds=1, renew_time=clock.now(), transitions=0)
    )
    a, b = elector(leases, clock, "a"), elector(leases, clock, "b")
    async with running(a, b):
        await clock.advance(10)
        leaders = [e.identity for e in (a, b) if e.is_leader()]
    assert leaders == [leases.leases[LEASE].holder_identity]


async def test_the_leader_loses_the_lease_when_renewals_fail_until_the_deadline(
    clock: FakeClock, leases: FakeLeaseGateway
) -> None:
    a = elector(leases, clock, "a")
    async with running(a) as (task,):
        await clock.settle()
        renewed_at = clock.monotonic()
        leases.inject_failure("update_lease", Transient("API server unreachable"), times=None)
        await clock.advance(9.9)
        assert a.is_leader() and not task.done()
        await clock.advance(0.1)
        assert not a.is_leader()
        assert task.done()
        with pytest.raises(LeadershipLost, match="renew deadline of 10s"):
            task.result()
        assert clock.monotonic() - renewed_at == pytest.approx(10)


async def test_the_leader_loses_the_lease_when_a_read_hangs_past_the_deadline(clock: FakeClock) -> None:
    leases = FakeLeaseGateway(clock=clock)
    a = elector(leases, clock, "a")
    async with running(a) as (task,):
        await clock.settle()
        leases.delay = 60  # every call hangs for a minute: the deadline bounds it
        await clock.advance(10)
        assert task.done()
        with pytest.raises(LeadershipLost):
            task.result()


async def test_the_leader_steps_down_at_once_when_someone_else_holds_the_lease(
    clock: FakeClock, leases: FakeLeaseGateway
) -> None:
    a = elector(leases, clock, "a")
    async with running(a) as (task,):
        await clock.settle()
        current = leases.leases[LEASE]
        leases.put(Lease(name=LEASE, holder_identity="intruder", duration_seconds=15, renew_time=clock.now()))
        assert current.holder_identity == "a"
        await clock.advance(2)
        assert task.done()
        with pytest.raises(LeadershipLost, match="held by intruder"):
            task.result()


async def test_a_frozen_leader_is_fenced_by_the_clock_before_its_loop_runs(
    clock: FakeClock, leases: FakeLeaseGateway
) -> None:
    a = elector(leases, clock, "a")
    assert await a.attempt() is Verdict.ACQUIRE
    a.check("write")  # leading
    # SIGSTOP: nothing runs while time passes; on SIGCONT the first write is refused even
    # though the election loop has not noticed anything yet.
    clock._elapsed += 30
    with pytest.raises(NotLeader):
        a.check("patch pod status")


async def test_release_lets_a_standby_take_over_at_once(clock: FakeClock, leases: FakeLeaseGateway) -> None:
    a, b = elector(leases, clock, "a"), elector(leases, clock, "b")
    async with running(a) as (leader,):
        await clock.settle()
        async with running(b):
            await clock.advance(3)
            leader.cancel()
            await asyncio.gather(leader, return_exceptions=True)
            assert await a.release()
            assert not a.is_leader()
            await clock.advance(2)
            assert b.is_leader()
    assert leases.leases[LEASE].holder_identity == "b"


# -- the fences ----------------------------------------------------------------------------------


class Toggle:
    """A fence the test opens and closes."""

    def __init__(self) -> None:
        self.open = False

    def check(self, action: str) -> None:
        if not self.open:
            raise NotLeader(f"not the leader: refusing to {action}")


def a_pod(pods: FakePodGateway, name: str = "web") -> Pod:
    return pods.create({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "x"}]}})


async def test_fenced_gateways_refuse_writes_and_pass_reads(clock: FakeClock) -> None:
    fence = Toggle()
    pods = FakePodGateway(clock=clock)
    pod = a_pod(pods)
    fenced_pods = FencedPodGateway(pods, fence)
    listed, _ = await fenced_pods.list_node_pods()
    assert [p.ref for p in listed] == [pod.ref]
    assert (await fenced_pods.get_pod("default", "web")).ref == pod.ref
    with pytest.raises(NotLeader, match="patch the status of pod"):
        await fenced_pods.patch_pod_status(pod.ref, {"phase": "Running"})
    with pytest.raises(NotLeader):
        await fenced_pods.delete_pod(pod.ref, grace_period_seconds=0)
    assert not pods.calls_to("patch_pod_status") and not pods.calls_to("delete_pod")

    nodes = FakeNodeGateway()
    fenced_nodes = FencedNodeGateway(nodes, fence)
    node: dict[str, Any] = {"metadata": {"name": "vk-node"}, "status": {}}
    for write in (
        fenced_nodes.create_node(node),
        fenced_nodes.patch_node("vk-node", {}),
        fenced_nodes.patch_node_status("vk-node", {}),
    ):
        with pytest.raises(NotLeader):
            await write
    node_leases = FakeLeaseGateway(clock=clock)
    fenced_leases = FencedLeaseGateway(node_leases, fence)
    heartbeat = Lease(name="vk-node", holder_identity="vk-node", duration_seconds=40, renew_time=clock.now())
    with pytest.raises(NotLeader):
        await fenced_leases.create_lease(heartbeat)
    assert not node_leases.leases

    fence.open = True
    await fenced_pods.patch_pod_status(pod.ref, {"phase": "Running"})
    await fenced_nodes.create_node(node)
    await fenced_leases.create_lease(heartbeat)
    assert len(pods.calls_to("patch_pod_status")) == 1 and "vk-node" in node_leases.leases


async def test_a_fenced_event_is_dropped_not_raised() -> None:
    fence, events = Toggle(), FakeEventRecorder()
    recorder = FencedEventRecorder(events, fence)
    ref = ObjectRef("Pod", "default", "web", "uid-1")
    recorder.record(ref, type=EventType.NORMAL, reason="Started", message="standby")
    fence.open = True
    recorder.record(ref, type=EventType.NORMAL, reason="Started", message="leader")
    assert [e.message for e in events.events] == ["leader"]


async def test_the_fenced_provider_refuses_pod_writes_only(clock: FakeClock) -> None:
    fence, provider = Toggle(), FakeProvider()
    fenced = FencedProvider(provider, fence)
    pod = a_pod(FakePodGateway(clock=clock))
    for write in (fenced.create_pod(pod), fenced.update_pod(pod), fenced.delete_pod(pod)):
        with pytest.raises(NotLeader):
            await write
    assert await fenced.list_pods() == []
    await fenced.ping()
    assert fenced.capabilities() == provider.capabilities()
    assert provider.calls["create_pod"] == provider.calls["delete_pod"] == 0


async def test_the_pod_controller_syncs_nothing_until_its_gate_opens(clock: FakeClock) -> None:
    """A standby's pod controller keeps its watch and provider feed warm but never calls the
    provider's writes; opened, it reconciles and creates what is missing, once."""
    pods, provider, events = FakePodGateway(clock=clock), FakeProvider(), FakeEventRecorder()
    old_leaders_pod = a_pod(pods, "created-by-the-old-leader")
    provider.seed(old_leaders_pod)
    gate = asyncio.Event()
    controller = PodController(
        pods=pods,
        provider=provider,
        environment=EnvironmentResolver(configs=FakeConfigSource(), provider=provider, host_ip="10.0.0.1"),
        events=events,
        clock=clock,
        settings=PodControllerSettings(node_name="vk-node", workers=2),
        sync_gate=gate,
    )
    task = asyncio.create_task(controller.run())
    try:
        await clock.advance(1)
        assert controller.ready.is_set()
        new = a_pod(pods, "new")
        await clock.advance(120)  # two full reconciles: reads only
        assert {p.ref.uid for p in controller.node_pods()} == {old_leaders_pod.ref.uid, new.ref.uid}
        assert provider.calls["create_pod"] == 0 and not pods.calls_to("patch_pod_status")
        gate.set()
        for _ in range(100):
            if new.ref in provider.created:
                break
            await clock.advance(timedelta(milliseconds=50).total_seconds())
        assert provider.created == [new.ref]  # the old leader's pod is not created again
        assert provider.calls["delete_pod"] == 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
