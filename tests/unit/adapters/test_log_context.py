"""The node name in the log lines of a multi-node process (adapters/telemetry/logs.py)."""

from __future__ import annotations

import asyncio
import io
import logging

from vkubelet.adapters.telemetry.logs import NodeNameFilter, current_node


def _capturing_logger() -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(NodeNameFilter())
    handler.setFormatter(logging.Formatter("%(message)s%(node_context)s"))
    logger = logging.getLogger(f"test-log-context-{id(stream)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream


def test_a_line_outside_any_node_is_unchanged() -> None:
    logger, stream = _capturing_logger()
    logger.info("registered")
    assert stream.getvalue() == "registered\n"


def test_each_node_task_and_the_tasks_it_starts_name_their_node() -> None:
    logger, stream = _capturing_logger()

    async def node(name: str) -> None:
        current_node.set(name)

        async def worker() -> None:
            logger.info("pod synced")

        await asyncio.create_task(worker())  # a task started below the node's task
        logger.info("lease renewed")

    async def process() -> None:
        await asyncio.gather(asyncio.create_task(node("vk-0")), asyncio.create_task(node("vk-1")))
        logger.info("stopped")  # the process's own task never had a node set

    asyncio.run(process())
    lines = stream.getvalue().splitlines()
    assert sorted(lines[:-1]) == [
        "lease renewed node=vk-0",
        "lease renewed node=vk-1",
        "pod synced node=vk-0",
        "pod synced node=vk-1",
    ]
    assert lines[-1] == "stopped"
