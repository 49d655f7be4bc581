"""Kubernetes Events (implements ``EventRecorder``): best effort, never in the caller's way.

:meth:`KubernetesEventRecorder.record` only puts the event on a bounded queue; one background
task (:meth:`~KubernetesEventRecorder.start` / :meth:`~KubernetesEventRecorder.close`) writes
them to the API server in order. When the queue is full the event is dropped, counted and
reported (one warning per ``DROP_REPORT_INTERVAL_S`` with the count, not one per event); API
failures are logged and forgotten. Nothing is ever raised to the recording code.

Repeats are aggregated the way ``kubectl describe`` readers expect: an event identical to one
written less than ``aggregation_window_seconds`` ago (same object incarnation, type, reason and
message) does not create a new object but patches the existing one's ``count`` and
``lastTimestamp``. If that event has meanwhile been deleted (events have a TTL), a new one is
created.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from vkubelet.adapters.kubernetes.client import MERGE_PATCH, KubeClient
from vkubelet.adapters.system import SystemClock
from vkubelet.application.ports.cluster import EventType, ObjectRef
from vkubelet.application.ports.runtime import Clock
from vkubelet.domain.errors import DomainError, NotFound
from vkubelet.domain.pod import format_time

log = logging.getLogger(__name__)

_MAX_NAME = 253
#: at most one "queue full" warning per this many seconds (plus one once the queue drained)
DROP_REPORT_INTERVAL_S = 10.0
_EventKey = tuple[str, str, str, str, str, str, str]


@dataclass(frozen=True, slots=True)
class _Occurrence:
    obj: ObjectRef
    type: EventType
    reason: str
    message: str
    at: datetime

    @property
    def key(self) -> _EventKey:
        o = self.obj
        return (o.kind, o.namespace, o.name, o.uid, self.type.value, self.reason, self.message)


@dataclass(slots=True)
class _Written:
    namespace: str
    name: str
    count: int
    seen: float  # monotonic time of the latest occurrence


class KubernetesEventRecorder:
    """Writes core/v1 Events with ``source.component = component`` and ``source.host = host``."""

    def __init__(
        self,
        client: KubeClient,
        *,
        component: str,
        host: str,
        queue_size: int = 1000,
        aggregation_window_seconds: float = 600.0,
        max_tracked: int = 4096,
        clock: Clock | None = None,
    ) -> None:
        self._client = client
        self._component = component
        self._host = host
        self._window = aggregation_window_seconds
        self._max_tracked = max_tracked
        self._clock: Clock = clock or SystemClock()
        self._queue: asyncio.Queue[_Occurrence] = asyncio.Queue(maxsize=queue_size)
        self._written: OrderedDict[_EventKey, _Written] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._last_suffix = 0
        self.dropped = 0
        """Events lost because the queue was full or the recorder closed."""
        # A burst can overflow the queue thousands of times a second: one warning per
        # DROP_REPORT_INTERVAL_S with the count, and one when the queue has drained.
        self._unreported_drops = 0
        self._latest_drop = ""
        self._drops_reported_at: float | None = None

    def start(self) -> None:
        """Start the writer task on the running loop. Idempotent."""
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._drain(), name="event-recorder")

    def record(self, obj: ObjectRef, *, type: EventType, reason: str, message: str) -> None:
        """Queue an event (from the event loop's thread). Never blocks, never raises."""
        try:
            if self._closed:
                self.dropped += 1
                return
            self._queue.put_nowait(_Occurrence(obj, EventType(type), reason, message, self._clock.now()))
        except asyncio.QueueFull:
            self.dropped += 1
            self._unreported_drops += 1
            self._latest_drop = f"{EventType(type).value} {reason} for {_describe(obj)}"
            now = self._clock.monotonic()
            if self._drops_reported_at is None or now - self._drops_reported_at >= DROP_REPORT_INTERVAL_S:
                self._report_drops(now)
        except Exception:  # the recording code must never fail because of an event
            self.dropped += 1
            log.exception("cannot queue event %s for %s %s", reason, obj.kind, obj.name)

    async def flush(self) -> None:
        """Wait until every queued event has been written (or has failed)."""
        await self._queue.join()

    async def close(self, *, drain_seconds: float = 5.0) -> None:
        """Write what is queued (for at most ``drain_seconds``), then stop the writer."""
        self._closed = True
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await asyncio.wait_for(self._queue.join(), drain_seconds)
        except TimeoutError:
            log.warning("event recorder closed with %d events unwritten", self._queue.qsize())
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def _drain(self) -> None:
        while True:
            occurrence = await self._queue.get()
            try:
                await self._write(occurrence)
            except asyncio.CancelledError:
                raise
            except DomainError as exc:
                log.warning(
                    "cannot write event %s for %s: %s", occurrence.reason, _describe(occurrence.obj), exc
                )
            except Exception:
                log.exception("cannot write event %s for %s", occurrence.reason, _describe(occurrence.obj))
            finally:
                self._queue.task_done()
            if self._unreported_drops and self._queue.empty():
                self._report_drops(self._clock.monotonic())

    def _report_drops(self, now: float) -> None:
        log.warning(
            "event queue full (%d queued): dropped %d event(s) since the last report, the latest %s",
            self._queue.qsize(),
            self._unreported_drops,
            self._latest_drop,
        )
        self._unreported_drops = 0
        self._drops_reported_at = now

    async def _write(self, occurrence: _Occurrence) -> None:
        key = occurrence.key
        now = self._clock.monotonic()
        written = self._written.get(key)
        if written is not None and now - written.seen <= self._window:
            try:
                await self._client.request(
                    "PATCH",
                    _event_path(written.namespace, written.name),
                    what=f"event {written.namespace}/{written.name}",
                    body={"count": written.count + 1, "lastTimestamp": format_time(occurrence.at)},
                    content_type=MERGE_PATCH,
                    decode=False,
                )
            except NotFound:
                pass  # expired or deleted meanwhile: start a new event below
            else:
                written.count += 1
                written.seen = now
                self._written.move_to_end(key)
                return
        namespace = occurrence.obj.namespace or "default"
        name = self._event_name(occurrence.obj.name)
        await self._client.request(
            "POST",
            _event_path(namespace),
            what=f"event {namespace}/{name}",
            body=self._manifest(occurrence, namespace, name),
            decode=False,
        )
        self._written[key] = _Written(namespace, name, 1, now)
        self._written.move_to_end(key)
        while len(self._written) > self._max_tracked:
            self._written.popitem(last=False)

    def _manifest(self, occurrence: _Occurrence, namespace: str, name: str) -> dict[str, Any]:
        obj = occurrence.obj
        involved: dict[str, Any] = {"kind": obj.kind, "name": obj.name, "apiVersion": obj.api_version}
        if obj.namespace:
            involved["namespace"] = obj.namespace
        if obj.uid:
            involved["uid"] = obj.uid
        stamp = format_time(occurrence.at)
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": involved,
            "type": occurrence.type.value,
            "reason": occurrence.reason,
            "message": occurrence.message,
            "source": {"component": self._component, "host": self._host},
            "reportingComponent": self._component,
            "reportingInstance": self._host,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }

    def _event_name(self, object_name: str) -> str:
        # As client-go: "<object>.<hex time>", unique per recorder even within one nanosecond.
        suffix = max(time.time_ns(), self._last_suffix + 1)
        self._last_suffix = suffix
        tail = f".{suffix:x}"
        return object_name[: _MAX_NAME - len(tail)] + tail


def _event_path(namespace: str, name: str = "") -> str:
    path = f"/api/v1/namespaces/{quote(namespace, safe='')}/events"
    return f"{path}/{quote(name, safe='')}" if name else path


def _describe(obj: ObjectRef) -> str:
    where = f"{obj.namespace}/{obj.name}" if obj.namespace else obj.name
    return f"{obj.kind} {where}"
