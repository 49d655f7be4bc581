"""Conformance cases about a running container: stats and resource metrics, logs, exec, volumes,
kill and restart."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vkubelet.application.conformance.harness import (
    CONTAINER,
    CaseContext,
    ScriptedIO,
    WaitExpired,
    aclose,
    await_within,
    expect_error,
    phase_text,
    unknown_ref,
)
from vkubelet.application.conformance.report import CaseFailed
from vkubelet.application.ports.provider import Provider
from vkubelet.application.ports.streams import LogOptions
from vkubelet.domain.errors import InvalidInput, NotFound
from vkubelet.domain.pod import Pod, PodPhase
from vkubelet.domain.provider import Capability, MetricFamily
from vkubelet.domain.volumes import EmptyDirVolume, FileVolume, PodVolumes, VolumeFile

LOG_MARKER = b"conformance"
MAX_LOG_BYTES = 1 << 20  # stop reading a log after this much


async def stats_summary_has_pod(provider: Provider, ctx: CaseContext) -> None:
    """The kubelet Summary lists the running pod with its podRef, container, CPU and memory."""
    pod = ctx.new_pod()
    await ctx.create(pod)
    await ctx.wait_running(pod)
    last: list[Mapping[str, Any]] = []

    async def listed() -> tuple[bool, str]:
        summary = await provider.stats_summary()
        last[:] = [summary]
        entries = [p for p in summary.get("pods") or () if (p.get("podRef") or {}).get("uid") == pod.ref.uid]
        return bool(entries), f"{len(summary.get('pods') or ())} pods, none with UID {pod.ref.uid}"

    ctx.step("stats_summary until it lists the pod")
    await ctx.eventually(listed, what=f"stats_summary listing {pod.ref}")
    summary = last[0]
    node = summary.get("node")
    if not isinstance(node, Mapping):
        raise CaseFailed("stats_summary().node", expected="an object", got=repr(node))
    entry = next(p for p in summary["pods"] if p["podRef"]["uid"] == pod.ref.uid)
    pod_ref = entry["podRef"]
    if (pod_ref.get("namespace"), pod_ref.get("name")) != (pod.ref.namespace, pod.ref.name):
        raise CaseFailed(
            "stats_summary podRef",
            expected=f"{pod.ref.namespace}/{pod.ref.name}",
            got=f"{pod_ref.get('namespace')}/{pod_ref.get('name')}",
        )
    containers = {c.get("name"): c for c in entry.get("containers") or ()}
    if CONTAINER not in containers:
        raise CaseFailed(
            f"stats_summary containers of {pod.ref}",
            expected=f"container {CONTAINER!r}",
            got=f"containers {sorted(map(str, containers))}",
        )
    container = containers[CONTAINER]
    for section, key in (("cpu", "usageCoreNanoSeconds"), ("memory", "workingSetBytes")):
        value = (container.get(section) or {}).get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise CaseFailed(
                f"stats_summary container {CONTAINER!r} {section}.{key}",
                expected="a non-negative integer",
                got=repr(value),
            )
        if section not in entry:
            raise CaseFailed(f"stats_summary pod {pod.ref}", expected=f"a {section!r} object", got="none")


_POD_FAMILIES = {
    "pod_cpu_usage_seconds_total": "counter",
    "pod_memory_working_set_bytes": "gauge",
}
_CONTAINER_FAMILIES = {
    "container_cpu_usage_seconds_total": "counter",
    "container_memory_working_set_bytes": "gauge",
}
_NODE_FAMILIES = {
    "node_cpu_usage_seconds_total": "counter",
    "node_memory_working_set_bytes": "gauge",
}


async def metrics_resource_has_pod(provider: Provider, ctx: CaseContext) -> None:
    """/metrics/resource families with the kubelet's names, types and container/namespace/pod
    labels, including the running pod."""
    pod = ctx.new_pod()
    await ctx.create(pod)
    await ctx.wait_running(pod)
    want_pod = {"namespace": pod.ref.namespace, "pod": pod.ref.name}
    want_container = {**want_pod, "container": CONTAINER}
    families: dict[str, MetricFamily] = {}

    def has(name: str, labels: Mapping[str, str]) -> bool:
        family = families.get(name)
        return family is not None and any(
            all(s.labels.get(k) == v for k, v in labels.items()) for s in family.samples
        )

    async def listed() -> tuple[bool, str]:
        families.clear()
        families.update({f.name: f for f in await provider.metrics_resource()})
        missing = [n for n in _POD_FAMILIES if not has(n, want_pod)]
        missing += [n for n in _CONTAINER_FAMILIES if not has(n, want_container)]
        return not missing, f"no sample for the pod in {', '.join(missing)}"

    ctx.step("metrics_resource until it has the pod")
    await ctx.eventually(listed, what=f"metrics_resource samples labelled with {pod.ref}")
    for name, kind in {**_NODE_FAMILIES, **_POD_FAMILIES, **_CONTAINER_FAMILIES}.items():
        family = families.get(name)
        if family is None:
            raise CaseFailed("metrics_resource", expected=f"family {name}", got="none")
        if family.type != kind:
            raise CaseFailed(f"metrics_resource family {name}", expected=f"type {kind}", got=family.type)


async def logs_contain_output(provider: Provider, ctx: CaseContext) -> None:
    """The running container's log contains what its command printed ("conformance")."""
    pod = ctx.new_pod()
    await ctx.create(pod)
    await ctx.wait_running(pod)

    async def read_log() -> tuple[bool, str]:
        data = bytearray()
        stream = provider.container_logs(pod.ref, CONTAINER, LogOptions())
        try:
            async for chunk in stream:
                data += chunk
                if LOG_MARKER in data or len(data) >= MAX_LOG_BYTES:
                    break
        finally:
            await aclose(stream)
        return LOG_MARKER in data, repr(bytes(data[:200])) if data else "an empty log"

    async def probe() -> tuple[bool, str]:
        try:
            return await await_within(ctx.clock, ctx.timeout, read_log())
        except WaitExpired:
            return False, f"the non-follow log read did not end within {ctx.timeout:g}s"

    ctx.step(f"container_logs {pod.ref} {CONTAINER}")
    await ctx.eventually(probe, what=f"log of {pod.ref} container {CONTAINER!r} containing 'conformance'")


