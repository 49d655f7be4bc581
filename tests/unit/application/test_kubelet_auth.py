"""The kubelet API's request -> SubjectAccessReview mapping, the review caches and the startup policy."""

from __future__ import annotations

import pytest
from tests.fakes.clock import FakeClock

from vkubelet.application.kubelet_auth import (
    CachedAuthenticator,
    CachedAuthorizer,
    KubeletAuth,
    TtlCache,
    access_request,
    auth_policy,
    cached_auth,
    subresource_for_path,
    verb_for_method,
)
from vkubelet.domain.auth import ANONYMOUS, AccessRequest, Decision, UserInfo
from vkubelet.domain.errors import InvalidInput, Transient

ALICE = UserInfo(name="alice", groups=("dev",))


class FakeAuthenticator:
    def __init__(self, users: dict[str, UserInfo]) -> None:
        self.users = users
        self.calls: list[str] = []
        self.fail = False

    async def authenticate_token(self, token: str) -> UserInfo | None:
        self.calls.append(token)
        if self.fail:
            raise Transient("API server unreachable")
        return self.users.get(token)


class FakeAuthorizer:
    def __init__(self, allowed: set[tuple[str, str, str]]) -> None:
        self.allowed = allowed  # (user, verb, subresource)
        self.calls: list[AccessRequest] = []
        self.fail = False

    async def authorize(self, request: AccessRequest) -> Decision:
        self.calls.append(request)
        if self.fail:
            raise Transient("API server unreachable")
        ok = (request.user.name, request.verb, request.subresource) in self.allowed
        return Decision(allowed=ok, reason="rbac")


@pytest.mark.parametrize(
    ("method", "verb"),
    [
        ("GET", "get"),
        ("POST", "create"),
        ("PUT", "update"),
        ("PATCH", "patch"),
        ("DELETE", "delete"),
        ("get", "get"),
        ("OPTIONS", ""),
    ],
)
def test_verb_from_method(method: str, verb: str) -> None:
    assert verb_for_method(method) == verb


@pytest.mark.parametrize(
    ("path", "subresource"),
    [
        ("/stats/summary", "stats"),
        ("/stats", "stats"),
        ("/metrics/resource", "metrics"),
        ("/metrics", "metrics"),
        ("/logs/messages", "log"),
        ("/spec/", "spec"),
        ("/containerLogs/ns/pod/c", "proxy"),
        ("/exec/ns/pod/c", "proxy"),
        ("/pods", "proxy"),
        ("/runningpods/", "proxy"),
        ("/statsfoo", "proxy"),  # a prefix match is per path segment
        ("/", "proxy"),
    ],
)
def test_subresource_from_path(path: str, subresource: str) -> None:
    assert subresource_for_path(path) == subresource


def test_access_request_names_the_node() -> None:
    request = access_request(ALICE, method="POST", path="/exec/ns/p/c", node_name="vk-0")
    assert request == AccessRequest(
        user=ALICE, verb="create", resource="nodes", subresource="proxy", name="vk-0"
    )
    assert request.describe() == "user=alice, verb=create, resource=nodes, subresource=proxy"


async def test_ttl_cache_expires_and_bounds() -> None:
    clock = FakeClock()
    cache: TtlCache[str, int] = TtlCache(clock=clock, max_entries=2)
    cache.put("a", 1, ttl=10)
    await clock.advance(9.9)
    assert cache.get("a") == 1
    await clock.advance(0.1)
    assert cache.get("a") is None
    cache.put("b", 2, ttl=10)
    cache.put("c", 3, ttl=10)
    cache.put("d", 4, ttl=10)  # full: the oldest goes
    assert (cache.get("b"), cache.get("c"), cache.get("d")) == (None, 3, 4)
    cache.put("e", 5, ttl=0)  # ttl 0: not cached
    assert cache.get("e") is None and len(cache) == 2


