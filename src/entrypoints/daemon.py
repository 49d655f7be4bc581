"""Run one virtual node: start everything in order, stop it all cleanly on a signal.

Startup: kubelet API server (its port goes into the Node), pod controller (lists pods, adopts
what the provider already runs), node registration, then the controllers' loops. Shutdown on
SIGTERM/SIGINT: stop taking new work, let in-flight syncs finish, mark the node NotReady
(``--shutdown-node-not-ready``), stop the API server, flush events, close the provider and the
client, exit 0. A second signal exits at once. Several ``--nodename``: :func:`run_nodes` runs
one such stack per name side by side (multinode.py).

With ``--rotate-server-certificates`` the serving-certificate manager starts once the node is
registered (its CSR names the Node's addresses) and runs beside the controllers; until its first
certificate is issued the listener serves the self-signed one. It is cancelled on shutdown.

With ``--leader-elect`` (docs/cli.md) the replica first stands by: provider connected, kubelet
API up, the pod controller's API watch and provider feeds running, but no sync worker, no node
registration and no write. Once it acquires the leader Lease it registers the node (which
renews the node Lease at once) and only then lets the pod workers run, so the heartbeat goes out
before a backlog of pod writes. A leader that loses its lease exits non-zero at once, without
draining and without writing anything more (the fenced ports refuse); a leader stopped by a
signal shuts down as usual and then releases the lease, so a standby takes over without waiting
for it to lapse.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Iterator, Sequence

from dependency_injector import providers

from vkubelet.adapters.kubernetes.client import DEFAULT_MAX_CONNECTIONS, ConnectionPool, KubeClient
from vkubelet.adapters.telemetry.logs import current_node
from vkubelet.application.leader import LeaderElector
from vkubelet.application.node_controller import NodeController
from vkubelet.application.pod_controller import PodController
from vkubelet.application.ports.provider import ProviderConnection
from vkubelet.application.serving_certificate import ServingCertificateManager
from vkubelet.application.settings import Settings
from vkubelet.domain.backoff import Backoff
from vkubelet.domain.errors import DomainError, Transient
from vkubelet.domain.leader import LeadershipLost
from vkubelet.entrypoints.container import Application

log = logging.getLogger("vkubelet")

SHUTDOWN_DRAIN_SECONDS = 10.0
CONNECT_RETRY = Backoff(base=0.5, cap=10.0)
# How long startup waits for the API server to answer at all when --startup-timeout is 0. Once
# the node is up, an API server outage is retried for ever (as the kubelet does); at startup a
# wrong address or a dead cluster should end the process with a message, not a silent loop.
API_SERVER_WAIT_SECONDS = 60.0


class StartupError(Exception):
    """The node could not start (bad provider config, startup timeout, ...)."""


async def run_daemon(settings: Settings, *, internal_ip: str) -> int:
    container = Application(settings=settings, internal_ip=internal_ip)
    stop = asyncio.Event()
    with _signals(stop):
        return await _run(container, settings, stop)


async def run_nodes(nodes: Sequence[Settings], *, internal_ip: str) -> int:
    """Several nodes in one process (multinode.py), each its own container and stack, run
    side by side: one signal stops them all; one node failing stops the others and fails the
    process with a StartupError naming it. One node: exactly :func:`run_daemon`."""
    if len(nodes) == 1:
        return await run_daemon(nodes[0], internal_ip=internal_ip)
    containers = [Application(settings=node, internal_ip=internal_ip) for node in nodes]
    # One tracer provider per process (it is installed globally, and zpages binds a port):
    # the first node's, shared by the others.
    for container in containers[1:]:
        container.telemetry.override(containers[0].telemetry)
    # One set of API server connections for the pod traffic and one for the heartbeats (the
    # nodes differ only in name and port, so they share the kubeconfig); closed once every node
    # has stopped. The pod pool keeps one client's connection limit across all the nodes, plus
    # one connection for each node's long-lived pod watch.
    pools = ConnectionPool(limit=DEFAULT_MAX_CONNECTIONS + len(nodes)), ConnectionPool()
    for container in containers:
        container.kube.connection_pool.override(providers.Object(pools[0]))
        container.kube.heartbeat_pool.override(providers.Object(pools[1]))
    stop = asyncio.Event()
    with _signals(stop):
        telemetry = containers[0].telemetry()
        await telemetry.start()
        try:
            runs = [
                asyncio.create_task(_run_node(container, node, stop), name=f"node-{node.node.name}")
                for container, node in zip(containers, nodes, strict=True)
            ]
            results = await asyncio.gather(*runs, return_exceptions=True)
        finally:
            for pool in pools:
                await pool.close()
            await telemetry.shutdown()
    codes: list[int] = []
    for node, result in zip(nodes, results, strict=True):
        if isinstance(result, StartupError | DomainError | OSError | ValueError):
            raise StartupError(f"node {node.node.name}: {result}") from result
        if isinstance(result, BaseException):
            log.error("node %s failed: %r", node.node.name, result)  # a bug: its traceback follows
            raise result
        codes.append(result)
    return max(codes)


async def _run_node(container: Application, settings: Settings, stop: asyncio.Event) -> int:
    current_node.set(settings.node.name)  # this task's context only: its log lines name the node
    try:
        return await _run_traced(container, settings, stop)
    except BaseException:
        stop.set()  # the other nodes shut down cleanly; the process then fails
        raise


async def _run(container: Application, settings: Settings, stop: asyncio.Event) -> int:
    # Tracing first, so a bad exporter environment fails at once and provider setup is traced.
    telemetry = container.telemetry()
    await telemetry.start()
    try:
        return await _run_traced(container, settings, stop)
    finally:
        await telemetry.shutdown()  # flushes pending spans


async def _run_traced(container: Application, settings: Settings, stop: asyncio.Event) -> int:
    # Building the provider validates its config: fail before touching the cluster.
    provider = container.backends.pod_provider()
    connection: ProviderConnection = container.backends.provider_connection()
    if not await _connect(connection, stop):
        return 0
    client = container.kube.client()
    wait = settings.controller.startup_timeout or API_SERVER_WAIT_SECONDS
    if not await _reach_api_server(client, wait_seconds=wait, stop=stop):
        return 0
    events = container.kube.events()
    policy = container.auth_policy()  # refuses an API nobody could authenticate to
    if policy.warning:
        log.warning("%s", policy.warning)
    server = container.kubelet_server()
    client_ca = container.client_ca()
    pod_controller = container.pod_controller()
    elector: LeaderElector | None = container.leader_elector()
    sync_gate: asyncio.Event | None = container.pod_sync_gate()
    serving_certificate: ServingCertificateManager | None = container.serving_certificate()
    # An out-of-process provider that comes back after a restart may have lost or kept pods:
    # reconcile at once instead of waiting for the next full-resync period.
    connection.add_reconnect_hook(pod_controller.reconcile)
    tasks: list[asyncio.Task[None]] = []
    node_controller: NodeController | None = None
    lost = False
    try:
        events.start()
        await server.start()
        log.info("kubelet API listening on %s:%d", settings.server.listen_host, server.port)
        if client_ca is not None:
            tasks.append(asyncio.create_task(client_ca.watch(), name="client-ca-watch"))
        tasks.append(asyncio.create_task(pod_controller.run(), name="pod-controller"))
        if elector is not None:
            tasks.append(asyncio.create_task(elector.run(), name="leader-election"))
            if not await _stand_by(elector, pod_controller, stop, tasks):
                log.info("stopping while standing by")
                return 0
        node_controller = container.node_controller(
            settings=container.node_controller_settings(kubelet_port=server.port)
        )
        startup = asyncio.ensure_future(_start(pod_controller, node_controller, tasks, sync_gate))
        timeout = settings.controller.startup_timeout or None
        waiter = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({startup, waiter}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if startup not in done:
            startup.cancel()
            if waiter in done:
                log.info("stopping before startup finished")
                return 0
            raise StartupError(f"node {settings.node.name} not ready within --startup-timeout {timeout}s")
        waiter.cancel()
        startup.result()
        log.info("node %s is ready", settings.node.name)
        if serving_certificate is not None:
            # After registration: the CSR's SANs are the Node's addresses. Until it is issued
            # the listener keeps serving its self-signed certificate.
            tasks.append(asyncio.create_task(serving_certificate.run(), name="serving-certificate"))
        waiter = asyncio.ensure_future(stop.wait())
        await asyncio.wait({waiter, *tasks}, return_when=asyncio.FIRST_COMPLETED)
        _raise_crash(tasks)
        log.info("shutting down")
        return 0
    except LeadershipLost as error:
        lost = True
        log.error("%s; exiting without further writes (a restart makes this replica a standby)", error)
        raise
    finally:
        if lost:
            await _abandon(tasks)
        else:
            await _shutdown(settings, pod_controller, node_controller, tasks)
            if elector is not None:
                await elector.release()
        await server.stop()
        await events.close(drain_seconds=0.0 if lost else 5.0)
        await provider.close()
        await client.close()
        await container.kube.heartbeat_client().close()
        if elector is not None:
            await container.kube.election_client().close()


async def _connect(connection: ProviderConnection, stop: asyncio.Event) -> bool:
    """Wait for an out-of-process provider to answer its first Describe (retrying while it is
    still starting). False when a signal arrived first."""
    attempt = 0
    while not stop.is_set():
        try:
            await connection.connect()
            return True
        except Transient as error:
            attempt += 1
            delay = CONNECT_RETRY.delay(attempt)
            log.warning(
                "provider not reachable yet (attempt %d, retrying in %.1fs): %s", attempt, delay, error
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
    return False


async def _reach_api_server(client: KubeClient, *, wait_seconds: float, stop: asyncio.Event) -> bool:
    """Wait until the API server answers ``GET /version``; StartupError naming the server when it
    does not within ``wait_seconds`` or refuses our credentials. False when a signal came first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    attempt = 0
    while not stop.is_set():
        try:
            await client.request("GET", "/version", what="the API server's version")
            return True
        except Transient as error:
            attempt += 1
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise StartupError(
                    f"cannot reach the Kubernetes API server {client.server} within {wait_seconds:.0f}s "
                    f"({attempt} attempts): {error}"
                ) from error
            delay = min(CONNECT_RETRY.delay(attempt), remaining)
            log.warning("API server %s not reachable yet (attempt %d): %s", client.server, attempt, error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
        except DomainError as error:  # 401/403 and the like: retrying will not help
            raise StartupError(f"the Kubernetes API server {client.server} refused us: {error}") from error
    return False


def _raise_crash(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        if task.done() and not task.cancelled() and (crash := task.exception()) is not None:
            raise crash  # a controller loop died (a bug) or the leader lease was lost: exit non-zero


async def _stand_by(
    elector: LeaderElector,
    pod_controller: PodController,
    stop: asyncio.Event,
    tasks: list[asyncio.Task[None]],
) -> bool:
    """Keep the caches warm and write nothing until this replica leads. False on a signal."""
    waiters = {
        asyncio.ensure_future(stop.wait()),
        asyncio.ensure_future(_leading(elector, pod_controller)),
    }
    try:
        await asyncio.wait({*waiters, *tasks}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    _raise_crash(tasks)
    return not stop.is_set()


async def _leading(elector: LeaderElector, pod_controller: PodController) -> None:
    await pod_controller.ready.wait()
    if not elector.leading.is_set():
        log.info("standing by for lease %s/%s", elector.settings.namespace, elector.settings.lease_name)
    await elector.leading.wait()
    log.info("leading as %s", elector.identity)


async def _start(
    pod_controller: PodController,
    node_controller: NodeController,
    tasks: list[asyncio.Task[None]],
    sync_gate: asyncio.Event | None,
) -> None:
    await pod_controller.ready.wait()
    await node_controller.register()
    tasks.append(asyncio.create_task(node_controller.run(), name="node-controller"))
    if sync_gate is not None:
        sync_gate.set()  # after the node (and its lease renewal) so pod writes queue behind it


async def _abandon(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel everything now: in-flight syncs included, no drain, no NotReady patch."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _shutdown(
    settings: Settings,
    pod_controller: PodController,
    node_controller: NodeController | None,
    tasks: list[asyncio.Task[None]],
) -> None:
    with contextlib.suppress(Exception):
        await pod_controller.queue.drain(SHUTDOWN_DRAIN_SECONDS)
    if node_controller is not None and settings.node.shutdown_node_not_ready:
        try:
            await node_controller.mark_not_ready(deadline=5.0)
        except Exception as error:
            log.warning("could not mark the node NotReady on shutdown: %s", error)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@contextlib.contextmanager
def _signals(stop: asyncio.Event) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        if received:
            log.warning("second signal: exiting at once")
            os._exit(128 + signum)
        received.append(signum)
        log.info("received %s", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        yield
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
