"""Hand-written, in-memory fakes of the cluster-side ports (``application/ports/cluster.py``).

They behave like the API server where the application can tell the difference, because a fake
that is kinder than the server hides exactly the bugs unit tests are for:

* every write bumps one increasing resourceVersion, and the pod watch replays history after
  the RV it is given (``expire_history`` makes older RVs raise ``Expired``, the 410);
* the watch is field-selected on ``spec.nodeName``: a pod entering the selection is ADDED,
  one leaving it is DELETED, as the server reports it;
* status patches are strategic merge patches: lists with a merge key (pod conditions by
  ``type``, podIPs/hostIPs by ``ip``, node conditions and addresses by ``type``) are merged
  item by item, and items merge field by field; maps merge key by key; ``None`` deletes;
  other lists are replaced whole -- including ``containerStatuses`` (and the init/ephemeral
  ones), which have no merge key on the real server. The ``$patch: replace`` /
  ``$patch: delete`` directives are understood;
* deletes check the UID precondition and follow the server's graceful deletion: a grace
  period sets ``deletionTimestamp`` and ``deletionGracePeriodSeconds`` and keeps the object, a
  later delete may only shorten it, grace 0 removes the object (unless finalizers remain), and
  pods that are unscheduled or terminal are removed at once whatever the grace.

Each fake logs the port calls it receives (``calls``, ``calls_to``) and fails on demand
(``inject_failure``). Test-side helpers (``create``, ``graceful_delete``, ``delete``...) change
state like another actor would; they are not logged and never fail.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, NamedTuple

from tests.fakes.clock import FakeClock
from vkubelet.application.ports.cluster import (
    EventType,
    IssuedToken,
    Lease,
    ObjectRef,
    PodEvent,
    ServiceInfo,
    WatchEventType,
)
from vkubelet.application.ports.runtime import Clock
from vkubelet.domain.errors import Conflict, Expired, InvalidInput, NotFound
from vkubelet.domain.pod import Pod, PodRef, format_time, parse_time

# -- shared machinery ------------------------------------------------------------------------


class Call(NamedTuple):
    """One port call as received: the method and its arguments by parameter name."""

    method: str
    args: Mapping[str, Any]


@dataclass
class _Injected:
    error: BaseException
    remaining: int | None  # None: until cleared
    match: Mapping[str, str]


class _FakeBase:
    """Call log and failure injection, shared by the gateway fakes."""

    PORT_METHODS: frozenset[str] = frozenset()
    MATCH_KEYS: frozenset[str] = frozenset()

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._injected: dict[str, list[_Injected]] = {}

    def inject_failure(
        self, method: str, error: BaseException, *, times: int | None = 1, **match: str
    ) -> None:
        """Make the next ``times`` calls of ``method`` raise ``error`` (``times=None``: all of them).

        Keyword arguments narrow it to calls about one object, e.g. ``name="vk"`` or
        ``namespace="ns", name="cfg"``.
        """
        if method not in self.PORT_METHODS:
            raise ValueError(f"{type(self).__name__} has no port method {method!r}")
        unknown = set(match) - self.MATCH_KEYS
        if unknown:
            raise ValueError(f"cannot match {method} calls on {sorted(unknown)}")
        if times is not None and times < 1:
            raise ValueError(f"times must be >= 1 or None, got {times!r}")
        self._injected.setdefault(method, []).append(_Injected(error, times, dict(match)))

    def clear_failures(self) -> None:
        self._injected.clear()

    def calls_to(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    def _enter(self, method: str, subject: Mapping[str, str], **args: Any) -> None:
        """Log the call, then raise an injected failure that matches it, if any."""
        self._log(method, **args)
        self._fail(method, subject)

    def _log(self, method: str, **args: Any) -> None:
        self.calls.append(Call(method, copy.deepcopy(args)))

    def _fail(self, method: str, subject: Mapping[str, str]) -> None:
        entries = self._injected.get(method, [])
        for entry in entries:
            if all(subject.get(key) == value for key, value in entry.match.items()):
                if entry.remaining is not None:
                    entry.remaining -= 1
                    if entry.remaining == 0:
                        entries.remove(entry)
                raise entry.error


# The lists of a status that a strategic merge patch merges by key (Kubernetes' patchMergeKey).
# The container status lists have no patchMergeKey in the API (PodStatus in core/v1/types.go):
# a patch that carries one of them replaces it whole, as on the real server.
POD_STATUS_MERGE_KEYS: Mapping[str, str] = {
    "conditions": "type",
    "podIPs": "ip",
    "hostIPs": "ip",
}
NODE_STATUS_MERGE_KEYS: Mapping[str, str] = {
    "conditions": "type",
    "addresses": "type",  # declared mergeable by type upstream, with all that implies
}


def strategic_merge(
    current: Mapping[str, Any], patch: Mapping[str, Any], merge_keys: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """``current`` with ``patch`` applied as a strategic merge patch (a new dict).

    ``merge_keys`` names the lists of *this* level that merge by key; nested maps merge
    recursively (their lists are replaced).
    """
    result = copy.deepcopy(dict(current))
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key == "$retainKeys":
            continue  # ordering and retain hints: the result is the same for our purposes
        if value is None:
            result.pop(key, None)
        elif merge_keys and key in merge_keys and isinstance(value, list):
            existing = result.get(key)
            result[key] = _merge_list(existing if isinstance(existing, list) else [], value, merge_keys[key])
        elif isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = strategic_merge(result[key], value)
        elif isinstance(value, Mapping):
            result[key] = strategic_merge({}, value)  # drops None members, as the server does
        elif isinstance(value, list):  # replaced whole; None members of its items are dropped
            result[key] = [
                strategic_merge({}, item) if isinstance(item, Mapping) else copy.deepcopy(item)
                for item in value
            ]
        else:
            result[key] = copy.deepcopy(value)
    return result


def _merge_list(current: list[Any], patch: list[Any], merge_key: str) -> list[Any]:
    if any(isinstance(item, Mapping) and item.get("$patch") == "replace" for item in patch):
        return [copy.deepcopy(item) for item in patch if not (isinstance(item, Mapping) and "$patch" in item)]
    result = [copy.deepcopy(item) for item in current]
    for item in patch:
        if not isinstance(item, Mapping) or merge_key not in item:
            raise InvalidInput(f"strategic merge patch: list item {item!r} lacks merge key {merge_key!r}")
        position = next(
            (index for index, old in enumerate(result) if old.get(merge_key) == item[merge_key]), None
        )
        if item.get("$patch") == "delete":
            if position is not None:
                del result[position]
            continue
        if position is None:
            result.append(strategic_merge({}, item))
        else:
            result[position] = strategic_merge(result[position], item)
    return result


def _key_of(manifest: Mapping[str, Any]) -> tuple[str, str]:
    meta = manifest.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


# -- pods ------------------------------------------------------------------------------------

_CLOSED = object()  # the watch's end-of-stream marker (the server's timeout)


class FakePodGateway(_FakeBase):
    """``PodGateway`` over an in-memory store of pods keyed by (namespace, name)."""

    PORT_METHODS = frozenset(
        {"list_node_pods", "watch_node_pods", "get_pod", "patch_pod_status", "delete_pod"}
    )
    MATCH_KEYS = frozenset({"namespace", "name", "uid"})

    def __init__(self, *, node_name: str = "vk-node", clock: Clock | None = None) -> None:
        super().__init__()
        self.node_name = node_name
        self.clock: Clock = clock or FakeClock()
        self._objects: dict[tuple[str, str], dict[str, Any]] = {}
        self._rv = 0
        self._history: list[tuple[int, PodEvent]] = []
        self._compacted = 0  # watching from an RV below this raises Expired
        self._watchers: list[asyncio.Queue[object]] = []
        self._uids = itertools.count(1)

    # -- the port -----------------------------------------------------------------------
    async def list_node_pods(self) -> tuple[Sequence[Pod], str]:
        self._enter("list_node_pods", {})
        pods = [self._pod(obj) for key, obj in sorted(self._objects.items()) if self._on_node(obj)]
        return pods, str(self._rv)

    def watch_node_pods(self, resource_version: str) -> AsyncGenerator[PodEvent, None]:
        """Replays the events after ``resource_version``, then follows live changes.

        Like the real gateway, failures (injected ones, Expired) surface on the first
        iteration, not on the call.
        """
        self._log("watch_node_pods", resource_version=resource_version)
        return self._watch(resource_version)

    async def get_pod(self, namespace: str, name: str) -> Pod:
        self._enter("get_pod", {"namespace": namespace, "name": name}, namespace=namespace, name=name)
        return self._pod(self._find(namespace, name))

    async def patch_pod_status(self, ref: PodRef, status: Mapping[str, Any]) -> Pod:
        self._enter("patch_pod_status", _subject(ref), ref=ref, status=status)
        obj = self._find_incarnation(ref, action="patch the status of")
        updated = copy.deepcopy(obj)
        updated["status"] = strategic_merge(obj.get("status") or {}, status, POD_STATUS_MERGE_KEYS)
        return self._pod(self._commit(updated))

    async def delete_pod(self, ref: PodRef, *, grace_period_seconds: int) -> None:
        self._enter("delete_pod", _subject(ref), ref=ref, grace_period_seconds=grace_period_seconds)
        if grace_period_seconds < 0:
            raise InvalidInput(f"grace period {grace_period_seconds} is negative")
        self._find_incarnation(ref, action="delete")
        self._delete(ref.namespace, ref.name, grace_period_seconds)

    # -- helpers for tests (another actor's changes; not logged, never fail) --------------
    def create(self, manifest: Mapping[str, Any]) -> Pod:
        """Create a pod like ``kubectl apply`` would. Missing identity is filled in: namespace
        ``default``, a fresh UID, ``spec.nodeName`` = this node (pass ``nodeName: ""`` or
        another node for a pod that is not ours). Without a ``status`` it starts Pending.
        """
        obj = copy.deepcopy(dict(manifest))
        obj.setdefault("apiVersion", "v1")
        obj.setdefault("kind", "Pod")
        meta = obj.setdefault("metadata", {})
        if not meta.get("name"):
            raise InvalidInput("pod needs metadata.name")
        meta.setdefault("namespace", "default")
        if (meta["namespace"], meta["name"]) in self._objects:
            raise Conflict(f"pod {meta['namespace']}/{meta['name']} already exists")
        meta.setdefault("uid", f"uid-{next(self._uids):04d}")
        meta.setdefault("creationTimestamp", format_time(self.clock.now()))
        obj.setdefault("spec", {}).setdefault("nodeName", self.node_name)
        obj.setdefault("status", {"phase": "Pending"})
        return self._pod(self._commit(obj))

    def update(self, namespace: str, name: str, change: Callable[[dict[str, Any]], None]) -> Pod:
        """Apply ``change`` to a copy of the stored pod and write it (say, a label edit)."""
        obj = copy.deepcopy(self._stored(namespace, name))
        uid = obj["metadata"]["uid"]
        change(obj)
        if obj["metadata"].get("uid") != uid:
            raise InvalidInput("metadata.uid is immutable")
        return self._pod(self._commit(obj))

    def graceful_delete(self, namespace: str, name: str, grace_period_seconds: int | None = None) -> None:
        """``kubectl delete pod``: grace defaults to the pod's terminationGracePeriodSeconds (30)."""
        obj = self._stored(namespace, name)
        if grace_period_seconds is None:
            grace_period_seconds = int((obj.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
        self._delete(namespace, name, grace_period_seconds)

    def force_delete(self, namespace: str, name: str) -> None:
        """``kubectl delete pod --grace-period=0 --force``."""
        self._stored(namespace, name)
        self._delete(namespace, name, 0)

    def remove_finalizers(self, namespace: str, name: str) -> None:
        """Another controller drops its finalizers; a pod already deleted with grace 0 goes."""
        obj = copy.deepcopy(self._stored(namespace, name))
        obj["metadata"].pop("finalizers", None)
        meta = obj["metadata"]
        if meta.get("deletionTimestamp") and meta.get("deletionGracePeriodSeconds") == 0:
            self._remove(namespace, name)
        else:
            self._commit(obj)

    def get(self, namespace: str, name: str) -> Pod | None:
        obj = self._objects.get((namespace, name))
        return None if obj is None else self._pod(obj)

    def pods(self) -> list[Pod]:
        return [self._pod(obj) for _, obj in sorted(self._objects.items())]

    @property
    def resource_version(self) -> str:
        return str(self._rv)

    def expire_history(self) -> None:
        """Compact: watches from any resourceVersion before now raise Expired (HTTP 410)."""
        self._history.clear()
        self._compacted = self._rv

    def close_watches(self) -> None:
        """The server ends every open watch (its timeout); iterators stop normally."""
        for queue in self._watchers:
            queue.put_nowait(_CLOSED)

    def break_watches(self, error: BaseException) -> None:
        """Every open watch raises ``error`` (e.g. ``Expired`` from an ERROR event)."""
        for queue in self._watchers:
            queue.put_nowait(error)

    @property
    def open_watches(self) -> int:
        return len(self._watchers)

    # -- internals ----------------------------------------------------------------------
    async def _watch(self, resource_version: str) -> AsyncGenerator[PodEvent, None]:
        self._fail("watch_node_pods", {})
        queue: asyncio.Queue[object] = asyncio.Queue()
        if resource_version in ("", "0"):  # "any": the current state as ADDED, then live
            backlog = [
                PodEvent(WatchEventType.ADDED, self._pod(obj))
                for _, obj in sorted(self._objects.items())
                if self._on_node(obj)
            ]
        else:
            try:
                since = int(resource_version)
            except ValueError as exc:
                raise InvalidInput(f"resourceVersion {resource_version!r} is not valid") from exc
            if since < self._compacted:
                raise Expired(f"too old resource version: {since} ({self._compacted})")
            backlog = [event for rv, event in self._history if rv > since]
        self._watchers.append(queue)
        try:
            for event in backlog:
                yield event
            while True:
                item = await queue.get()
                if item is _CLOSED:
                    return
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, PodEvent)
                yield item
        finally:
            self._watchers.remove(queue)

    def _on_node(self, obj: Mapping[str, Any] | None) -> bool:
        return obj is not None and (obj.get("spec") or {}).get("nodeName") == self.node_name

    def _pod(self, obj: Mapping[str, Any]) -> Pod:
        return Pod.from_manifest(copy.deepcopy(dict(obj)))

    def _stored(self, namespace: str, name: str) -> dict[str, Any]:
        obj = self._objects.get((namespace, name))
        if obj is None:
            raise KeyError(f"test setup: no pod {namespace}/{name}")
        return obj

    def _find(self, namespace: str, name: str) -> dict[str, Any]:
        obj = self._objects.get((namespace, name))
        if obj is None:
            raise NotFound(f'pods "{name}" not found in namespace {namespace}')
        return obj

    def _find_incarnation(self, ref: PodRef, *, action: str) -> dict[str, Any]:
        obj = self._find(ref.namespace, ref.name)
        if obj["metadata"]["uid"] != ref.uid:
            raise Conflict(f"cannot {action} pod {ref}: the name now belongs to UID {obj['metadata']['uid']}")
        return obj

    def _commit(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Store ``obj`` with the next resourceVersion and tell the watches."""
        key = _key_of(obj)
        old = self._objects.get(key)
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self._objects[key] = obj
        if self._on_node(obj):
            self._emit(WatchEventType.MODIFIED if self._on_node(old) else WatchEventType.ADDED, obj)
        elif self._on_node(old):
            self._emit(WatchEventType.DELETED, obj)  # left the selection
        return obj

    def _remove(self, namespace: str, name: str) -> None:
        obj = self._objects.pop((namespace, name))
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        if self._on_node(obj):
            self._emit(WatchEventType.DELETED, obj)

    def _emit(self, kind: WatchEventType, obj: Mapping[str, Any]) -> None:
        event = PodEvent(kind, self._pod(obj))
        self._history.append((self._rv, event))
        for queue in self._watchers:
            queue.put_nowait(event)

    def _delete(self, namespace: str, name: str, grace: int) -> None:
        """The API server's graceful deletion (rest.BeforeDelete + the pod strategy)."""
        obj = copy.deepcopy(self._objects[(namespace, name)])
        meta = obj["metadata"]
        has_finalizers = bool(meta.get("finalizers"))
        current_grace = meta.get("deletionGracePeriodSeconds")
        if meta.get("deletionTimestamp"):
            if current_grace and grace >= current_grace:
                return  # already terminating with a shorter or equal grace: nothing changes
            if current_grace and grace > 0:  # may only shorten
                started = parse_time(meta["deletionTimestamp"])
                assert started is not None
                started -= timedelta(seconds=current_grace)
                meta["deletionTimestamp"] = format_time(started + timedelta(seconds=grace))
                meta["deletionGracePeriodSeconds"] = grace
                self._commit(obj)
                return
        else:
            phase = (obj.get("status") or {}).get("phase")
            if not (obj.get("spec") or {}).get("nodeName") or phase in ("Succeeded", "Failed"):
                grace = 0  # unscheduled or terminated pods go at once
            if grace > 0:
                meta["deletionTimestamp"] = format_time(self.clock.now() + timedelta(seconds=grace))
                meta["deletionGracePeriodSeconds"] = grace
                self._commit(obj)
                return
        if has_finalizers:
            if meta.get("deletionGracePeriodSeconds") != 0 or not meta.get("deletionTimestamp"):
                meta.setdefault("deletionTimestamp", format_time(self.clock.now()))
                meta["deletionGracePeriodSeconds"] = 0
                self._commit(obj)
            return
        self._remove(namespace, name)


def _subject(ref: PodRef) -> dict[str, str]:
    return {"namespace": ref.namespace, "name": ref.name, "uid": ref.uid}


# -- nodes -----------------------------------------------------------------------------------


class FakeNodeGateway(_FakeBase):
    """``NodeGateway`` over in-memory Node manifests keyed by name."""

    PORT_METHODS = frozenset({"get_node", "create_node", "patch_node", "patch_node_status"})
    MATCH_KEYS = frozenset({"name"})

    def __init__(self, *, clock: Clock | None = None) -> None:
        super().__init__()
        self.clock: Clock = clock or FakeClock()
        self.nodes: dict[str, dict[str, Any]] = {}
        self._rv = 0
        self._uids = itertools.count(1)

    async def get_node(self, name: str) -> Mapping[str, Any]:
        self._enter("get_node", {"name": name}, name=name)
        return copy.deepcopy(self._find(name))

    async def create_node(self, node: Mapping[str, Any]) -> Mapping[str, Any]:
        name = str((node.get("metadata") or {}).get("name") or "")
        self._enter("create_node", {"name": name}, node=node)
        if not name:
            raise InvalidInput("node needs metadata.name")
        if name in self.nodes:
            raise Conflict(f'nodes "{name}" already exists')
        obj = copy.deepcopy(dict(node))
        obj.setdefault("apiVersion", "v1")
        obj.setdefault("kind", "Node")
        meta = obj["metadata"]
        meta["uid"] = f"node-uid-{next(self._uids):04d}"
        meta["creationTimestamp"] = format_time(self.clock.now())
        return copy.deepcopy(self._commit(name, obj))

    async def patch_node(self, name: str, patch: Mapping[str, Any]) -> Mapping[str, Any]:
        """Merges metadata and spec; ``status`` in the patch is ignored, as on the main resource.

        ``metadata.resourceVersion`` in the patch is a precondition (Conflict when stale).
        Lists such as ``spec.taints`` have no merge key and are replaced whole.
        """
        self._enter("patch_node", {"name": name}, name=name, patch=patch)
        obj = self._find(name)
        self._check_resource_version(name, obj, patch)
        updated = copy.deepcopy(obj)
        meta_patch = {
            key: value
            for key, value in (patch.get("metadata") or {}).items()
            if key not in ("name", "uid", "resourceVersion", "creationTimestamp")
        }
        updated["metadata"] = strategic_merge(obj["metadata"], meta_patch)
        if "spec" in patch:
            updated["spec"] = strategic_merge(obj.get("spec") or {}, patch["spec"] or {})
        return copy.deepcopy(self._commit(name, updated))

    async def patch_node_status(self, name: str, patch: Mapping[str, Any]) -> Mapping[str, Any]:
        """``patch`` is a patch of the Node object: ``{"status": {...}}``. Only status changes.

        Conditions and addresses merge by ``type``; maps such as capacity merge key by key;
        ``None`` removes a key.
        """
        self._enter("patch_node_status", {"name": name}, name=name, patch=patch)
        unexpected = set(patch) - {"status", "metadata", "apiVersion", "kind"}
        if unexpected or not isinstance(patch.get("status"), Mapping):
            raise InvalidInput(
                f"a node status patch is {{'status': {{...}}}}; got top-level keys {sorted(patch)}"
            )
        obj = self._find(name)
        self._check_resource_version(name, obj, patch)
        updated = copy.deepcopy(obj)
        updated["status"] = strategic_merge(obj.get("status") or {}, patch["status"], NODE_STATUS_MERGE_KEYS)
        return copy.deepcopy(self._commit(name, updated))

    # -- helpers for tests --------------------------------------------------------------
    def delete(self, name: str) -> None:
        """``kubectl delete node``: the node is gone and must be recreated."""
        del self.nodes[name]

    def node(self, name: str) -> dict[str, Any]:
        """A copy of the stored node (KeyError if absent)."""
        return copy.deepcopy(self.nodes[name])

    def condition(self, name: str, condition_type: str) -> dict[str, Any] | None:
        for condition in (self.nodes[name].get("status") or {}).get("conditions") or ():
            if condition.get("type") == condition_type:
                return copy.deepcopy(dict(condition))
        return None

    def set_by_other_actor(self, name: str, patch: Mapping[str, Any]) -> None:
        """Someone else patches the node (say, adds a taint or a condition)."""
        obj = self.nodes[name]
        updated = strategic_merge(
            {k: v for k, v in obj.items() if k != "status"},
            {k: v for k, v in patch.items() if k != "status"},
        )
        updated["status"] = strategic_merge(
            obj.get("status") or {}, patch.get("status") or {}, NODE_STATUS_MERGE_KEYS
        )
        self._commit(name, updated)

    # -- internals ----------------------------------------------------------------------
    def _find(self, name: str) -> dict[str, Any]:
        obj = self.nodes.get(name)
        if obj is None:
            raise NotFound(f'nodes "{name}" not found')
        return obj

    def _check_resource_version(self, name: str, obj: Mapping[str, Any], patch: Mapping[str, Any]) -> None:
        wanted = (patch.get("metadata") or {}).get("resourceVersion")
        if wanted and str(wanted) != obj["metadata"]["resourceVersion"]:
            raise Conflict(f'Operation cannot be fulfilled on nodes "{name}": the object has been modified')

    def _commit(self, name: str, obj: dict[str, Any]) -> dict[str, Any]:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self.nodes[name] = obj
        return obj


# -- leases ----------------------------------------------------------------------------------


class FakeLeaseGateway(_FakeBase):
    """``LeaseGateway`` with optimistic concurrency on ``resource_version``.

    ``delay`` (seconds on ``clock``) slows every call down, like a struggling API server;
    the call takes effect after the delay, so a cancelled call changes nothing.
    """

    PORT_METHODS = frozenset({"get_lease", "create_lease", "update_lease"})
    MATCH_KEYS = frozenset({"name"})

    def __init__(self, *, clock: Clock | None = None, delay: float = 0.0) -> None:
        super().__init__()
        self.clock: Clock = clock or FakeClock()
        self.delay = delay
        self.leases: dict[str, Lease] = {}
        self._rv = 0

    async def get_lease(self, name: str) -> Lease:
        await self._slow("get_lease", name, name=name)
        return self._find(name)

    async def create_lease(self, lease: Lease) -> Lease:
        await self._slow("create_lease", lease.name, lease=lease)
        if lease.name in self.leases:
            raise Conflict(f'leases "{lease.name}" already exists')
        return self._store(lease)

    async def update_lease(self, lease: Lease) -> Lease:
        """A stale ``resource_version`` is a Conflict; an empty one updates unconditionally."""
        await self._slow("update_lease", lease.name, lease=lease)
        current = self._find(lease.name)
        if lease.resource_version and lease.resource_version != current.resource_version:
            raise Conflict(
                f'Operation cannot be fulfilled on leases "{lease.name}": the object has been modified'
            )
        return self._store(lease)

    # -- helpers for tests --------------------------------------------------------------
    def put(self, lease: Lease) -> Lease:
        """Write a lease as another actor (a new resourceVersion: our copy goes stale)."""
        return self._store(lease)

    def delete(self, name: str) -> None:
        del self.leases[name]

    # -- internals ----------------------------------------------------------------------
    async def _slow(self, method: str, lease_name: str, **args: Any) -> None:
        self._log(method, **args)
        if self.delay > 0:
            await self.clock.sleep(self.delay)
        self._fail(method, {"name": lease_name})

    def _find(self, name: str) -> Lease:
        lease = self.leases.get(name)
        if lease is None:
            raise NotFound(f'leases "{name}" not found')
        return lease

    def _store(self, lease: Lease) -> Lease:
        self._rv += 1
        stored = replace(lease, resource_version=str(self._rv))
        self.leases[lease.name] = stored
        return stored


# -- config ----------------------------------------------------------------------------------


class FakeConfigSource(_FakeBase):
    """``ConfigSource`` over dicts; failures can target one object (``namespace=``, ``name=``).

    By default every read sees the dicts as they are. With ``ttl_seconds`` > 0 it serves stale
    answers as the adapter's cache may: a read that is not ``fresh`` gets what the last read of
    that configmap or secret saw, when that was less than ``ttl_seconds`` ago on ``clock``.
    """

    PORT_METHODS = frozenset({"get_config_map", "get_config_map_files", "get_secret", "list_services"})
    MATCH_KEYS = frozenset({"namespace", "name"})

    def __init__(self, *, clock: FakeClock | None = None, ttl_seconds: float = 0.0) -> None:
        super().__init__()
        self.config_maps: dict[tuple[str, str], dict[str, str]] = {}  # data
        # binaryData, decoded; a configmap exists when it is in config_maps
        self.config_map_binary_data: dict[tuple[str, str], dict[str, bytes]] = {}
        self.secrets: dict[tuple[str, str], dict[str, bytes]] = {}
        self.services: dict[str, list[ServiceInfo]] = {}
        self.clock = clock
        self.ttl_seconds = ttl_seconds
        # (kind, namespace, name) -> (monotonic time of the read, what it saw; None: missing)
        self._seen: dict[tuple[str, str, str], tuple[float, Any]] = {}

    async def get_config_map(self, namespace: str, name: str, *, fresh: bool = False) -> Mapping[str, str]:
        subject = {"namespace": namespace, "name": name}
        self._enter("get_config_map", subject, namespace=namespace, name=name, fresh=fresh)
        seen = self._read(("configmap", namespace, name), fresh=fresh)
        if seen is None:
            raise NotFound(f'configmaps "{name}" not found in namespace {namespace}')
        return dict(seen[0])

    async def get_config_map_files(
        self, namespace: str, name: str, *, fresh: bool = False
    ) -> Mapping[str, bytes]:
        subject = {"namespace": namespace, "name": name}
        self._enter("get_config_map_files", subject, namespace=namespace, name=name, fresh=fresh)
        seen = self._read(("configmap", namespace, name), fresh=fresh)
        if seen is None:
            raise NotFound(f'configmaps "{name}" not found in namespace {namespace}')
        data, binary_data = seen
        files = {key: value.encode() for key, value in data.items()}
        files.update(binary_data)
        return files

    async def get_secret(self, namespace: str, name: str, *, fresh: bool = False) -> Mapping[str, bytes]:
        subject = {"namespace": namespace, "name": name}
        self._enter("get_secret", subject, namespace=namespace, name=name, fresh=fresh)
        seen = self._read(("secret", namespace, name), fresh=fresh)
        if seen is None:
            raise NotFound(f'secrets "{name}" not found in namespace {namespace}')
        return dict(seen)

    async def list_services(self, namespace: str) -> Sequence[ServiceInfo]:
        self._enter("list_services", {"namespace": namespace}, namespace=namespace)
        return [s for s in self.services.get(namespace, []) if s.cluster_ip not in ("", "None")]

    def _read(self, key: tuple[str, str, str], *, fresh: bool) -> Any:
        """What a read of ``key`` sees: the dicts now, or a stale copy while one is cached."""
        now = self.clock.monotonic() if self.clock is not None else 0.0
        cached = self._seen.get(key)
        if not fresh and self.ttl_seconds > 0 and cached is not None and now - cached[0] < self.ttl_seconds:
            return cached[1]
        kind, namespace, name = key
        current: Any
        if kind == "secret":
            current = copy.deepcopy(self.secrets.get((namespace, name)))
        elif (namespace, name) in self.config_maps:
            binary = self.config_map_binary_data.get((namespace, name), {})
            current = (dict(self.config_maps[(namespace, name)]), dict(binary))
        else:
            current = None
        self._seen[key] = (now, current)
        return current

    # -- helpers for tests --------------------------------------------------------------
    def add_config_map(
        self,
        namespace: str,
        name: str,
        data: Mapping[str, str],
        *,
        binary_data: Mapping[str, bytes] | None = None,
    ) -> None:
        """``binary_data`` is the decoded ``binaryData``: only volumes see it, as in the kubelet."""
        self.config_maps[(namespace, name)] = dict(data)
        self.config_map_binary_data[(namespace, name)] = dict(binary_data or {})

    def add_secret(self, namespace: str, name: str, data: Mapping[str, bytes | str]) -> None:
        """Values are the decoded bytes (str is encoded as UTF-8 for convenience)."""
        self.secrets[(namespace, name)] = {
            key: value.encode() if isinstance(value, str) else bytes(value) for key, value in data.items()
        }

    def add_service(self, namespace: str, service: ServiceInfo) -> None:
        self.services.setdefault(namespace, []).append(service)


# -- events ----------------------------------------------------------------------------------


class RecordedEvent(NamedTuple):
    obj: ObjectRef
    type: EventType
    reason: str
    message: str


@dataclass
class FakeEventRecorder:
    """``EventRecorder`` that keeps every event in order (and, like the port, never raises)."""

    events: list[RecordedEvent] = field(default_factory=list)

    def record(self, obj: ObjectRef, *, type: EventType, reason: str, message: str) -> None:
        self.events.append(RecordedEvent(obj, type, reason, message))

    def for_uid(self, uid: str) -> list[RecordedEvent]:
        return [event for event in self.events if event.obj.uid == uid]

    def reasons_for(self, uid: str) -> list[str]:
        return [event.reason for event in self.for_uid(uid)]

    def clear(self) -> None:
        self.events.clear()


class FakeTokenIssuer:
    """``TokenIssuer``: issues numbered tokens that live ``lifetime`` seconds on ``clock``."""

    def __init__(self, clock: Clock, *, lifetime: float | None = None) -> None:
        self.clock = clock
        self.lifetime = lifetime  # None: as requested
        self.issued: list[tuple[PodRef, str, tuple[str, ...], int]] = []
        self.missing_service_accounts: set[str] = set()

    async def request_token(
        self, pod: PodRef, *, service_account: str, audiences: Sequence[str], expiration_seconds: int
    ) -> IssuedToken:
        if service_account in self.missing_service_accounts:
            raise NotFound(f'serviceaccounts "{service_account}" not found')
        self.issued.append((pod, service_account, tuple(audiences), expiration_seconds))
        lifetime = self.lifetime if self.lifetime is not None else expiration_seconds
        return IssuedToken(
            token=f"token-{len(self.issued)}-{pod.name}",
            expires_at=self.clock.now() + timedelta(seconds=lifetime),
        )