async def test_token_cache_remembers_both_answers_until_ttl() -> None:
    clock = FakeClock()
    inner = FakeAuthenticator({"good": ALICE})
    cached = CachedAuthenticator(inner, clock=clock, ttl=120)
    assert await cached.authenticate_token("good") == ALICE
    assert await cached.authenticate_token("bad") is None
    assert await cached.authenticate_token("good") == ALICE
    assert await cached.authenticate_token("bad") is None
    assert inner.calls == ["good", "bad"]
    await clock.advance(120)
    assert await cached.authenticate_token("good") == ALICE
    assert inner.calls == ["good", "bad", "good"]


async def test_token_cache_does_not_remember_failures() -> None:
    inner = FakeAuthenticator({"good": ALICE})
    cached = CachedAuthenticator(inner, clock=FakeClock(), ttl=120)
    inner.fail = True
    with pytest.raises(Transient):
        await cached.authenticate_token("good")
    inner.fail = False
    assert await cached.authenticate_token("good") == ALICE


async def test_decision_cache_has_separate_allowed_and_denied_ttls() -> None:
    clock = FakeClock()
    inner = FakeAuthorizer({("alice", "get", "proxy")})
    cached = CachedAuthorizer(inner, clock=clock, allowed_ttl=300, denied_ttl=30)
    allowed = access_request(ALICE, method="GET", path="/pods", node_name="vk-0")
    denied = access_request(ALICE, method="POST", path="/exec/a/b/c", node_name="vk-0")
    for _ in range(2):
        assert (await cached.authorize(allowed)).allowed
        assert not (await cached.authorize(denied)).allowed
    assert len(inner.calls) == 2
    await clock.advance(30)  # the denial expires, the grant does not
    assert not (await cached.authorize(denied)).allowed
    assert (await cached.authorize(allowed)).allowed
    assert len(inner.calls) == 3
    await clock.advance(270)
    assert (await cached.authorize(allowed)).allowed
    assert len(inner.calls) == 4


async def test_decision_cache_does_not_remember_failures() -> None:
    inner = FakeAuthorizer({("alice", "get", "proxy")})
    cached = CachedAuthorizer(inner, clock=FakeClock(), allowed_ttl=300, denied_ttl=30)
    request = access_request(ALICE, method="GET", path="/pods", node_name="vk-0")
    inner.fail = True
    with pytest.raises(Transient):
        await cached.authorize(request)
    inner.fail = False
    assert (await cached.authorize(request)).allowed


def test_policy_refuses_an_api_nobody_can_authenticate_to() -> None:
    with pytest.raises(InvalidInput) as raised:
        auth_policy(client_ca=False, token_webhook=False, anonymous=False)
    message = str(raised.value)
    for flag in ("--client-ca-file", "--authentication-token-webhook", "--anonymous-auth"):
        assert flag in message


def test_policy_open_mode_only_with_anonymous_and_warns() -> None:
    policy = auth_policy(client_ca=False, token_webhook=False, anonymous=True)
    assert policy.open_mode and policy.anonymous
    assert "--anonymous-auth" in policy.warning
    secured = auth_policy(client_ca=True, token_webhook=False, anonymous=True)
    assert not secured.open_mode and not secured.warning


async def test_open_mode_allows_without_review_and_secured_mode_asks() -> None:
    authorizer = FakeAuthorizer(set())
    open_auth = KubeletAuth(
        policy=auth_policy(client_ca=False, token_webhook=False, anonymous=True),
        node_name="vk-0",
        authenticator=None,
        authorizer=authorizer,
    )
    _, decision = await open_auth.authorize(ANONYMOUS, method="POST", path="/exec/a/b/c")
    assert decision.allowed and authorizer.calls == []

    secured = cached_auth(
        policy=auth_policy(client_ca=True, token_webhook=False, anonymous=True),
        node_name="vk-0",
        clock=FakeClock(),
        authenticator=FakeAuthenticator({"good": ALICE}),
        authorizer=authorizer,
        token_ttl=120,
        allowed_ttl=300,
        denied_ttl=30,
    )
    request, decision = await secured.authorize(ANONYMOUS, method="GET", path="/stats/summary")
    assert not decision.allowed
    assert request.subresource == "stats" and authorizer.calls == [request]
    # The token webhook is off: tokens authenticate nobody, without asking the API server.
    assert await secured.authenticate_token("good") is None
