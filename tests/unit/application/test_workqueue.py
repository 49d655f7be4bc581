"""KeyedWorkQueue driven by a FakeClock: ordering, per-key exclusion, parallelism, backoff.

The handler is a hand-written recorder (no mocks): it logs each run with the clock time, can be
held at a gate per key, and follows a per-key script of outcomes (None = done, a number =
"run me again in that many seconds", an exception = fail).
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from tests.fakes.clock import FakeClock

from vkubelet.application.workqueue import KeyedWorkQueue
from vkubelet.domain.backoff import Backoff
from vkubelet.domain.errors import Transient

Outcome = float | None | BaseException


class Recorder:
    """The queue's handler: records runs and plays a script of outcomes per key."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.runs: list[tuple[str, float]] = []
        self.cancelled: list[str] = []
        self.scripts: dict[str, list[Outcome]] = {}
        self.default: Outcome = None
        self.gates: dict[str, asyncio.Event] = {}
        self.running: dict[str, int] = {}
        self.max_parallel_same_key = 0
        self.max_parallel = 0

    def script(self, key: str, *outcomes: Outcome) -> None:
        self.scripts[key] = list(outcomes)

    def hold(self, key: str) -> asyncio.Event:
        """Block runs of ``key`` until the returned event is set."""
        gate = self.gates[key] = asyncio.Event()
        return gate

    def times(self, key: str) -> list[float]:
        return [at for ran, at in self.runs if ran == key]

    def order(self) -> list[str]:
        return [key for key, _ in self.runs]

    async def __call__(self, key: str) -> float | None:
        self.runs.append((key, self.clock.monotonic()))
        self.running[key] = self.running.get(key, 0) + 1
        self.max_parallel_same_key = max(self.max_parallel_same_key, self.running[key])
        self.max_parallel = max(self.max_parallel, sum(self.running.values()))
        try:
            gate = self.gates.get(key)
            if gate is not None:
                await gate.wait()
            script = self.scripts.get(key)
            outcome = script.pop(0) if script else self.default
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome
        except asyncio.CancelledError:
            self.cancelled.append(key)
            raise
        finally:
            self.running[key] -= 1


