"""ServingCertificateManager against in-memory fakes and a FakeClock: the CSR it makes, self-
approval of exactly its own request (and refusal of anything else), the Pending event once,
denial and timeouts retried with back-off, renewal at 70-90 % of the validity."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from datetime import timedelta

import pytest
from tests.fakes.certificates import FakeCertificateSigningRequests, FakeCertificateSink, FakeServingKeys
from tests.fakes.clock import FakeClock
from tests.fakes.cluster import FakeEventRecorder, FakeNodeGateway

from vkubelet.application.serving_certificate import (
    REASON_DENIED,
    REASON_INSTALLED,
    REASON_NOT_APPROVED,
    REASON_PENDING,
    REASON_TIMEOUT,
    ServingCertificateManager,
    ServingCertificateSettings,
)
from vkubelet.domain.backoff import Backoff
from vkubelet.domain.errors import Permanent, Transient
from vkubelet.domain.serving_cert import (
    KUBELET_SERVING_SIGNER,
    CsrPhase,
    IssuedCertificate,
    KeyAlgorithm,
    SigningRequest,
)

NODE = "vk-0"
ADDRESSES = [{"type": "InternalIP", "address": "10.1.2.3"}, {"type": "Hostname", "address": "vk-0"}]


@dataclasses.dataclass
class World:
    clock: FakeClock
    nodes: FakeNodeGateway
    csrs: FakeCertificateSigningRequests
    keys: FakeServingKeys
    sink: FakeCertificateSink
    events: FakeEventRecorder
    build: Callable[..., ServingCertificateManager]

    def reasons(self) -> list[str]:
        return [event.reason for event in self.events.events]


@pytest.fixture
async def world() -> World:
    clock = FakeClock()
    nodes = FakeNodeGateway(clock=clock)
    await nodes.create_node({"metadata": {"name": NODE}, "status": {"addresses": ADDRESSES}})
    csrs = FakeCertificateSigningRequests(clock)
    keys, sink, events = FakeServingKeys(), FakeCertificateSink(), FakeEventRecorder()

    def build(**settings: object) -> ServingCertificateManager:
        return ServingCertificateManager(
            csrs=csrs,
            nodes=nodes,
            keys=keys,
            sink=sink,
            events=events,
            clock=clock,
            settings=ServingCertificateSettings(
                node_name=NODE,
                retry=Backoff(base=10.0, cap=60.0),
                **settings,  # type: ignore[arg-type]
            ),
            jitter=lambda: 0.5,
        )

    return World(clock, nodes, csrs, keys, sink, events, build)


async def start(manager: ServingCertificateManager) -> asyncio.Task[None]:
    task = asyncio.create_task(manager.run())
    await asyncio.sleep(0)
    return task


async def rotate(world: World, manager: ServingCertificateManager) -> IssuedCertificate:
    """One round, with the fake clock moved on while it polls for the signer's certificate."""
    task = asyncio.create_task(manager.rotate_once())
    await world.clock.advance(1)
    assert task.done(), "the round did not finish within 1 s of fake time"
    return task.result()


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_self_approval_gets_and_serves_a_certificate_for_exactly_this_node(world: World) -> None:
    manager = world.build(self_approve=True)
    issued = await rotate(world, manager)

    csr = world.csrs.latest()
    assert csr.name.startswith(f"csr-{NODE}-")
    assert csr.signer_name == KUBELET_SERVING_SIGNER
    assert set(csr.usages) == {"digital signature", "server auth"}  # an ECDSA key
    assert csr.content.common_name == "system:node:vk-0"
    assert csr.content.organizations == ("system:nodes",)
    assert csr.content.ip_addresses == ("10.1.2.3",) and csr.content.dns_names == ("vk-0",)
    assert world.csrs.approvals == [csr.name]
    assert world.sink.installed == [(issued.cert_pem, world.keys.made[0].key_pem)]
    assert manager.installed.is_set() and manager.current == issued
    assert REASON_PENDING not in world.reasons()
    assert world.reasons() == [REASON_INSTALLED]
    node_uid = world.nodes.node(NODE)["metadata"]["uid"]
    assert {(e.obj.kind, e.obj.name, e.obj.uid) for e in world.events.events} == {("Node", NODE, node_uid)}


