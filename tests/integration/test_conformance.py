"""The provider conformance kit against the mock provider (in process, and over gRPC), against a
deliberately broken provider, and as the ``vkubelet-provider-conformance`` command."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import io
import json
import re
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.clock import FakeClock
from vkubelet.adapters.grpc.client import GrpcProvider
from vkubelet.adapters.grpc.config import parse_grpc_config
from vkubelet.adapters.grpc.server import RunningServer, start_server
from vkubelet.adapters.mock.provider import MockProvider
from vkubelet.adapters.node_config import parse_mock_config
from vkubelet.adapters.system import SystemClock
from vkubelet.application.conformance import CASES, Outcome, Report, run_conformance
from vkubelet.application.ports.streams import StreamIO
from vkubelet.domain.errors import NotFound, Transient
from vkubelet.domain.pod import Pod, PodRef
from vkubelet.domain.provider import Capability, NodeTemplate
from vkubelet.domain.volumes import PodVolumes
from vkubelet.entrypoints.conformance_cli import Options, check, parse_args

# In-process providers answer at once; a short wait keeps the failing cases quick.
WAIT = 2.0
ALL_BUT_INVALID_INPUT = [spec.name for spec in CASES if spec.name != "invalid_input_rejected"]


def _assert_all_pass_or_skip(report: Report) -> None:
    failed = [r for r in report.results if r.outcome is Outcome.FAIL]
    assert not failed, report.render()


# -- the mock provider, in process --------------------------------------------------------------


async def test_mock_provider_in_process_passes_or_skips_every_case() -> None:
    provider = MockProvider(node_name="vk-conformance")
    report = await run_conformance(
        provider, clock=SystemClock(), wait_seconds=WAIT, only=ALL_BUT_INVALID_INPUT
    )
    _assert_all_pass_or_skip(report)
    # The mock runs no processes: the stream cases are skipped, naming the capability.
    assert report.result("logs_contain_output").reason == "capability 'logs' not declared"
    assert report.result("exec_exit_code_and_stdin").reason == "capability 'exec' not declared"
    assert report.result("status_stream_running").outcome is Outcome.PASS
    node_stream = report.result("node_status_stream")
    assert (node_stream.outcome, node_stream.notes) == (Outcome.PASS, ())  # it sent its template
    assert report.result("stats_summary_has_pod").outcome is Outcome.PASS
    kill = report.result("kill_container_restarts")
    assert (kill.outcome, kill.notes) == (Outcome.PASS, ()), report.render()
    # Every case cleaned up after itself.
    assert await provider.list_pods() == []


async def test_mock_provider_in_process_rejects_a_pod_without_uid() -> None:
    provider = MockProvider(node_name="vk-conformance")
    report = await run_conformance(
        provider, clock=SystemClock(), wait_seconds=WAIT, only=["invalid_input_rejected"]
    )
    _assert_all_pass_or_skip(report)


# -- a deliberately broken provider -------------------------------------------------------------


class BrokenProvider:
    """The mock provider with five contract violations a provider author could plausibly make:

    * a second delete of a UID raises a plain RuntimeError instead of NotFound;
    * get_pod/get_pod_status of an unknown UID raise Transient instead of NotFound;
    * the status stream reports every pod as Pending, never Running (nor terminal);
    * it declares EXEC but every exec "succeeds" with exit code 0 and echoes nothing;
    * it declares LOGS but does not implement it (NotSupported, a declared-capability lie).
    """

    def __init__(self) -> None:
        self._mock = MockProvider(node_name="vk-broken")
        self._deleted: set[str] = set()

    def capabilities(self) -> frozenset[Capability]:
        return self._mock.capabilities() | {Capability.EXEC, Capability.LOGS}

    def native_volume_kinds(self) -> frozenset[str]:
        return frozenset()

    async def close(self) -> None:
        await self._mock.close()

    async def ping(self) -> None:
        await self._mock.ping()

    async def node_template(self) -> Any:
        return await self._mock.node_template()

    async def create_pod(self, pod: Pod) -> None:
        Pod.from_manifest(pod.manifest)  # validates like a real provider decoding JSON would
        await self._mock.create_pod(pod)

    async def update_pod(self, pod: Pod) -> None:
        await self._mock.update_pod(pod)

    async def set_pod_volumes(self, ref: PodRef, volumes: PodVolumes) -> None:
        await self._mock.set_pod_volumes(ref, volumes)  # honestly NotSupported: VOLUMES undeclared

    async def delete_pod(self, pod: Pod) -> None:
        if pod.ref.uid in self._deleted:
            raise RuntimeError(f"pod {pod.ref.uid} was already deleted")
        await self._mock.delete_pod(pod)
        self._deleted.add(pod.ref.uid)

    async def get_pod(self, ref: PodRef) -> Pod:
        try:
            return await self._mock.get_pod(ref)
        except NotFound:
            raise Transient("lookup failed") from None

    async def get_pod_status(self, ref: PodRef) -> Mapping[str, Any]:
        try:
            return await self._mock.get_pod_status(ref)
        except NotFound:
            raise Transient("lookup failed") from None

    async def list_pods(self) -> Sequence[Pod]:
        return await self._mock.list_pods()

    async def pod_status_updates(self) -> AsyncIterator[Pod]:
        async for pod in self._mock.pod_status_updates():
            manifest = copy.deepcopy(dict(pod.manifest))
            manifest["status"] = {"phase": "Pending"}
            yield Pod(pod.ref, manifest)

    def node_status_updates(self) -> AsyncIterator[NodeTemplate]:
        return self._mock.node_status_updates()

    async def stats_summary(self) -> Mapping[str, Any]:
        return await self._mock.stats_summary()

    async def metrics_resource(self) -> Any:
        return await self._mock.metrics_resource()

    def container_logs(self, ref: PodRef, container: str, options: Any) -> AsyncIterator[bytes]:
        return self._mock.container_logs(ref, container, options)

    async def exec_in_container(
        self, ref: PodRef, container: str, command: Sequence[str], io: StreamIO
    ) -> int:
        return 0

    async def attach_to_container(self, ref: PodRef, container: str, io: StreamIO) -> int:
        return await self._mock.attach_to_container(ref, container, io)

    async def port_forward(self, ref: PodRef, port: int, stream: Any) -> None:
        await self._mock.port_forward(ref, port, stream)

    async def kill_container(self, ref: PodRef, container: str, *, grace_period_seconds: int) -> None:
        await self._mock.kill_container(ref, container, grace_period_seconds=grace_period_seconds)


BROKEN_FAILURES = {
    "delete_idempotent": re.compile(
        r"second delete_pod of .*: expected NotFound or success, "
        r"got RuntimeError: pod \S+ was already deleted"
    ),
    "unknown_not_found": re.compile(
        r"get_pod of unknown .*: expected NotFound, got Transient: lookup failed"
    ),
    "status_stream_running": re.compile(
        r"status stream for .*: expected phase 'Running' within 2s, got phases 'Pending'"
    ),
    "exec_exit_code_and_stdin": re.compile(
        r"exec of \['sh', '-c', 'exit 7'\]: expected exit code 7, got exit code 0"
    ),
    "logs_contain_output": re.compile(
        r"container_logs .*: expected success, got NotSupported: the mock provider keeps no container logs"
    ),
    # get_pod of the deleted pod answers Transient, which never counts as "gone".
    "delete_removes": re.compile(
        r"get_pod .* after delete_pod: expected NotFound, got Transient: lookup failed"
    ),
}


async def test_broken_provider_fails_the_cases_it_breaks_with_readable_reasons() -> None:
    report = await run_conformance(BrokenProvider(), clock=SystemClock(), wait_seconds=WAIT, target="broken")
    text = report.render()
    failed = {r.name: r.reason for r in report.results if r.outcome is Outcome.FAIL}
    assert set(failed) == set(BROKEN_FAILURES), text
    for name, pattern in BROKEN_FAILURES.items():
        assert pattern.search(failed[name]), f"{name}: {failed[name]}"
        assert f"FAIL  {name}" in text
    # What it does right still passes: the kit is not failing everything.
    for name in ("ping", "create_and_get", "create_idempotent", "same_name_distinct_uids"):
        assert report.result(name).outcome is Outcome.PASS, text
    assert not report.ok
    # volumes_accepted is skipped: the broken provider (a mock) does not declare VOLUMES.
    assert text.rstrip().endswith(f"{len(CASES)} cases: {len(CASES) - 7} passed, 6 failed, 1 skipped")


async def test_check_exits_non_zero_and_prints_json_for_the_broken_provider() -> None:
    out = io.StringIO()
    options = Options(address="in-process", timeout=WAIT, json=True)
    assert await check(BrokenProvider(), options, out=out) == 1
    document = json.loads(out.getvalue())
    assert document["ok"] is False
    assert document["failed"] == len(BROKEN_FAILURES)
    outcomes = {case["name"]: case["outcome"] for case in document["cases"]}
    assert outcomes["delete_idempotent"] == "FAIL"
    assert outcomes["ping"] == "PASS"


async def test_check_exits_zero_for_the_mock_provider() -> None:
    out = io.StringIO()
    options = Options(address="in-process", timeout=WAIT, only=tuple(ALL_BUT_INVALID_INPUT))
    assert await check(MockProvider(node_name="vk-0"), options, out=out) == 0, out.getvalue()
    assert "0 failed" in out.getvalue()


# -- native volume kinds -----------------------------------------------------------------------


class OddVolumeKinds(MockProvider):
    def native_volume_kinds(self) -> frozenset[str]:
        return frozenset({"hostPath", "pvc", "host_path"})


async def test_describe_consistent_fails_native_volume_kinds_that_are_no_volume_kinds() -> None:
    report = await run_conformance(
        OddVolumeKinds(node_name="vk-node"),
        clock=SystemClock(),
        wait_seconds=WAIT,
        only=["describe_consistent"],
    )
    result = report.result("describe_consistent")
    assert (result.outcome, result.reason) == (
        Outcome.FAIL,
        'native_volume_kinds(): expected v1.Volume source field names such as "persistentVolumeClaim" '
        "or \"hostPath\", got 'host_path', 'pvc'",
    )


async def test_describe_consistent_passes_real_native_volume_kinds_over_grpc() -> None:
    config = parse_mock_config(
        {"vk-node": {"nativeVolumeKinds": ["persistentVolumeClaim", "csi"]}}, node_name="vk-node"
    )
    server = await start_server(MockProvider(node_name="vk-node", config=config), address="127.0.0.1:0")
    client = GrpcProvider(
        parse_grpc_config({"address": server.address, "insecure": True, "connect_timeout": 5})
    )
    try:
        await client.connect()
        report = await run_conformance(
            client, clock=SystemClock(), wait_seconds=WAIT, only=["describe_consistent"]
        )
        result = report.result("describe_consistent")
        assert result.outcome is Outcome.PASS, result.reason
    finally:
        await client.close()
        await server.stop(0)


# -- the node status stream case ---------------------------------------------------------------


class NodeStreamThatFails(MockProvider):
    async def node_status_updates(self) -> AsyncIterator[NodeTemplate]:
        raise Transient("the node feed is down")
        yield  # pragma: no cover - makes this an async generator


class NodeStreamThatEnds(MockProvider):
    async def node_status_updates(self) -> AsyncIterator[NodeTemplate]:
        yield await self.node_template()


class NodeStreamWithPartialTemplates(MockProvider):
    async def node_status_updates(self) -> AsyncIterator[NodeTemplate]:
        yield NodeTemplate(capacity={"cpu": "8"})  # a delta, not the whole template
        await asyncio.Event().wait()


class QuietNodeStream(MockProvider):
    async def node_status_updates(self) -> AsyncIterator[NodeTemplate]:
        await asyncio.Event().wait()  # open, but only changes are sent (and none happen)
        yield await self.node_template()  # pragma: no cover


class UndeclaredNodeStream(MockProvider):
    """Streams node templates but does not declare it (the method should say NotSupported)."""

    def capabilities(self) -> frozenset[Capability]:
        return super().capabilities() - {Capability.NODE_STATUS_STREAM}


@pytest.mark.parametrize(
    ("provider_class", "reason"),
    [
        (
            NodeStreamThatFails,
            "node_status_updates(): expected an open stream for 1s, "
            "got after 0 template(s), Transient: the node feed is down",
        ),
        (
            NodeStreamThatEnds,
            "node_status_updates(): expected an open stream for 1s, got its end after 1 template(s)",
        ),
        (
            NodeStreamWithPartialTemplates,
            "node_status_updates() template 1.capacity: expected cpu, memory and pods, got no memory, pods",
        ),
    ],
)
async def test_node_status_stream_case_fails_a_stream_that_breaks_the_contract(
    provider_class: type[MockProvider], reason: str
) -> None:
    report = await run_conformance(
        provider_class(node_name="vk-node"),
        clock=SystemClock(),
        wait_seconds=WAIT,
        only=["node_status_stream"],
    )
    result = report.result("node_status_stream")
    assert (result.outcome, result.reason) == (Outcome.FAIL, reason)


async def test_node_status_stream_case_passes_a_quiet_open_stream_with_a_note() -> None:
    report = await run_conformance(
        QuietNodeStream(node_name="vk-node"),
        clock=SystemClock(),
        wait_seconds=WAIT,
        only=["node_status_stream"],
    )
    result = report.result("node_status_stream")
    assert result.outcome is Outcome.PASS, result.reason
    assert len(result.notes) == 1 and result.notes[0].startswith("no template within 1s"), result.notes


async def test_an_undeclared_node_stream_that_answers_fails_describe_and_skips_the_case() -> None:
    report = await run_conformance(
        UndeclaredNodeStream(node_name="vk-node"),
        clock=SystemClock(),
        wait_seconds=WAIT,
        only=["describe_consistent", "node_status_stream"],
    )
    assert report.result("describe_consistent").reason == (
        "undeclared capability 'node-status-stream': expected NotSupported, got success"
    )
    assert report.result("node_status_stream").reason == "capability 'node-status-stream' not declared"


# -- hung providers: every wait is bounded on the Clock ----------------------------------------


class HangingProvider(BrokenProvider):
    """Answers nothing: ping and create never return."""

    async def ping(self) -> None:
        await asyncio.Event().wait()

    async def create_pod(self, pod: Pod) -> None:
        await asyncio.Event().wait()


async def test_a_hung_provider_call_fails_the_case_within_its_budget_at_fake_speed() -> None:
    clock = FakeClock()
    run = asyncio.ensure_future(
        run_conformance(HangingProvider(), clock=clock, wait_seconds=30, only=["ping", "create_and_get"])
    )
    while not run.done():
        await clock.advance(30)
    report = run.result()
    assert report.result("ping").reason == "ping: no answer; the case did not finish within 120s"
    assert report.result("create_and_get").reason.startswith("create_pod conformance-")
    assert report.result("create_and_get").reason.endswith("no answer; the case did not finish within 120s")
    assert clock.monotonic() <= 2 * 120 + 30


# -- over gRPC: the SDK server and the client adapter -------------------------------------------


@contextlib.asynccontextmanager
async def served(provider: object) -> AsyncIterator[RunningServer]:
    server = await start_server(provider, address="127.0.0.1:0")  # type: ignore[arg-type]
    try:
        yield server
    finally:
        await server.stop(0)


@contextlib.asynccontextmanager
async def client_for(server: RunningServer) -> AsyncIterator[GrpcProvider]:
    client = GrpcProvider(
        parse_grpc_config(
            {"address": server.address, "insecure": True, "call_timeout": WAIT, "connect_timeout": WAIT}
        )
    )
    await client.connect()
    try:
        yield client
    finally:
        await client.close()


async def test_mock_provider_over_grpc_passes_or_skips_every_case() -> None:
    mock = MockProvider(node_name="vk-conformance")
    async with served(mock) as server, client_for(server) as client:
        report = await run_conformance(client, clock=SystemClock(), wait_seconds=WAIT, target=server.address)
    _assert_all_pass_or_skip(report)
    # Over the wire the pod without a UID is refused (INVALID_ARGUMENT -> InvalidInput).
    assert report.result("invalid_input_rejected").outcome is Outcome.PASS
    assert report.result("status_stream_running").outcome is Outcome.PASS
    assert report.result("node_status_stream").outcome is Outcome.PASS
    assert report.capabilities == mock.capabilities()
    assert await mock.list_pods() == []


async def test_broken_provider_over_grpc_fails_the_same_cases() -> None:
    async with served(BrokenProvider()) as server, client_for(server) as client:
        report = await run_conformance(client, clock=SystemClock(), wait_seconds=WAIT, target=server.address)
    failed = {r.name for r in report.results if r.outcome is Outcome.FAIL}
    assert failed == set(BROKEN_FAILURES), report.render()
    assert "expected exit code 7, got exit code 0" in report.result("exec_exit_code_and_stdin").reason


# -- the command, as a subprocess ---------------------------------------------------------------


def _script(name: str) -> str:
    path = Path(sys.executable).parent / name
    assert path.exists(), f"{path} is missing: reinstall the package (pip install -e .) to get its scripts"
    return str(path)


async def _run(*argv: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_command_exits_non_zero_with_a_readable_report_for_a_broken_provider() -> None:
    async with served(BrokenProvider()) as server:
        code, out, err = await _run(
            _script("vkubelet-provider-conformance"), "--address", server.address, "--timeout", str(WAIT)
        )
    assert code == 1, out + err
    assert re.search(
        r"^FAIL  exec_exit_code_and_stdin .*expected exit code 7, got exit code 0$", out, re.M
    ), out
    assert re.search(r"^FAIL  delete_idempotent .*expected NotFound or success, got ", out, re.M), out
    assert re.search(r"^PASS  ping ", out, re.M), out
    assert (
        f"{len(CASES)} cases: {len(CASES) - len(BROKEN_FAILURES) - 1} passed, "
        f"{len(BROKEN_FAILURES)} failed, 1 skipped" in out
    )


@contextlib.asynccontextmanager
async def provider_process(*argv: str) -> AsyncIterator[None]:
    """A provider command running until the block ends; it must then stop cleanly on SIGTERM."""
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        yield
    finally:
        if process.returncode is None:
            process.terminate()
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
        # SIGTERM is a graceful stop: exit 0 (anything else means the provider crashed).
        assert process.returncode == 0, stderr.decode()[-4000:]


async def _conformance_json(address: str) -> dict[str, Any]:
    # The command waits (up to --timeout) for the provider to answer Describe: no readiness poll.
    code, out, err = await _run(_script("vkubelet-provider-conformance"), "--address", address, "--json")
    assert code == 0, out + err
    report: dict[str, Any] = json.loads(out)
    assert report["ok"] is True and report["failed"] == 0
    return report


async def test_command_passes_against_the_mock_provider_process(tmp_path: Path) -> None:
    address = f"unix://{tmp_path}/mock.sock"
    mock = _script("vkubelet-mock-provider")
    async with provider_process(mock, "--listen", address, "--nodename", "vk-conformance"):
        report = await _conformance_json(address)
    outcomes = {case["name"]: case["outcome"] for case in report["cases"]}
    assert outcomes["invalid_input_rejected"] == "PASS"
    assert outcomes["status_stream_running"] == "PASS"
    assert {name for name, outcome in outcomes.items() if outcome == "SKIP"} == {
        "logs_contain_output",
        "exec_exit_code_and_stdin",
        "volumes_accepted",
    }


async def test_command_passes_every_case_against_the_process_provider(tmp_path: Path) -> None:
    address = f"unix://{tmp_path}/process.sock"
    command = _script("vkubelet-process-provider")
    async with provider_process(command, "--listen", address, "--root-dir", str(tmp_path / "pods")):
        report = await _conformance_json(address)
    # It runs real processes: logs and exec are exercised, nothing is skipped.
    assert report["passed"] == len(CASES), report


async def test_command_rejects_an_unknown_case_name() -> None:
    code, _, err = await _run(_script("vkubelet-provider-conformance"), "--address", "x:1", "--only", "nope")
    assert code == 2
    assert "unknown case(s) nope; known: describe_consistent" in err


async def test_command_reports_an_unreachable_provider(tmp_path: Path) -> None:
    address = f"unix://{tmp_path}/nobody.sock"
    code, out, err = await _run(
        _script("vkubelet-provider-conformance"), "--address", address, "--timeout", "0.5"
    )
    assert code == 3, out + err
    assert f"cannot use the provider at {address}" in err


def test_only_accepts_repeats_and_commas_and_tls_flags_are_checked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    options = parse_args(["--address", "h:1", "--only", "ping,create_and_get", "--only", "delete_removes"])
    assert options is not None
    assert options.only == ("ping", "create_and_get", "delete_removes")
    with pytest.raises(SystemExit) as exited:
        parse_args(["--address", "h:1", "--tls-cert", "c.pem", "--tls-key", "k.pem"])
    assert exited.value.code == 2
    assert "need --tls-ca" in capsys.readouterr().err
