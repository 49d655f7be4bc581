"""Authentication and authorization of kubelet API requests: the rules, the caches, the policy.

* :func:`access_request` maps an HTTP request to the SubjectAccessReview attributes the kubelet
  uses (verb from the method, resource ``nodes``, a subresource chosen by path prefix). Container
  logs, exec, attach, port-forward and the pod lists all map to ``nodes/proxy``, as upstream.
* :class:`CachedAuthenticator` and :class:`CachedAuthorizer` put TTL caches (through the Clock
  port) in front of the review ports; allowed and denied decisions have their own TTLs, and
  failures are never cached.
* :func:`auth_policy` is the startup rule: with neither a client CA nor the token webhook the
  API would be open to anyone, which is refused unless ``--anonymous-auth`` says so.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Generic, TypeVar

from vkubelet.application.ports.runtime import Clock
from vkubelet.application.ports.security import RequestAuthenticator, RequestAuthorizer
from vkubelet.domain.auth import AccessRequest, Decision, UserInfo
from vkubelet.domain.errors import InvalidInput

_VERBS = {
    "GET": "get",
    "HEAD": "get",
    "POST": "create",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}

# Path prefix -> subresource, first match wins; everything else is "proxy".
_SUBRESOURCES = (("/stats", "stats"), ("/metrics", "metrics"), ("/logs", "log"), ("/spec", "spec"))

DEFAULT_CACHE_ENTRIES = 10_000


def verb_for_method(method: str) -> str:
    """The authorization verb of an HTTP method; ``""`` for methods the kubelet does not map
    (a SubjectAccessReview with an empty verb is denied by RBAC)."""
    return _VERBS.get(method.upper(), "")


def subresource_for_path(path: str) -> str:
    for prefix, subresource in _SUBRESOURCES:
        if path == prefix or path.startswith(prefix + "/"):
            return subresource
    return "proxy"


def access_request(user: UserInfo, *, method: str, path: str, node_name: str) -> AccessRequest:
    """What ``user`` asks of node ``node_name`` with ``method path``."""
    return AccessRequest(
        user=user,
        verb=verb_for_method(method),
        resource="nodes",
        subresource=subresource_for_path(path),
        name=node_name,
    )


K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """A bounded map whose entries expire ``ttl`` seconds after being put (Clock.monotonic).

    When full, expired entries are dropped first, then the oldest ones. One event loop only.
    """

    def __init__(self, *, clock: Clock, max_entries: int = DEFAULT_CACHE_ENTRIES) -> None:
        self._clock = clock
        self._max = max(1, max_entries)
        self._entries: dict[K, tuple[float, V]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if self._clock.monotonic() >= expires:
            del self._entries[key]
            return None
        return value

    def put(self, key: K, value: V, *, ttl: float) -> None:
        if ttl <= 0:
            return
        self._entries.pop(key, None)
        if len(self._entries) >= self._max:
            self._evict()
        self._entries[key] = (self._clock.monotonic() + ttl, value)

    def _evict(self) -> None:
        now = self._clock.monotonic()
        for key in [key for key, (expires, _) in self._entries.items() if expires <= now]:
            del self._entries[key]
        while len(self._entries) >= self._max:
            del self._entries[next(iter(self._entries))]  # dicts keep insertion order: the oldest


@dataclass(frozen=True, slots=True)
class _Unauthenticated:
    """A cached "this token is not valid" (None cannot be told apart from a miss)."""


_INVALID = _Unauthenticated()


class CachedAuthenticator:
    """A :class:`RequestAuthenticator` that remembers answers for ``ttl`` seconds (0: no cache).

    Tokens are keyed by their SHA-256, so the cache holds no usable credential.
    """

    def __init__(
        self,
        inner: RequestAuthenticator,
        *,
        clock: Clock,
        ttl: float,
        max_entries: int = DEFAULT_CACHE_ENTRIES,
    ) -> None:
        self._inner = inner
        self._ttl = ttl
        self._cache: TtlCache[str, UserInfo | _Unauthenticated] = TtlCache(
            clock=clock, max_entries=max_entries
        )

    async def authenticate_token(self, token: str) -> UserInfo | None:
        key = hashlib.sha256(token.encode()).hexdigest()
        cached = self._cache.get(key)
        if cached is not None:
            return None if isinstance(cached, _Unauthenticated) else cached
        user = await self._inner.authenticate_token(token)  # a failure propagates, uncached
        self._cache.put(key, _INVALID if user is None else user, ttl=self._ttl)
        return user


class CachedAuthorizer:
    """A :class:`RequestAuthorizer` caching allowed decisions for ``allowed_ttl`` and denied
    ones for ``denied_ttl`` seconds (the kubelet's 5 min and 30 s by default)."""

    def __init__(
        self,
        inner: RequestAuthorizer,
        *,
        clock: Clock,
        allowed_ttl: float,
        denied_ttl: float,
        max_entries: int = DEFAULT_CACHE_ENTRIES,
    ) -> None:
        self._inner = inner
        self._allowed_ttl = allowed_ttl
        self._denied_ttl = denied_ttl
        self._cache: TtlCache[AccessRequest, Decision] = TtlCache(clock=clock, max_entries=max_entries)

    async def authorize(self, request: AccessRequest) -> Decision:
        cached = self._cache.get(request)
        if cached is not None:
            return cached
        decision = await self._inner.authorize(request)
        self._cache.put(request, decision, ttl=self._allowed_ttl if decision.allowed else self._denied_ttl)
        return decision


class AllowAll:
    """The open mode's authorizer (only with ``--anonymous-auth`` and no other credential)."""

    async def authorize(self, request: AccessRequest) -> Decision:
        return Decision(allowed=True, reason="the kubelet API is in open mode (--anonymous-auth only)")


@dataclass(frozen=True, slots=True)
class AuthPolicy:
    """How the kubelet API authenticates, decided once at startup by :func:`auth_policy`."""

    client_certificates: bool
    token_webhook: bool
    anonymous: bool
    # True when nothing but anonymous access is configured: every request is allowed.
    open_mode: bool
    warning: str = ""


def auth_policy(*, client_ca: bool, token_webhook: bool, anonymous: bool) -> AuthPolicy:
    """Validate the authentication flags. Raises InvalidInput naming the flags when the API
    would have no way to authenticate anyone and anonymous access was not asked for."""
    if not client_ca and not token_webhook:
        if not anonymous:
            raise InvalidInput(
                "the kubelet API has no way to authenticate clients: give --client-ca-file (the CA of "
                "the API server's kubelet client certificate, --kubelet-client-certificate) and/or "
                "--authentication-token-webhook; or --anonymous-auth to serve it to anyone who can "
                "reach the port, including exec, attach and port-forward"
            )
        return AuthPolicy(
            client_certificates=False,
            token_webhook=False,
            anonymous=True,
            open_mode=True,
            warning=(
                "the kubelet API is open: --anonymous-auth without --client-ca-file or "
                "--authentication-token-webhook lets anyone who can reach the port read logs, exec "
                "into containers and port-forward"
            ),
        )
    return AuthPolicy(
        client_certificates=client_ca, token_webhook=token_webhook, anonymous=anonymous, open_mode=False
    )


class KubeletAuth:
    """What the HTTP edge calls once it has found the request's credentials."""

    def __init__(
        self,
        *,
        policy: AuthPolicy,
        node_name: str,
        authenticator: RequestAuthenticator | None,
        authorizer: RequestAuthorizer,
    ) -> None:
        if policy.token_webhook and authenticator is None:
            raise ValueError("the token webhook is enabled but no authenticator was given")
        self.policy = policy
        self._node_name = node_name
        self._authenticator = authenticator
        self._authorizer: RequestAuthorizer = AllowAll() if policy.open_mode else authorizer

    async def authenticate_token(self, token: str) -> UserInfo | None:
        """None when the token is invalid or token authentication is off."""
        if self._authenticator is None or not self.policy.token_webhook:
            return None
        return await self._authenticator.authenticate_token(token)

    async def authorize(self, user: UserInfo, *, method: str, path: str) -> tuple[AccessRequest, Decision]:
        request = access_request(user, method=method, path=path, node_name=self._node_name)
        return request, await self._authorizer.authorize(request)


def cached_auth(
    *,
    policy: AuthPolicy,
    node_name: str,
    clock: Clock,
    authenticator: RequestAuthenticator,
    authorizer: RequestAuthorizer,
    token_ttl: float,
    allowed_ttl: float,
    denied_ttl: float,
) -> KubeletAuth:
    """A :class:`KubeletAuth` with the review caches in front of the reviewers."""
    return KubeletAuth(
        policy=policy,
        node_name=node_name,
        authenticator=CachedAuthenticator(authenticator, clock=clock, ttl=token_ttl),
        authorizer=CachedAuthorizer(authorizer, clock=clock, allowed_ttl=allowed_ttl, denied_ttl=denied_ttl),
    )
