"""The process provider against real subprocesses: lifecycle, restarts, logs, exec, attach,
port-forward and stats. Every wait is a condition polled against a deadline."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import close_stream, eventually
from vkubelet.adapters.grpc.client import GrpcProvider
from vkubelet.adapters.grpc.config import parse_grpc_config
from vkubelet.adapters.process.procfs import processes_with_env, tree_usage
from vkubelet.adapters.process.provider import ROOT_MARKER, ProcessProvider
from vkubelet.application.ports.streams import LogOptions, TerminalSize
from vkubelet.domain.errors import InvalidInput, NotFound
from vkubelet.domain.pod import Pod, PodRef
from vkubelet.domain.provider import Capability

DEADLINE = 10.0


def make_pod(
    *containers: dict[str, Any], uid: str = "uid-1", restart_policy: str = "Always", grace: int = 30
) -> Pod:
    return Pod.from_manifest(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"namespace": "default", "name": f"pod-{uid}", "uid": uid},
            "spec": {
                "nodeName": "vk-0",
                "restartPolicy": restart_policy,
                "terminationGracePeriodSeconds": grace,
                "containers": list(containers),
            },
        }
    )


def shell(script: str, name: str = "app", **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "ignored", "command": ["sh", "-c", script], **extra}


@pytest.fixture
async def provider(tmp_path: Path) -> AsyncIterator[ProcessProvider]:
    made = ProcessProvider(
        root_dir=tmp_path,
        node_name="vk-0",
        host_ip="192.0.2.7",
        backoff_base=0.05,
        backoff_cap=0.2,
        max_grace_seconds=2.0,
    )
    yield made
    await made.close()


def container_status(pod_status: Any, name: str = "app") -> dict[str, Any]:
    return next(s for s in pod_status["containerStatuses"] if s["name"] == name)


async def logs(provider: ProcessProvider, pod: Pod, **options: Any) -> bytes:
    chunks = [c async for c in provider.container_logs(pod.ref, "app", LogOptions(**options))]
    return b"".join(chunks)


class FakeIO:
    """A StreamIO fed from a queue, collecting what the process writes."""

    def __init__(self, *, stdin: bool = False, tty: bool = False, sizes: tuple[TerminalSize, ...] = ()):
        self.stdin, self.stdout, self.stderr, self.tty = stdin, True, not tty, tty
        self.input: asyncio.Queue[bytes] = asyncio.Queue()
        self.out = bytearray()
        self.err = bytearray()
        self._sizes = sizes

    async def read_stdin(self) -> bytes:
        return await self.input.get()

    async def write_stdout(self, data: bytes) -> None:
        self.out += data

    async def write_stderr(self, data: bytes) -> None:
        self.err += data

    async def resizes(self) -> AsyncIterator[TerminalSize]:
        for size in self._sizes:
            yield size
        await asyncio.Event().wait()  # the session, not the size list, ends the stream


class FakeStream:
    def __init__(self, request: bytes) -> None:
        self._chunks = [request]
        self.received = bytearray()
        self.closed = asyncio.Event()

    async def read(self) -> bytes:
        if self._chunks:
            return self._chunks.pop()
        await self.closed.wait()
        return b""

    async def write(self, data: bytes) -> None:
        self.received += data

    async def close(self) -> None:
        self.closed.set()


# -- lifecycle -------------------------------------------------------------------------------
async def test_a_running_container_is_running_and_its_output_is_logged(provider: ProcessProvider) -> None:
    pod = make_pod(shell("echo hello; sleep 3600"))
    await provider.create_pod(pod)

    async def running() -> Any:
        status = await provider.get_pod_status(pod.ref)
        return status["phase"] == "Running" and "running" in container_status(status)["state"]

    await eventually(running, "Running")
    await eventually(lambda: _contains(logs(provider, pod), b"hello\n"), "hello in the log")
    status = await provider.get_pod_status(pod.ref)
    assert status["podIP"] == "192.0.2.7"
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"
    assert Capability.EXEC in provider.capabilities()


async def _contains(read: Awaitable[bytes], needle: bytes) -> bool:
    try:
        return needle in await read
    except InvalidInput:  # not started yet
        return False


async def test_exit_3_is_reported_and_restarted_under_always(provider: ProcessProvider) -> None:
    pod = make_pod(shell("echo run; exit 3"))
    await provider.create_pod(pod)

    async def restarted() -> Any:
        status = container_status(await provider.get_pod_status(pod.ref))
        last = status["lastState"].get("terminated") or {}
        return status["restartCount"] >= 2 and last.get("exitCode") == 3 and last.get("reason") == "Error"

    await eventually(restarted, "two restarts after exit 3")
    assert (await provider.get_pod_status(pod.ref))["phase"] == "Running"
    previous = await logs(provider, pod, previous=True)
    assert previous == b"run\n"


async def test_never_with_a_failure_is_failed_and_not_restarted(provider: ProcessProvider) -> None:
    pod = make_pod(shell("exit 3"), restart_policy="Never")
    await provider.create_pod(pod)

    async def failed() -> Any:
        return (await provider.get_pod_status(pod.ref))["phase"] == "Failed"

    await eventually(failed, "Failed")
    status = container_status(await provider.get_pod_status(pod.ref))
    assert status["state"]["terminated"]["exitCode"] == 3
    assert status["restartCount"] == 0


async def test_on_failure_with_exit_0_succeeds(provider: ProcessProvider) -> None:
    pod = make_pod(shell("true"), restart_policy="OnFailure")
    await provider.create_pod(pod)

    async def succeeded() -> Any:
        return (await provider.get_pod_status(pod.ref))["phase"] == "Succeeded"

    await eventually(succeeded, "Succeeded")
    assert (
        container_status(await provider.get_pod_status(pod.ref))["state"]["terminated"]["reason"]
        == "Completed"
    )


async def test_init_containers_run_first_and_env_expands_in_args(provider: ProcessProvider) -> None:
    pod = make_pod(
        {
            "name": "app",
            "command": ["sh", "-c"],
            "args": ["cat marker; echo $(GREETING)-$$HOSTNAME; sleep 3600"],
            "env": [{"name": "GREETING", "value": "hi"}],
        }
    )
    manifest = dict(pod.manifest)
    manifest["spec"] = {**pod.spec, "initContainers": [shell("echo init-done > marker", name="setup")]}
    pod = Pod.from_manifest(manifest)
    await provider.create_pod(pod)
    await eventually(lambda: _contains(logs(provider, pod), b"init-done\nhi-pod-uid-1\n"), "init then app")
    status = await provider.get_pod_status(pod.ref)
    assert status["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0


async def test_a_container_without_command_says_why(provider: ProcessProvider) -> None:
    pod = make_pod({"name": "app", "image": "nginx"})
    await provider.create_pod(pod)
    waiting = container_status(await provider.get_pod_status(pod.ref))["state"]["waiting"]
    assert waiting["reason"] == "CreateContainerConfigError"
    assert "ignores images" in waiting["message"]
    with pytest.raises(InvalidInput, match="waiting to start"):
        await logs(provider, pod)


async def test_delete_kills_the_tree_and_reports_terminated(provider: ProcessProvider) -> None:
    pod = make_pod(shell("trap '' TERM; sleep 3600 & wait"), grace=1)
    await provider.create_pod(pod)

    async def pid() -> Any:
        status = container_status(await provider.get_pod_status(pod.ref))
        return "running" in status["state"] and int(status["containerID"].removeprefix("process://"))

    leader = await eventually(pid, "running")
    updates = provider.pod_status_updates()
    await provider.delete_pod(pod)
    await provider.delete_pod(pod)  # idempotent while stopping
    last = None
    while last is None or last.status["phase"] not in ("Succeeded", "Failed"):
        last = await asyncio.wait_for(anext(updates), DEADLINE)
    state = container_status(last.status)["state"]["terminated"]
    assert state["exitCode"] == 137  # TERM ignored: killed after the grace period
    assert last.status["phase"] == "Failed"
    with pytest.raises(ProcessLookupError):
        os.kill(leader, 0)
    # The whole session, the background sleep included (an orphan may linger as a zombie until
    # this machine's init reaps it, so count live members only).
    await eventually(lambda: _true(tree_usage([leader]) == {}), "no live process in the pod's session")

    async def forgotten() -> bool:
        try:
            await provider.delete_pod(pod)
        except NotFound:
            return True
        return False

    await eventually(forgotten, "delete_pod to answer NotFound once the pod is gone")
    with pytest.raises(NotFound):
        await provider.get_pod(PodRef("default", "nope", "uid-unknown"))


# -- logs ------------------------------------------------------------------------------------
async def test_log_options(provider: ProcessProvider) -> None:
    pod = make_pod(shell("printf 'one\\ntwo\\nthree\\n'; sleep 3600"))
    await provider.create_pod(pod)
    await eventually(lambda: _contains(logs(provider, pod), b"three\n"), "three lines")
    assert await logs(provider, pod) == b"one\ntwo\nthree\n"
    assert await logs(provider, pod, tail_lines=2) == b"two\nthree\n"
    assert await logs(provider, pod, limit_bytes=6) == b"one\ntw"
    stamped = (await logs(provider, pod, timestamps=True)).splitlines()
    stamp, text = stamped[0].split(b" ", 1)
    assert text == b"one"
    assert datetime.fromisoformat(stamp.decode()[:26] + "+00:00") <= datetime.now(UTC)
    assert len(stamp) == len("2025-01-01T00:00:00.000000000Z")
    future = datetime.now(UTC) + timedelta(hours=1)
    assert await logs(provider, pod, since_time=future) == b""
    assert await logs(provider, pod, since_seconds=3600) == b"one\ntwo\nthree\n"
    with pytest.raises(NotFound):
        await logs(provider, pod, previous=True)


async def test_follow_delivers_a_line_written_after_it_started(provider: ProcessProvider) -> None:
    pod = make_pod(shell('echo first; read line; echo "got $line"; sleep 3600', stdin=True))
    await provider.create_pod(pod)
    await eventually(lambda: _contains(logs(provider, pod), b"first\n"), "first line")
    stream = provider.container_logs(pod.ref, "app", LogOptions(follow=True))
    assert await asyncio.wait_for(anext(stream), DEADLINE) == b"first\n"
    io = FakeIO(stdin=True)
    attach = asyncio.create_task(provider.attach_to_container(pod.ref, "app", io))
    io.input.put_nowait(b"later\n")
    assert await asyncio.wait_for(anext(stream), DEADLINE) == b"got later\n"
    await eventually(lambda: _true(b"got later\n" in io.out), "attach output")
    attach.cancel()
    await close_stream(stream)


async def test_a_partial_last_line_is_logged_while_the_container_runs(provider: ProcessProvider) -> None:
    pod = make_pod(shell("printf 'one\\nno-newline'; sleep 3600"))
    await provider.create_pod(pod)
    await eventually(lambda: _contains(logs(provider, pod), b"no-newline"), "the partial line")
    assert await logs(provider, pod) == b"one\nno-newline"
    assert await logs(provider, pod, tail_lines=1) == b"no-newline"


async def test_follow_delivers_partial_output_once_with_a_stamp_per_chunk(provider: ProcessProvider) -> None:
    pod = make_pod(shell('echo first; read a; printf "$a"; read b; echo "$b"; sleep 3600', stdin=True))
    await provider.create_pod(pod)
    await eventually(lambda: _contains(logs(provider, pod), b"first\n"), "first line")
    stream = provider.container_logs(pod.ref, "app", LogOptions(follow=True))
    assert await asyncio.wait_for(anext(stream), DEADLINE) == b"first\n"
    io = FakeIO(stdin=True)
    attach = asyncio.create_task(provider.attach_to_container(pod.ref, "app", io))
    io.input.put_nowait(b"part\n")
    assert await asyncio.wait_for(anext(stream), DEADLINE) == b"part"  # before its newline
    io.input.put_nowait(b"rest\n")
    assert await asyncio.wait_for(anext(stream), DEADLINE) == b"rest\n"  # not "partrest\n"
    attach.cancel()
    await close_stream(stream)
    assert await logs(provider, pod) == b"first\npartrest\n"
    assert await logs(provider, pod, tail_lines=1) == b"partrest\n"  # one line, in two records
    # As the kubelet renders CRI "P" records: each written chunk keeps its own timestamp.
    stamped = await logs(provider, pod, timestamps=True, tail_lines=1)
    assert re.fullmatch(rb"\S+Z part\S+Z rest\n", stamped), stamped


async def _true(value: bool) -> bool:
    return value


# -- exec, attach, port-forward --------------------------------------------------------------
async def test_exec_returns_the_exit_code_and_echoes_stdin(provider: ProcessProvider) -> None:
    pod = make_pod(shell("sleep 3600", env=[{"name": "WHO", "value": "pod-env"}]))
    await provider.create_pod(pod)
    io = FakeIO()
    assert await provider.exec_in_container(pod.ref, "app", ["sh", "-c", "exit 7"], io) == 7
    io = FakeIO(stdin=True)
    io.input.put_nowait(b"echo me\n")
    io.input.put_nowait(b"")
    code = await asyncio.wait_for(
        provider.exec_in_container(pod.ref, "app", ["sh", "-c", 'cat; echo "$WHO" >&2'], io), DEADLINE
    )
    assert (code, bytes(io.out), bytes(io.err)) == (0, b"echo me\n", b"pod-env\n")
    assert await provider.exec_in_container(pod.ref, "app", ["no-such-binary"], FakeIO()) == 127


async def test_exec_with_a_tty_sees_a_terminal_and_its_resize(provider: ProcessProvider) -> None:
    pod = make_pod(shell("sleep 3600"))
    await provider.create_pod(pod)
    io = FakeIO(stdin=True, tty=True, sizes=(TerminalSize(width=100, height=40),))
    script = (
        'test -t 0 && echo IS-TTY; while [ "$(stty size)" != "40 100" ]; do sleep 0.05; done; echo RESIZED'
    )
    code = await asyncio.wait_for(
        provider.exec_in_container(pod.ref, "app", ["sh", "-c", script], io), DEADLINE
    )
    assert code == 0
    assert b"IS-TTY" in io.out and b"RESIZED" in io.out


async def test_attach_returns_the_exit_code(provider: ProcessProvider) -> None:
    pod = make_pod(
        shell('read line; echo "bye $line"; exit 5', stdin=True, stdinOnce=True), restart_policy="Never"
    )
    await provider.create_pod(pod)

    async def running() -> Any:
        return "running" in container_status(await provider.get_pod_status(pod.ref))["state"]

    await eventually(running, "running")
    io = FakeIO(stdin=True)
    io.input.put_nowait(b"now\n")
    code = await asyncio.wait_for(provider.attach_to_container(pod.ref, "app", io), DEADLINE)
    assert (code, bytes(io.out)) == (5, b"bye now\n")


async def test_port_forward_reaches_an_http_server_in_the_pod(provider: ProcessProvider) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pod = make_pod(
        {"name": "app", "command": [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]}
    )
    await provider.create_pod(pod)
    (Path(provider._root) / "pods" / "uid-1" / "work" / "hello.txt").write_text("from the pod\n")

    async def answered() -> Any:
        stream = FakeStream(b"GET /hello.txt HTTP/1.0\r\nHost: x\r\n\r\n")
        try:
            await asyncio.wait_for(provider.port_forward(pod.ref, port, stream), DEADLINE)
        except Exception:
            return False  # not listening yet
        return bytes(stream.received)

    response = await eventually(answered, "an HTTP answer")
    assert response.startswith(b"HTTP/1.0 200") and response.endswith(b"from the pod\n")


# -- stats -----------------------------------------------------------------------------------
async def test_stats_show_real_memory_and_metrics_agree(provider: ProcessProvider) -> None:
    pod = make_pod(shell("sleep 3600"))
    await provider.create_pod(pod)

    async def measured() -> Any:
        summary = await provider.stats_summary()
        pods = summary["pods"]
        return pods and pods[0]["containers"] and summary

    summary = await eventually(measured, "a measured container")
    container = summary["pods"][0]["containers"][0]
    assert container["memory"]["workingSetBytes"] > 0
    assert summary["node"]["memory"]["workingSetBytes"] >= container["memory"]["workingSetBytes"]
    families = {f.name: f for f in await provider.metrics_resource()}
    assert families["container_memory_working_set_bytes"].samples[0].value > 0
    assert families["container_memory_working_set_bytes"].samples[0].labels["container"] == "app"
    template = await provider.node_template()
    assert int(template.capacity["cpu"]) == os.cpu_count()


def test_reap_orphans_kills_what_a_previous_provider_left(tmp_path: Path) -> None:
    # A leftover of a provider killed with -9: it carries the marker of this root dir.
    (tmp_path / "pods" / "old-uid").mkdir(parents=True)
    marker = {**os.environ, ROOT_MARKER: str(tmp_path.resolve())}
    orphan = subprocess.Popen(["sleep", "3600"], env=marker)
    stranger = subprocess.Popen(["sleep", "3600"], env={**marker, ROOT_MARKER: "/elsewhere"})
    try:
        provider = ProcessProvider(root_dir=tmp_path, node_name="vk-0")
        assert provider.reap_orphans() == 1
        assert orphan.wait(timeout=DEADLINE) == -signal.SIGKILL
        assert stranger.poll() is None  # another root's process is left alone
        assert not (tmp_path / "pods").exists()
    finally:
        for process in (orphan, stranger):
            process.kill()
            process.wait()


# -- the command, over gRPC ------------------------------------------------------------------
def _script(name: str) -> str:
    path = Path(sys.executable).parent / name
    assert path.exists(), f"{path} is missing: reinstall the package (pip install -e .) to get its scripts"
    return str(path)


async def test_the_command_passes_the_conformance_kit_and_stops_its_pods(tmp_path: Path) -> None:
    # Over gRPC the provider has C-core threads: this is where spawning with Python code
    # between fork and exec crashed children (exit 139) now and then.
    socket_path = tmp_path / "pp.sock"
    root = tmp_path / "root"
    provider = await asyncio.create_subprocess_exec(
        _script("vkubelet-process-provider"),
        "--listen",
        f"unix://{socket_path}",
        "--root-dir",
        str(root),
        "--max-grace-seconds",
        "2",
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await eventually(lambda: _true(socket_path.exists()), "the provider's socket")
        kit = await asyncio.create_subprocess_exec(
            _script("vkubelet-provider-conformance"),
            "--address",
            f"unix://{socket_path}",
            "--timeout",
            "10",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(kit.communicate(), 120)
        assert kit.returncode == 0, out.decode() + err.decode()
        assert b" 0 failed, 0 skipped" in out, out.decode()
        # A pod left running, then SIGTERM: the provider exits 0 and takes its processes along.
        client = GrpcProvider(parse_grpc_config({"address": f"unix://{socket_path}"}))
        await client.connect()
        try:
            pod = make_pod(shell("sleep 3600"), uid="left-running")
            await client.create_pod(pod)

            async def running() -> Any:
                return "running" in container_status(await client.get_pod_status(pod.ref))["state"]

            await eventually(running, "the pod to run over gRPC")
        finally:
            await client.close()
        assert processes_with_env(ROOT_MARKER, str(root.resolve()))
        provider.terminate()
        _, stderr = await asyncio.wait_for(provider.communicate(), 30)
        assert provider.returncode == 0, stderr.decode()
        assert processes_with_env(ROOT_MARKER, str(root.resolve())) == []
    finally:
        if provider.returncode is None:
            provider.kill()
            await provider.wait()
