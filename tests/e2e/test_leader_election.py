"""Issue 14 end to end: two vkubelet replicas of one node, ``--leader-elect``, one provider.

One out-of-process provider (`vkubelet-process-provider` on a unix socket) runs the pods; two
daemons (`--provider grpc`) serve the same node against it, as two replicas of a Deployment
would. (Two in-process process providers would each own a set of processes and kill the
other's as orphans.) Both authenticate as deploy/rbac.yaml's ServiceAccount, which proves the
election Role is enough.

* The leader is killed with SIGKILL during a pod burst: the standby takes over, every pod is
  created exactly once in the provider, none is deleted, all end Running, and the node never
  gets the controller-manager's ``unreachable`` taint. The takeover time is printed.
* The new leader is frozen (SIGSTOP) past its lease and then resumed (SIGCONT): it refuses every
  write and exits with the loss message, while the replica that took over keeps the lease.

Timing: the session's controller-manager marks a node Unknown 20 s after its last node-lease
renewal (tests/e2e/conftest.py), and vkubelet renews that lease every 10 s, so the election here
uses 5 s / 3 s / 1 s (lease / renew deadline / retry) instead of the 15 s / 10 s / 2 s defaults:
worst case the node lease is 10 + 1 + 5 + 1 s old when the new leader renews it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.e2e.network import TestNetwork
from tests.e2e.vkubelet_process import (
    ProviderProcess,
    VkubeletProcess,
    leftovers,
    service_account_kubeconfig,
    wait_for,
)

NODE = "vk-e2e-ha"
LEASE_NAMESPACE = "vkubelet-system"
LEASE_NAME = f"vkubelet-{NODE}"
# 500 host processes on a 2-core machine shared with other test runs: VKUBELET_HA_BURST lowers it.
BURST = int(os.environ.get("VKUBELET_HA_BURST", "500"))
ELECTION_ARGS = [
    "--leader-elect",
    "--leader-elect-lease-duration",
    "5s",
    "--leader-elect-renew-deadline",
    "3s",
    "--leader-elect-retry-period",
    "1s",
]
UNREACHABLE = "node.kubernetes.io/unreachable"


class Stack:
    def __init__(self, provider: ProviderProcess, replicas: list[VkubeletProcess]) -> None:
        self.provider = provider
        self.replicas = replicas

    def identity(self, replica: VkubeletProcess) -> str:
        """The replica's name in the Lease, from the newest start in its log."""
        found = re.findall(
            r"leader election: lease \S+ as (\S+) ", replica.log_path.read_text(errors="replace")
        )
        return found[-1] if found else ""

    def by_identity(self, identity: str) -> VkubeletProcess:
        (replica,) = [r for r in self.replicas if self.identity(r) == identity]
        return replica


