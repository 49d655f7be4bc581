"""Issue 13 end to end: `kubectl debug` against a process-provider pod on the whole local cluster.

kubectl debug adds an ephemeral container through the pods/ephemeralcontainers subresource,
waits for its status to show it running, then attaches to it. vkubelet hands the new spec to the
provider with update_pod, which starts the container once (the image is ignored: the host's `sh`
runs) and reports it in status.ephemeralContainerStatuses. One run with stdin only (`-i`), one
interactive (`-it`) driven through a real pseudo-terminal, as a person at a terminal would.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import socket
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.pods import namespace_with_ready_pod
from tests.e2e.test_whole_cluster import is_ready
from tests.e2e.vkubelet_process import VkubeletProcess, process_provider_daemon, wait_for

NODE = "vk-e2e-debug"
POD = "box"
DEADLINE = 90.0


daemon = process_provider_daemon(NODE, {"cpu": "2", "memory": "4Gi", "pods": "10"})


@pytest.fixture
def namespace(control_plane: Any, daemon: VkubeletProcess) -> Iterator[str]:
    with namespace_with_ready_pod(control_plane, prefix="debug", node=NODE, pod=POD) as name:
        yield name


def pod_json(control_plane: Any, namespace: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(
        control_plane.kubectl("get", f"pod/{POD}", "-n", namespace, "-o", "json").stdout
    )
    return found


def debug_status(control_plane: Any, namespace: str, name: str) -> dict[str, Any] | None:
    statuses = pod_json(control_plane, namespace)["status"].get("ephemeralContainerStatuses") or ()
    return next((s for s in statuses if s["name"] == name), None)


def terminated(control_plane: Any, namespace: str, name: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        status = debug_status(control_plane, namespace, name)
        return status if status is not None and "terminated" in status["state"] else None

    found: dict[str, Any] = wait_for(check, timeout=30, what=f"ephemeral container {name} terminated")
    return found


def kubectl_command(control_plane: Any, *args: str) -> list[str]:
    return [str(control_plane.binaries.kubectl), f"--kubeconfig={control_plane.kubeconfig_path}", *args]


def test_kubectl_debug_with_stdin_runs_the_command_on_the_host(control_plane: Any, namespace: str) -> None:
    result = subprocess.run(
        kubectl_command(
            control_plane,
            "debug",
            "-i",
            "-n",
            namespace,
            POD,
            "--image=busybox",
            "--container=dbg",
            "--",
            "sh",
            "-c",
            "echo hello-from-debug; hostname",
        ),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=DEADLINE,
    )
    assert result.returncode == 0, result.stderr
    # Attached, or (the command may end before the attach) from its logs, as kubectl falls back.
    lines = result.stdout.decode().splitlines()
    assert lines[-2:] == ["hello-from-debug", socket.gethostname()], result  # the host's: images are ignored

    status = terminated(control_plane, namespace, "dbg")
    assert status["state"]["terminated"]["exitCode"] == 0
    assert (status["restartCount"], status["image"]) == (0, "busybox")
    pod = pod_json(control_plane, namespace)
    debug = next(c for c in pod["spec"]["ephemeralContainers"] if c["name"] == "dbg")
    assert debug["command"] == ["sh", "-c", "echo hello-from-debug; hostname"] and debug["stdin"] is True
    assert is_ready(pod) and pod["status"]["phase"] == "Running"  # the pod itself is untouched
    logs = control_plane.kubectl("logs", "-n", namespace, POD, "-c", "dbg").stdout
    assert logs.splitlines()[0] == "hello-from-debug"


def test_kubectl_debug_with_stdin_feeds_the_attached_command(control_plane: Any, namespace: str) -> None:
    # The command waits for its input, so this one is read through the attach, never the logs.
    result = subprocess.run(
        kubectl_command(
            control_plane,
            "debug",
            "-i",
            "-n",
            namespace,
            POD,
            "--image=busybox",
            "--container=reader",
            "--",
            "sh",
            "-c",
            'read line; echo "got $line"; exit 3',
        ),
        input=b"piped\n",
        capture_output=True,
        timeout=DEADLINE,
    )
    assert result.stdout.decode().splitlines()[-1:] == ["got piped"], result
    assert terminated(control_plane, namespace, "reader")["state"]["terminated"]["exitCode"] == 3


class Terminal:
    """A program run on a pseudo-terminal of 40x120, as from a person's terminal emulator."""

    def __init__(self, argv: list[str], *, stderr: Path) -> None:
        self.leader, follower = pty.openpty()
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        with stderr.open("wb") as errors:
            self.process = subprocess.Popen(argv, stdin=follower, stdout=follower, stderr=errors)
        os.close(follower)
        self.output = bytearray()
        self.closed = False

    def type(self, text: str) -> None:
        os.write(self.leader, text.encode())

    def read(self, timeout: float) -> None:
        """Collect what arrives within ``timeout`` seconds."""
        ready, _, _ = select.select([self.leader], [], [], timeout)
        if not ready:
            return
        try:
            chunk = os.read(self.leader, 4096)
        except OSError:  # EIO: the program exited and the terminal is gone
            chunk = b""
        if not chunk:
            self.closed = True
        self.output += chunk

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        os.close(self.leader)


def test_kubectl_debug_it_is_an_interactive_shell(control_plane: Any, namespace: str, tmp_path: Path) -> None:
    stderr = tmp_path / "kubectl.stderr"
    terminal = Terminal(
        kubectl_command(
            control_plane,
            "debug",
            "-it",
            "-n",
            namespace,
            POD,
            "--image=busybox",
            "--container=dbg",
            "--",
            "sh",
        ),
        stderr=stderr,
    )
    try:
        wait_for(
            lambda: (
                (s := debug_status(control_plane, namespace, "dbg")) is not None and "running" in s["state"]
            ),
            timeout=60,
            what="the debug shell running",
        )
        # Typed again until answered: the first line may go out before the attach is up.
        deadline = time.monotonic() + DEADLINE
        while b"42\r\n" not in terminal.output:
            assert time.monotonic() < deadline and not terminal.closed, (terminal.output, stderr.read_text())
            terminal.type("echo $((6*7))\r")
            typed = time.monotonic()
            while b"42\r\n" not in terminal.output and time.monotonic() - typed < 3 and not terminal.closed:
                terminal.read(0.2)
        terminal.type("stty size; exit\r")
        while not terminal.closed and time.monotonic() < deadline:
            terminal.read(0.5)
        assert terminal.process.wait(timeout=30) == 0, (terminal.output, stderr.read_text())
    finally:
        terminal.close()
    assert b"40 120" in terminal.output, terminal.output  # kubectl passed our terminal's size on

    status = terminated(control_plane, namespace, "dbg")
    assert (status["state"]["terminated"]["exitCode"], status["restartCount"]) == (0, 0)
    debug = next(c for c in pod_json(control_plane, namespace)["spec"]["ephemeralContainers"])
    assert (debug["stdin"], debug["tty"]) == (True, True)
    # Never restarted: the status stays terminated (checked again after a status round trip).
    control_plane.kubectl("label", "pod", POD, "-n", namespace, "touched=yes")
    wait_for(
        lambda: pod_json(control_plane, namespace)["metadata"]["labels"].get("touched") == "yes",
        timeout=30,
        what="the label",
    )
    again = debug_status(control_plane, namespace, "dbg")
    assert again is not None and again["state"] == status["state"] and again["restartCount"] == 0
