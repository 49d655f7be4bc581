"""Small helpers shared by every test tier: waiting on a condition with a deadline (never a
sleep as synchronisation) and closing a port's stream."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll ``condition`` until it returns something truthy and return that; fail naming
    ``what`` at the deadline. An exception from ``condition`` counts as "not yet" (it may race
    with an object's creation) and is named in the failure."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = condition()
            if result:
                return result
        except Exception as error:
            last_error = error
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail}")
        time.sleep(interval)


async def eventually(
    check: Callable[[], Awaitable[Any]] | Callable[[], Any],
    what: str,
    *,
    within: float = 10.0,
    interval: float = 0.02,
) -> Any:
    """Await (or call) ``check`` until it returns something truthy and return that; fail naming
    ``what`` after ``within`` seconds of the event loop's clock. Exceptions propagate."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if loop.time() > end:
            raise AssertionError(f"timed out ({within:g}s) waiting for {what}")
        await asyncio.sleep(interval)


async def close_stream(stream: AsyncIterator[object]) -> None:
    """Close a stream a port returned as an ``AsyncIterator``: ours are async generators, and
    closing one runs its ``finally`` (unsubscribing, cancelling the call) as a consumer's
    ``break`` would."""
    assert isinstance(stream, AsyncGenerator), f"{stream!r} is not an async generator"
    await stream.aclose()
