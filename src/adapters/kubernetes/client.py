"""The connection to the Kubernetes API server.

lightkube provides what is tedious to get right: kubeconfig and in-cluster service-account
loading, client certificates, token files that rotate, exec credential plugins. On top of that
this module builds one ``httpx2.AsyncClient`` (the HTTP client lightkube itself uses) whose
transport applies the client-side rate limit (``--kube-api-qps`` / ``--kube-api-burst``), and
wraps it in :class:`KubeClient`.

The gateways of this package send their requests through :meth:`KubeClient.request` and
:meth:`KubeClient.stream` and get the server's JSON back as plain dicts: a pod is decoded once,
from bytes to dicts, and wrapped by the domain without a trip through typed models (which would
also drop fields this client version does not know). Code that prefers lightkube's typed API can
take :attr:`KubeClient.lightkube`, an ``AsyncClient`` sharing the same connections and the same
rate limit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import lightkube
from lightkube.config import client_adapter
from lightkube.config.kubeconfig import KubeConfig, SingleConfig
from lightkube.config.models import User

from vkubelet import __version__
from vkubelet.adapters.kubernetes.errors import api_errors, error_for_response

log = logging.getLogger(__name__)

USER_AGENT = f"vkubelet/{__version__}"

JSON = "application/json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
MERGE_PATCH = "application/merge-patch+json"


class TokenBucket:
    """A token bucket: ``burst`` requests at once, then ``qps`` per second on average.

    Callers that find the bucket empty take a token on credit and sleep until it would have been
    refilled, so waiters are served in arrival order and none spins. ``qps <= 0`` disables the
    limit. Must be used from one event loop (no lock: nothing awaits between read and update).
    """

    def __init__(
        self,
        *,
        qps: float,
        burst: int,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.qps = float(qps)
        self.burst = max(1, int(burst))
        self._monotonic = monotonic
        self._sleep = sleep
        self._tokens = float(self.burst)
        self._updated = monotonic()

    @property
    def unlimited(self) -> bool:
        return self.qps <= 0

    def reserve(self) -> float:
        """Take one token now; return how many seconds the caller must wait before using it."""
        if self.unlimited:
            return 0.0
        now = self._monotonic()
        elapsed = max(0.0, now - self._updated)
        self._updated = now
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.qps) - 1.0
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self.qps

    def refund(self) -> None:
        """Give back a token whose wait was cancelled, so a cancelled caller costs nothing."""
        if not self.unlimited:
            self._tokens = min(float(self.burst), self._tokens + 1.0)

    async def acquire(self) -> None:
        delay = self.reserve()
        if delay <= 0:
            return
        try:
            await self._sleep(delay)
        except asyncio.CancelledError:
            self.refund()
            raise


class RateLimitedTransport(httpx2.AsyncBaseTransport):
    """Waits for a token before each request reaches the wire (watches included, as client-go)."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, bucket: TokenBucket) -> None:
        self._inner = inner
        self._bucket = bucket
        self._closed = False

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        await self._bucket.acquire()
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        # Shared by KubeClient's client and the optional lightkube client: close once.
        if not self._closed:
            self._closed = True
            await self._inner.aclose()


