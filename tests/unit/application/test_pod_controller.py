"""PodController against the in-memory fakes and a FakeClock (upstream lifecycle_test.go and
pod_test.go scenarios, §8, plus its bugs 8, 9, 10 and 12). No network, no real sleeps: time only
moves through ``clock.advance``. The lifecycle scenarios run for a provider with a status stream
and for one that must be polled.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from typing import Any

import pytest
from tests.fakes.clock import FakeClock
from tests.fakes.cluster import FakeConfigSource, FakeEventRecorder, FakePodGateway
from tests.fakes.provider import RUNNING, FakeProvider

from vkubelet.application.environment import EnvironmentResolver
from vkubelet.application.pod_controller import PodController, PodControllerSettings
from vkubelet.application.ports.cluster import PodEvent
from vkubelet.application.ports.runtime import Metrics
from vkubelet.domain.backoff import Backoff
from vkubelet.domain.errors import Expired, NotFound, Permanent, Transient
from vkubelet.domain.pod import Pod

NODE = "vk-node"
NS = "default"

# A realistic running status: one running container (the fake's RUNNING has no containers).
RUNNING_WITH_CONTAINER: dict[str, Any] = {
    **RUNNING,
    "containerStatuses": [
        {
            "name": "c",
            "image": "nginx",
            "ready": True,
            "restartCount": 0,
            "started": True,
            "state": {"running": {"startedAt": "2025-01-01T00:00:00Z"}},
        }
    ],
}


def manifest(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": NS},
        "spec": {"containers": [{"name": "c", "image": "nginx"}], **spec},
    }


# --- harness -------------------------------------------------------------------------------------


class HeldWatchPods(FakePodGateway):
    """A pod gateway whose watch can be paused (``hold()``), like a lagging watch connection."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.watch_open = asyncio.Event()
        self.watch_open.set()

    def hold(self) -> None:
        self.watch_open.clear()

    def release(self) -> None:
        self.watch_open.set()

    def watch_node_pods(self, resource_version: str) -> AsyncGenerator[PodEvent, None]:
        inner = super().watch_node_pods(resource_version)

        async def held() -> AsyncGenerator[PodEvent, None]:
            try:
                async for event in inner:
                    await self.watch_open.wait()
                    yield event
            finally:
                await inner.aclose()

        return held()


