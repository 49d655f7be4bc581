"""Ephemeral containers (kubectl debug) on the process provider with real processes: started by
update_pod, reported in ephemeralContainerStatuses (never ready, never counted in the phase),
attach with stdin (pipes, and a real pty with tty: true), exec and logs, terminated with the
exit code and never restarted; a pod created again does not run a finished one twice; with
targetContainerName it joins the target's mount namespace."""

from __future__ import annotations

import asyncio
import copy
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import close_stream, eventually
from tests.integration.test_process_provider import FakeIO, container_status, make_pod
from vkubelet.adapters.process.provider import ProcessProvider
from vkubelet.application.ports.streams import LogOptions, TerminalSize
from vkubelet.domain.pod import Pod
from vkubelet.domain.volumes import EmptyDirVolume, PodVolumes

DEADLINE = 10.0
MAIN = {"name": "app", "image": "ignored", "command": ["sleep", "3600"]}


@pytest.fixture
async def provider(tmp_path: Path) -> AsyncIterator[ProcessProvider]:
    made = ProcessProvider(
        root_dir=tmp_path / "root",
        node_name="vk-0",
        backoff_base=0.05,
        backoff_cap=0.2,
        max_grace_seconds=2.0,
    )
    yield made
    await made.close()


def debugged(pod: Pod, *containers: dict[str, Any]) -> Pod:
    """``pod`` with ``containers`` appended to spec.ephemeralContainers, as kubectl debug does."""
    manifest = copy.deepcopy(dict(pod.manifest))
    manifest["spec"].setdefault("ephemeralContainers", []).extend(containers)
    return Pod.from_manifest(manifest)


def debug(script: str, name: str = "dbg", **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "busybox", "command": ["sh", "-c", script], "stdin": True, **extra}


async def ephemeral_status(provider: ProcessProvider, pod: Pod, name: str = "dbg") -> dict[str, Any] | None:
    statuses = (await provider.get_pod_status(pod.ref)).get("ephemeralContainerStatuses") or ()
    return next((s for s in statuses if s["name"] == name), None)


async def in_state(provider: ProcessProvider, pod: Pod, state: str, name: str = "dbg") -> dict[str, Any]:
    async def check() -> Any:
        status = await ephemeral_status(provider, pod, name)
        return status if status is not None and state in status["state"] else None

    found: dict[str, Any] = await eventually(check, f"ephemeral container {name} {state}")
    return found


async def running_pod(provider: ProcessProvider, *containers: dict[str, Any], uid: str = "uid-1") -> Pod:
    pod = make_pod(*containers, uid=uid)
    await provider.create_pod(pod)

    async def running() -> bool:
        return "running" in container_status(await provider.get_pod_status(pod.ref))["state"]

    await eventually(running, "the main container running")
    return pod


