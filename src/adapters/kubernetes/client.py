"""The connection to the Kubernetes API server.

lightkube provides what is tedious to get right: kubeconfig and in-cluster service-account
loading, client certificates, token files that rotate, exec credential plugins. Requests go out
through aiohttp: lightkube's own transport (httpx2 over httpcore2 and anyio) cost 2.5 times the
client CPU per status patch (bench/client_stack.py, docs/benchmarks.md), and status patches are
the daemon's hottest path. lightkube's credential flows (``httpx2.Auth``) still decide the
``Authorization`` header, driven per request by :class:`_AuthFlow`; its SSL context carries the
cluster CA and the client certificate.

The gateways of this package send their requests through :meth:`KubeClient.request` and
:meth:`KubeClient.stream` and get the server's JSON back as plain dicts: a pod is decoded once,
from bytes to dicts, and wrapped by the domain without a trip through typed models (which would
also drop fields this client version does not know). Code that prefers lightkube's typed API can
take :attr:`KubeClient.lightkube`, an ``AsyncClient`` with its own connections and the same rate
limit (``--kube-api-qps`` / ``--kube-api-burst``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
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
# The longest watch line accepted: a pod manifest is far smaller (etcd's own limit is 1.5 MiB).
MAX_WATCH_LINE = 16 * 1024 * 1024


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
    """Waits for a token before each request of the typed lightkube client reaches the wire."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, bucket: TokenBucket) -> None:
        self._inner = inner
        self._bucket = bucket

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        await self._bucket.acquire()
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


class _AuthFlow:
    """Runs one of lightkube's ``httpx2.Auth`` flows around aiohttp requests.

    A flow yields a request carrying the credentials and may ask for the response to try again
    (a rotated token file, an expired exec-plugin token after a 401). Only the ``Authorization``
    header and the status code cross between the two libraries.
    """

    def __init__(self, auth: httpx2.Auth) -> None:
        self._auth = auth

    async def send(
        self, send: Callable[[Mapping[str, str]], Any], method: str, url: str
    ) -> aiohttp.ClientResponse:
        flow = self._auth.async_auth_flow(httpx2.Request(method, url))
        try:
            outgoing = await flow.__anext__()
            while True:
                authorization = outgoing.headers.get("Authorization")
                response: aiohttp.ClientResponse = await send(
                    {"Authorization": authorization} if authorization else {}
                )
                try:
                    outgoing = await flow.asend(httpx2.Response(response.status, request=outgoing))
                except StopAsyncIteration:
                    return response
                response.release()  # the flow wants another try with new credentials
        finally:
            await flow.aclose()


