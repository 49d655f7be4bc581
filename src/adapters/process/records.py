"""The provider's tables of pods, containers and runs, and building a container from its spec.

All of it is mutated on the provider's one event loop only.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from vkubelet.adapters.process.logs import LogWriter
from vkubelet.adapters.process.spawn import Pty
from vkubelet.adapters.process.volumes import VolumeMount
from vkubelet.domain.env import expand
from vkubelet.domain.pod import Pod
from vkubelet.domain.volumes import PodVolumes

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Every process we start carries this (value: the root dir), so a restarted provider can find
# and kill what a crashed one left behind (grandchildren escape PR_SET_PDEATHSIG).
ROOT_MARKER = "VKUBELET_PROCESS_PROVIDER_ROOT"


@dataclass(eq=False)
class Run:
    """One start of a container's main process."""

    process: asyncio.subprocess.Process
    log: LogWriter
    started: datetime
    started_monotonic: float
    subscribers: set[asyncio.Queue[tuple[str, bytes] | None]] = field(default_factory=set)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    code: int | None = None
    killed: bool = False  # stopped by kill_container: restarted even after a clean exit (OnFailure)
    killer: asyncio.Task[None] | None = None  # the SIGKILL after the grace period
    terminal: Pty | None = None  # tty: true (ephemeral containers): stdin and output go through it


@dataclass(eq=False)
class Container:
    spec: Mapping[str, Any]
    init: bool
    env: dict[str, str]
    argv: list[str] | None  # None: no command, cannot run
    cwd: Path
    log_dir: Path
    restart_count: int = 0
    runs: int = 0
    crashes: int = 0
    state: dict[str, Any] = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: dict[str, Any] = field(default_factory=dict)
    container_id: str = ""
    run: Run | None = None
    started_event: asyncio.Event = field(default_factory=asyncio.Event)
    mounts: tuple[VolumeMount, ...] = ()  # non-empty: runs in its own mount namespace
    blocked: str = ""  # why it cannot run (its waiting state says so)
    ephemeral: bool = False  # kubectl debug's: started once, never restarted (:mod:`.ephemeral`)
    entered: bool = False  # runs in another container's mount namespace (an ephemeral's target)

    @property
    def name(self) -> str:
        return str(self.spec.get("name") or "")

    @property
    def runnable(self) -> bool:
        return self.argv is not None and not self.blocked

    def block(self, message: str) -> None:
        self.blocked = message
        self.state = {"waiting": {"reason": "CreateContainerConfigError", "message": message}}

    @property
    def sidecar(self) -> bool:
        return self.init and self.spec.get("restartPolicy") == "Always"

    def log_path(self, index: int) -> Path:
        return self.log_dir / f"{index}.log"


@dataclass(eq=False)
class PodEntry:
    pod: Pod
    directory: Path
    containers: dict[str, Container]
    start_time: str
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    initialized: bool = False
    init_failed: bool = False
    deleted: bool = False
    transitions: dict[str, tuple[str, str]] = field(default_factory=dict)  # type -> (status, time)
    task: asyncio.Task[None] | None = None
    terminator: asyncio.Task[None] | None = None
    status: dict[str, Any] = field(default_factory=dict)
    volumes: PodVolumes | None = None  # None: not handed over, volumeMounts are not made
    volume_lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one writer of the volume dirs
    volumes_removed: bool = False
    ephemeral_tasks: set[asyncio.Task[Any]] = field(default_factory=set)  # their single runs

    @property
    def volume_dir(self) -> Path:
        return self.directory / "volumes"

    @property
    def init_containers(self) -> list[Container]:
        return [c for c in self.containers.values() if c.init]

    @property
    def main_containers(self) -> list[Container]:
        return [c for c in self.containers.values() if not c.init and not c.ephemeral]

    @property
    def ephemeral_containers(self) -> list[Container]:
        return [c for c in self.containers.values() if c.ephemeral]


def new_container(
    spec: Mapping[str, Any],
    *,
    init: bool,
    pod: Pod,
    work: Path,
    log_root: Path,
    root: Path,
    api_server: tuple[str, int] | None,
) -> Container:
    env = {
        "PATH": os.environ.get("PATH") or DEFAULT_PATH,
        "HOSTNAME": pod.ref.name,
        ROOT_MARKER: str(root.resolve()),
    }
    for variable in spec.get("env") or ():
        if "value" in variable or "valueFrom" not in variable:
            env[str(variable["name"])] = str(variable.get("value") or "")
    if api_server is not None:
        # After the pod's env: vkubelet's service links put the `kubernetes` Service's cluster IP
        # here, which does not route on this host network (no kube-proxy); the real address does.
        env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"] = api_server[0], str(api_server[1])
    command = [str(part) for part in spec.get("command") or ()]
    args = [str(part) for part in spec.get("args") or ()]
    argv = [expand(part, env.get) for part in command + args] if command else None
    name = str(spec.get("name") or "")
    cwd = Path(str(spec["workingDir"])) if spec.get("workingDir") else work
    container = Container(spec=spec, init=init, env=env, argv=argv, cwd=cwd, log_dir=log_root / name)
    if argv is None:
        container.state = {
            "waiting": {
                "reason": "CreateContainerConfigError",
                "message": f"container {name} has no command: the process provider ignores images, "
                "so there is no entrypoint to run; set command (and args)",
            }
        }
    return container
