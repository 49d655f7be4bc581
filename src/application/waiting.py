"""Waiting on the Clock: bounded waits and retry loops every controller shares.

Built on ``Clock.sleep`` rather than ``asyncio.timeout`` so fake clocks drive them in tests.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from vkubelet.application.ports.runtime import Clock
from vkubelet.domain.backoff import Backoff
from vkubelet.domain.errors import Transient

T = TypeVar("T")


async def finish_within(clock: Clock, future: asyncio.Future[Any], *, seconds: float) -> bool:
    """Wait until ``future`` is done or ``seconds`` of clock time pass; True if done.

    Never cancels ``future``.
    """
    if future.done():
        return True
    timer = asyncio.ensure_future(clock.sleep(seconds))
    try:
        await asyncio.wait({future, timer}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        timer.cancel()
    return future.done()


async def call_with_timeout(clock: Clock, call: Awaitable[T], *, seconds: float) -> T:
    """Await ``call`` for at most ``seconds`` of clock time.

    Raises Transient when time runs out, after cancelling the call; cancelling the caller
    cancels the call too.
    """
    task = asyncio.ensure_future(call)
    try:
        finished = await finish_within(clock, task, seconds=seconds)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not finished:
        task.cancel()
        task.add_done_callback(consume_outcome)
        raise Transient(f"no answer within {seconds:g} s")
    return task.result()


def consume_outcome(future: asyncio.Future[Any]) -> None:
    """Mark an abandoned call's exception as seen (it was already reported otherwise)."""
    if not future.cancelled():
        future.exception()


async def retry_until_done(
    attempt: Callable[[], Awaitable[T]],
    *,
    clock: Clock,
    backoff: Backoff,
    what: str,
    retryable: Callable[[Exception], bool],
    log: logging.Logger,
) -> T:
    """Run ``attempt`` until it returns, and return its result.

    A failure ``retryable`` accepts is logged as a warning naming ``what``, the attempt and the
    delay, then retried after ``backoff.delay(failures)`` of clock time; any other exception,
    cancellation included, propagates at once.
    """
    failures = 0
    while True:
        try:
            return await attempt()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            if not retryable(error):
                raise
            failures += 1
            delay = backoff.delay(failures)
            log.warning("%s failed (attempt %d, retrying in %.1f s): %s", what, failures, delay, error)
            await clock.sleep(delay)


__all__ = ["call_with_timeout", "consume_outcome", "finish_within", "retry_until_done"]
