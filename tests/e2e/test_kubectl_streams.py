"""Real kubectl -> real kube-apiserver -> our kubelet API (in process, TLS) for exec, attach and
port-forward, with kubectl's WebSocket path and with SPDY forced.

The provider is the hand-written fake of tests/fakes/streams.py (``echo`` echoes stdin and exits
7, ``resize`` reports the terminal size, attach prints ``attached``, port-forward echoes
``<port>:data``), so these tests prove the wire protocols against the Go implementations the API
server and kubectl use, independently of any process provider.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from aiohttp.typedefs import Handler

from tests.e2e.network import TestNetwork
from tests.e2e.vkubelet_process import (
    ProviderProcess,
    VkubeletProcess,
    free_port,
    service_account_kubeconfig,
    wait_for,
)
from tests.fakes.streams import StreamingProvider
from vkubelet.adapters.kubeletapi.server import KubeletServer
from vkubelet.adapters.kubeletapi.tls import server_tls
from vkubelet.application.kubelet_api import KubeletApi
from vkubelet.domain.pod import Pod
from vkubelet.entrypoints.localcluster.cluster import LocalCluster

DEADLINE = 60.0


@dataclass(frozen=True)
class Transport:
    """How kubectl talks to the API server, and whether the node declares the 1.36
    ExtendWebSocketsToKubelet feature (then the API server proxies kubectl's WebSocket to us
    as is; otherwise it translates it to SPDY towards the kubelet)."""

    env: Mapping[str, str]
    websocket_to_kubelet: bool


_WS = {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "true", "KUBECTL_PORT_FORWARD_WEBSOCKETS": "true"}
_SPDY = {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false", "KUBECTL_PORT_FORWARD_WEBSOCKETS": "false"}


@pytest.fixture(
    params=[Transport(_WS, True), Transport(_WS, False), Transport(_SPDY, False)],
    ids=["websocket-to-kubelet", "websocket-translated-to-spdy", "spdy"],
)
def transport(request: pytest.FixtureRequest) -> Transport:
    return request.param  # type: ignore[no-any-return]


@dataclass
class StreamsNode:
    cluster: LocalCluster
    provider: StreamingProvider
    namespace: str
    # The Upgrade header of every request that reached our server, in order.
    upgrades: list[str]
    pod: str = "p"

    def assert_upgrades(self, transport: Transport) -> None:
        expected = "websocket" if transport.websocket_to_kubelet else "spdy/3.1"
        assert self.upgrades and set(self.upgrades) == {expected}, self.upgrades

    async def kubectl(
        self, *args: str, env: Mapping[str, str], stdin: bytes | None = None
    ) -> tuple[int, bytes, bytes]:
        proc = await asyncio.create_subprocess_exec(
            str(self.cluster.binaries.kubectl),
            f"--kubeconfig={self.cluster.kubeconfig_path}",
            *args,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **env},
        )
        async with asyncio.timeout(DEADLINE):
            out, err = await proc.communicate(stdin)
        assert proc.returncode is not None
        return proc.returncode, out, err


@pytest.fixture
async def node(control_plane: LocalCluster, transport: Transport) -> AsyncIterator[StreamsNode]:
    suffix = uuid.uuid4().hex[:6]
    node_name, namespace = f"vk-streams-{suffix}", f"streams-{suffix}"
    kubectl = control_plane.kubectl
    control_plane.create_namespace(namespace)
    kubectl(
        "create",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node_name}}),
    )
    manifest: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": namespace},
        "spec": {"nodeName": node_name, "containers": [{"name": "c0", "image": "busybox"}]},
    }
    created = json.loads(kubectl("create", "-f", "-", "-o", "json", input=json.dumps(manifest)).stdout)
    running = {"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}
    kubectl(
        "patch",
        "pod",
        "p",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(running),
    )
    pods = [Pod.from_manifest(created)]
    provider = StreamingProvider()
    api = KubeletApi(provider=provider, node_pods=lambda: pods, node_name=node_name)  # type: ignore[arg-type]
    tls = server_tls(node_name=node_name, node_ip="127.0.0.1")
    upgrades: list[str] = []

    @web.middleware
    async def record_upgrades(request: web.Request, handler: Handler) -> web.StreamResponse:
        upgrades.append(request.headers.get("Upgrade", "").lower())
        return await handler(request)

    server = KubeletServer(
        api, listen_host="127.0.0.1", listen_port=0, ssl_context=tls.context, middlewares=[record_upgrades]
    )
    await server.start()
    status: dict[str, Any] = {
        "status": {
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": server.port}},
        }
    }
    if transport.websocket_to_kubelet:
        status["status"]["declaredFeatures"] = ["ExtendWebSocketsToKubelet"]
    kubectl("patch", "node", node_name, "--subresource=status", "--type=merge", "-p", json.dumps(status))
    try:
        yield StreamsNode(control_plane, provider, namespace, upgrades)
    finally:
        await server.stop()
        kubectl("delete", "pod", "p", "-n", namespace, "--force", "--grace-period=0", check=False)
        kubectl("delete", "node", node_name, "--wait=false", check=False)
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)


async def test_exec_exit_code_and_stdin_echo(node: StreamsNode, transport: Transport) -> None:
    rc, out, err = await node.kubectl(
        "exec",
        "-i",
        "-n",
        node.namespace,
        node.pod,
        "-c",
        "c0",
        "--",
        "echo",
        env=transport.env,
        stdin=b"hello\n",
    )
    assert (rc, out) == (7, b"hello\n"), err
    assert b"done" in err
    node.assert_upgrades(transport)


async def test_exec_error_status(node: StreamsNode, transport: Transport) -> None:
    rc, _out, err = await node.kubectl(
        "exec", "-n", node.namespace, node.pod, "--", "fail", env=transport.env
    )
    assert rc != 0 and b"boom" in err


async def test_exec_tty_gets_the_terminal_size(node: StreamsNode, transport: Transport) -> None:
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 111, 0, 0))
    proc = await asyncio.create_subprocess_exec(
        str(node.cluster.binaries.kubectl),
        f"--kubeconfig={node.cluster.kubeconfig_path}",
        "exec",
        "-it",
        "-n",
        node.namespace,
        node.pod,
        "--",
        "resize",
        stdin=follower,
        stdout=follower,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **transport.env},
    )
    os.close(follower)
    loop = asyncio.get_running_loop()
    output = bytearray()
    try:
        async with asyncio.timeout(DEADLINE):
            while b"on the tty" not in output:
                chunk = await loop.run_in_executor(None, os.read, leader, 4096)
                if not chunk:
                    break
                output += chunk
            assert await proc.wait() == 0
    except OSError:
        pass  # EIO: the terminal closed
    finally:
        os.close(leader)
        if proc.returncode is None:
            proc.kill()
    assert b"111x33" in output, output
    assert node.provider.io[-1][3] is True  # tty
    node.assert_upgrades(transport)


async def test_attach(node: StreamsNode, transport: Transport) -> None:
    rc, out, err = await node.kubectl("attach", "-n", node.namespace, node.pod, "-c", "c0", env=transport.env)
    assert (rc, out) == (0, b"attached\n"), err
    node.assert_upgrades(transport)


async def test_port_forward_echo(node: StreamsNode, transport: Transport) -> None:
    proc = await asyncio.create_subprocess_exec(
        str(node.cluster.binaries.kubectl),
        f"--kubeconfig={node.cluster.kubeconfig_path}",
        "port-forward",
        "-n",
        node.namespace,
        f"pod/{node.pod}",
        "--address=127.0.0.1",
        ":8080",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **transport.env},
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(DEADLINE):
            line = await proc.stdout.readline()
        match = re.search(rb"127\.0\.0\.1:(\d+) -> 8080", line)
        assert match, line
        reader, writer = await asyncio.open_connection("127.0.0.1", int(match.group(1)))
        writer.write(b"ping")
        await writer.drain()
        async with asyncio.timeout(DEADLINE):
            reply = await reader.readexactly(len(b"8080:ping"))
        assert reply == b"8080:ping"
        writer.close()
        node.assert_upgrades(transport)
    finally:
        proc.terminate()
        await proc.wait()


# -- the whole stack: vkubelet (gRPC provider) + vkubelet-process-provider, each a process --------
STACK_NODE = "vk-e2e-streams"
KUBECTL_ENVS = pytest.mark.parametrize("kubectl_env", [_WS, _SPDY], ids=["websocket", "spdy"])


def pod_phase_is(control_plane: Any, namespace: str, name: str, phase: str) -> bool:
    return bool(
        control_plane.kubectl(
            "get", "pod", name, "-n", namespace, "-o", "jsonpath={.status.phase}", check=False
        ).stdout
        == phase
    )


@dataclass
class Stack:
    cluster: LocalCluster
    namespace: str
    http_port: int

    def kubectl(
        self, *args: str, env: Mapping[str, str], stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [str(self.cluster.binaries.kubectl), f"--kubeconfig={self.cluster.kubeconfig_path}", *args],
            input=stdin,
            capture_output=True,
            timeout=DEADLINE,
            env={**os.environ, **env},
        )


@pytest.fixture(scope="module")
def stack(
    control_plane: LocalCluster, test_network: TestNetwork | None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    work_dir = tmp_path_factory.mktemp("streams")
    node_ip = test_network.node_ip if test_network else "127.0.0.1"
    provider = ProviderProcess(work_dir, work_dir / "provider.sock", node_ip, node_name=STACK_NODE)
    provider.args[provider.args.index("--node-name") + 1] = STACK_NODE
    provider.start()
    config = work_dir / "grpc-provider.json"
    config.write_text(json.dumps({"address": f"unix://{provider.socket_path}", "call_timeout": 5}))
    daemon = VkubeletProcess(
        work_dir=work_dir,
        kubeconfig=service_account_kubeconfig(control_plane, work_dir),
        node_name=STACK_NODE,
        network=test_network,
        provider="grpc",
        provider_config_path=config,
    ).start()
    namespace = f"streams-{uuid.uuid4().hex[:6]}"
    control_plane.create_namespace(namespace)
    http_port = free_port()
    pods = {
        # The main process prints a line every 0.2 s (for attach) and keeps a shell for exec.
        "shell": ["sh", "-c", "while true; do echo tick; sleep 0.2; done"],
        "web": [sys.executable, "-m", "http.server", str(http_port), "--bind", "127.0.0.1"],
    }
    try:
        for name, command in pods.items():
            manifest = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {
                    "nodeName": STACK_NODE,
                    "terminationGracePeriodSeconds": 1,
                    "enableServiceLinks": False,
                    "containers": [{"name": "main", "image": "ignored", "command": command}],
                },
            }
            control_plane.kubectl("create", "-f", "-", input=json.dumps(manifest))
        for name in pods:
            wait_for(
                functools.partial(pod_phase_is, control_plane, namespace, name, "Running"),
                timeout=60,
                what=f"pod {name} Running",
            )
        yield Stack(control_plane, namespace, http_port)
        daemon.assert_alive()
    finally:
        control_plane.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        daemon.stop()
        provider.stop()
        print(daemon.log_tail(80))


@KUBECTL_ENVS
def test_stack_exec_returns_the_exit_code(stack: Stack, kubectl_env: dict[str, str]) -> None:
    result = stack.kubectl(
        "exec", "-n", stack.namespace, "shell", "--", "sh", "-c", "exit 7", env=kubectl_env
    )
    assert result.returncode == 7, result.stderr


@KUBECTL_ENVS
def test_stack_exec_stdin_is_echoed(stack: Stack, kubectl_env: dict[str, str]) -> None:
    result = stack.kubectl(
        "exec", "-i", "-n", stack.namespace, "shell", "--", "cat", env=kubectl_env, stdin=b"piped\n"
    )
    assert (result.returncode, result.stdout) == (0, b"piped\n"), result.stderr


@KUBECTL_ENVS
def test_stack_exec_tty(stack: Stack, kubectl_env: dict[str, str]) -> None:
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 111, 0, 0))
    proc = subprocess.Popen(
        [
            str(stack.cluster.binaries.kubectl),
            f"--kubeconfig={stack.cluster.kubeconfig_path}",
            "exec",
            "-it",
            "-n",
            stack.namespace,
            "shell",
            "--",
            "sh",
            "-c",
            "stty size; tty",
        ],
        stdin=follower,
        stdout=follower,
        stderr=subprocess.PIPE,
        env={**os.environ, **kubectl_env},
    )
    os.close(follower)
    output = bytearray()
    try:
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO once the terminal is gone
                break
            if not chunk:
                break
            output += chunk
        assert proc.wait(timeout=DEADLINE) == 0, output
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
    assert b"33 111" in output, output
    assert b"/dev/pts/" in output, output


@KUBECTL_ENVS
def test_stack_attach(stack: Stack, kubectl_env: dict[str, str]) -> None:
    proc = subprocess.Popen(
        [
            str(stack.cluster.binaries.kubectl),
            f"--kubeconfig={stack.cluster.kubeconfig_path}",
            "attach",
            "-n",
            stack.namespace,
            "shell",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **kubectl_env},
    )
    try:
        assert proc.stdout is not None
        # Lines arrive every 0.2 s for as long as we stay attached.
        assert proc.stdout.readline() == b"tick\n"
        assert proc.stdout.readline() == b"tick\n"
    finally:
        proc.terminate()
        proc.wait(timeout=DEADLINE)


@KUBECTL_ENVS
def test_stack_port_forward_reaches_an_http_server(stack: Stack, kubectl_env: dict[str, str]) -> None:
    proc = subprocess.Popen(
        [
            str(stack.cluster.binaries.kubectl),
            f"--kubeconfig={stack.cluster.kubeconfig_path}",
            "port-forward",
            "-n",
            stack.namespace,
            "pod/web",
            "--address=127.0.0.1",
            f":{stack.http_port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **kubectl_env},
    )
    try:
        assert proc.stdout is not None
        match = re.search(rb"127\.0\.0\.1:(\d+) ->", proc.stdout.readline())
        assert match
        with urllib.request.urlopen(f"http://127.0.0.1:{int(match.group(1))}/", timeout=DEADLINE) as response:
            assert response.status == 200
            assert b"Directory listing" in response.read()
    finally:
        proc.terminate()
        proc.wait(timeout=DEADLINE)