@pytest.fixture(scope="module")
def stack(
    control_plane: Any, test_network: TestNetwork | None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    work_dir = tmp_path_factory.mktemp("ha")
    node_ip = test_network.node_ip if test_network else "127.0.0.1"
    provider = ProviderProcess(
        work_dir, work_dir / "provider.sock", node_ip, node_name=NODE, pods=str(BURST + 50)
    ).start()
    config = work_dir / "grpc-provider.json"
    config.write_text(json.dumps({"address": f"unix://{provider.socket_path}", "call_timeout": 5}))
    kubeconfig = service_account_kubeconfig(control_plane, work_dir)
    replicas = []
    for name in ("a", "b"):
        replica_dir = work_dir / name
        replica_dir.mkdir()
        replicas.append(
            VkubeletProcess(
                work_dir=replica_dir,
                kubeconfig=kubeconfig,
                node_name=NODE,
                network=test_network,
                provider="grpc",
                provider_config_path=config,
                extra_args=[*ELECTION_ARGS, "--full-resync-period", "20s"],
            )
        )
    for replica in replicas:
        replica.start()
    try:
        wait_for(lambda: node_ready(control_plane), timeout=90, what=f"node {NODE} Ready")
        yield Stack(provider, replicas)
    finally:
        for replica in replicas:
            if replica.process is not None and replica.process.poll() is None:
                os.kill(replica.process.pid, signal.SIGCONT)  # in case a test left it stopped
            replica.stop()
        provider.stop()
        for replica in replicas:
            print(f"--- replica {replica.work_dir.name}")
            print(replica.log_tail(80))
        print("\n".join(provider.log_path.read_text(errors="replace").splitlines()[-20:]))


@pytest.fixture(scope="module")
def namespace(control_plane: Any) -> Iterator[str]:
    name = f"ha-{uuid.uuid4().hex[:6]}"
    control_plane.create_namespace(name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


# -- helpers ------------------------------------------------------------------------------------


def get_json(control_plane: Any, *args: str) -> dict[str, Any] | None:
    result = control_plane.kubectl("get", *args, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def node_ready(control_plane: Any) -> bool:
    node = get_json(control_plane, "node", NODE) or {}
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def leader_lease(control_plane: Any) -> dict[str, Any]:
    return dict((get_json(control_plane, "lease", "-n", LEASE_NAMESPACE, LEASE_NAME) or {}).get("spec") or {})


def node_lease_renewed(control_plane: Any) -> datetime:
    spec = (get_json(control_plane, "lease", "-n", "kube-node-lease", NODE) or {})["spec"]
    return micro_time(spec["renewTime"])


def micro_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def created_in_provider(stack: Stack, namespace: str) -> dict[str, int]:
    """How often the provider started each pod of ``namespace`` (its log line per create)."""
    counts: dict[str, int] = {}
    for match in re.finditer(rf"process: created pod {namespace}/(\S+)", stack.provider.log_path.read_text()):
        counts[match.group(1)] = counts.get(match.group(1), 0) + 1
    return counts


def deleted_in_provider(stack: Stack, namespace: str) -> list[str]:
    return re.findall(rf"process: deleting pod {namespace}/(\S+)", stack.provider.log_path.read_text())


class NodeWatch:
    """Polls the node in a thread: every taint and Ready status it ever had."""

    def __init__(self, control_plane: Any) -> None:
        self._control_plane = control_plane
        self.taints: set[str] = set()
        self.ready: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> NodeWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            node = get_json(self._control_plane, "node", NODE)
            if node is None:
                continue
            self.taints |= {taint["key"] for taint in node["spec"].get("taints") or ()}
            self.ready |= {
                c["status"] for c in node["status"].get("conditions") or () if c["type"] == "Ready"
            }


def pod_manifest(namespace: str, name: str, marker: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "nodeName": NODE,
            "terminationGracePeriodSeconds": 1,
            "enableServiceLinks": False,
            "containers": [
                {
                    "name": "main",
                    "image": "ignored",
                    "command": ["sleep", "3600"],
                    "env": [{"name": "HA_MARKER", "value": marker}],
                }
            ],
        },
    }


def burst_pods(control_plane: Any, namespace: str, prefix: str) -> list[dict[str, Any]]:
    items = (get_json(control_plane, "pods", "-n", namespace) or {}).get("items") or []
    return [pod for pod in items if pod["metadata"]["name"].startswith(prefix)]


# -- tests --------------------------------------------------------------------------------------


def test_one_replica_leads_and_the_other_stands_by(control_plane: Any, stack: Stack) -> None:
    holder = wait_for(lambda: leader_lease(control_plane).get("holderIdentity"), timeout=30, what="a leader")
    leader = stack.by_identity(holder)
    (standby,) = [r for r in stack.replicas if r is not leader]
    wait_for(lambda: "standing by" in standby.log_path.read_text(), timeout=30, what="the standby")
    assert "registered (uid" not in standby.log_path.read_text(), "the standby registered the node"
    for replica in stack.replicas:
        replica.assert_alive()


def test_kill_9_of_the_leader_mid_burst_loses_nothing(
    control_plane: Any, stack: Stack, namespace: str
) -> None:
    holder = leader_lease(control_plane)["holderIdentity"]
    leader = stack.by_identity(holder)
    (standby,) = [r for r in stack.replicas if r is not leader]
    marker = f"ha-{uuid.uuid4().hex[:6]}"
    prefix = f"{marker}-"
    items = [pod_manifest(namespace, f"{prefix}{i}", marker) for i in range(BURST)]
    with NodeWatch(control_plane) as watch:
        started = time.monotonic()
        control_plane.kubectl(
            "create", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
        )
        wait_for(lambda: len(leftovers([marker])) >= BURST // 10, timeout=120, what="the burst under way")
        killed_at = datetime.now(UTC)
        leader.kill()  # SIGKILL: no release, no drain
        running_at_kill = len(leftovers([marker]))

        def taken_over() -> dict[str, Any] | None:
            spec = leader_lease(control_plane)
            return spec if spec.get("holderIdentity") not in (holder, None, "") else None

        lease = wait_for(
            taken_over,
            timeout=60,
            what="the standby to take the lease",
        )
        assert lease["holderIdentity"] == stack.identity(standby)
        takeover = (micro_time(lease["acquireTime"]) - killed_at).total_seconds()

        def renewed_after_takeover() -> datetime | None:
            at = node_lease_renewed(control_plane)
            return at if at > micro_time(lease["acquireTime"]) else None

        renewed = wait_for(
            renewed_after_takeover,
            timeout=30,
            what="the new leader to renew the node lease",
        )
        heartbeat = (renewed - killed_at).total_seconds()
        before = {
            p["metadata"]["name"]: p["metadata"]["uid"] for p in burst_pods(control_plane, namespace, prefix)
        }
        assert len(before) == BURST

        def all_running() -> bool:
            pods = burst_pods(control_plane, namespace, prefix)
            return len(pods) == BURST and all((p.get("status") or {}).get("phase") == "Running" for p in pods)

        wait_for(all_running, timeout=240, what=f"all {BURST} pods Running after the takeover", interval=2)
        all_running_after = time.monotonic() - started
        after = {
            p["metadata"]["name"]: p["metadata"]["uid"] for p in burst_pods(control_plane, namespace, prefix)
        }
        assert after == before, "a pod was deleted or recreated in the API"
        wait_for(lambda: len(leftovers([marker])) == BURST, timeout=60, what=f"exactly {BURST} processes")
        assert node_ready(control_plane)
    created = created_in_provider(stack, namespace)
    assert sorted(created) == sorted(before), "a pod was never created in the provider"
    assert {name for name, count in created.items() if count != 1} == set(), "a pod was created twice"
    assert deleted_in_provider(stack, namespace) == []
    assert UNREACHABLE not in watch.taints, f"the node was tainted {UNREACHABLE}"
    assert "Unknown" not in watch.ready
    standby.assert_alive()
    print(
        f"\nleader killed with {running_at_kill}/{BURST} pods running; the standby acquired the lease "
        f"{takeover:.1f} s after the kill and renewed the node lease {heartbeat:.1f} s after it; "
        f"all {BURST} Running {all_running_after:.0f} s after the burst was created"
    )
    # Back to two replicas: the killed one returns as a standby.
    leader.start()
    wait_for(
        lambda: stack.identity(leader) != holder, timeout=30, what="the restarted replica's new identity"
    )
    wait_for(
        lambda: leader.log_path.read_text().count("standing by") >= 2,
        timeout=60,
        what="the restart standing by",
    )


def test_a_frozen_leader_writes_nothing_after_losing_its_lease(
    control_plane: Any, stack: Stack, namespace: str
) -> None:
    lease = leader_lease(control_plane)
    leader = stack.by_identity(lease["holderIdentity"])
    (standby,) = [r for r in stack.replicas if r is not leader]
    assert leader.process is not None
    transitions = lease["leaseTransitions"]
    os.kill(leader.process.pid, signal.SIGSTOP)
    try:
        taken = wait_for(
            lambda: (
                (spec := leader_lease(control_plane))["holderIdentity"] == stack.identity(standby) and spec
            ),
            timeout=60,
            what="the standby to take over from the frozen leader",
        )
        # Work the frozen leader will hear about when it wakes: a new pod and a deleted one.
        victim = burst_pods(control_plane, namespace, "ha-")[0]["metadata"]["name"]
        marker = f"late-{uuid.uuid4().hex[:6]}"
        control_plane.kubectl("create", "-f", "-", input=json.dumps(pod_manifest(namespace, marker, marker)))
        control_plane.kubectl("delete", "pod", "-n", namespace, victim, "--wait=false")
        wait_for(
            lambda: (
                (get_json(control_plane, "pod", "-n", namespace, marker) or {}).get("status", {}).get("phase")
                == "Running"
            ),
            timeout=60,
            what="the new leader to run the late pod",
        )
        wait_for(
            lambda: get_json(control_plane, "pod", "-n", namespace, victim) is None,
            timeout=60,
            what="the new leader to delete the pod",
        )
    finally:
        os.kill(leader.process.pid, signal.SIGCONT)
    try:
        code = leader.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the resumed leader did not exit:\n{leader.log_tail()}")
    log = leader.log_path.read_text(errors="replace")
    resumed = log[log.rfind("standing by") :]  # this process's run
    assert code == 1, f"exit code {code}:\n{leader.log_tail()}"
    assert "lost the leader lease" in resumed
    # The lease is the new leader's, with one more transition: the old one wrote nothing there.
    now = leader_lease(control_plane)
    assert now["holderIdentity"] == stack.identity(standby) == taken["holderIdentity"]
    assert now["leaseTransitions"] == transitions + 1
    # Nothing created or deleted twice: the late pod once, the deleted one once.
    assert created_in_provider(stack, namespace)[marker] == 1
    assert deleted_in_provider(stack, namespace).count(victim) == 1
    standby.assert_alive()
    refused = [line for line in resumed.splitlines() if "not the leader" in line]
    print(f"\nthe resumed leader exited {code}; writes it refused: {len(refused)}")
