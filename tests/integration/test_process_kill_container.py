"""kill_container on the process provider with real processes: SIGTERM, SIGKILL after the grace
period, and the provider's own restart handling afterwards (restartCount, lastState, policy)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import eventually
from tests.integration.test_process_provider import container_status, logs, make_pod, shell
from vkubelet.adapters.process.provider import ProcessProvider
from vkubelet.adapters.system import SystemClock
from vkubelet.application.conformance import Outcome, run_conformance
from vkubelet.domain.errors import NotFound
from vkubelet.domain.pod import Pod, PodRef
from vkubelet.domain.provider import Capability

SLEEP = {"name": "app", "image": "ignored", "command": ["sleep", "3600"]}
# SIGTERM kills the sleep in the foreground, the trap says so and the loop goes on: only the
# SIGKILL after the grace period ends it.
STUBBORN = 'trap "echo got TERM" TERM; echo ready; while :; do sleep 0.1; done'


@pytest.fixture
async def processes(tmp_path: Path) -> AsyncIterator[ProcessProvider]:
    made = ProcessProvider(
        root_dir=tmp_path, node_name="vk-0", backoff_base=0.05, backoff_cap=0.2, max_grace_seconds=5.0
    )
    yield made
    await made.close()


async def running(provider: ProcessProvider, pod: Pod, *, restarts: int = 0) -> dict[str, Any]:
    async def check() -> Any:
        status = container_status(await provider.get_pod_status(pod.ref))
        return status if "running" in status["state"] and status["restartCount"] == restarts else None

    found: dict[str, Any] = await eventually(check, f"{pod.ref} running with restartCount {restarts}")
    return found


async def test_a_killed_sleep_is_restarted_with_restart_count_1(processes: ProcessProvider) -> None:
    assert Capability.KILL_CONTAINER in processes.capabilities()
    pod = make_pod(SLEEP)
    await processes.create_pod(pod)
    before = await running(processes, pod)
    await processes.kill_container(pod.ref, "app", grace_period_seconds=30)  # returns at once
    after = await running(processes, pod, restarts=1)
    terminated = after["lastState"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (143, "Error")  # 128 + SIGTERM
    assert terminated["containerID"] == before["containerID"] != after["containerID"]
    assert (await processes.get_pod_status(pod.ref))["phase"] == "Running"


async def test_a_container_that_survives_sigterm_is_sigkilled_after_the_grace_period(
    processes: ProcessProvider,
) -> None:
    pod = make_pod(shell(STUBBORN))
    await processes.create_pod(pod)
    await running(processes, pod)
    await eventually(lambda: _contains(processes, pod, b"ready"), "the trap to be set")
    loop = asyncio.get_running_loop()
    killed_at = loop.time()
    await processes.kill_container(pod.ref, "app", grace_period_seconds=1)
    after = await running(processes, pod, restarts=1)
    assert loop.time() - killed_at >= 1.0  # it outlived the SIGTERM by the grace period
    terminated = after["lastState"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (137, "Error")  # 128 + SIGKILL
    assert b"got TERM" in await logs(processes, pod, previous=True)  # the SIGTERM came first


async def test_the_grace_period_is_capped_by_max_grace_seconds(tmp_path: Path) -> None:
    provider = ProcessProvider(root_dir=tmp_path, node_name="vk-0", backoff_base=0.05, max_grace_seconds=0.2)
    try:
        pod = make_pod(shell(STUBBORN))
        await provider.create_pod(pod)
        await running(provider, pod)
        await eventually(lambda: _contains(provider, pod, b"ready"), "the trap to be set")
        await provider.kill_container(pod.ref, "app", grace_period_seconds=3600)
        after = await running(provider, pod, restarts=1)  # within the test's deadline, not an hour
        assert after["lastState"]["terminated"]["exitCode"] == 137
    finally:
        await provider.close()


async def test_with_restart_policy_never_the_killed_container_stays_terminated(
    processes: ProcessProvider,
) -> None:
    pod = make_pod(SLEEP, restart_policy="Never")
    await processes.create_pod(pod)
    await running(processes, pod)
    await processes.kill_container(pod.ref, "app", grace_period_seconds=5)

    async def failed() -> Any:
        status = await processes.get_pod_status(pod.ref)
        return status if status["phase"] == "Failed" else None

    status = await eventually(failed, "the pod to fail")
    app = container_status(status)
    assert (app["state"]["terminated"]["exitCode"], app["state"]["terminated"]["reason"]) == (143, "Error")
    assert (app["restartCount"], app["lastState"]) == (0, {})
    # Killing an exited container is fine and changes nothing.
    await processes.kill_container(pod.ref, "app", grace_period_seconds=5)
    assert await processes.get_pod_status(pod.ref) == status


async def test_with_on_failure_a_killed_container_restarts_even_after_a_clean_exit(
    processes: ProcessProvider,
) -> None:
    # The kubelet restarts a container it killed unless the policy is Never, whatever the exit code.
    pod = make_pod(
        shell('trap "exit 0" TERM; echo ready; while :; do sleep 0.1; done'), restart_policy="OnFailure"
    )
    await processes.create_pod(pod)
    await running(processes, pod)
    await eventually(lambda: _contains(processes, pod, b"ready"), "the trap to be set")
    await processes.kill_container(pod.ref, "app", grace_period_seconds=5)
    after = await running(processes, pod, restarts=1)
    assert (after["lastState"]["terminated"]["exitCode"], after["lastState"]["terminated"]["reason"]) == (
        0,
        "Completed",
    )


async def test_an_unknown_pod_or_container_is_not_found(processes: ProcessProvider) -> None:
    pod = make_pod(SLEEP)
    await processes.create_pod(pod)
    with pytest.raises(NotFound, match="container nope"):
        await processes.kill_container(pod.ref, "nope", grace_period_seconds=1)
    with pytest.raises(NotFound):
        await processes.kill_container(PodRef("default", "x", "uid-unknown"), "app", grace_period_seconds=1)


async def test_the_conformance_case_passes_against_the_process_provider(processes: ProcessProvider) -> None:
    report = await run_conformance(
        processes,
        clock=SystemClock(),
        wait_seconds=10,
        only=["describe_consistent", "kill_container_restarts"],
    )
    assert [r.outcome for r in report.results] == [Outcome.PASS, Outcome.PASS], report.render()
    assert report.result("kill_container_restarts").notes == (), report.render()


async def _contains(provider: ProcessProvider, pod: Pod, marker: bytes) -> bool:
    return marker in await logs(provider, pod)
