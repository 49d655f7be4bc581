"""The pods bound to this node, over the Kubernetes API (implements ``PodGateway``).

Hot path: a list page or a watch line is decoded once, bytes to dicts with the standard
library, and each pod dict is wrapped by :meth:`Pod.from_manifest` as is, less
``metadata.managedFields`` (see :func:`kubelet_view`). No typed model sits in between: that would
cost a second conversion per pod and silently drop fields newer than this client (then lost by
anything that writes the object back).

Watches ask for bookmarks (``allowWatchBookmarks=true``). Bookmarks carry no pod, so they are
not events of the port; they only advance :attr:`PodWatch.resource_version`, which a caller may
read to resume from a fresher point than its last pod event.

Measured against kube-apiserver 1.36 (tests/e2e/test_kubernetes_adapter.py):

* a status patch carrying ``metadata.uid`` of another incarnation is refused with
  ``422 Invalid`` (cause ``metadata.uid: field is immutable``), not 409; this gateway reports it
  as Conflict, as the port promises;
* ``metadata`` fields other than the UID sent to ``pods/<name>/status`` *are* persisted by the
  server (labels, annotations), so the patch body carries nothing but the UID and ``status``;
* a delete whose ``preconditions.uid`` does not match answers ``409 Conflict``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from vkubelet.adapters.kubernetes.client import STRATEGIC_MERGE_PATCH, KubeClient
from vkubelet.adapters.kubernetes.errors import error_for_watch_status, status_causes
from vkubelet.application.ports.cluster import PodEvent, WatchEventType
from vkubelet.domain.errors import Conflict, InvalidInput
from vkubelet.domain.pod import Pod, PodRef

log = logging.getLogger(__name__)

_EVENT_TYPES = {t.value: t for t in WatchEventType}


def pod_path(namespace: str, name: str, subresource: str = "") -> str:
    path = f"/api/v1/namespaces/{quote(namespace, safe='')}/pods/{quote(name, safe='')}"
    return f"{path}/{subresource}" if subresource else path


def kubelet_view(manifest: dict[str, Any]) -> Pod:
    """The pod of a freshly decoded manifest (which this changes in place), without
    ``metadata.managedFields``.

    The server's field-ownership records come with every list, watch, get and patch reply, and
    nothing here or in a provider reads them (status patches never carry them); kept, they were
    the largest share of vkubelet's memory per pod, held twice (the API's copy and the
    provider's). Every other field stays, newer ones included.
    """
    meta = manifest.get("metadata") if isinstance(manifest, dict) else None
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
    return Pod.from_manifest(manifest)


class PodWatch:
    """One watch request, as an async iterator of :class:`PodEvent`.

    Ends when the server closes the stream (its ``timeoutSeconds``). Raises Expired when the
    starting resourceVersion is too old, whether the server says so with HTTP 410 or with an
    ``ERROR`` event of code 410 in the stream.
    """

    def __init__(
        self, client: KubeClient, *, node_name: str, resource_version: str, timeout_seconds: int
    ) -> None:
        self._client = client
        self._node_name = node_name
        self._timeout_seconds = timeout_seconds
        self.resource_version = resource_version
        """The newest resourceVersion seen: the start, then each event's or bookmark's."""
        self._events: AsyncGenerator[PodEvent, None] | None = None

    def __aiter__(self) -> PodWatch:
        return self

    async def __anext__(self) -> PodEvent:
        if self._events is None:
            self._events = self._run()
        return await self._events.__anext__()

    async def aclose(self) -> None:
        """Close the underlying stream early (also done by ``async for`` breaking + GC)."""
        if self._events is not None:
            await self._events.aclose()

    async def _run(self) -> AsyncGenerator[PodEvent, None]:
        what = f"watch of pods on node {self._node_name} from resourceVersion {self.resource_version!r}"
        params = {
            "watch": "true",
            "fieldSelector": f"spec.nodeName={self._node_name}",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(self._timeout_seconds),
        }
        if self.resource_version:
            params["resourceVersion"] = self.resource_version
        # The server ends the watch after timeoutSeconds; silence well beyond that means the
        # connection is dead without the OS having noticed.
        read_timeout = self._timeout_seconds + 30.0
        async with self._client.stream(
            "/api/v1/pods", what=what, params=params, read_timeout=read_timeout
        ) as response:
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                event = json.loads(line)
                kind = event.get("type")
                obj = event.get("object") or {}
                if kind == "ERROR":
                    raise error_for_watch_status(obj, what=what)
                version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
                if kind == "BOOKMARK":
                    if version:
                        self.resource_version = version
                    continue
                event_type = _EVENT_TYPES.get(kind)
                if event_type is None:
                    log.warning("%s: ignoring watch event of unknown type %r", what, kind)
                    continue
                pod = kubelet_view(obj)
                if version:
                    self.resource_version = version
                yield PodEvent(event_type, pod)


class KubernetesPodGateway:
    """``PodGateway`` for the pods with ``spec.nodeName=<node_name>`` in all namespaces."""

    def __init__(
        self,
        client: KubeClient,
        *,
        node_name: str,
        page_size: int = 500,
        watch_timeout_seconds: int = 300,
    ) -> None:
        if not node_name:
            raise ValueError("node_name must not be empty")
        self._client = client
        self._node_name = node_name
        self._page_size = page_size
        self._watch_timeout_seconds = watch_timeout_seconds

    @property
    def node_name(self) -> str:
        return self._node_name

    async def list_node_pods(self) -> tuple[Sequence[Pod], str]:
        what = f"list of pods on node {self._node_name}"
        params = {"fieldSelector": f"spec.nodeName={self._node_name}"}
        if self._page_size > 0:
            params["limit"] = str(self._page_size)
        pods: list[Pod] = []
        resource_version = ""
        while True:
            page = await self._client.request("GET", "/api/v1/pods", what=what, params=params)
            for item in page.get("items") or ():
                # List items come without kind/apiVersion; add them so a listed pod and a
                # watched pod are the same document (providers receive this JSON).
                item.setdefault("apiVersion", "v1")
                item.setdefault("kind", "Pod")
                pods.append(kubelet_view(item))
            meta = page.get("metadata") or {}
            # Every page of one paginated list is served from the same snapshot.
            resource_version = str(meta.get("resourceVersion") or resource_version)
            token = meta.get("continue")
            if not token:
                return pods, resource_version
            params["continue"] = str(token)

    def watch_node_pods(self, resource_version: str) -> PodWatch:
        return PodWatch(
            self._client,
            node_name=self._node_name,
            resource_version=resource_version,
            timeout_seconds=self._watch_timeout_seconds,
        )

    async def get_pod(self, namespace: str, name: str) -> Pod:
        manifest = await self._client.request(
            "GET", pod_path(namespace, name), what=f"pod {namespace}/{name}"
        )
        return kubelet_view(manifest)

    async def patch_pod_status(self, ref: PodRef, status: Mapping[str, Any]) -> Pod:
        # metadata.uid acts as a precondition: the server refuses to change a UID. Nothing else
        # of metadata goes in, because the status endpoint would persist it.
        body = {"metadata": {"uid": ref.uid}, "status": status}
        try:
            manifest = await self._client.request(
                "PATCH",
                pod_path(ref.namespace, ref.name, "status"),
                what=f"status of pod {ref}",
                body=body,
                content_type=STRATEGIC_MERGE_PATCH,
            )
        except InvalidInput as exc:
            if ("metadata.uid", "FieldValueInvalid") in status_causes(exc):
                raise Conflict(
                    f"status of pod {ref}: the pod named {ref.namespace}/{ref.name} has another UID now"
                ) from exc.__cause__
            raise
        return kubelet_view(manifest)

    async def delete_pod(self, ref: PodRef, *, grace_period_seconds: int) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": max(0, int(grace_period_seconds)),
            "preconditions": {"uid": ref.uid},
        }
        await self._client.request(
            "DELETE", pod_path(ref.namespace, ref.name), what=f"pod {ref}", body=body, decode=False
        )