async def exec_exit_code_and_stdin(provider: Provider, ctx: CaseContext) -> None:
    """exec returns the command's exit code (``sh -c 'exit 7'`` -> 7) and passes stdin through
    (``cat`` echoes it)."""
    pod = ctx.new_pod()
    await ctx.create(pod)
    await ctx.wait_running(pod)
    command = ["sh", "-c", "exit 7"]
    ctx.step(f"exec {command} in {pod.ref}")
    code = await provider.exec_in_container(pod.ref, CONTAINER, command, ScriptedIO())
    if code != 7:
        raise CaseFailed(f"exec of {command!r}", expected="exit code 7", got=f"exit code {code!r}")
    payload = b"conformance stdin\n"
    io = ScriptedIO([payload])
    ctx.step(f"exec ['cat'] with stdin in {pod.ref}")
    code = await provider.exec_in_container(pod.ref, CONTAINER, ["cat"], io)
    if code != 0 or bytes(io.out) != payload:
        raise CaseFailed(
            "exec of ['cat'] with stdin",
            expected=f"exit code 0 and stdout {payload!r}",
            got=f"exit code {code!r} and stdout {bytes(io.out[:200])!r}",
        )


def _greeting_volumes(text: bytes) -> PodVolumes:
    return PodVolumes(
        files=(
            FileVolume(name="greeting", kind="configMap", files=(VolumeFile(path="hello.txt", data=text),)),
        ),
        empty_dirs=(EmptyDirVolume(name="scratch"),),
    )


