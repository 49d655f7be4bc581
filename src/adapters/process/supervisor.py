"""Running a pod's containers: init containers in order (sidecars kept running), then the
regular ones; each run's output pumped into its log and to attached sessions; restarts by
``restartPolicy`` with the kubelet's crash-loop back-off (:class:`~vkubelet.domain.backoff.Backoff`,
forgotten after a run of ten minutes).

The supervisor owns no tables: it works on the :class:`~.records.PodEntry` it is handed and tells
the provider through callbacks (a status change to publish, volumes to write, a run's CPU to retire).
"""

from __future__ import annotations

import asyncio
import errno
import signal
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from vkubelet.adapters.process import ephemeral
from vkubelet.adapters.process.logs import LogWriter, remove_quietly
from vkubelet.adapters.process.records import Container, PodEntry, Run
from vkubelet.adapters.process.spawn import Pty, resolvable, signal_tree, spawn
from vkubelet.adapters.process.streams import drain
from vkubelet.adapters.process.volumes import bind_mounts
from vkubelet.application.ports.runtime import Clock
from vkubelet.domain.backoff import Backoff
from vkubelet.domain.container_status import exit_code, terminated_reason
from vkubelet.domain.pod import format_time

_BACKOFF_RESET_SECONDS = 600.0  # the kubelet forgets a container's back-off after 10 quiet minutes


