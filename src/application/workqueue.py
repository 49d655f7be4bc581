"""A keyed, time-ordered work queue: one handler run per key at a time, N keys in parallel.

The pod controller feeds this queue with pod UIDs from three sources (the API watch, the
provider's status stream, the periodic full reconcile) and every one of them only says "look at
this key again". The queue turns that stream of hints into handler runs with four guarantees:

* **A key never runs concurrently with itself.** Adding a key that is being handled marks it
  *dirty*; when the current run finishes the key is scheduled again, so the change that caused
  the add is always seen by a run that started after it. Any number of adds during one run
  collapse into a single extra run.

* **Different keys run in parallel,** on ``workers`` worker tasks. A handler that hangs or
  fails holds one worker and delays only its own key: with ``workers > 1`` the others keep
  going, so the workers are never all blocked by one bad pod.

* **Failures back off per key and are never abandoned.** A handler exception schedules the key
  again after ``backoff.delay(n)`` for its n-th consecutive failure, capped at ``backoff.cap``.
  Upstream's queue gave up after 20 attempts (about 55 minutes) and left the pod stuck until it
  changed or the process restarted (its bug 8); here a key retries forever at a bounded rate
  until it succeeds or is forgotten. A success resets the count. There is no global rate limit
  either (upstream's 10 qps token bucket throttled every pod on a busy node, its bug 18).

* **Earlier wins.** A key is scheduled at most once. Adding a key that is already waiting keeps
  whichever due time is earlier, so a burst of events cannot postpone work, and an event that
  arrives during a long backoff runs the key right away instead of waiting the backoff out.
  The same rule combines the outcomes of a finished run: a dirty mark, the delay the handler
  asked for and the failure backoff each propose a due time, and the earliest is used.

The handler's return value is its own timer: ``None`` means "done until someone adds me",
a number means "run me again in that many seconds" (grace-period deadlines, status polling).

Scheduling is a heap of ``(due, sequence, key)`` plus a dict ``key -> (due, sequence)`` that
says which heap entry is current; moving a key earlier pushes a new entry and leaves the old one
to be skipped when it surfaces (the heap is rebuilt when stale entries outnumber live ones). So
adding, taking and forgetting cost O(log n) for n scheduled keys, and 5,000 pods are cheap.
Equal due times run in the order they were scheduled.

Only one worker waits for work at a time (the others queue on a lock behind it). It sleeps on
the :class:`Clock` until the earliest due time, or until an ``asyncio.Event`` says that a new,
earlier item arrived or that the queue is stopping. All time goes through the clock, so tests
drive the queue with a fake clock and never sleep for real.

Lifecycle: :meth:`run` runs the workers until it is cancelled, which cancels the in-flight
handlers and puts their keys back in the schedule (nothing is lost if ``run`` is started
again). For a graceful shutdown, :meth:`stop` makes workers finish their current item and exit,
and :meth:`drain` does that and waits for in-flight handlers, cancelling them if a timeout
passes first. A stopped queue cannot run again.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

from vkubelet.application.ports.runtime import Clock
from vkubelet.domain.backoff import Backoff

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)

# Due times within this many seconds of "now" count as due: ``now + (due - now)`` need not
# round back to exactly ``due``, and a clock woken at its deadline must find the item ready.
_EPSILON = 1e-9
# Rebuild the heap when it holds more than this many entries beyond twice the live ones.
_COMPACT_SLACK = 64


class KeyedWorkQueue(Generic[K]):
    """Runs ``handler(key)`` for added keys: per-key sequential, ``workers`` keys in parallel."""

    def __init__(
        self,
        *,
        clock: Clock,
        handler: Callable[[K], Awaitable[float | None]],
        workers: int,
        backoff: Backoff,
        name: str,
        on_error: Callable[[K, BaseException, int], None] | None = None,
    ) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers <= 0:
            raise ValueError(f"work queue {name!r}: workers must be a positive integer, got {workers!r}")
        self._clock = clock
        self._handler = handler
        self._workers = workers
        self._backoff = backoff
        self._name = name
        self._on_error = on_error

        self._heap: list[tuple[float, int, K]] = []
        self._scheduled: dict[K, tuple[float, int]] = {}  # the live heap entry of each key
        self._sequence = itertools.count()
        self._in_flight: set[K] = set()
        self._dirty: dict[K, float] = {}  # in-flight keys added again: when to run next
        self._forgotten: set[K] = set()  # in-flight keys whose outcome is to be discarded
        self._failures: dict[K, int] = {}

        self._take_lock = asyncio.Lock()
        self._wakeup = asyncio.Event()
        self._waiter_deadline: float | None = None  # when the waiting worker wakes by itself
        self._idle = asyncio.Event()  # set whenever nothing is in flight
        self._idle.set()
        self._stopping = False
        self._running = False
        self._worker_tasks: list[asyncio.Task[None]] = []

    # -- introspection --------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._name

    def __len__(self) -> int:
        """Keys waiting for a run: scheduled ones plus in-flight ones added again (dirty)."""
        return len(self._scheduled) + len(self._dirty)

    @property
    def in_flight(self) -> int:
        """Handlers running right now."""
        return len(self._in_flight)

    def is_scheduled(self, key: K) -> bool:
        """Whether ``key`` will run again without anyone adding it (waiting or dirty)."""
        return key in self._scheduled or key in self._dirty

    def is_in_flight(self, key: K) -> bool:
        return key in self._in_flight

    def due(self, key: K) -> float | None:
        """The clock's monotonic time at which ``key`` runs next; None if it is not scheduled."""
        entry = self._scheduled.get(key)
        if entry is not None:
            return entry[0]
        return self._dirty.get(key)

    def failures(self, key: K) -> int:
        """Consecutive failed runs of ``key`` since its last success (0 when it never failed)."""
        return self._failures.get(key, 0)

    # -- feeding --------------------------------------------------------------------------
    def add(self, key: K, *, delay: float = 0.0) -> None:
        """Run ``key`` after ``delay`` seconds (or earlier, if it is already due earlier).

        If the key is being handled, it runs again once the current run finishes, never
        alongside it. Keys may be added before :meth:`run` starts and after :meth:`stop`; they
        wait in the schedule.
        """
        if not math.isfinite(delay):
            raise ValueError(f"work queue {self._name!r}: delay for {key!r} must be finite, got {delay!r}")
        due = self._clock.monotonic() + max(delay, 0.0)
        if key in self._in_flight:
            previous = self._dirty.get(key)
            if previous is None or due < previous:
                self._dirty[key] = due
            return
        self._schedule(key, due)

    def forget(self, key: K) -> None:
        """Drop ``key``: its scheduled run and its failure count.

        A run in flight finishes, but its outcome (a failure backoff or a requested delay) no
        longer schedules anything; only adding the key again does.
        """
        self._scheduled.pop(key, None)  # its heap entry turns stale and is skipped
        self._failures.pop(key, None)
        if key in self._in_flight:
            self._forgotten.add(key)
            self._dirty.pop(key, None)
        self._compact_if_sparse()

    # -- running --------------------------------------------------------------------------
    async def run(self) -> None:
        """Run the workers until cancelled, or until :meth:`stop`/:meth:`drain` lets them end.

        Cancelling cancels in-flight handlers; their keys go back into the schedule. Handler
        exceptions never end a worker; should a worker crash anyway (a bug in the queue), the
        others are cancelled and the error propagates.
        """
        if self._running:
            raise RuntimeError(f"work queue {self._name!r} is already running")
        if self._stopping:
            raise RuntimeError(f"work queue {self._name!r} was stopped and cannot run again")
        self._running = True
        self._worker_tasks = [
            asyncio.create_task(self._work(), name=f"{self._name}-worker-{index}")
            for index in range(self._workers)
        ]
        try:
            done, _ = await asyncio.wait(self._worker_tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                crash = None if task.cancelled() else task.exception()
                if crash is not None:
                    raise crash
        finally:
            await self._cancel_workers()
            self._running = False

    def stop(self) -> None:
        """Stop taking items. Workers finish their current handler and exit; :meth:`run` returns."""
        self._stopping = True
        self._wakeup.set()

    # The timeout is on the Clock port (fake in tests), which asyncio.timeout cannot use.
    async def drain(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Stop, and wait (up to ``timeout`` clock seconds) for in-flight handlers to finish.

        Returns True when they all finished; False when the timeout cancelled the rest (their
        keys stay scheduled). Scheduled keys that never started are left in the schedule.
        """
        self.stop()
        if not self._in_flight:
            return True
        idle = asyncio.ensure_future(self._idle.wait())
        waiters: set[asyncio.Future[Any]] = {idle}
        if timeout is not None:
            waiters.add(asyncio.ensure_future(self._clock.sleep(max(timeout, 0.0))))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await _cancel_all(waiters)
        if not self._in_flight:
            return True
        log.warning(
            "work queue %r: %d handler(s) still running after %ss; cancelling them",
            self._name,
            len(self._in_flight),
            timeout,
        )
        await self._cancel_workers()
        return False

    # -- internals: scheduling ------------------------------------------------------------
    def _schedule(self, key: K, due: float) -> None:
        current = self._scheduled.get(key)
        if current is not None and current[0] <= due:
            return  # earlier wins
        sequence = next(self._sequence)
        self._scheduled[key] = (due, sequence)
        heapq.heappush(self._heap, (due, sequence, key))
        if self._waiter_deadline is None or due < self._waiter_deadline:
            self._wakeup.set()
        self._compact_if_sparse()

    def _compact_if_sparse(self) -> None:
        if len(self._heap) > 2 * len(self._scheduled) + _COMPACT_SLACK:
            self._heap = [(due, seq, key) for key, (due, seq) in self._scheduled.items()]
            heapq.heapify(self._heap)

    def _earliest(self) -> tuple[float, K] | None:
        """The live head of the heap (stale entries on top are discarded on the way)."""
        while self._heap:
            due, sequence, key = self._heap[0]
            if self._scheduled.get(key) == (due, sequence):
                return due, key
            heapq.heappop(self._heap)
        return None

    async def _take(self) -> K | None:
        """Wait for the next due key and mark it in flight; None once the queue is stopping."""
        async with self._take_lock:
            while not self._stopping:
                now = self._clock.monotonic()
                head = self._earliest()
                if head is not None and head[0] <= now + _EPSILON:
                    key = head[1]
                    heapq.heappop(self._heap)
                    del self._scheduled[key]
                    self._in_flight.add(key)
                    self._idle.clear()
                    return key
                await self._wait_for(None if head is None else head[0])
            return None

    async def _wait_for(self, deadline: float | None) -> None:
        """Sleep until ``deadline`` (None: indefinitely) or until ``_wakeup`` is set."""
        self._wakeup.clear()
        self._waiter_deadline = deadline
        waiters: set[asyncio.Future[Any]] = {asyncio.ensure_future(self._wakeup.wait())}
        if deadline is not None:
            delay = deadline - self._clock.monotonic()
            waiters.add(asyncio.ensure_future(self._clock.sleep(delay)))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._waiter_deadline = None
            await _cancel_all(waiters)

    # -- internals: handling --------------------------------------------------------------
    async def _work(self) -> None:
        this_task = asyncio.current_task()
        while True:
            key = await self._take()
            if key is None:
                return
            await self._process(key)
            if this_task is not None and this_task.cancelling():
                # The handler swallowed our cancellation; honour it anyway.
                raise asyncio.CancelledError

    async def _process(self, key: K) -> None:
        result: float | None = None
        error: BaseException | None = None
        try:
            result = await self._handler(key)
        except asyncio.CancelledError as exc:
            this_task = asyncio.current_task()
            if this_task is not None and this_task.cancelling():
                self._abandon_run(key)
                raise
            error = exc  # the handler's own business (e.g. an inner task it awaited was cancelled)
        except Exception as exc:
            error = exc
        except BaseException:
            self._abandon_run(key)
            raise
        if error is None and result is not None and not math.isfinite(result):
            error = ValueError(f"handler returned a non-finite requeue delay {result!r}")
        self._finish(key, result, error)

    def _finish(self, key: K, result: float | None, error: BaseException | None) -> None:
        """Book the outcome of a completed run and schedule the key's next one, if any."""
        self._in_flight.discard(key)
        forgotten = key in self._forgotten
        self._forgotten.discard(key)
        now = self._clock.monotonic()
        candidates: list[float] = []
        dirty = self._dirty.pop(key, None)
        if dirty is not None:
            candidates.append(dirty)
        if error is not None:
            attempt = self._failures.get(key, 0) + 1
            if not forgotten:
                self._failures[key] = attempt
                candidates.append(now + self._backoff.delay(attempt))
            self._report(key, error, attempt)
        else:
            self._failures.pop(key, None)
            if result is not None and not forgotten:
                candidates.append(now + max(result, 0.0))
        if candidates:
            self._schedule(key, min(candidates))
        if not self._in_flight:
            self._idle.set()

    def _abandon_run(self, key: K) -> None:
        """A run was cancelled from outside: put the key back (unless forgotten) for a later run."""
        self._in_flight.discard(key)
        forgotten = key in self._forgotten
        self._forgotten.discard(key)
        dirty = self._dirty.pop(key, None)
        if not forgotten:
            self._schedule(key, self._clock.monotonic())
        elif dirty is not None:
            self._schedule(key, dirty)
        if not self._in_flight:
            self._idle.set()

    def _report(self, key: K, error: BaseException, attempt: int) -> None:
        if self._on_error is None:
            log.warning(
                "work queue %r: handling %r failed (attempt %d), retrying with backoff: %r",
                self._name,
                key,
                attempt,
                error,
            )
            return
        try:
            self._on_error(key, error, attempt)
        except Exception:
            log.exception("work queue %r: the on_error hook failed for %r", self._name, key)

    async def _cancel_workers(self) -> None:
        tasks, self._worker_tasks = self._worker_tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


async def _cancel_all(futures: set[asyncio.Future[Any]]) -> None:
    """Cancel helper futures and wait until they are really finished (no dangling tasks)."""
    for future in futures:
        future.cancel()
    await asyncio.gather(*futures, return_exceptions=True)