class WatchResponse:
    """A streaming response: its lines, one JSON document each, split here without a size cap
    below :data:`MAX_WATCH_LINE` (aiohttp's own ``readline`` stops at 64 KiB)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status

    async def aiter_lines(self) -> AsyncIterator[bytes]:
        pending = b""
        async for chunk in self._response.content.iter_any():
            pending += chunk
            if b"\n" not in chunk:
                if len(pending) > MAX_WATCH_LINE:
                    raise ValueError(f"a watch line longer than {MAX_WATCH_LINE} bytes")
                continue
            *lines, pending = pending.split(b"\n")
            for line in lines:
                yield line
        if pending:
            yield pending


#: the connections one client opens at most (aiohttp's default too)
DEFAULT_MAX_CONNECTIONS = 100


class ConnectionPool:
    """API server connections shared by the clients of several nodes in one process.

    Every node keeps its own :class:`KubeClient` (its rate limit, user agent and credential
    flow); they share the TCP/TLS connections, so idle connections are reused across nodes
    instead of each node keeping its own (one costs about 300 KiB: asyncio's 256 KiB TLS read
    buffer plus OpenSSL's state). ``limit`` bounds the open connections (0: no bound); a
    long-lived watch holds one for as long as it runs, so the limit must leave room for every
    watch the sharing clients keep open.

    For clients of one kubeconfig: the TLS context (client certificate included) of the first
    client to connect serves every connection. Made and closed inside the event loop; close it
    after every client using it has closed.
    """

    def __init__(self, *, limit: int = 0) -> None:
        self._limit = limit
        self._connector: aiohttp.TCPConnector | None = None

    def connector(self, ssl_context: ssl.SSLContext | None) -> aiohttp.TCPConnector:
        if self._connector is None:
            self._connector = aiohttp.TCPConnector(
                ssl=ssl_context if ssl_context is not None else True, limit=self._limit
            )
        return self._connector

    async def close(self) -> None:
        if self._connector is not None:
            await self._connector.close()
            self._connector = None


class KubeClient:
    """One API server connection: raw JSON requests, watch streams, and a lightkube client.

    Owns the HTTP connections (an aiohttp session made on first use, inside the event loop);
    :meth:`close` releases them. Request paths are absolute API paths
    (``/api/v1/namespaces/default/pods/web-0``). Every request, watches included, first takes a
    token from the rate limit, as client-go does. Failures are raised as domain errors (see
    :mod:`.errors`) naming ``what`` the request was about.
    """

    def __init__(
        self,
        *,
        server: str,
        bucket: TokenBucket,
        ssl_context: ssl.SSLContext | None = None,
        auth: httpx2.Auth | None = None,
        timeout_seconds: float = 10.0,
        user_agent: str = USER_AGENT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        config: SingleConfig | None = None,
        pool: ConnectionPool | None = None,
    ) -> None:
        self._server = server.rstrip("/")
        self._bucket = bucket
        self._ssl_context = ssl_context
        self._auth = _AuthFlow(auth) if auth is not None else None
        self._timeout_seconds = timeout_seconds
        self._headers = {"User-Agent": user_agent, "Accept": JSON}
        self._max_connections = max_connections
        self._config = config
        self._pool = pool
        self._session: aiohttp.ClientSession | None = None
        self._lightkube: lightkube.AsyncClient | None = None

    @property
    def server(self) -> str:
        return self._server

    @property
    def lightkube(self) -> lightkube.AsyncClient:
        """A lightkube AsyncClient with the same credentials and rate limit (made on first use)."""
        if self._lightkube is None:
            if self._config is None:
                raise RuntimeError("this KubeClient was built without a kubeconfig; no lightkube client")
            transport = RateLimitedTransport(
                httpx2.AsyncHTTPTransport(verify=self._ssl_context or True), self._bucket
            )
            self._lightkube = lightkube.AsyncClient(
                config=self._config,
                transport=transport,
                timeout=httpx2.Timeout(self._timeout_seconds),
                trust_env=False,
            )
        return self._lightkube

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=(
                    self._pool.connector(self._ssl_context)
                    if self._pool is not None
                    else aiohttp.TCPConnector(
                        ssl=self._ssl_context if self._ssl_context is not None else True,
                        limit=self._max_connections,
                    )
                ),
                connector_owner=self._pool is None,  # a shared pool outlives each client
                headers=self._headers,
                trust_env=False,
                # The API server's JSON is decoded by us; raise_for_status stays off so error
                # bodies (meta/v1 Status) can be read.
                raise_for_status=False,
            )
        return self._session

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None,
        data: bytes | None,
        headers: Mapping[str, str] | None,
        client_timeout: aiohttp.ClientTimeout,
    ) -> aiohttp.ClientResponse:
        await self._bucket.acquire()
        session = self._http()
        url = self._server + path

        def send(credentials: Mapping[str, str]) -> Any:
            merged = {**headers, **credentials} if headers else credentials
            return session.request(
                method, url, params=params, data=data, headers=merged or None, timeout=client_timeout
            )

        if self._auth is None:
            response: aiohttp.ClientResponse = await send({})
            return response
        return await self._auth.send(send, method, url)

    async def request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = JSON,
        decode: bool = True,
    ) -> dict[str, Any]:
        """Send one request and return the decoded JSON response (``{}`` when there is none).

        ``decode=False``: a success's body is read and dropped, ``{}`` returned (for a caller
        that needs only the outcome: a pod DELETE answers with the whole pod). Errors are
        decoded either way.
        """
        content = encode_json(body) if body is not None else None
        headers = {"Content-Type": content_type} if content is not None else None
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self._timeout_seconds, sock_read=self._timeout_seconds
        )
        with api_errors(what):
            response = await self._send(
                method, path, params=params, data=content, headers=headers, client_timeout=timeout
            )
            async with response:
                payload = await response.read()
            if response.status >= 400:
                raise error_for_response(
                    response.status,
                    reason=response.reason or "",
                    content_type=response.headers.get("Content-Type", ""),
                    body=payload,
                    what=what,
                )
            if not payload or not decode:
                return {}
            decoded: dict[str, Any] = json.loads(payload)
            return decoded

    @asynccontextmanager
    async def stream(
        self,
        path: str,
        *,
        what: str,
        params: Mapping[str, str] | None = None,
        read_timeout: float | None = None,
    ) -> AsyncIterator[WatchResponse]:
        """Open a streaming GET (a watch). Yields the response once its status is known to be 2xx.

        Transport errors raised while the caller reads the body are translated too.
        ``read_timeout`` bounds the silence between two chunks (None: wait forever).
        """
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self._timeout_seconds, sock_read=read_timeout
        )
        with api_errors(what):
            response = await self._send(
                "GET", path, params=params, data=None, headers=None, client_timeout=timeout
            )
            async with response:
                if response.status >= 400:
                    raise error_for_response(
                        response.status,
                        reason=response.reason or "",
                        content_type=response.headers.get("Content-Type", ""),
                        body=await response.read(),
                        what=what,
                    )
                yield WatchResponse(response)

    async def close(self) -> None:
        if self._lightkube is not None:
            await self._lightkube.close()
        if self._session is not None:
            await self._session.close()

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
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    pool: ConnectionPool | None = None,
) -> KubeClient:
    """Build a :class:`KubeClient` from a kubeconfig path (None: in-cluster config).

    ``qps``/``burst`` are the client-side token bucket (``qps <= 0`` means unlimited).
    ``timeout_seconds`` applies to connecting and to each read of ordinary requests; watch
    streams set their own read timeout. With ``pool`` the client's connections come from it
    (``max_connections`` is then unused). Raises lightkube's ConfigError for an unusable config.
    """
    config = load_config(kubeconfig, context=context)
    user = config.user or User()
    server = config.cluster.server
    ssl_context = (
        client_adapter.verify_cluster(config.cluster, user, config.abs_file, trust_env=False)
        if server.startswith("https:")
        else None
    )
    auth = client_adapter.user_auth(config.user)
    log.debug("kubernetes client for %s (qps=%s, burst=%s)", server, qps, burst)
    return KubeClient(
        server=server,
        bucket=TokenBucket(qps=qps, burst=burst),
        ssl_context=ssl_context,
        auth=auth,
        timeout_seconds=timeout_seconds,
        user_agent=user_agent,
        max_connections=max_connections,
        config=config,
        pool=pool,
    )
