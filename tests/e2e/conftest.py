"""The e2e tier: a real etcd + kube-apiserver (+ kubectl) started once per session."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.network import TestNetwork, create_test_network, unavailable_reason
from vkubelet.entrypoints.localcluster.binaries import ensure_binaries
from vkubelet.entrypoints.localcluster.cluster import LocalCluster

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(_HERE):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def test_network() -> Iterator[TestNetwork | None]:
    """A network namespace for virtual kubelets, or None where this machine cannot make one."""
    if unavailable_reason() is not None:
        yield None
        return
    network = create_test_network()
    try:
        yield network
    finally:
        network.delete()


@pytest.fixture(scope="session")
def control_plane(request: pytest.FixtureRequest, test_network: TestNetwork | None) -> Iterator[LocalCluster]:
    """A started, whole LocalCluster (scheduler, controller-manager, default admission); its work
    directory (logs, certs) is kept when a test failed.

    The node lifecycle controller's grace period is 20 s instead of 40 s, so the tests that stop
    a virtual kubelet see the node turn Unknown and tainted sooner; vkubelet renews its Lease
    every 10 s, so a live node is never mistaken for a dead one."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    # A first run builds the binaries for minutes: let its progress lines reach the terminal.
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        binaries = ensure_binaries()
    bind_address = test_network.host_ip if test_network else "127.0.0.1"
    cluster = LocalCluster(binaries=binaries, bind_address=bind_address, node_monitor_grace_period="20s")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop(keep_work_dir=request.session.testsfailed > 0)