class Harness:
    def __init__(
        self, *, streaming: bool, pods: FakePodGateway | None = None, metrics: Metrics | None = None
    ) -> None:
        self.clock = FakeClock()
        self.pods = pods or FakePodGateway(node_name=NODE, clock=self.clock)
        self.pods.clock = self.clock
        self.provider = FakeProvider(streaming=streaming)
        self.configs = FakeConfigSource()
        self.events = FakeEventRecorder()
        self.controller = PodController(
            pods=self.pods,
            provider=self.provider,
            environment=EnvironmentResolver(configs=self.configs, provider=self.provider, host_ip="10.0.0.1"),
            events=self.events,
            clock=self.clock,
            metrics=metrics,
            settings=PodControllerSettings(
                node_name=NODE,
                workers=4,
                full_resync_period=60,
                status_poll_interval=5,
                backoff=Backoff(base=0.05, cap=5),
            ),
        )
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.controller.run())
        ready = asyncio.create_task(self.controller.ready.wait())
        for _ in range(200):
            if ready.done():
                break
            await self.clock.advance(0.05)  # startup lists retry on the clock
        assert ready.done(), "the controller never became ready"
        await self.clock.settle()

    async def stop(self) -> None:
        if self.task is None:
            return
        if self.task.done():
            self.task.result()  # a crashed controller fails the test
            return
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    def assert_alive(self) -> None:
        assert self.task is not None
        if self.task.done():
            self.task.result()
            raise AssertionError("the controller stopped")

    async def eventually(
        self, condition: Callable[[], bool], *, within: float = 30.0, step: float = 0.05, what: str = ""
    ) -> None:
        """Advance fake time in ``step``s until ``condition()`` holds, at most ``within`` seconds."""
        waited = 0.0
        await self.clock.settle()
        while not condition():
            self.assert_alive()
            if waited >= within:
                raise AssertionError(f"not within {within}s of fake time: {what or condition}")
            await self.clock.advance(step)
            waited += step

    async def advance(self, seconds: float, step: float = 0.5) -> None:
        """Let ``seconds`` of fake time pass, in steps so chains of short timers all run."""
        steps = round(seconds / step)
        for _ in range(steps):
            await self.clock.advance(step)
        self.assert_alive()

    # -- views --------------------------------------------------------------------------------
    def api(self, name: str) -> Pod | None:
        return self.pods.get(NS, name)

    def phase(self, name: str) -> str | None:
        pod = self.api(name)
        return None if pod is None else pod.status.get("phase")

    def running(self, name: str) -> bool:
        pod = self.api(name)
        return (
            pod is not None and pod.status.get("phase") == "Running" and pod.status.get("podIP") == "10.1.0.1"
        )

    def creates_of(self, uid: str) -> int:
        return sum(1 for ref in self.provider.created if ref.uid == uid)

    def status_patches(self, uid: str) -> list[Mapping[str, Any]]:
        return [
            call.args["status"]
            for call in self.pods.calls_to("patch_pod_status")
            if call.args["ref"].uid == uid
        ]

    def api_deletes(self, uid: str) -> list[int]:
        return [
            call.args["grace_period_seconds"]
            for call in self.pods.calls_to("delete_pod")
            if call.args["ref"].uid == uid
        ]

    async def resolved(self, pod: Pod) -> Pod:
        """``pod`` as the controller hands it to the provider (env resolved)."""
        resolver = EnvironmentResolver(configs=self.configs, provider=self.provider, host_ip="10.0.0.1")
        outcome = await resolver.resolve(pod)
        assert outcome.pod is not None
        return outcome.pod

    async def run_pod(self, name: str, **spec: Any) -> Pod:
        """Create ``name`` in the API and wait until it shows Running."""
        pod = self.pods.create(manifest(name, **spec))
        await self.eventually(lambda: self.running(name), what=f"{name} Running")
        return pod