async def test_an_rsa_key_asks_for_key_encipherment_too(world: World) -> None:
    world.keys.algorithm = KeyAlgorithm.RSA
    await rotate(world, world.build(self_approve=True))
    assert set(world.csrs.latest().usages) == {"digital signature", "key encipherment", "server auth"}
    assert len(world.csrs.approvals) == 1


async def test_a_pending_csr_is_announced_once_and_served_when_an_admin_approves(world: World) -> None:
    task = await start(world.build())
    await world.clock.advance(120)  # many polls
    csr = world.csrs.latest()
    assert csr.phase is CsrPhase.PENDING
    assert world.csrs.gets > 10
    pending = [e for e in world.events.events if e.reason == REASON_PENDING]
    assert len(pending) == 1
    assert csr.name in pending[0].message and "kubectl certificate approve" in pending[0].message
    assert world.sink.installed == []

    world.csrs.approve_as_admin(csr.name)
    await world.clock.advance(5)
    assert len(world.sink.installed) == 1
    assert world.csrs.approvals == []  # vkubelet approved nothing itself
    assert world.csrs.created == [csr.name]
    await stop(task)


def _tamper(**changes: object) -> Callable[[SigningRequest], SigningRequest]:
    def rewrite(request: SigningRequest) -> SigningRequest:
        content_fields = {f.name for f in dataclasses.fields(request.content)}
        content = dataclasses.replace(
            request.content,
            **{k: v for k, v in changes.items() if k in content_fields},  # type: ignore[arg-type]
        )
        rest = {k: v for k, v in changes.items() if k not in content_fields}
        return dataclasses.replace(request, content=content, **rest)  # type: ignore[arg-type]

    return rewrite


@pytest.mark.parametrize(
    "changes",
    [
        {"dns_names": ("vk-0", "kubernetes.default.svc")},
        {"ip_addresses": ("10.1.2.3", "10.96.0.1")},
        {"common_name": "system:node:other-node"},
        {"organizations": ("system:nodes", "system:masters")},
        {"usages": ("digital signature", "server auth", "client auth")},
        {"signer_name": "kubernetes.io/kube-apiserver-client"},
    ],
    ids=["extra-dns-san", "extra-ip-san", "wrong-cn", "extra-o", "extra-usage", "wrong-signer"],
)
async def test_self_approval_refuses_a_csr_that_is_not_exactly_ours(
    world: World, changes: dict[str, object]
) -> None:
    world.csrs.on_create = _tamper(**changes)
    task = await start(world.build(self_approve=True))
    await world.clock.advance(60)
    assert world.csrs.approvals == []
    assert world.csrs.latest().phase is CsrPhase.PENDING
    refusals = [e for e in world.events.events if e.reason == REASON_NOT_APPROVED]
    assert len(refusals) == 1 and world.csrs.latest().name in refusals[0].message
    assert world.reasons().count(REASON_PENDING) == 1
    assert world.sink.installed == []
    await stop(task)


async def test_an_approval_the_api_refuses_leaves_the_csr_for_a_human(world: World) -> None:
    world.csrs.approve_error = Permanent('certificatesigningrequests "x" is forbidden')
    task = await start(world.build(self_approve=True))
    await world.clock.advance(120)
    (name,) = world.csrs.created  # no new CSR every back-off
    refusals = [e for e in world.events.events if e.reason == REASON_NOT_APPROVED]
    assert len(refusals) == 1 and "forbidden" in refusals[0].message and name in refusals[0].message
    world.csrs.approve_as_admin(name)
    await world.clock.advance(5)
    assert len(world.sink.installed) == 1
    await stop(task)