class ErrorLog:
    """The on_error hook: remembers (key, error, attempt)."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, BaseException, int]] = []

    def __call__(self, key: str, error: BaseException, attempt: int) -> None:
        self.entries.append((key, error, attempt))

    def attempts(self, key: str) -> list[int]:
        return [attempt for k, _, attempt in self.entries if k == key]


BACKOFF = Backoff(base=1.0, cap=8.0, factor=2.0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def handler(clock: FakeClock) -> Recorder:
    return Recorder(clock)


@pytest.fixture
def errors() -> ErrorLog:
    return ErrorLog()


QueueFactory = Callable[..., KeyedWorkQueue[str]]


@pytest.fixture
async def make_queue(clock: FakeClock, handler: Recorder, errors: ErrorLog) -> AsyncIterator[QueueFactory]:
    """Build a queue (not yet running); tasks started with ``start`` are cancelled afterwards."""
    queues: list[KeyedWorkQueue[str]] = []

    def factory(**overrides: Any) -> KeyedWorkQueue[str]:
        options: dict[str, Any] = {
            "clock": clock,
            "handler": handler,
            "workers": 1,
            "backoff": BACKOFF,
            "name": "test",
            "on_error": errors,
        }
        options.update(overrides)
        queue: KeyedWorkQueue[str] = KeyedWorkQueue(**options)
        queues.append(queue)
        return queue

    yield factory
    for task in list(_running):
        task.cancel()
    await asyncio.gather(*_running, return_exceptions=True)
    _running.clear()


_running: set[asyncio.Task[None]] = set()


async def start(queue: KeyedWorkQueue[str], clock: FakeClock) -> asyncio.Task[None]:
    task = asyncio.create_task(queue.run())
    _running.add(task)
    await clock.settle()
    return task


# -- ordering ------------------------------------------------------------------------------


async def test_keys_run_in_order_of_due_time(
    make_queue: QueueFactory, clock: FakeClock, handler: Recorder
) -> None:
    queue = make_queue()
    await start(queue, clock)
    queue.add("c", delay=3)
    queue.add("a", delay=1)
    queue.add("b", delay=2)
    queue.add("now")
    await clock.settle()
    assert handler.order() == ["now"]
    await clock.advance(0.99)
    assert handler.order() == ["now"], "nothing runs before it is due"
    await clock.advance(5)
    assert handler.runs == [("now", 0.0), ("a", 1.0), ("b", 2.0), ("c", 3.0)]


async def test_equal_due_times_run_in_the_order_added(
    make_queue: QueueFactory, clock: FakeClock, handler: Recorder
) -> None:
    queue = make_queue()
    for key in ["x", "y", "z", "w"]:
        queue.add(key, delay=1)
    await start(queue, clock)
    await clock.advance(1)
    assert handler.order() == ["x", "y", "z", "w"]


async def test_keys_added_before_run_wait_for_it(
    make_queue: QueueFactory, clock: FakeClock, handler: Recorder
) -> None:
    queue = make_queue()
    queue.add("early")
    await clock.settle()
    assert handler.runs == [] and len(queue) == 1
    await start(queue, clock)
    assert handler.order() == ["early"]


async def test_readd_keeps_the_earlier_due_time(
    make_queue: QueueFactory, clock: FakeClock, handler: Recorder
) -> None:
    queue = make_queue()
    await start(queue, clock)
    queue.add("k", delay=10)
    queue.add("k", delay=2)  # moves it earlier
    queue.add("k", delay=5)  # does not postpone it
    assert len(queue) == 1
    assert queue.due("k") == 2.0
    await clock.advance(2)
    assert handler.runs == [("k", 2.0)]
    await clock.advance(20)
    assert handler.runs == [("k", 2.0)], "the superseded due times must not run it again"


async def test_a_new_earlier_item_wakes_the_waiting_worker(
    make_queue: QueueFactory, clock: FakeClock, handler: Recorder
) -> None:
    queue = make_queue()
    await start(queue, clock)
    queue.add("late", delay=100)
    await clock.settle()  # the worker now sleeps until t=100
    queue.add("soon", delay=1)
    await clock.advance(1)
    assert handler.runs == [("soon", 1.0)]
    await clock.advance(99)
    assert handler.runs == [("soon", 1.0), ("late", 100.0)]


# -- one run per key at a time -------------------------------------------------------------


async def test_readd_while_in_flight_runs_exactly_once_more_and_never_concurrently(
    make_queue: QueueFactory, clock: FakeClock, handler: Recorder
) -> None:
    queue = make_queue(workers=4)
    gate = handler.hold("k")
    await start(queue, clock)
    queue.add("k")
    await clock.settle()
    assert queue.in_flight == 1 and queue.is_in_flight("k")
    for _ in range(5):  # a burst of events while the first run is busy
        queue.add("k")
    await clock.settle()
    assert handler.order() == ["k"], "the re-add must wait for the run in flight"
    assert queue.is_scheduled("k") and len(queue) == 1
    gate.set()
    await clock.settle()
    assert handler.order() == ["k", "k"]
    assert handler.max_parallel_same_key == 1
    await clock.advance(60)
    assert handler.order() == ["k", "k"]
    assert queue.in_flight == 0 and len(queue) == 0


async def test_readd_with_delay_while_in_flight_runs_after_that_delay(
    make_queue: QueueFactory, clock: FakeClock, handler: Recorder
) -> None:
    queue = make_queue()
    gate = handler.hold("k")
    await start(queue, clock)
    queue.add("k")
    await clock.settle()
    queue.add("k", delay=10)
    queue.add("k", delay=4)  # earlier wins for the dirty mark too
    assert queue.due("k") == 4.0
    await clock.advance(1)
    gate.set()
    await clock.settle()
    assert handler.times("k") == [0.0]
    await clock.advance(3)
    assert handler.times("k") == [0.0, 4.0]


# -- parallelism ---------------------------------------------------------------------------


async def test_n_workers_run_n_keys_in_parallel(
    make_queue: QueueFactory, clock: FakeClock, handler: Recorder
) -> None:
    queue = make_queue(workers=3)
    gates = [handler.hold(key) for key in ("a", "b", "c", "d")]
    await start(queue, clock)
    for key in ("a", "b", "c", "d"):
        queue.add(key)
    await clock.settle()
    assert queue.in_flight == 3
    assert handler.order() == ["a", "b", "c"]
    assert len(queue) == 1, "the fourth key waits for a free worker"
    gates[1].set()
    await clock.settle()
    assert handler.order() == ["a", "b", "c", "d"]
    assert handler.max_parallel == 3


async def test_workers_are_never_all_blocked_by_one_bad_pod(
    make_queue: QueueFactory, clock: FakeClock, handler: Recorder
) -> None:
    queue = make_queue(workers=2)
    handler.hold("hung")  # never released
    handler.script("failing", *[Transient("provider down")] * 100)
    await start(queue, clock)
    queue.add("hung")
    queue.add("failing")
    for index in range(100):
        queue.add(f"pod-{index}", delay=index * 0.5)
    await clock.advance(60)
    done = {key for key in handler.order() if key.startswith("pod-")}
    assert len(done) == 100
    assert queue.is_in_flight("hung")
    assert len(handler.times("failing")) > 5, "the failing pod keeps retrying meanwhile"


# -- failures and backoff ------------------------------------------------------------------


async def test_failures_back_off_exponentially_up_to_the_cap(
    make_queue: QueueFactory, clock: FakeClock, handler: Recorder, errors: ErrorLog
) -> None:
    queue = make_queue()
    handler.default = Transient("boom")
    await start(queue, clock)
    queue.add("k")
    await clock.advance(40)
    times = handler.times("k")
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert gaps[:6] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert errors.attempts("k") == list(range(1, len(times) + 1))
    assert queue.failures("k") == len(times)
    assert queue.is_scheduled("k")


async def test_a_key_is_never_abandoned_after_many_failures(
    make_queue: QueueFactory, clock: FakeClock, handler: Recorder, errors: ErrorLog
) -> None:
    queue = make_queue()
    handler.script("k", *[Transient(f"failure {n}") for n in range(1, 51)], None)
    await start(queue, clock)
    queue.add("k")
    await clock.advance(1_000)
    assert len(handler.times("k")) == 51
    assert errors.attempts("k") == list(range(1, 51))
    assert str(errors.entries[-1][1]) == "failure 50"
    assert queue.failures("k") == 0, "success resets the count"
    assert not queue.is_scheduled("k")


async def test_success_resets_the_backoff(
    make_queue: QueueFactory, clock: FakeClock, handler: Recorder
) -> None:
    queue = make_queue()
    handler.script("k", Transient("1"), Transient("2"), Transient("3"), None, Transient("again"))
    await start(queue, clock)
    queue.add("k")
    await clock.advance(7)  # runs at 0, 1, 3, 7 (success)
    assert handler.times("k") == [0.0, 1.0, 3.0, 7.0]
    assert queue.failures("k") == 0
    queue.add("k")
    await clock.advance(1)
    assert handler.times("k") == [0.0, 1.0, 3.0, 7.0, 7.0, 8.0], "back to the base delay"


async def test_an_add_during_backoff_runs_the_key_right_away(
    make_queue: QueueFactory, clock: FakeClock, handler: Recorder
) -> None:
    queue = make_queue(backoff=Backoff(base=60.0, cap=60.0))
    handler.script("k", Transient("down"))
    await start(queue, clock)
    queue.add("k")
    await clock.advance(5)
    assert queue.due("k") == 60.0
    queue.add("k")  # e.g. the pod changed: no reason to sit out the backoff
    await clock.settle()
    assert handler.times("k") == [0.0, 5.0]


async def test_a_handler_that_is_cancelled_internally_counts_as_a_failure(
    make_queue: QueueFactory, clock: FakeClock, handler: Recorder, errors: ErrorLog
) -> None:
    queue = make_queue()
    handler.script("k", asyncio.CancelledError())
    task = await start(queue, clock)
    queue.add("k")
    await clock.settle()
    assert not task.done(), "the worker survives"
    assert errors.attempts("k") == [1]
    await clock.advance(1)
    assert handler.times("k") == [0.0, 1.0]


async def test_a_non_finite_requeue_delay_is_a_failure(
    make_queue: QueueFactory, clock: FakeClock, handler: Recorder, errors: ErrorLog
) -> None:
    queue = make_queue()
    handler.script("k", float("inf"))
    await start(queue, clock)
    queue.add("k")
    await clock.settle()
    assert isinstance(errors.entries[0][1], ValueError)
    assert queue.due("k") == 1.0


async def test_a_raising_error_hook_does_not_kill_the_worker(
    make_queue: QueueFactory, clock: FakeClock, handler: Recorder
) -> None:
    def broken_hook(key: str, error: BaseException, attempt: int) -> None:
        raise RuntimeError("hook bug")

    queue = make_queue(on_error=broken_hook)
    handler.script("k", Transient("x"))
    task = await start(queue, clock)
    queue.add("k")
    queue.add("other")
    await clock.advance(1)
    assert not task.done()
    assert handler.order() == ["k", "other", "k"]


async def test_without_a_hook_failures_are_logged(
    make_queue: QueueFactory, clock: FakeClock, handler: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    queue = make_queue(on_error=None)
    handler.script("k", Transient("provider down"))
    await start(queue, clock)
    queue.add("k")
    await clock.settle()
    assert "attempt 1" in caplog.text and "provider down" in caplog.text


# -- requeue delay from the handler --------------------------------------------------------


async def test_the_handler_can_ask_to_run_again_after_a_delay(
    make_queue: QueueFactory, clock: FakeClock, handler: Recorder
) -> None:
    queue = make_queue()
    handler.script("k", 5.0, 2.5, None)  # e.g. a grace-period timer, then done
    await start(queue, clock)
    queue.add("k")
    await clock.advance(100)
    assert handler.times("k") == [0.0, 5.0, 7.5]
    assert not queue.is_scheduled("k")


async def test_requeue_delay_and_readd_combine_to_the_earlier(
    make_queue: QueueFactory, clock: FakeClock, handler: Recorder
) -> None:
    queue = make_queue()
    gate = handler.hold("k")
    handler.script("k", 30.0, None)
    await start(queue, clock)
    queue.add("k")
    await clock.settle()
    queue.add("k", delay=2)
    gate.set()
    await clock.settle()
    assert queue.due("k") == 2.0
    await clock.advance(2)
    assert handler.times("k") == [0.0, 2.0]
    await clock.advance(60)
    assert handler.times("k") == [0.0, 2.0], "the 30 s request was superseded by the earlier run"


async def test_a_requested_delay_resets_failures_because_the_run_succeeded(
    make_queue: QueueFactory, clock: FakeClock, handler: Recorder
) -> None:
    queue = make_queue()
    handler.script("k", Transient("x"), 10.0)
    await start(queue, clock)
    queue.add("k")
    await clock.advance(1)
    assert queue.failures("k") == 0
    assert queue.due("k") == 11.0


# -- forget --------------------------------------------------------------------------------


async def test_forget_drops_a_scheduled_key_and_its_failures(
    make_queue: QueueFactory, clock: FakeClock, handler: Recorder
) -> None:
    queue = make_queue()
    handler.script("k", Transient("x"))
    await start(queue, clock)
    queue.add("k")
    await clock.settle()
    assert queue.failures("k") == 1 and queue.is_scheduled("k")
    queue.forget("k")
    assert queue.failures("k") == 0 and not queue.is_scheduled("k") and len(queue) == 0
    await clock.advance(100)
    assert handler.times("k") == [0.0]


async def test_forget_while_in_flight_discards_the_outcome(
    make_queue: QueueFactory, clock: FakeClock, handler: Recorder, errors: ErrorLog
) -> None:
    queue = make_queue()
    gate = handler.hold("k")
    handler.script("k", Transient("late failure"))
    await start(queue, clock)
    queue.add("k")
    await clock.settle()
    queue.add("k")  # dirty...
    queue.forget("k")  # ...and then forgotten: the dirty mark goes too
    gate.set()
    await clock.advance(100)
    assert handler.times("k") == [0.0]
    assert queue.failures("k") == 0 and not queue.is_scheduled("k")
    assert errors.attempts("k") == [1], "the failure is still reported"


async def test_forget_then_add_while_in_flight_runs_again(
    make_queue: QueueFactory, clock: FakeClock, handler: Recorder
) -> None:
    queue = make_queue()
    gate = handler.hold("k")
    handler.script("k", 50.0, None)
    await start(queue, clock)
    queue.add("k")
    await clock.settle()
    queue.forget("k")
    queue.add("k", delay=3)
    gate.set()
    await clock.advance(100)
    assert handler.times("k") == [0.0, 3.0], "the forgotten run's 50 s request is dropped"


async def test_forget_of_an_unknown_key_is_harmless(make_queue: QueueFactory) -> None:
    queue = make_queue()
    queue.forget("never-added")
    assert len(queue) == 0


# -- lifecycle -----------------------------------------------------------------------------


async def test_cancelling_run_cancels_handlers_and_keeps_their_keys(
    make_queue: QueueFactory, clock: FakeClock, handler: Recorder
) -> None:
    queue = make_queue(workers=2)
    handler.hold("k")
    task = await start(queue, clock)
    queue.add("k")
    queue.add("later", delay=10)
    await clock.settle()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert handler.cancelled == ["k"]
    assert queue.in_flight == 0
    assert queue.is_scheduled("k") and queue.is_scheduled("later")
    assert clock.sleepers == 0, "no stray timers left behind"

    handler.gates.clear()
    await start(queue, clock)  # a cancelled queue may run again and picks up where it was
    await clock.advance(10)
    assert handler.order() == ["k", "k", "later"]


async def test_stop_lets_the_current_run_finish_and_takes_nothing_new(
    make_queue: QueueFactory, clock: FakeClock, handler: Recorder
) -> None:
    queue = make_queue()
    gate = handler.hold("k")
    task = await start(queue, clock)
    queue.add("k")
    queue.add("next")
    await clock.settle()
    queue.stop()
    await clock.settle()
    assert not task.done() and handler.cancelled == []
    gate.set()
    await clock.settle()
    assert task.done() and task.exception() is None
    assert handler.order() == ["k"]
    assert queue.is_scheduled("next")
    with pytest.raises(RuntimeError, match="stopped"):
        await queue.run()


async def test_drain_waits_for_in_flight_handlers(
    make_queue: QueueFactory, clock: FakeClock, handler: Recorder
) -> None:
    queue = make_queue(workers=2)
    gate = handler.hold("slow")
    task = await start(queue, clock)
    queue.add("slow")
    await clock.settle()
    draining = asyncio.create_task(queue.drain(timeout=30))
    await clock.advance(10)
    assert not draining.done()
    gate.set()
    await clock.settle()
    assert draining.done() and draining.result() is True
    assert task.done() and handler.cancelled == []


async def test_drain_cancels_what_outlives_its_timeout(
    make_queue: QueueFactory, clock: FakeClock, handler: Recorder
) -> None:
    queue = make_queue(workers=2)
    handler.hold("hung")
    task = await start(queue, clock)
    queue.add("hung")
    await clock.settle()
    draining = asyncio.create_task(queue.drain(timeout=5))
    await clock.advance(5)
    assert draining.done() and draining.result() is False
    assert handler.cancelled == ["hung"]
    assert queue.in_flight == 0 and queue.is_scheduled("hung")
    await clock.settle()
    assert task.done() and not task.cancelled()


async def test_drain_of_an_idle_queue_returns_at_once(make_queue: QueueFactory, clock: FakeClock) -> None:
    queue = make_queue()
    task = await start(queue, clock)
    assert await queue.drain(timeout=1) is True
    await clock.settle()
    assert task.done()


async def test_run_cannot_be_started_twice(make_queue: QueueFactory, clock: FakeClock) -> None:
    queue = make_queue()
    await start(queue, clock)
    with pytest.raises(RuntimeError, match="already running"):
        await queue.run()


@pytest.mark.parametrize("workers", [0, -1, -10])
def test_worker_count_must_be_positive(clock: FakeClock, handler: Recorder, workers: int) -> None:
    with pytest.raises(ValueError, match=f"got {workers}"):
        KeyedWorkQueue(clock=clock, handler=handler, workers=workers, backoff=BACKOFF, name="pods")


@pytest.mark.parametrize("delay", [float("nan"), float("inf")])
def test_add_rejects_a_non_finite_delay(make_queue: QueueFactory, delay: float) -> None:
    queue = make_queue()
    with pytest.raises(ValueError, match="must be finite"):
        queue.add("k", delay=delay)


# -- scale -----------------------------------------------------------------------------------


async def test_thousands_of_keys_run_once_each_in_due_order(
    make_queue: QueueFactory, clock: FakeClock, handler: Recorder
) -> None:
    queue = make_queue(workers=8)
    rng = random.Random(7)
    keys = [f"pod-{index}" for index in range(5_000)]
    due = {key: float(rng.randrange(0, 1_000)) for key in keys}
    for key in keys:
        queue.add(key, delay=due[key] + 500)
    for key in keys:  # a full resync re-adds everything earlier: one run each still
        queue.add(key, delay=due[key])
    assert len(queue) == 5_000
    await start(queue, clock)
    await clock.advance(2_000)
    assert sorted(handler.order()) == sorted(keys)
    assert [at for _, at in handler.runs] == sorted(due.values())
    assert all(at == due[key] for key, at in handler.runs)
    assert len(queue) == 0