@pytest.fixture(params=[True, False], ids=["streaming", "polled"])
def streaming(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
async def make() -> AsyncIterator[Callable[..., Harness]]:
    """Builds harnesses (not started); stops every one at the end of the test."""
    built: list[Harness] = []

    def build(
        *, streaming: bool = True, pods: FakePodGateway | None = None, metrics: Metrics | None = None
    ) -> Harness:
        harness = Harness(streaming=streaming, pods=pods, metrics=metrics)
        built.append(harness)
        return harness

    yield build
    for harness in built:
        await harness.stop()


@pytest.fixture
async def h(make: Callable[..., Harness], streaming: bool) -> Harness:
    """A started controller over a streaming or a polled provider."""
    harness = make(streaming=streaming)
    await harness.start()
    return harness


# --- create --------------------------------------------------------------------------------------


async def test_create_runs_pod_and_reports_running_status(h: Harness) -> None:
    pod = await h.run_pod("web")
    uid = pod.ref.uid

    assert h.provider.calls["create_pod"] == 1
    assert h.creates_of(uid) == 1
    api = h.api("web")
    assert api is not None
    assert api.status["phase"] == "Running"
    assert api.status["podIP"] == "10.1.0.1"
    assert any(patch.get("phase") == "Running" for patch in h.status_patches(uid))
    assert "ProviderCreateSuccess" in h.events.reasons_for(uid)

    await h.advance(70)  # status polls and a full reconcile change nothing
    assert h.provider.calls["create_pod"] == 1
    assert h.provider.calls["update_pod"] == 0


# --- deletion ------------------------------------------------------------------------------------


async def test_graceful_delete_removes_api_pod_once_provider_stopped(h: Harness) -> None:
    pod = await h.run_pod("web")
    uid = pod.ref.uid
    h.provider.report(uid, RUNNING_WITH_CONTAINER)  # a running container: not stopped yet
    await h.eventually(lambda: bool((h.api("web") or pod).status.get("containerStatuses")), within=10)

    h.pods.graceful_delete(NS, "web")  # 30 s grace
    await h.eventually(lambda: h.api("web") is None, within=3, what="API pod removed")

    assert h.provider.calls["delete_pod"] == 1
    assert uid not in h.provider.pods
    assert h.api_deletes(uid) == [0]
    assert "ProviderDeleteSuccess" in h.events.reasons_for(uid)
    await h.advance(70)
    assert h.provider.calls["create_pod"] == 1  # not recreated
    assert h.provider.calls["delete_pod"] == 1


async def test_delete_returning_not_found_still_removes_api_pod(h: Harness) -> None:
    await h.run_pod("web")
    h.provider.inject_failure("delete_pod", NotFound("no such pod"))

    h.pods.graceful_delete(NS, "web")
    await h.eventually(lambda: h.api("web") is None, within=3, what="API pod removed")
    assert h.provider.calls["delete_pod"] == 1


async def test_delete_returning_error_retries_and_keeps_api_pod(h: Harness) -> None:
    pod = await h.run_pod("web")
    uid = pod.ref.uid
    h.provider.inject_failure("delete_pod", RuntimeError("provider exploded"), times=1000)

    h.pods.graceful_delete(NS, "web")
    await h.eventually(lambda: h.provider.calls["delete_pod"] >= 2, within=5, what="2 delete attempts")
    await h.advance(40)  # even past the 30 s grace period

    api = h.api("web")
    assert api is not None
    assert api.deletion_timestamp is not None
    assert h.provider.calls["delete_pod"] >= 3
    assert h.api_deletes(uid) == []
    assert "ProviderDeleteFailed" in h.events.reasons_for(uid)

    h.provider.clear_failures("delete_pod")  # the provider recovers
    await h.eventually(lambda: h.api("web") is None, within=10, what="API pod removed after recovery")
    assert uid not in h.provider.pods


async def test_force_delete_deletes_in_provider(h: Harness) -> None:
    pod = await h.run_pod("web")

    h.pods.force_delete(NS, "web")
    await h.eventually(lambda: pod.ref.uid not in h.provider.pods, within=3, what="provider delete")
    assert h.provider.calls["delete_pod"] == 1
    await h.advance(70)
    assert h.provider.calls["delete_pod"] == 1
    assert h.provider.calls["create_pod"] == 1


# --- dangling pods -------------------------------------------------------------------------------


async def test_dangling_pod_is_deleted_at_startup(make: Callable[..., Harness], streaming: bool) -> None:
    h = make(streaming=streaming)
    dangling = Pod.from_manifest(
        {**manifest("ghost"), "metadata": {"name": "ghost", "namespace": NS, "uid": "old-1"}}
    )
    h.provider.seed(dangling)
    await h.start()

    await h.eventually(lambda: "old-1" not in h.provider.pods, within=3, what="dangling pod deleted")
    assert h.provider.calls["delete_pod"] == 1
    assert h.provider.calls["create_pod"] == 0
    await h.advance(70)
    assert h.provider.calls["delete_pod"] == 1


async def test_dangling_pod_with_deletion_timestamp_ends_deleted(
    make: Callable[..., Harness], streaming: bool
) -> None:
    h = make(streaming=streaming)
    pod = h.pods.create({**manifest("web"), "status": {"phase": "Running"}})
    h.pods.graceful_delete(NS, "web")  # terminating, and the provider does not have it
    assert h.api("web") is not None
    await h.start()

    await h.eventually(lambda: h.api("web") is None, within=3, what="API pod removed")
    assert h.api_deletes(pod.ref.uid) == [0]
    assert h.provider.calls["create_pod"] == 0


# --- terminal pods -------------------------------------------------------------------------------


@pytest.mark.parametrize("phase", ["Failed", "Succeeded"])
async def test_failed_and_succeeded_pods_are_not_touched(
    make: Callable[..., Harness], streaming: bool, phase: str
) -> None:
    h = make(streaming=streaming)
    before = h.pods.create({**manifest("done", restartPolicy="Never"), "status": {"phase": phase}})
    await h.start()
    late = h.pods.create({**manifest("late", restartPolicy="Never"), "status": {"phase": phase}})
    await h.advance(70)

    assert h.provider.calls["create_pod"] == 0
    assert h.provider.calls["update_pod"] == 0
    assert h.provider.calls["delete_pod"] == 0
    assert h.pods.calls_to("patch_pod_status") == []
    assert h.pods.calls_to("delete_pod") == []
    assert h.api("done") == before
    assert h.api("late") == late
    assert h.events.events == []


# --- updates -------------------------------------------------------------------------------------


async def test_update_while_running_calls_update_pod_once(h: Harness) -> None:
    pod = await h.run_pod("web")
    uid = pod.ref.uid

    h.pods.update(NS, "web", lambda obj: obj["spec"].__setitem__("activeDeadlineSeconds", 600))
    await h.eventually(lambda: h.provider.calls["update_pod"] >= 1, within=3, what="update_pod")
    assert h.provider.pods[uid].spec["activeDeadlineSeconds"] == 600
    assert "ProviderUpdateSuccess" in h.events.reasons_for(uid)

    # Status-only changes, from another actor and from the provider, are not spec changes.
    h.pods.update(
        NS,
        "web",
        lambda obj: obj["status"].setdefault("conditions", []).append({"type": "Custom", "status": "True"}),
    )
    h.provider.report(uid, RUNNING_WITH_CONTAINER)
    await h.advance(70)

    assert h.provider.calls["update_pod"] == 1
    assert h.provider.calls["create_pod"] == 1
    api = h.api("web")
    assert api is not None
    assert {c["type"] for c in api.status["conditions"]} >= {"Custom", "Ready"}  # merged by type


async def test_status_only_change_does_not_update(h: Harness) -> None:
    await h.run_pod("web")
    h.pods.update(NS, "web", lambda obj: obj["status"].__setitem__("nominatedNodeName", "x"))
    await h.advance(70)
    assert h.provider.calls["update_pod"] == 0


# --- provider errors -----------------------------------------------------------------------------


async def test_transient_create_error_with_restart_never_is_not_failed(h: Harness) -> None:
    h.provider.inject_failure("create_pod", Transient("provider busy"), times=4)
    pod = h.pods.create(manifest("job", restartPolicy="Never"))
    uid = pod.ref.uid

    await h.eventually(
        lambda: (h.api("job") or pod).status.get("reason") == "ProviderFailed",
        within=3,
        what="ProviderFailed",
    )
    api = h.api("job")
    assert api is not None
    assert api.status["phase"] == "Pending"
    assert "provider busy" in api.status["message"]

    await h.eventually(lambda: h.running("job"), within=30, what="Running after retries")
    assert h.provider.calls["create_pod"] == 5
    assert h.creates_of(uid) == 1
    assert all(patch.get("phase") != "Failed" for patch in h.status_patches(uid))
    assert h.events.reasons_for(uid).count("ProviderCreateFailed") == 4


async def test_permanent_create_error_marks_failed_without_retry(h: Harness) -> None:
    h.provider.inject_failure("create_pod", Permanent("image not allowed"))
    pod = h.pods.create(manifest("web"))

    await h.eventually(lambda: h.phase("web") == "Failed", within=3, what="Failed")
    api = h.api("web")
    assert api is not None
    assert api.status["reason"] == "ProviderFailed"
    assert "image not allowed" in api.status["message"]
    assert "ProviderCreateFailed" in h.events.reasons_for(pod.ref.uid)

    await h.advance(130)  # backoff and two full reconciles
    assert h.provider.calls["create_pod"] == 1
    assert h.phase("web") == "Failed"


async def test_never_abandoned_after_30_transient_failures(h: Harness) -> None:
    h.provider.inject_failure("create_pod", Transient("provider down"), times=30)
    pod = h.pods.create(manifest("web"))

    await h.eventually(lambda: h.running("web"), within=400, step=0.5, what="Running after 30 failures")
    assert h.provider.calls["create_pod"] == 31
    assert h.creates_of(pod.ref.uid) == 1


async def test_transient_create_errors_back_off(h: Harness) -> None:
    """Each failure writes the pod status; that write must not wake the pod up again at once."""
    h.provider.inject_failure("create_pod", Transient("provider down"), times=1000)
    h.pods.create(manifest("web"))
    await h.advance(20, step=0.05)
    # Backoff 0.05 s doubling to a 5 s cap: about 10 attempts in 20 s; a hot loop does hundreds.
    assert 5 <= h.provider.calls["create_pod"] <= 15


# --- identity ------------------------------------------------------------------------------------


async def test_recreated_pod_with_same_name_is_not_deleted_by_old_uid(
    make: Callable[..., Harness], streaming: bool
) -> None:
    pods = HeldWatchPods(node_name=NODE)
    h = make(streaming=streaming, pods=pods)
    await h.start()
    old = await h.run_pod("web")

    gate = asyncio.Event()
    h.provider.block["delete_pod"] = gate
    h.pods.graceful_delete(NS, "web")
    await h.eventually(lambda: h.provider.calls["delete_pod"] == 1, within=3, what="provider delete started")

    # While the old pod's delete is in flight and our watch lags, someone force-deletes it and
    # creates a new pod with the same name.
    pods.hold()
    h.pods.force_delete(NS, "web")
    new = h.pods.create(manifest("web"))
    assert new.ref.uid != old.ref.uid
    gate.set()
    await h.eventually(lambda: h.api_deletes(old.ref.uid) != [], within=5, what="old pod's API delete")
    pods.release()

    await h.eventually(lambda: h.creates_of(new.ref.uid) == 1 and h.running("web"), within=30, what="new pod")
    await h.advance(70)
    current = h.api("web")
    assert current is not None and current.ref.uid == new.ref.uid
    assert current.deletion_timestamp is None
    assert h.api_deletes(new.ref.uid) == []
    assert new.ref.uid in h.provider.pods
    assert h.provider.calls["delete_pod"] == 1


# --- the API watch -------------------------------------------------------------------------------


async def test_watch_expiry_relists_and_sees_later_pods(h: Harness) -> None:
    first = await h.run_pod("first")
    watches = len(h.pods.calls_to("watch_node_pods"))

    h.pods.close_watches()
    # Changes the closed watch never delivers, then compaction: resuming raises Expired (410),
    # so the controller must list again to see them.
    h.pods.force_delete(NS, "first")
    h.pods.create(manifest("second"))
    h.pods.expire_history()
    await h.eventually(lambda: h.running("second"), within=30, what="second Running")
    await h.eventually(lambda: first.ref.uid not in h.provider.pods, within=5, what="first deleted")
    assert len(h.pods.calls_to("list_node_pods")) >= 2
    assert len(h.pods.calls_to("watch_node_pods")) > watches

    await h.run_pod("third")  # the new watch follows live changes
    assert h.provider.calls["create_pod"] == 3


async def test_watch_broken_by_410_relists(h: Harness) -> None:
    await h.run_pod("first")
    h.pods.break_watches(Expired("too old resource version"))
    h.pods.create(manifest("second"))
    h.pods.expire_history()
    await h.eventually(lambda: h.running("second"), within=30, what="second Running")
    await h.run_pod("third")
    assert h.provider.calls["create_pod"] == 3


async def test_watch_broken_by_error_resumes_without_losing_events(h: Harness) -> None:
    await h.run_pod("first")
    h.pods.break_watches(Transient("connection reset"))
    h.pods.create(manifest("second"))  # happens while the watch is down
    await h.eventually(lambda: h.running("second"), within=30, what="second Running")
    await h.run_pod("third")
    assert h.provider.calls["create_pod"] == 3


# --- provider restarts and lost pods -------------------------------------------------------------


async def test_provider_restart_does_not_create_pods_twice(
    make: Callable[..., Harness], streaming: bool
) -> None:
    h = make(streaming=streaming)
    pod = h.pods.create(manifest("web"))
    h.provider.seed(await h.resolved(pod))  # the provider already runs it (we restarted)
    await h.start()

    await h.eventually(lambda: h.running("web"), within=10, what="status written")
    await h.advance(70)
    assert h.provider.calls["create_pod"] == 0
    assert h.provider.calls["update_pod"] == 0
    assert h.provider.calls["delete_pod"] == 0


async def test_lost_pod_with_restart_always_is_recreated(h: Harness) -> None:
    pod = await h.run_pod("web", restartPolicy="Always")
    uid = pod.ref.uid
    h.provider.lose(uid)

    await h.eventually(lambda: h.creates_of(uid) == 2, within=70, step=0.5, what="recreated")
    await h.eventually(lambda: h.running("web"), within=10)
    assert h.phase("web") == "Running"


async def test_lost_running_pod_with_restart_never_is_failed(h: Harness) -> None:
    pod = await h.run_pod("job", restartPolicy="Never")
    uid = pod.ref.uid
    h.provider.report(uid, RUNNING_WITH_CONTAINER)
    await h.eventually(lambda: bool((h.api("job") or pod).status.get("containerStatuses")), within=10)
    h.provider.lose(uid)

    await h.eventually(lambda: h.phase("job") == "Failed", within=70, step=0.5, what="Failed")
    api = h.api("job")
    assert api is not None
    assert api.status["reason"] == "NotFound"
    [container] = api.status["containerStatuses"]
    terminated = container["state"]["terminated"]
    assert terminated["reason"] == "NotFound"
    assert terminated["exitCode"] == 137
    assert "running" not in container["state"]
    assert "ProviderPodLost" in h.events.reasons_for(uid)
    await h.advance(70)
    assert h.creates_of(uid) == 1


# --- configmaps ----------------------------------------------------------------------------------


def with_config_env(name: str, *, optional: bool) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": "cfg", "key": "k"}
    if optional:
        ref["optional"] = True
    pod = manifest(name)
    pod["spec"]["containers"][0]["env"] = [{"name": "FROM_CFG", "valueFrom": {"configMapKeyRef": ref}}]
    return pod


async def test_missing_mandatory_configmap_blocks_create_until_it_appears(h: Harness) -> None:
    pod = h.pods.create(with_config_env("web", optional=False))
    uid = pod.ref.uid

    await h.eventually(
        lambda: (h.api("web") or pod).status.get("reason") == "MandatoryConfigMapNotFound",
        within=3,
        what="config failure on the status",
    )
    api = h.api("web")
    assert api is not None
    assert api.status["phase"] == "Pending"
    [container] = api.status["containerStatuses"]
    assert container["state"]["waiting"]["reason"] == "CreateContainerConfigError"
    assert "MandatoryConfigMapNotFound" in h.events.reasons_for(uid)
    await h.advance(5)
    assert h.provider.calls["create_pod"] == 0

    h.configs.add_config_map(NS, "cfg", {"k": "v"})
    await h.eventually(lambda: h.creates_of(uid) == 1, within=10, what="created on a retry")
    await h.eventually(lambda: h.running("web"), within=10)
    env = h.provider.pods[uid].containers[0]["env"]
    assert {"name": "FROM_CFG", "value": "v"} in env


async def test_config_failure_status_is_cleared_once_running(h: Harness) -> None:
    pod = h.pods.create(with_config_env("web", optional=False))
    await h.eventually(
        lambda: (h.api("web") or pod).status.get("reason") == "MandatoryConfigMapNotFound", within=3
    )
    h.configs.add_config_map(NS, "cfg", {"k": "v"})
    await h.eventually(lambda: h.running("web"), within=10)
    await h.advance(10)
    api = h.api("web")
    assert api is not None
    assert "reason" not in api.status  # kubectl would show STATUS=MandatoryConfigMapNotFound
    assert "message" not in api.status
    for container in api.status.get("containerStatuses") or ():
        assert "waiting" not in container.get("state", {})


async def test_provider_failed_reason_is_cleared_once_running(h: Harness) -> None:
    h.provider.inject_failure("create_pod", Transient("provider busy"), times=2)
    pod = h.pods.create(manifest("web"))
    await h.eventually(lambda: (h.api("web") or pod).status.get("reason") == "ProviderFailed", within=3)
    await h.eventually(lambda: h.running("web"), within=30)
    await h.advance(10)
    api = h.api("web")
    assert api is not None
    assert api.status.get("reason") is None  # kubectl would show STATUS=ProviderFailed
    assert api.status.get("message") is None


async def test_missing_optional_configmap_still_creates(h: Harness) -> None:
    pod = h.pods.create(with_config_env("web", optional=True))
    uid = pod.ref.uid

    await h.eventually(lambda: h.running("web"), within=10, what="Running")
    assert "OptionalConfigMapNotFound" in h.events.reasons_for(uid)
    assert h.creates_of(uid) == 1
    env = h.provider.pods[uid].containers[0].get("env") or []
    assert all(var.get("name") != "FROM_CFG" or "valueFrom" not in var for var in env)


# --- provider stream and availability ------------------------------------------------------------


async def test_status_for_unknown_uid_is_ignored(make: Callable[..., Harness]) -> None:
    h = make(streaming=True)
    await h.start()
    stranger = Pod.from_manifest(
        {**manifest("stranger"), "metadata": {"name": "stranger", "namespace": NS, "uid": "nobody"}}
    )
    h.provider.seed(stranger)
    h.provider.report("nobody", RUNNING)  # pushed on the stream; we never heard of this UID
    await h.advance(5, step=0.05)
    h.assert_alive()
    assert h.pods.calls_to("patch_pod_status") == []

    await h.run_pod("web")  # the controller still works
    assert h.provider.calls["create_pod"] == 1


async def test_provider_unavailable_changes_nothing_then_recovers(h: Harness) -> None:
    first = await h.run_pod("first")
    second = await h.run_pod("second")
    patches_before = len(h.pods.calls_to("patch_pod_status"))
    for method in ("list_pods", "create_pod", "get_pod_status", "update_pod", "delete_pod"):
        h.provider.inject_failure(method, Transient("provider unavailable"), times=100_000)

    third = h.pods.create(manifest("third"))
    await h.advance(130)  # two full reconciles and many polls while the provider is down

    assert h.pods.calls_to("delete_pod") == []
    assert h.provider.calls["delete_pod"] == 0
    assert h.running("first") and h.running("second")
    assert h.creates_of(first.ref.uid) == 1 and h.creates_of(second.ref.uid) == 1
    assert h.phase("third") == "Pending"
    api_third = h.api("third")
    assert api_third is not None and api_third.status.get("reason") == "ProviderFailed"
    # Only the third pod's failure was written: the running pods' statuses were left alone.
    assert {call.args["ref"].uid for call in h.pods.calls_to("patch_pod_status")[patches_before:]} == {
        third.ref.uid
    }

    h.provider.clear_failures()
    await h.eventually(lambda: h.running("third"), within=30, step=0.1, what="third Running after recovery")
    await h.advance(70)
    assert h.creates_of(first.ref.uid) == 1 and h.creates_of(second.ref.uid) == 1
    assert h.creates_of(third.ref.uid) == 1
    assert h.provider.calls["delete_pod"] == 0


async def test_provider_unavailable_at_startup_waits_then_adopts(
    make: Callable[..., Harness], streaming: bool
) -> None:
    h = make(streaming=streaming)
    pod = h.pods.create(manifest("web"))
    h.provider.seed(pod)
    h.provider.inject_failure("list_pods", Transient("provider unavailable"), times=5)
    await h.start()

    await h.eventually(lambda: h.running("web"), within=30, what="adopted pod Running")
    await h.advance(70)
    assert h.provider.calls["create_pod"] == 0
    assert h.provider.calls["delete_pod"] == 0
    assert pod.ref.uid in h.provider.pods


# --- more edges: grace bound, informer edge cases (bug 10), races --------------------------------


async def test_grace_period_is_the_upper_bound_when_provider_never_reports_stopped(
    make: Callable[..., Harness],
) -> None:
    h = make(streaming=True)
    await h.start()
    pod = await h.run_pod("web")
    h.provider.report(pod.ref.uid, RUNNING_WITH_CONTAINER)
    await h.eventually(lambda: bool((h.api("web") or pod).status.get("containerStatuses")), within=10)
    h.provider.streaming = False  # its delete no longer reports the containers stopped

    h.pods.graceful_delete(NS, "web", grace_period_seconds=30)
    await h.advance(25)
    assert h.api("web") is not None  # containers still running: wait
    await h.eventually(
        lambda: h.api("web") is None, within=10, step=0.1, what="removed at the grace deadline"
    )
    assert h.provider.calls["delete_pod"] == 1


async def test_deletion_timestamp_without_grace_seconds_is_handled(h: Harness) -> None:
    pod = await h.run_pod("web")
    now = h.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")
    h.pods.update(NS, "web", lambda obj: obj["metadata"].__setitem__("deletionTimestamp", now))

    await h.eventually(lambda: h.api("web") is None, within=5, what="API pod removed")
    assert pod.ref.uid not in h.provider.pods


async def test_force_delete_during_slow_create_deletes_in_provider(h: Harness) -> None:
    gate = asyncio.Event()
    h.provider.block["create_pod"] = gate
    pod = h.pods.create(manifest("web"))
    await h.eventually(lambda: h.provider.calls["create_pod"] == 1, within=3, what="create started")

    h.pods.force_delete(NS, "web")
    await h.advance(1, step=0.05)
    gate.set()
    await h.eventually(
        lambda: pod.ref.uid not in h.provider.pods and h.provider.calls["delete_pod"] >= 1,
        within=70,
        step=0.5,
        what="deleted in provider",
    )
    await h.advance(70)
    assert pod.ref.uid not in h.provider.pods
    assert h.provider.calls["create_pod"] == 1


async def test_spec_change_while_down_is_applied_after_restart(
    make: Callable[..., Harness], streaming: bool
) -> None:
    h = make(streaming=streaming)
    old = h.pods.create(manifest("web"))
    h.provider.seed(await h.resolved(old))  # the provider runs the spec we last gave it
    h.pods.update(NS, "web", lambda obj: obj["spec"].__setitem__("activeDeadlineSeconds", 600))
    await h.start()

    await h.eventually(lambda: h.provider.calls["update_pod"] == 1, within=10, what="update_pod")
    assert h.provider.pods[old.ref.uid].spec.get("activeDeadlineSeconds") == 600
    assert h.provider.calls["create_pod"] == 0


# --- metrics (the port is wired; its default adapter is empty) ----------------------------------


class RecordingMetrics:
    """A Metrics adapter that keeps what the controller recorded."""

    def __init__(self) -> None:
        self.syncs: list[tuple[str, float]] = []
        self.depths: list[int] = []

    def observe_sync(self, *, outcome: str, seconds: float) -> None:
        self.syncs.append((outcome, seconds))

    def set_queue_depth(self, depth: int) -> None:
        self.depths.append(depth)


async def test_every_sync_is_recorded_with_its_outcome_and_the_queue_depth(
    make: Callable[..., Harness],
) -> None:
    metrics = RecordingMetrics()
    h = make(metrics=metrics)
    await h.start()
    h.provider.inject_failure("create_pod", Transient("provider busy"), times=2)
    await h.run_pod("web")

    outcomes = [outcome for outcome, _ in metrics.syncs]
    # Two failed creates (reported on the pod, then backed off), then the create and the status.
    assert outcomes[:2] == ["retry", "retry"], outcomes
    assert outcomes[2:] and set(outcomes[2:]) == {"ok"}, outcomes
    assert all(seconds >= 0 for _, seconds in metrics.syncs)
    assert len(metrics.depths) == len(metrics.syncs)