class Supervisor:
    """Starts, reaps and restarts the containers of the pods it is given, on the provider's loop."""

    def __init__(
        self,
        *,
        clock: Clock,
        backoff: Backoff,
        publish: Callable[[PodEntry], None],
        sync_volumes: Callable[[PodEntry], Awaitable[dict[str, str]]],
        retire: Callable[[int], None],
    ) -> None:
        """``publish``: the entry's status changed; ``sync_volumes``: write its volumes, return
        the failed ones with why; ``retire``: the run led by this pid ended (its CPU is counted)."""
        self._clock = clock
        self._backoff = backoff
        self._publish = publish
        self._sync_volumes = sync_volumes
        self._retire = retire

    async def run_pod(self, entry: PodEntry) -> None:
        """Write the volumes, run the init containers, then the regular ones until none will be
        restarted or the pod stops; the sidecars are stopped last."""
        if entry.volumes is not None:
            failed = await self._sync_volumes(entry)
            if failed:
                for container in entry.containers.values():
                    problems = [failed[m.volume] for m in container.mounts if m.volume in failed]
                    if problems and container.runnable:
                        container.block("; ".join(dict.fromkeys(problems)))
                self._publish(entry)
        sidecars: list[asyncio.Task[bool]] = []
        try:
            for container in entry.init_containers:
                if entry.stopping.is_set():
                    return
                if container.sidecar:
                    sidecars.append(asyncio.create_task(self._supervise(entry, container, "Always")))
                    await self._until_stopped(entry, container.started_event.wait())
                    continue
                policy = "Never" if entry.pod.restart_policy == "Never" else "OnFailure"
                if not await self._supervise(entry, container, policy):
                    if not entry.stopping.is_set():
                        entry.init_failed = True
                        self._publish(entry)
                    return
            entry.initialized = True
            self._publish(entry)
            await asyncio.gather(
                *(self._supervise(entry, c, entry.pod.restart_policy) for c in entry.main_containers)
            )
        finally:
            if sidecars and not entry.stopping.is_set():
                # The regular containers are done for good: sidecars stop (and stay stopped).
                entry.stopping.set()
                for container in entry.init_containers:
                    if container.run is not None and container.run.code is None:
                        signal_tree(container.run.process.pid, signal.SIGTERM)
            await asyncio.gather(*sidecars, return_exceptions=True)

    def _target_namespace(self, entry: PodEntry, container: Container) -> int | None:
        """The pid whose mount namespace an ephemeral container joins: its target's, when that
        container has one (volume mounts); None to run in the host's. OSError when the target
        has one but is not running."""
        target = entry.containers.get(str(container.spec.get("targetContainerName") or ""))
        if not container.ephemeral or container.mounts or target is None or not target.mounts:
            return None
        run = target.run
        if run is None or run.code is not None or run.process.returncode is not None:
            raise OSError(errno.ESRCH, f"target container {target.name} is not running")
        return run.process.pid

    async def _supervise(self, entry: PodEntry, container: Container, policy: str) -> bool:
        """Run ``container`` until it will not be restarted; True when it last exited 0."""
        if not container.runnable:
            await entry.stopping.wait()  # the waiting state set at creation says why
            return False
        while True:
            code, ran_for = await self.run_once(entry, container)
            if entry.stopping.is_set():
                return code == 0
            # The run that just ended (a failed start keeps an older one, but exits 128 anyway).
            killed = container.run is not None and container.run.killed
            if policy == "Never" or (policy == "OnFailure" and code == 0 and not killed):
                return code == 0
            if ran_for >= _BACKOFF_RESET_SECONDS:
                container.crashes = 0
            container.crashes += 1
            delay = self._backoff.delay(container.crashes)
            container.last_state = container.state
            container.state = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off {delay:g}s restarting failed container={container.name} "
                    f"pod={entry.pod.ref.name}_{entry.pod.ref.namespace}({entry.pod.ref.uid})",
                }
            }
            self._publish(entry)
            if not await self._until_stopped(entry, self._clock.sleep(delay)):
                return code == 0
            container.restart_count += 1

    async def run_once(self, entry: PodEntry, container: Container) -> tuple[int, float]:
        """Start one run and wait for its end: (exit code, seconds it ran)."""
        assert container.argv is not None
        index = container.runs
        container.runs += 1
        remove_quietly(container.log_path(index - 2))  # keep the current and the previous run
        writer = LogWriter(container.log_path(index))
        started, started_monotonic = self._clock.now(), self._clock.monotonic()
        terminal = None
        try:
            binds = None
            namespace_of = self._target_namespace(entry, container)
            container.entered = namespace_of is not None
            if container.mounts:
                # Resolved now, on this host; the working dir and the command are looked up
                # inside the new namespace, where the volumes are.
                assert entry.volumes is not None
                binds = bind_mounts(container.mounts, root=entry.volume_dir, volumes=entry.volumes)
            elif namespace_of is None:  # else they are looked up in the namespace it joins
                container.cwd.mkdir(parents=True, exist_ok=True)
                if not resolvable(container.argv[0], env=container.env, cwd=container.cwd):
                    raise FileNotFoundError(errno.ENOENT, "executable file not found", container.argv[0])
            if container.ephemeral and container.spec.get("tty"):
                terminal = Pty()
            stdin, stdout, stderr = ephemeral.stdio(container.spec, terminal)
            process = await spawn(
                container.argv,
                env={"TERM": "xterm", **container.env} if terminal else container.env,
                cwd=container.cwd,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                controlling_tty=terminal is not None,
                mounts=binds,
                namespace_of=namespace_of,
            )
        except OSError as error:
            if terminal is not None:
                terminal.close()
            message = f"failed to start {container.argv[0]!r}: {error}"
            writer.write("stderr", message.encode(), complete=True, moment=started)
            writer.close()
            self._terminated(container, 128, started, reason="StartError", message=message)
            self._publish(entry)
            return 128, 0.0
        run = Run(process=process, log=writer, started=started, started_monotonic=started_monotonic)
        run.terminal = terminal
        container.run = run
        if entry.stopping.is_set():
            signal_tree(process.pid, signal.SIGTERM)  # deleted while it was starting
        container.container_id = f"process://{process.pid}"
        container.state = {"running": {"startedAt": format_time(started)}}
        container.started_event.set()
        self._publish(entry)
        if terminal is not None:
            terminal.close_slave()  # the process holds it now: its exit ends the output
            pumps = [asyncio.create_task(self._pump(run, ephemeral.TerminalReader(terminal), "stdout"))]
        else:
            assert process.stdout is not None and process.stderr is not None
            pumps = [
                asyncio.create_task(self._pump(run, process.stdout, "stdout")),
                asyncio.create_task(self._pump(run, process.stderr, "stderr")),
            ]
        returncode = await process.wait()
        signal_tree(process.pid, signal.SIGKILL)  # the container ends with its main process
        await drain(pumps)
        if terminal is not None:
            terminal.close()
        code = exit_code(returncode)
        run.code = code
        writer.close()
        for queue in run.subscribers:
            queue.put_nowait(None)
        run.ended.set()
        self._retire(process.pid)
        self._terminated(container, code, started, reason=terminated_reason(code))
        self._publish(entry)
        return code, self._clock.monotonic() - started_monotonic

    async def _pump(
        self, run: Run, reader: asyncio.StreamReader | ephemeral.TerminalReader, stream: str
    ) -> None:
        while chunk := await reader.read(65536):
            for queue in run.subscribers:
                queue.put_nowait((stream, chunk))
            # Nothing is held back: output after the last newline is logged now as a fragment
            # (a CRI "P" record, as runtimes write it), and its line's rest follows in later records.
            *lines, partial = chunk.split(b"\n")
            now = self._clock.now()
            for line in lines:
                run.log.write(stream, line, complete=True, moment=now)
            if partial:
                run.log.write(stream, partial, complete=False, moment=now)

    def _terminated(
        self, container: Container, code: int, started: datetime, *, reason: str, message: str = ""
    ) -> None:
        terminated: dict[str, Any] = {
            "exitCode": code,
            "reason": reason,
            "startedAt": format_time(started),
            "finishedAt": format_time(self._clock.now()),
        }
        if message:
            terminated["message"] = message
        if container.container_id:
            terminated["containerID"] = container.container_id
        container.state = {"terminated": terminated}

    async def _until_stopped(self, entry: PodEntry, awaitable: Any) -> bool:
        """Await ``awaitable`` unless the pod starts stopping first; True when it completed."""
        work = asyncio.ensure_future(awaitable)
        stop = asyncio.create_task(entry.stopping.wait())
        try:
            await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (work, stop):
                task.cancel()
        return work.done() and not work.cancelled()

    async def _until_ended(self, run: Run, awaitable: Any) -> None:
        """Await ``awaitable`` unless ``run`` ends first."""
        work = asyncio.ensure_future(awaitable)
        ended = asyncio.create_task(run.ended.wait())
        try:
            await asyncio.wait({work, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (work, ended):
                task.cancel()

    async def kill_after(self, run: Run, grace: float) -> None:
        """SIGKILL ``run``'s tree unless it ended within ``grace`` seconds of its SIGTERM."""
        await self._until_ended(run, self._clock.sleep(grace))
        if run.code is None and run.process.returncode is None:
            signal_tree(run.process.pid, signal.SIGKILL)
