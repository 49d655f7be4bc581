"""ConfigMaps, Secrets and Services for env and volume resolution (implements ``ConfigSource``).

Upstream kept cluster-wide informers for all three (its bug 17: memory, RBAC to read every
secret of the cluster, and syncs that ran before the caches were filled). Here each read is an
on-demand GET of the one object (or the one namespace's services) a pod refers to, behind a
short TTL cache:

* a burst of reads of one configmap (say, the volume checks of many running pods) costs one
  GET: concurrent readers of the same key share the request in flight, and later readers get
  the cached answer for ``ttl_seconds``;
* NotFound is cached like a value (a burst of pods with a missing optional configmap is common);
  other failures are not cached, so a retry really retries;
* a configmap is cached once as its raw ``data`` and ``binaryData``; the env view and the
  volume view are both derived from that entry, so reading both costs one GET (and a bad
  ``binaryData`` value fails only the volume view, which reads it);
* returned mappings are fresh copies: callers may keep or change them;
* a ``fresh`` read (a pod's first resolution) skips the cache and joins no request in flight,
  since that request may have left before the object last changed: it makes its own GET, whose
  answer then serves later readers. Each request is numbered when it starts and the cache keeps
  the answer of the latest-started one, so an older request finishing last cannot put back the
  data a fresh read replaced.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast
from urllib.parse import quote

from vkubelet.adapters.kubernetes.client import KubeClient
from vkubelet.adapters.system import SystemClock
from vkubelet.application.ports.cluster import ServiceInfo
from vkubelet.application.ports.runtime import Clock
from vkubelet.domain.errors import InvalidInput, NotFound
from vkubelet.domain.volumes import utf8_bytes

T = TypeVar("T")
_Key = tuple[str, str, str]  # (kind, namespace, name)


def _namespaced(namespace: str, plural: str, name: str = "") -> str:
    path = f"/api/v1/namespaces/{quote(namespace, safe='')}/{plural}"
    return f"{path}/{quote(name, safe='')}" if name else path


def _decode_base64(values: Mapping[str, Any], *, what: str, field: str) -> dict[str, bytes]:
    """Base64 values of a manifest field (secret ``data``, configmap ``binaryData``), decoded.
    Raises InvalidInput naming the object, the field and the key."""
    decoded = {}
    for key, value in values.items():
        try:
            decoded[str(key)] = base64.b64decode(value or "", validate=True)
        except (binascii.Error, ValueError, TypeError) as exc:
            raise InvalidInput(f"{what}: {field}[{key!r}] is not valid base64") from exc
    return decoded


@dataclass(frozen=True, slots=True)
class _ConfigMap:
    """What is cached of a configmap: its two fields as the API sent them."""

    data: Mapping[str, str]
    binary_data: Mapping[str, Any]  # base64 text, decoded when the volume view is asked for


class KubernetesConfigSource:
    """``ConfigSource`` with per-object GETs and a TTL cache (``ttl_seconds <= 0``: no cache)."""

    _PRUNE_AT = 1024  # entries; expired ones are dropped when the cache grows past this

    def __init__(self, client: KubeClient, *, ttl_seconds: float = 5.0, clock: Clock | None = None) -> None:
        self._client = client
        self._ttl = ttl_seconds
        self._clock: Clock = clock or SystemClock()
        self._cache: dict[_Key, _Entry] = {}
        # The latest-started request of each key, which later (non-fresh) readers join.
        self._inflight: dict[_Key, _Request] = {}
        self._sequence = itertools.count()

    async def get_config_map(self, namespace: str, name: str, *, fresh: bool = False) -> Mapping[str, str]:
        return dict((await self._config_map(namespace, name, fresh=fresh)).data)

    async def get_config_map_files(
        self, namespace: str, name: str, *, fresh: bool = False
    ) -> Mapping[str, bytes]:
        config_map = await self._config_map(namespace, name, fresh=fresh)
        files = {key: utf8_bytes(value) for key, value in config_map.data.items()}
        # The API server keeps the keys disjoint; were they not, binaryData wins, as in the
        # kubelet's payload for a volume without items.
        what = f"configmap {namespace}/{name}"
        files.update(_decode_base64(config_map.binary_data, what=what, field="binaryData"))
        return files

    async def _config_map(self, namespace: str, name: str, *, fresh: bool) -> _ConfigMap:
        async def fetch() -> _ConfigMap:
            manifest = await self._client.request(
                "GET", _namespaced(namespace, "configmaps", name), what=f"configmap {namespace}/{name}"
            )
            data = {str(k): str(v) for k, v in (manifest.get("data") or {}).items()}
            return _ConfigMap(data, dict(manifest.get("binaryData") or {}))

        return await self._cached(("configmap", namespace, name), fetch, fresh=fresh)

    async def get_secret(self, namespace: str, name: str, *, fresh: bool = False) -> Mapping[str, bytes]:
        async def fetch() -> dict[str, bytes]:
            what = f"secret {namespace}/{name}"
            manifest = await self._client.request("GET", _namespaced(namespace, "secrets", name), what=what)
            return _decode_base64(manifest.get("data") or {}, what=what, field="data")

        data = await self._cached(("secret", namespace, name), fetch, fresh=fresh)
        return dict(data)

    async def list_services(self, namespace: str) -> Sequence[ServiceInfo]:
        async def fetch() -> tuple[ServiceInfo, ...]:
            listing = await self._client.request(
                "GET", _namespaced(namespace, "services"), what=f"services of namespace {namespace}"
            )
            return tuple(info for info in map(service_info, listing.get("items") or ()) if info is not None)

        return list(await self._cached(("services", namespace, ""), fetch, fresh=False))

    def invalidate(self) -> None:
        """Forget every cached answer (requests in flight still complete)."""
        self._cache.clear()

    async def _cached(self, key: _Key, fetch: Callable[[], Awaitable[T]], *, fresh: bool) -> T:
        while not fresh:
            hit = self._cache.get(key)
            if hit is not None and hit.expires > self._clock.monotonic():
                return cast(T, _answer(hit.value, hit.missing))
            request = self._inflight.get(key)
            if request is None:
                break
            pending = request.future
            try:
                value, missing = await asyncio.shield(pending)
            except asyncio.CancelledError:
                # The task doing the GET was cancelled, not us: look again (and maybe fetch).
                task = asyncio.current_task()
                if pending.cancelled() and not (task is not None and task.cancelling()):
                    continue
                raise
            return cast(T, _answer(value, missing))

        future: asyncio.Future[tuple[Any, NotFound | None]] = asyncio.get_running_loop().create_future()
        request = _Request(next(self._sequence), future)
        self._inflight[key] = request
        try:
            try:
                outcome: tuple[Any, NotFound | None] = (await fetch(), None)
            except NotFound as exc:
                outcome = (None, exc)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            # Not cached: the waiters see the same failure, the next caller tries again.
            future.set_exception(exc)
            future.exception()  # mark retrieved: no "never retrieved" warning without waiters
            raise
        finally:
            if self._inflight.get(key) is request:  # a fresh read may have taken its place
                del self._inflight[key]
        future.set_result(outcome)
        if self._ttl > 0:
            self._store(key, outcome, sequence=request.sequence)
        return cast(T, _answer(*outcome))

    def _store(self, key: _Key, outcome: tuple[Any, NotFound | None], *, sequence: int) -> None:
        current = self._cache.get(key)
        if current is not None and current.sequence > sequence:
            return  # a request started after this one has already answered
        now = self._clock.monotonic()
        if len(self._cache) >= self._PRUNE_AT:
            for stale in [k for k, entry in self._cache.items() if entry.expires <= now]:
                del self._cache[stale]
        self._cache[key] = _Entry(now + self._ttl, outcome[0], outcome[1], sequence)


@dataclass(frozen=True, slots=True)
class _Entry:
    expires: float  # the clock's monotonic()
    value: Any
    missing: NotFound | None
    sequence: int  # of the request that got it


@dataclass(frozen=True, slots=True)
class _Request:
    sequence: int  # requests are numbered in the order they start
    future: asyncio.Future[tuple[Any, NotFound | None]]


def _answer(value: Any, missing: NotFound | None) -> Any:
    if missing is not None:
        # A fresh exception per caller: re-raising one shared instance would pile up tracebacks.
        raise NotFound(str(missing)) from missing.__cause__
    return value


def service_info(manifest: Mapping[str, Any]) -> ServiceInfo | None:
    """The service-link view of a v1 Service; None for headless or IP-less services."""
    spec = manifest.get("spec") or {}
    cluster_ip = str(spec.get("clusterIP") or "")
    if not cluster_ip or cluster_ip == "None":
        return None
    ports = tuple(
        (str(port.get("name") or ""), int(port.get("port") or 0), str(port.get("protocol") or "TCP"))
        for port in spec.get("ports") or ()
    )
    name = str((manifest.get("metadata") or {}).get("name") or "")
    return ServiceInfo(name=name, cluster_ip=cluster_ip, ports=ports)
