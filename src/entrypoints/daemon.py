"""Run one virtual node: start everything in order, stop it all cleanly on a signal.

Startup: kubelet API server (its port goes into the Node), pod controller (lists pods, adopts
what the provider already runs), node registration, then the controllers' loops. Shutdown on
SIGTERM/SIGINT: stop taking new work, let in-flight syncs finish, mark the node NotReady
(``--shutdown-node-not-ready``), stop the API server, flush events, close the provider and the
client, exit 0. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Iterator

from vkubelet.application.node_controller import NodeController
from vkubelet.application.pod_controller import PodController
from vkubelet.application.settings import Settings
from vkubelet.entrypoints.container import Application

log = logging.getLogger("vkubelet")

SHUTDOWN_DRAIN_SECONDS = 10.0


class StartupError(Exception):
    """The node could not start (bad provider config, startup timeout, ...)."""


async def run_daemon(settings: Settings, *, internal_ip: str) -> int:
    container = Application(settings=settings, internal_ip=internal_ip)
    stop = asyncio.Event()
    with _signals(stop):
        return await _run(container, settings, stop)


async def _run(container: Application, settings: Settings, stop: asyncio.Event) -> int:
    # Building the provider validates its config: fail before touching the cluster.
    provider = container.backends.pod_provider()
    client = container.kube.client()
    events = container.kube.events()
    server = container.kubelet_server()
    pod_controller = container.pod_controller()
    tasks: list[asyncio.Task[None]] = []
    node_controller: NodeController | None = None
    try:
        events.start()
        await server.start()
        log.info("kubelet API listening on %s:%d", settings.server.listen_host, server.port)
        tasks.append(asyncio.create_task(pod_controller.run(), name="pod-controller"))
        node_controller = container.node_controller(
            settings=container.node_controller_settings(kubelet_port=server.port)
        )
        startup = asyncio.ensure_future(_start(pod_controller, node_controller, tasks))
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
        waiter = asyncio.ensure_future(stop.wait())
        await asyncio.wait({waiter, *tasks}, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done() and not task.cancelled() and (crash := task.exception()) is not None:
                raise crash  # a controller loop died: that is a bug, exit non-zero
        log.info("shutting down")
        return 0
    finally:
        await _shutdown(settings, pod_controller, node_controller, tasks)
        await server.stop()
        await events.close()
        await provider.close()
        await client.close()


async def _start(
    pod_controller: PodController, node_controller: NodeController, tasks: list[asyncio.Task[None]]
) -> None:
    await pod_controller.ready.wait()
    await node_controller.register()
    tasks.append(asyncio.create_task(node_controller.run(), name="node-controller"))


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