class KubeClient:
    """One API server connection: raw JSON requests, watch streams, and a lightkube client.

    Owns the HTTP connections; :meth:`close` releases them. Request paths are absolute API paths
    (``/api/v1/namespaces/default/pods/web-0``). Failures are raised as domain errors (see
    :mod:`.errors`) naming ``what`` the request was about.
    """

    def __init__(
        self,
        http: httpx2.AsyncClient,
        *,
        config: SingleConfig | None = None,
        transport: httpx2.AsyncBaseTransport | None = None,
        timeout: httpx2.Timeout | None = None,
    ) -> None:
        self._http = http
        self._config = config
        self._transport = transport
        self._timeout = timeout
        self._lightkube: lightkube.AsyncClient | None = None

    @property
    def http(self) -> httpx2.AsyncClient:
        return self._http

    @property
    def server(self) -> str:
        return str(self._http.base_url)

    @property
    def lightkube(self) -> lightkube.AsyncClient:
        """A lightkube AsyncClient over the same connections and rate limit (created on first use)."""
        if self._lightkube is None:
            if self._config is None or self._transport is None:
                raise RuntimeError("this KubeClient was built without a kubeconfig; no lightkube client")
            self._lightkube = lightkube.AsyncClient(
                config=self._config, transport=self._transport, timeout=self._timeout, trust_env=False
            )
        return self._lightkube

    async def request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = JSON,
    ) -> dict[str, Any]:
        """Send one request and return the decoded JSON response (``{}`` when there is none)."""
        content = encode_json(body) if body is not None else None
        headers = {"Content-Type": content_type} if content is not None else None
        with api_errors(what):
            response = await self._http.request(
                method, path, params=dict(params) if params else None, content=content, headers=headers
            )
            if response.is_error:
                raise error_for_response(response, what=what)
            if not response.content:
                return {}
            decoded: dict[str, Any] = json.loads(response.content)
            return decoded

    @asynccontextmanager
    async def stream(
        self,
        path: str,
        *,
        what: str,
        params: Mapping[str, str] | None = None,
        read_timeout: float | None = None,
    ) -> AsyncIterator[httpx2.Response]:
        """Open a streaming GET (a watch). Yields the response once its status is known to be 2xx.

        Transport errors raised while the caller reads the body are translated too.
        ``read_timeout`` bounds the silence between two chunks (None: wait forever).
        """
        timeout = httpx2.Timeout(
            connect=self._http.timeout.connect,
            read=read_timeout,
            write=self._http.timeout.write,
            pool=self._http.timeout.pool,
        )
        with api_errors(what):
            async with self._http.stream(
                "GET", path, params=dict(params) if params else None, timeout=timeout
            ) as response:
                if response.is_error:
                    await response.aread()
                    raise error_for_response(response, what=what)
                yield response

    async def close(self) -> None:
        if self._lightkube is not None:
            await self._lightkube.close()
        await self._http.aclose()

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def encode_json(body: Any) -> bytes:
    """JSON for a request body; accepts any Mapping (frozen or proxy) and tuples as lists."""
    return json.dumps(body, separators=(",", ":"), default=_json_default).encode()


def _json_default(value: object) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def load_config(
    kubeconfig: str | os.PathLike[str] | None = None, *, context: str | None = None
) -> SingleConfig:
    """The cluster, user and context to use.

    With ``kubeconfig`` that file is read; without it the in-cluster service account is used,
    falling back to ``$KUBECONFIG`` and then ``~/.kube/config`` (what lightkube and kubectl do).
    """
    config = KubeConfig.from_file(kubeconfig) if kubeconfig else KubeConfig.from_env()
    single = config.get(context_name=context)
    if single is None:  # pragma: no cover - lightkube returns None only with a default
        raise lightkube.ConfigError("the kubeconfig has no usable context")
    return single


def create_client(
    kubeconfig: str | os.PathLike[str] | None = None,
    *,
    qps: float = 50.0,
    burst: int = 100,
    context: str | None = None,
    timeout_seconds: float = 10.0,
    user_agent: str = USER_AGENT,
    max_connections: int = 100,
) -> KubeClient:
    """Build a :class:`KubeClient` from a kubeconfig path (None: in-cluster config).

    ``qps``/``burst`` are the client-side token bucket (``qps <= 0`` means unlimited).
    ``timeout_seconds`` applies to connect, write and each read of ordinary requests; watch
    streams set their own read timeout. Raises lightkube's ConfigError for an unusable config.
    """
    config = load_config(kubeconfig, context=context)
    user = config.user or User()
    verify = client_adapter.verify_cluster(config.cluster, user, config.abs_file, trust_env=False)
    auth = client_adapter.user_auth(config.user)
    timeout = httpx2.Timeout(timeout_seconds)
    inner = httpx2.AsyncHTTPTransport(
        verify=verify,
        limits=httpx2.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
    )
    transport = RateLimitedTransport(inner, TokenBucket(qps=qps, burst=burst))
    http = httpx2.AsyncClient(
        base_url=config.cluster.server,
        auth=auth,
        transport=transport,
        timeout=timeout,
        headers={"User-Agent": user_agent, "Accept": JSON},
        trust_env=False,
    )
    log.debug("kubernetes client for %s (qps=%s, burst=%s)", config.cluster.server, qps, burst)
    return KubeClient(http, config=config, transport=transport, timeout=timeout)