async def volumes_accepted(provider: Provider, ctx: CaseContext) -> None:
    """set_pod_volumes before create_pod is taken; a path leaving the volume is InvalidInput.
    With EXEC too: the container reads the file at its mountPath, and a second
    set_pod_volumes with new contents shows in the running container (swapped in place)."""
    pod = ctx.new_pod()
    mount_path = f"/tmp/vkubelet-conformance-{pod.ref.uid}"
    manifest = dict(pod.manifest)
    spec = dict(manifest["spec"])
    container = dict(spec["containers"][0])
    container["volumeMounts"] = [
        {"name": "greeting", "mountPath": mount_path, "readOnly": True},
        {"name": "scratch", "mountPath": f"{mount_path}-scratch"},
    ]
    spec["containers"] = [container]
    spec["volumes"] = [
        {"name": "greeting", "configMap": {"name": "greeting"}},
        {"name": "scratch", "emptyDir": {}},
    ]
    manifest["spec"] = spec
    pod = Pod(pod.ref, manifest)
    ctx.step(f"set_pod_volumes {pod.ref} with a path that leaves the volume")
    escaping = PodVolumes(
        files=(FileVolume("greeting", "configMap", (VolumeFile(path="../escape", data=b"x"),)),)
    )
    await expect_error(
        "set_pod_volumes with the file path '../escape'",
        provider.set_pod_volumes(pod.ref, escaping),
        (InvalidInput,),
        clock=ctx.clock,
        within=ctx.timeout,
    )
    ctx.step(f"set_pod_volumes {pod.ref}")
    await await_within(ctx.clock, ctx.timeout, provider.set_pod_volumes(pod.ref, _greeting_volumes(b"hello")))
    await ctx.create(pod)
    await ctx.wait_running(pod)
    if Capability.EXEC not in provider.capabilities():
        ctx.note("no EXEC: the mounted contents are not checked")
        return

    async def reads(expected: bytes) -> tuple[bool, str]:
        io = ScriptedIO()
        code = await provider.exec_in_container(pod.ref, CONTAINER, ["cat", f"{mount_path}/hello.txt"], io)
        return code == 0 and bytes(io.out) == expected, f"exit code {code}, stdout {bytes(io.out[:100])!r}"

    ctx.step(f"exec cat {mount_path}/hello.txt")
    await ctx.eventually(lambda: reads(b"hello"), what=f"{mount_path}/hello.txt reading 'hello'")
    ctx.step(f"set_pod_volumes {pod.ref} with new contents")
    await await_within(
        ctx.clock, ctx.timeout, provider.set_pod_volumes(pod.ref, _greeting_volumes(b"changed"))
    )
    await ctx.eventually(lambda: reads(b"changed"), what=f"{mount_path}/hello.txt reading 'changed' in place")


KILLED_EXIT_CODES = (137, 143)  # 128 + SIGKILL, 128 + SIGTERM


