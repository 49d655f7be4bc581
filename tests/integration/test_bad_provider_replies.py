"""Bad input from an out-of-process provider, end to end through the real PodController.

Issue 4's acceptance: "malformed JSON, a status for an unknown UID, a stream that breaks mid-way,
a call that hangs past its deadline: a clear log line and pod event, vkubelet keeps running,
nothing lost." The controller runs for real (real clock, real GrpcProvider over a real gRPC
channel) against the in-memory cluster fakes; the provider is :class:`MisbehavingProvider`, a
provider written against the bare generated servicer, the way one in another language would be,
that misbehaves when a test asks it to and otherwise runs every pod it is given.

Every wait is a condition with a deadline. "Nothing lost" means: no pod deleted in the API or in
the provider, exactly one pod in the provider per API pod, and every pod Running in the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
import grpc.aio
import pytest

from tests.fakes.cluster import FakeConfigSource, FakeEventRecorder, FakePodGateway
from vkubelet.adapters.grpc._generated import provider_pb2 as pb
from vkubelet.adapters.grpc._generated import provider_pb2_grpc as pb_grpc
from vkubelet.adapters.grpc.client import GrpcProvider
from vkubelet.adapters.grpc.config import parse_grpc_config
from vkubelet.adapters.system import SystemClock
from vkubelet.application.environment import EnvironmentResolver
from vkubelet.application.pod_controller import PodController, PodControllerSettings
from vkubelet.domain.backoff import Backoff

NODE = "vk-bad-provider"
NS = "default"
QUICK = Backoff(base=0.05, cap=0.3)

RUNNING_STATUS: dict[str, Any] = {
    "phase": "Running",
    "hostIP": "10.0.0.1",
    "podIP": "10.1.0.1",
    "conditions": [{"type": "Ready", "status": "True"}],
}


async def _abort(context: Any, code: grpc.StatusCode, details: str) -> NoReturn:
    await context.abort(code, details)
    raise AssertionError("ServicerContext.abort returned")


class _Abort:
    """Queued to a status stream: end it with INTERNAL, as a provider crashing mid-stream does."""


class MisbehavingProvider(pb_grpc.ProviderServicer):
    """Runs every pod at once (Running) and reports it on WatchPodStatus, unless told otherwise.

    Faults, each switched by a test: ``malformed_lists`` (ListPods answers bytes that are not
    JSON), ``malformed_statuses`` (GetPodStatus likewise), ``hang_creates`` (that many CreatePod
    calls never answer), ``abort_instead_of_next_status`` (the stream breaks where the next status
    would have gone, so that status is never delivered: a provider need not buffer), and
    :meth:`send_raw` / :meth:`break_streams` to put anything on the open streams.
    """

    def __init__(self, *, streaming: bool = True) -> None:
        self.streaming = streaming
        self.pods: dict[str, dict[str, Any]] = {}  # uid -> the pod as the provider runs it
        self.create_calls: list[str] = []  # uids, in call order (hung ones included)
        self.update_calls: list[str] = []
        self.delete_calls: list[str] = []
        self.list_calls = 0
        self.status_calls = 0
        self.subscriptions = 0
        self.malformed_lists = False
        self.malformed_statuses = False
        self.hang_creates = 0
        self.abort_instead_of_next_status = False
        self._streams: list[asyncio.Queue[bytes | _Abort]] = []

    # -- test controls ------------------------------------------------------------------------
    def send_raw(self, data: bytes) -> None:
        for queue in self._streams:
            queue.put_nowait(data)

    def break_streams(self) -> None:
        for queue in self._streams:
            queue.put_nowait(_Abort())

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    # -- the protocol -------------------------------------------------------------------------
    async def Describe(self, request: Any, context: Any) -> pb.DescribeResponse:
        capabilities = [pb.CAPABILITY_POD_STATUS_STREAM] if self.streaming else []
        return pb.DescribeResponse(name="misbehaving", version="0", capabilities=capabilities)

    async def Ping(self, request: Any, context: Any) -> pb.PingResponse:
        return pb.PingResponse()

    async def CreatePod(self, request: pb.CreatePodRequest, context: Any) -> pb.CreatePodResponse:
        pod = json.loads(request.pod_json)
        uid = pod["metadata"]["uid"]
        self.create_calls.append(uid)
        if self.hang_creates > 0:
            self.hang_creates -= 1
            await asyncio.Event().wait()  # until the client's deadline cancels the call
        if uid not in self.pods:  # idempotent per UID, as the contract says
            self.pods[uid] = {**pod, "status": dict(RUNNING_STATUS)}
            self._publish(self.pods[uid])
        return pb.CreatePodResponse()

    async def UpdatePod(self, request: pb.UpdatePodRequest, context: Any) -> pb.UpdatePodResponse:
        pod = json.loads(request.pod_json)
        uid = pod["metadata"]["uid"]
        self.update_calls.append(uid)
        if uid not in self.pods:
            await _abort(context, grpc.StatusCode.NOT_FOUND, f"no pod {uid}")
        self.pods[uid] = {**pod, "status": self.pods[uid]["status"]}
        return pb.UpdatePodResponse()

    async def DeletePod(self, request: pb.DeletePodRequest, context: Any) -> pb.DeletePodResponse:
        uid = json.loads(request.pod_json)["metadata"]["uid"]
        self.delete_calls.append(uid)
        if self.pods.pop(uid, None) is None:
            await _abort(context, grpc.StatusCode.NOT_FOUND, f"no pod {uid}")
        return pb.DeletePodResponse()

    async def GetPodStatus(self, request: pb.GetPodStatusRequest, context: Any) -> pb.GetPodStatusResponse:
        self.status_calls += 1
        pod = self.pods.get(request.pod.uid)
        if pod is None:
            await _abort(context, grpc.StatusCode.NOT_FOUND, f"no pod {request.pod.uid}")
        if self.malformed_statuses:
            return pb.GetPodStatusResponse(status_json=b'{"phase": "Runn')
        return pb.GetPodStatusResponse(status_json=json.dumps(pod["status"]).encode())

    async def ListPods(self, request: Any, context: Any) -> pb.ListPodsResponse:
        self.list_calls += 1
        if self.malformed_lists:
            return pb.ListPodsResponse(pods_json=[b"{not json"])
        return pb.ListPodsResponse(pods_json=[json.dumps(pod).encode() for pod in self.pods.values()])

    async def WatchPodStatus(self, request: Any, context: Any) -> AsyncIterator[pb.PodStatusEvent]:
        if not self.streaming:
            await _abort(context, grpc.StatusCode.UNIMPLEMENTED, "no status stream")
        queue: asyncio.Queue[bytes | _Abort] = asyncio.Queue()
        self._streams.append(queue)
        self.subscriptions += 1
        try:
            while True:
                item = await queue.get()
                if isinstance(item, _Abort) or self.abort_instead_of_next_status:
                    self.abort_instead_of_next_status = False  # a status in flight is lost with it
                    await _abort(context, grpc.StatusCode.INTERNAL, "provider crashed mid-stream")
                yield pb.PodStatusEvent(pod_json=item)
        finally:
            self._streams.remove(queue)

    def _publish(self, pod: dict[str, Any]) -> None:
        data = json.dumps(pod).encode()
        for queue in self._streams:
            queue.put_nowait(data)


# -- harness ---------------------------------------------------------------------------------------


@dataclass
class Stack:
    provider: MisbehavingProvider
    client: GrpcProvider
    pods: FakePodGateway
    events: FakeEventRecorder
    controller: PodController
    task: asyncio.Task[None]

    def assert_alive(self) -> None:
        if self.task.done():
            self.task.result()  # a crashed controller fails the test with its exception
            raise AssertionError("the pod controller stopped")

    async def eventually(self, condition: Callable[[], bool], *, what: str, within: float = 10.0) -> None:
        """Poll ``condition`` until it holds; fail naming ``what`` at the deadline, or at once
        if the controller stopped meanwhile."""
        deadline = time.monotonic() + within
        while not condition():
            self.assert_alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {within:g} s: {what}")
            await asyncio.sleep(0.02)
        self.assert_alive()

    def create(self, name: str) -> str:
        pod = self.pods.create(
            {
                "metadata": {"name": name, "namespace": NS},
                "spec": {"containers": [{"name": "c", "image": "busybox"}], "enableServiceLinks": False},
            }
        )
        return pod.ref.uid

    def phase(self, name: str) -> str | None:
        pod = self.pods.get(NS, name)
        return None if pod is None else pod.status.get("phase")

    async def running(self, *names: str, within: float = 10.0) -> None:
        await self.eventually(
            lambda: all(self.phase(name) == "Running" for name in names),
            what=f"{', '.join(names)} Running in the API",
            within=within,
        )

    def assert_nothing_lost(self, *names: str) -> None:
        assert self.pods.calls_to("delete_pod") == [], "a pod was deleted in the API"
        assert self.provider.delete_calls == [], "a pod was deleted in the provider"
        uids = set()
        for name in names:
            pod = self.pods.get(NS, name)
            assert pod is not None, f"pod {name} is gone from the API"
            uids.add(pod.ref.uid)
        assert set(self.provider.pods) == uids, "the provider runs other pods than the API has"
        for uid in uids:
            assert "ProviderPodLost" not in self.events.reasons_for(uid)


@contextlib.asynccontextmanager
async def running_stack(
    provider: MisbehavingProvider,
    *,
    call_timeout: float = 5.0,
    full_resync_period: float = 60.0,
    status_poll_interval: float = 5.0,
    wait_ready: bool = True,
) -> AsyncIterator[Stack]:
    server = grpc.aio.server()
    pb_grpc.add_ProviderServicer_to_server(provider, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    client = GrpcProvider(
        parse_grpc_config(
            {
                "address": f"127.0.0.1:{port}",
                "insecure": True,
                "call_timeout": call_timeout,
                "connect_timeout": 5,
            }
        )
    )
    clock = SystemClock()
    pods = FakePodGateway(node_name=NODE, clock=clock)
    events = FakeEventRecorder()
    task: asyncio.Task[None] | None = None
    try:
        await client.connect()
        controller = PodController(
            pods=pods,
            provider=client,
            environment=EnvironmentResolver(configs=FakeConfigSource(), provider=client, host_ip="10.0.0.1"),
            events=events,
            clock=clock,
            settings=PodControllerSettings(
                node_name=NODE,
                workers=4,
                full_resync_period=full_resync_period,
                status_poll_interval=status_poll_interval,
                backoff=QUICK,
                watch_retry=QUICK,
            ),
        )
        task = asyncio.create_task(controller.run(), name="pod-controller")
        stack = Stack(provider, client, pods, events, controller, task)
        if wait_ready:
            await stack.eventually(controller.ready.is_set, what="the controller ready")
        yield stack
        stack.assert_alive()
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await client.close()
        await server.stop(0)


def logged(caplog: pytest.LogCaptureFixture, level: int, *fragments: str) -> bool:
    """Some record at ``level`` or above contains every fragment."""
    return any(
        record.levelno >= level and all(fragment in record.getMessage() for fragment in fragments)
        for record in caplog.records
    )


@pytest.fixture(autouse=True)
def _capture_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)


# -- malformed JSON ------------------------------------------------------------------------------


async def test_malformed_list_at_startup_is_logged_retried_and_acts_on_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    provider = MisbehavingProvider()
    provider.malformed_lists = True
    async with running_stack(provider, wait_ready=False) as stack:
        uid = stack.create("web")
        await stack.eventually(lambda: provider.list_calls >= 3, what="ListPods retried")
        assert logged(
            caplog, logging.WARNING, "listing provider pods failed", "ListPods: pod is not valid JSON"
        )
        # Without the provider's list, a create could duplicate a pod it already runs: wait.
        assert not stack.controller.ready.is_set()
        assert provider.create_calls == []

        provider.malformed_lists = False
        await stack.running("web")
        assert provider.create_calls == [uid]
        stack.assert_nothing_lost("web")


async def test_malformed_list_in_the_reconcile_deletes_and_marks_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    provider = MisbehavingProvider()
    async with running_stack(provider, full_resync_period=0.1) as stack:
        uid = stack.create("web")
        await stack.running("web")
        provider.malformed_lists = True
        lists_before = provider.list_calls
        await stack.eventually(
            lambda: provider.list_calls >= lists_before + 3, what="reconciles with bad lists"
        )
        assert logged(caplog, logging.WARNING, "full reconcile skipped", "ListPods: pod is not valid JSON"), (
            "no log line names the malformed ListPods reply"
        )
        # An unreadable list is not an empty one: nothing was concluded from it.
        assert stack.phase("web") == "Running"
        stack.assert_nothing_lost("web")

        provider.malformed_lists = False
        stack.create("api")
        await stack.running("web", "api")
        assert provider.create_calls.count(uid) == 1
        stack.assert_nothing_lost("web", "api")


async def test_malformed_polled_status_keeps_the_pod_and_recovers() -> None:
    provider = MisbehavingProvider(streaming=False)
    async with running_stack(provider, status_poll_interval=0.05) as stack:
        provider.malformed_statuses = True
        uid = stack.create("web")
        await stack.eventually(lambda: provider.create_calls == [uid], what="the pod created")
        polls = provider.status_calls
        await stack.eventually(lambda: provider.status_calls >= polls + 3, what="bad status polled again")
        assert stack.phase("web") == "Pending"  # garbage is not taken for a status

        provider.malformed_statuses = False
        await stack.running("web")
        assert provider.create_calls == [uid]
        stack.assert_nothing_lost("web")


async def test_malformed_polled_status_is_reported_in_the_log_and_on_the_pod(
    caplog: pytest.LogCaptureFixture,
) -> None:
    provider = MisbehavingProvider(streaming=False)
    async with running_stack(provider, status_poll_interval=0.05) as stack:
        provider.malformed_statuses = True
        uid = stack.create("web")
        await stack.eventually(lambda: provider.create_calls == [uid], what="the pod created")
        polls = provider.status_calls
        await stack.eventually(lambda: provider.status_calls >= polls + 3, what="bad status polled again")
        assert logged(caplog, logging.WARNING, "GetPodStatus", "not valid JSON"), "no warning names the reply"
        warnings = [e for e in stack.events.for_uid(uid) if e.type.value == "Warning"]
        assert any("GetPodStatus" in e.message for e in warnings), f"no pod event: {stack.events.events}"


# -- the status stream ---------------------------------------------------------------------------


async def test_unknown_uid_and_malformed_status_are_skipped_and_the_stream_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    provider = MisbehavingProvider()
    async with running_stack(provider) as stack:
        await stack.eventually(lambda: provider.open_streams == 1, what="the status stream open")
        stranger = {
            "metadata": {"namespace": NS, "name": "stranger", "uid": "uid-nobody"},
            "spec": {"containers": [{"name": "c", "image": "x"}]},
            "status": dict(RUNNING_STATUS),
        }
        provider.send_raw(json.dumps(stranger).encode())
        provider.send_raw(b'{"metadata": {"name": "half')
        await stack.eventually(
            lambda: logged(caplog, logging.ERROR, "skipping a malformed pod status", "WatchPodStatus"),
            what="a log line about the malformed status",
        )
        assert logged(caplog, logging.WARNING, "status for unknown pod", "stranger", "uid-nobody")

        # The same stream still carries the next status: one bad message costs nothing after it.
        uid = stack.create("web")
        await stack.running("web")
        assert provider.subscriptions == 1
        assert stack.pods.get(NS, "stranger") is None  # a stranger's status creates nothing
        assert stack.events.for_uid("uid-nobody") == []
        assert provider.create_calls == [uid]
        stack.assert_nothing_lost("web")


async def test_a_stream_that_breaks_midway_is_logged_and_resubscribed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    provider = MisbehavingProvider()
    async with running_stack(provider) as stack:
        first = stack.create("web")
        await stack.running("web")
        provider.break_streams()
        await stack.eventually(
            lambda: logged(caplog, logging.WARNING, "provider status stream broke", "INTERNAL"),
            what="a log line about the broken stream",
        )
        await stack.eventually(lambda: provider.subscriptions == 2, what="the stream opened again")

        second = stack.create("api")
        await stack.running("api")
        assert stack.phase("web") == "Running"
        assert sorted(provider.create_calls) == sorted([first, second])
        stack.assert_nothing_lost("web", "api")


async def test_a_status_lost_with_a_broken_stream_is_recovered(caplog: pytest.LogCaptureFixture) -> None:
    provider = MisbehavingProvider()
    async with running_stack(provider, full_resync_period=0.2) as stack:
        await stack.eventually(lambda: provider.open_streams == 1, what="the status stream open")
        provider.abort_instead_of_next_status = True
        stack.create("web")
        await stack.eventually(
            lambda: logged(caplog, logging.WARNING, "provider status stream broke"),
            what="a log line about the broken stream",
        )
        await stack.eventually(lambda: provider.subscriptions == 2, what="the stream opened again")
        lists = provider.list_calls
        await stack.eventually(lambda: provider.list_calls >= lists + 2, what="two reconciles after")
        await stack.running("web", within=3.0)
        stack.assert_nothing_lost("web")


# -- a call that hangs past its deadline ---------------------------------------------------------


async def test_a_create_that_hangs_past_its_deadline_is_reported_and_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    provider = MisbehavingProvider()
    provider.hang_creates = 1
    async with running_stack(provider, call_timeout=0.5) as stack:
        started = time.monotonic()
        uid = stack.create("web")
        await stack.eventually(
            lambda: "ProviderCreateFailed" in stack.events.reasons_for(uid),
            what="a ProviderCreateFailed event",
        )
        assert time.monotonic() - started < 0.5 + 3.0  # the deadline, not some longer timeout, ended it
        failed = next(e for e in stack.events.for_uid(uid) if e.reason == "ProviderCreateFailed")
        assert failed.type.value == "Warning"
        assert "CreatePod" in failed.message and "DEADLINE_EXCEEDED" in failed.message
        shown = [call.args["status"] for call in stack.pods.calls_to("patch_pod_status")]
        assert any(
            s.get("phase") == "Pending" and s.get("reason") == "ProviderFailed" and "DEADLINE" in s["message"]
            for s in shown
        ), f"the pod's status never said why it waits: {shown}"
        await stack.eventually(
            lambda: logged(caplog, logging.INFO, "sync of pod default/web", "CreatePod", "DEADLINE_EXCEEDED"),
            what="a log line about the deadline",
        )

        await stack.running("web")
        assert provider.create_calls == [uid, uid]  # the hung call, then one retry
        assert stack.events.reasons_for(uid).count("ProviderCreateSuccess") == 1
        status = stack.pods.get(NS, "web").status  # type: ignore[union-attr]
        assert "reason" not in status and "message" not in status  # the failure note is cleared
        stack.assert_nothing_lost("web")