async def test_an_approval_that_times_out_is_tried_again(world: World) -> None:
    world.csrs.approve_error = Transient("no answer within 30 s")
    task = await start(world.build(self_approve=True))
    await world.clock.advance(1)
    assert world.sink.installed == [] and world.reasons() == []
    world.csrs.approve_error = None
    await world.clock.advance(10)
    assert world.csrs.approvals == world.csrs.created  # the same, first CSR
    assert len(world.sink.installed) == 1
    await stop(task)


async def test_self_approval_never_approves_a_replaced_object(world: World) -> None:
    world.csrs.signer_validity = None  # approved but never issued
    task = await start(world.build(self_approve=True))
    await world.clock.advance(0.1)
    first = world.csrs.created[0]
    assert world.csrs.approvals == [first]
    # Same name, another uid, and pending: an object vkubelet must not approve.
    world.csrs.replace_object(first)
    world.csrs.stored[first] = dataclasses.replace(world.csrs.stored[first], conditions=())
    await world.clock.advance(1)
    # The replacement was not approved; a new CSR of our own was made after the back-off.
    assert world.csrs.approvals == [first]
    await world.clock.advance(10)
    assert len(world.csrs.created) == 2
    assert world.csrs.approvals == [first, world.csrs.created[1]]
    await stop(task)


async def test_a_denied_csr_is_an_event_and_a_new_csr_after_back_off(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    task = await start(world.build())
    await world.clock.advance(1)
    first = world.csrs.created[0]
    world.csrs.deny(first, reason="NotOurs", message="nobody expects this node")
    await world.clock.advance(5)
    denied = [e for e in world.events.events if e.reason == REASON_DENIED]
    assert len(denied) == 1 and first in denied[0].message and "NotOurs" in denied[0].message
    assert any(first in record.getMessage() and "denied" in record.getMessage() for record in caplog.records)
    assert world.csrs.created == [first]  # back-off: 10 s
    await world.clock.advance(10)
    assert len(world.csrs.created) == 2
    second = world.csrs.created[1]
    world.csrs.approve_as_admin(second)
    await world.clock.advance(5)
    assert len(world.sink.installed) == 1
    await stop(task)


async def test_a_csr_never_issued_times_out_and_is_replaced(world: World) -> None:
    task = await start(world.build(wait_timeout=100.0))
    await world.clock.advance(99)
    assert len(world.csrs.created) == 1
    await world.clock.advance(2)
    assert world.reasons().count(REASON_TIMEOUT) == 1
    await world.clock.advance(10)
    assert len(world.csrs.created) == 2
    await stop(task)


async def test_renewal_at_80_percent_with_a_new_key_and_csr(world: World) -> None:
    world.csrs.signer_validity = timedelta(days=100)
    task = await start(world.build(self_approve=True))
    await world.clock.advance(1)
    assert len(world.csrs.created) == 1 and len(world.sink.installed) == 1

    await world.clock.advance(timedelta(days=80).total_seconds() - 10)  # jitter 0.5: day 80
    assert len(world.csrs.created) == 1
    await world.clock.advance(20)
    assert len(world.csrs.created) == 2
    assert len(world.sink.installed) == 2
    assert world.sink.installed[0][1] != world.sink.installed[1][1]  # a new key
    await stop(task)


async def test_a_failing_renewal_keeps_serving_the_old_certificate(world: World) -> None:
    world.csrs.signer_validity = timedelta(days=10)
    manager = world.build(self_approve=True)
    task = await start(manager)
    await world.clock.advance(1)
    first = manager.current
    world.sink.refuse = True
    await world.clock.advance(timedelta(days=8).total_seconds() + 300)  # renewal due at day 8
    assert len(world.csrs.created) > 2  # retried with back-off
    assert manager.current == first and len(world.sink.installed) == 1
    world.sink.refuse = False
    await world.clock.advance(120)
    assert len(world.sink.installed) == 2 and manager.current != first
    await stop(task)