def _container_status(status: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    for entry in status.get("containerStatuses") or ():
        if isinstance(entry, Mapping) and entry.get("name") == name:
            return entry
    return {}


def _state_text(container: Mapping[str, Any]) -> str:
    state = ", ".join(sorted((container.get("state") or {}).keys())) or "no state"
    last = ", ".join(sorted((container.get("lastState") or {}).keys())) or "none"
    return f"state {state}, lastState {last}, restartCount {container.get('restartCount')!r}"


def _check_killed_run(ctx: CaseContext, what: str, terminated: Mapping[str, Any]) -> None:
    """A killed run must end non-zero; the contract's 137/143 and ``Error`` are noted when off."""
    code = terminated.get("exitCode")
    if not isinstance(code, int) or isinstance(code, bool) or code == 0:
        raise CaseFailed(f"{what} exitCode", expected="non-zero (137 or 143)", got=repr(code))
    if code not in KILLED_EXIT_CODES or terminated.get("reason") != "Error":
        ctx.note(
            f"{what}: exit code {code}, reason {terminated.get('reason')!r} (expected 137 or 143, 'Error')"
        )


async def kill_container_restarts(provider: Provider, ctx: CaseContext) -> None:
    """kill_container of an unknown pod or container is NotFound. With restartPolicy Never the
    killed container stays terminated (exit code non-zero) and the pod turns Failed; with Always
    ``lastState.terminated`` holds the killed run and the container runs again with restartCount
    1 (a back-off longer than the kit waits is noted, not failed)."""
    ctx.step("kill_container of an unknown pod")
    await expect_error(
        "kill_container of an unknown pod",
        provider.kill_container(unknown_ref(ctx), CONTAINER, grace_period_seconds=1),
        (NotFound,),
        clock=ctx.clock,
        within=ctx.timeout,
    )
    always = ctx.new_pod()
    never = ctx.new_pod()
    manifest = dict(never.manifest)
    manifest["spec"] = {**manifest["spec"], "restartPolicy": "Never"}
    never = Pod(never.ref, manifest)
    await ctx.create(always)
    await ctx.create(never)
    await ctx.wait_running(always)
    await ctx.wait_running(never)
    ctx.step(f"kill_container {always.ref} of an unknown container")
    await expect_error(
        "kill_container of an unknown container",
        provider.kill_container(always.ref, f"{CONTAINER}-unknown", grace_period_seconds=1),
        (NotFound,),
        clock=ctx.clock,
        within=ctx.timeout,
    )
    for pod in (never, always):
        ctx.step(f"kill_container {pod.ref} {CONTAINER}")
        await await_within(
            ctx.clock, ctx.timeout, provider.kill_container(pod.ref, CONTAINER, grace_period_seconds=1)
        )

    async def stopped() -> tuple[bool, str]:
        status = await provider.get_pod_status(never.ref)
        container = _container_status(status, CONTAINER)
        done = "terminated" in (container.get("state") or {}) and status.get("phase") == PodPhase.FAILED.value
        return done, f"phase {phase_text(status)}, {_state_text(container)}"

    ctx.step(f"get_pod_status {never.ref} until Failed (restartPolicy Never)")
    await ctx.eventually(stopped, what=f"killed container of {never.ref} terminated and the pod Failed")
    container = _container_status(await provider.get_pod_status(never.ref), CONTAINER)
    _check_killed_run(ctx, f"{never.ref} state.terminated", container["state"]["terminated"])

    async def exited() -> tuple[bool, str]:
        container = _container_status(await provider.get_pod_status(always.ref), CONTAINER)
        return bool((container.get("lastState") or {}).get("terminated")), _state_text(container)

    ctx.step(f"get_pod_status {always.ref} until lastState.terminated (restartPolicy Always)")
    await ctx.eventually(exited, what=f"lastState.terminated of the killed container of {always.ref}")
    container = _container_status(await provider.get_pod_status(always.ref), CONTAINER)
    _check_killed_run(ctx, f"{always.ref} lastState.terminated", container["lastState"]["terminated"])
    if "terminated" in (container.get("state") or {}):
        raise CaseFailed(
            f"container {CONTAINER!r} of {always.ref} (restartPolicy Always)",
            expected="running again or waiting to restart",
            got=_state_text(container),
        )

    async def restarted() -> tuple[bool, str]:
        container = _container_status(await provider.get_pod_status(always.ref), CONTAINER)
        running = "running" in (container.get("state") or {})
        return running and container.get("restartCount") == 1, _state_text(container)

    ctx.step(f"get_pod_status {always.ref} until it runs again with restartCount 1")
    waiting = (container.get("state") or {}).get("waiting") or {}
    try:
        await ctx.eventually(
            restarted, what=f"the killed container of {always.ref} running with restartCount 1"
        )
    except CaseFailed:
        if waiting.get("reason") != "CrashLoopBackOff":
            raise
        ctx.note(
            f"{always.ref} was still in CrashLoopBackOff after {ctx.timeout:g}s: its restart was not seen"
        )
