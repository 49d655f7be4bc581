"""A private test network: one network namespace joined to the host by a veth pair.

The API server's node proxy (``/api/v1/nodes/<node>/proxy/...``) refuses kubelets on loopback
addresses ("address not allowed"), so the e2e tier runs each virtual kubelet inside this
namespace at ``node_ip`` and binds the API server to ``host_ip``, the host end of the pair.
All traffic stays between the two ends of a link this test run made itself. The addresses come
from 198.18.0.0/15, the range reserved for network benchmarking (RFC 2544).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class TestNetwork:
    namespace: str
    host_ip: str
    node_ip: str

    __test__ = False  # not a pytest test class

    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.namespace]

    def delete(self) -> None:
        subprocess.run(["ip", "netns", "del", self.namespace], check=False, capture_output=True)


def unavailable_reason() -> str | None:
    """Why this machine cannot make a test network (None when it can)."""
    if os.geteuid() != 0:
        return "creating a network namespace needs root"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    return None


def create_test_network() -> TestNetwork:
    suffix = f"{os.getpid() % 10000}{random.randrange(100):02d}"
    octet = random.randrange(1, 250)
    network = TestNetwork(
        namespace=f"vk-e2e-{suffix}", host_ip=f"198.18.{octet}.1", node_ip=f"198.18.{octet}.2"
    )
    host_end, node_end = f"vkh{suffix}", f"vkn{suffix}"
    steps = [
        ["ip", "netns", "add", network.namespace],
        ["ip", "link", "add", host_end, "type", "veth", "peer", "name", node_end],
        ["ip", "link", "set", node_end, "netns", network.namespace],
        ["ip", "addr", "add", f"{network.host_ip}/30", "dev", host_end],
        ["ip", "link", "set", host_end, "up"],
        [*network.exec_prefix(), "ip", "addr", "add", f"{network.node_ip}/30", "dev", node_end],
        [*network.exec_prefix(), "ip", "link", "set", node_end, "up"],
        [*network.exec_prefix(), "ip", "link", "set", "lo", "up"],
    ]
    for step in steps:
        result = subprocess.run(step, capture_output=True, text=True)
        if result.returncode != 0:
            network.delete()
            raise RuntimeError(f"`{' '.join(step)}` failed: {result.stderr.strip()}")
    return network