async def test_an_added_ephemeral_container_runs_once_with_attach_logs_and_exec(
    provider: ProcessProvider, tmp_path: Path
) -> None:
    pod = await running_pod(provider, MAIN)
    runs = tmp_path / "runs"
    script = f'echo run >> {runs}; read line; echo "got $line"; echo oops >&2; exit 3'
    await provider.update_pod(debugged(pod, debug(script)))

    running = await in_state(provider, pod, "running")
    assert (running["ready"], running["restartCount"], running["image"]) == (False, 0, "busybox")
    status = await provider.get_pod_status(pod.ref)
    assert [s["name"] for s in status["containerStatuses"]] == ["app"]  # not a regular container
    assert status["phase"] == "Running"
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"

    # Exec works in it while it runs (its env: HOSTNAME is the pod's name).
    io = FakeIO()
    assert await provider.exec_in_container(pod.ref, "dbg", ["sh", "-c", 'echo "$HOSTNAME"'], io) == 0
    assert bytes(io.out) == b"pod-uid-1\n"

    attached = FakeIO(stdin=True)
    attached.input.put_nowait(b"hello\n")
    code = await asyncio.wait_for(provider.attach_to_container(pod.ref, "dbg", attached), DEADLINE)
    assert (code, bytes(attached.out), bytes(attached.err)) == (3, b"got hello\n", b"oops\n")

    terminated = (await in_state(provider, pod, "terminated"))["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (3, "Error")
    logged = b"".join([c async for c in provider.container_logs(pod.ref, "dbg", LogOptions())])
    assert logged == b"got hello\noops\n"

    # Never restarted: another update (adding a second debug container) leaves it terminated,
    # and only the new one runs.
    await provider.update_pod(debugged(pod, debug(script), debug("echo second", name="dbg2")))
    await in_state(provider, pod, "terminated", name="dbg2")
    again = await ephemeral_status(provider, pod)
    assert again is not None and again["state"]["terminated"] == terminated and again["restartCount"] == 0
    assert runs.read_text() == "run\n"
    status = await provider.get_pod_status(pod.ref)
    assert status["phase"] == "Running"  # ephemeral exits do not end the pod
    assert "running" in container_status(status)["state"]


async def test_with_tty_the_debug_shell_gets_a_terminal_and_its_size(provider: ProcessProvider) -> None:
    pod = await running_pod(provider, MAIN)
    await provider.update_pod(
        debugged(pod, {"name": "dbg", "image": "busybox", "command": ["sh"], "stdin": True, "tty": True})
    )
    await in_state(provider, pod, "running")

    io = FakeIO(stdin=True, tty=True, sizes=(TerminalSize(width=100, height=40),))
    attach = asyncio.create_task(provider.attach_to_container(pod.ref, "dbg", io))
    io.input.put_nowait(b'test -t 0 && echo "IS-$((6*7))"\n')
    await eventually(lambda: _true(b"IS-42" in io.out), "the shell to answer")  # the resize came first
    io.input.put_nowait(b"stty size; exit 4\n")
    assert await asyncio.wait_for(attach, DEADLINE) == 4
    assert b"40 100" in io.out
    assert (await in_state(provider, pod, "terminated"))["state"]["terminated"]["exitCode"] == 4
    logged = b"".join([c async for c in provider.container_logs(pod.ref, "dbg", LogOptions())])
    assert b"IS-42" in logged and b"40 100" in logged  # the terminal's output is logged as stdout


async def test_a_pod_created_again_does_not_rerun_a_finished_ephemeral_container(
    provider: ProcessProvider, tmp_path: Path
) -> None:
    # The provider lost the pod and vkubelet creates it again from the API copy, whose status
    # shows the debug container finished: running it again would be refused by the API server.
    marker = tmp_path / "ran"
    pod = debugged(make_pod(MAIN, uid="uid-again"), debug(f"touch {marker}"))
    manifest = copy.deepcopy(dict(pod.manifest))
    done = {"terminated": {"exitCode": 0, "reason": "Completed"}}
    manifest["status"] = {"ephemeralContainerStatuses": [{"name": "dbg", "state": done}]}
    await provider.create_pod(Pod.from_manifest(manifest))
    status = await in_state(provider, pod, "terminated")
    assert status["state"] == done
    await provider.update_pod(Pod.from_manifest(manifest))
    assert not marker.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces need root (CAP_SYS_ADMIN)")
async def test_with_a_target_it_sees_the_target_containers_mounts(
    provider: ProcessProvider, tmp_path: Path
) -> None:
    mount = tmp_path / "host" / "data"
    target = {**MAIN, "volumeMounts": [{"name": "scratch", "mountPath": str(mount)}]}
    pod = make_pod(target, uid="uid-target")
    await provider.create_pod(pod, PodVolumes(empty_dirs=(EmptyDirVolume("scratch"),)))
    await eventually(lambda: _running(provider, pod), "the target running in its mount namespace")
    assert (
        await provider.exec_in_container(pod.ref, "app", ["sh", "-c", f"echo shared > {mount}/f"], FakeIO())
        == 0
    )
    assert not (mount / "f").exists()  # only inside the container's namespace

    await provider.update_pod(debugged(pod, debug(f"cat {mount}/f; sleep 3600", targetContainerName="app")))
    await in_state(provider, pod, "running")
    logs = provider.container_logs(pod.ref, "dbg", LogOptions(follow=True))
    assert await asyncio.wait_for(anext(logs), DEADLINE) == b"shared\n"
    await close_stream(logs)
    io = FakeIO()  # exec into the debug container joins the same namespace
    assert await provider.exec_in_container(pod.ref, "dbg", ["cat", f"{mount}/f"], io) == 0
    assert bytes(io.out) == b"shared\n"


async def _running(provider: ProcessProvider, pod: Pod) -> bool:
    return "running" in container_status(await provider.get_pod_status(pod.ref))["state"]


async def _true(value: bool) -> bool:
    return value
