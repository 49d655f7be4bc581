"""kill_container on the mock provider: the run ends as SIGTERM would end it and the restart
policy applies the way the mock models restarts (at once, no back-off)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fakes.clock import FakeClock
from tests.integration.test_mock_provider import make_pod, next_update
from vkubelet.adapters.mock.provider import MockProvider
from vkubelet.domain.errors import NotFound
from vkubelet.domain.pod import Pod, PodRef, format_time


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def provider(clock: FakeClock) -> MockProvider:
    return MockProvider(node_name="vk-0", clock=clock)


def with_policy(pod: Pod, policy: str) -> Pod:
    manifest = dict(pod.manifest)
    manifest["spec"] = {**manifest["spec"], "restartPolicy": policy}
    return Pod(pod.ref, manifest)


def app(status: Any, name: str = "app") -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in status["containerStatuses"] if c["name"] == name)
    return found


@pytest.mark.parametrize("policy", ["Always", "OnFailure"])
async def test_a_killed_container_restarts_with_restart_count_1(
    provider: MockProvider, clock: FakeClock, policy: str
) -> None:
    pod = with_policy(make_pod(), policy)
    await provider.create_pod(pod)
    started = format_time(clock.now())
    await next_update(provider)
    await clock.advance(5)
    await provider.kill_container(pod.ref, "app", grace_period_seconds=30)
    reported = await next_update(provider)  # the change is streamed
    status = await provider.get_pod_status(pod.ref)
    assert reported.status == status
    killed = app(status)
    assert killed["restartCount"] == 1
    assert killed["state"] == {"running": {"startedAt": format_time(clock.now())}}
    assert killed["lastState"]["terminated"] == {
        "exitCode": 143,
        "reason": "Error",
        "startedAt": started,
        "finishedAt": format_time(clock.now()),
        "containerID": killed["containerID"],
    }
    assert status["phase"] == "Running"
    await provider.kill_container(pod.ref, "app", grace_period_seconds=30)
    assert app(await provider.get_pod_status(pod.ref))["restartCount"] == 2


async def test_with_restart_policy_never_the_container_stays_terminated_and_the_pod_fails(
    provider: MockProvider,
) -> None:
    pod = with_policy(make_pod(containers=("app", "side")), "Never")
    await provider.create_pod(pod)
    await provider.kill_container(pod.ref, "app", grace_period_seconds=1)
    status = await provider.get_pod_status(pod.ref)
    killed = app(status)
    assert killed["state"]["terminated"]["exitCode"] == 143
    assert (killed["restartCount"], killed["lastState"], killed["ready"]) == (0, {}, False)
    assert status["phase"] == "Running"  # "side" still runs
    ready = {c["type"]: c["status"] for c in status["conditions"]}
    assert (ready["Ready"], ready["ContainersReady"]) == ("False", "False")
    await provider.kill_container(pod.ref, "side", grace_period_seconds=1)
    status = await provider.get_pod_status(pod.ref)
    assert status["phase"] == "Failed"
    # An exited container is left alone: no new status.
    await provider.kill_container(pod.ref, "app", grace_period_seconds=1)
    assert await provider.get_pod_status(pod.ref) == status


async def test_a_completed_init_container_is_left_alone(provider: MockProvider) -> None:
    pod = make_pod(init_containers=("setup",))
    await provider.create_pod(pod)
    before = await provider.get_pod_status(pod.ref)
    await provider.kill_container(pod.ref, "setup", grace_period_seconds=1)
    assert await provider.get_pod_status(pod.ref) == before


async def test_an_unknown_pod_or_container_is_not_found(provider: MockProvider) -> None:
    pod = make_pod()
    await provider.create_pod(pod)
    with pytest.raises(NotFound, match="container nope"):
        await provider.kill_container(pod.ref, "nope", grace_period_seconds=1)
    with pytest.raises(NotFound):
        await provider.kill_container(PodRef("default", "x", "uid-unknown"), "app", grace_period_seconds=1)
    await provider.delete_pod(pod)
    with pytest.raises(NotFound):
        await provider.kill_container(pod.ref, "app", grace_period_seconds=1)


async def test_the_stored_pod_handed_out_before_a_kill_is_not_changed(provider: MockProvider) -> None:
    pod = make_pod()
    await provider.create_pod(pod)
    held = await provider.get_pod(pod.ref)
    await provider.kill_container(pod.ref, "app", grace_period_seconds=1)
    assert app(held.status)["restartCount"] == 0
