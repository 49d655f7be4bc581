"""The kubelet API's authentication middleware on a real aiohttp TLS server with real certificates.

The reviewers are fakes (the real TokenReview/SubjectAccessReview run in
tests/e2e/test_kubelet_api_security.py); certificates, TLS and the CA file are real.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.fakes.provider import FakeProvider
from vkubelet.adapters import certs
from vkubelet.adapters.kubeletapi.auth import AuthMiddleware, ClientCa, ClientCaError
from vkubelet.adapters.kubeletapi.server import KubeletServer
from vkubelet.adapters.kubeletapi.tls import ServerTls, server_tls
from vkubelet.adapters.system import SystemClock
from vkubelet.application.kubelet_api import KubeletApi
from vkubelet.application.kubelet_auth import KubeletAuth, auth_policy
from vkubelet.domain.auth import AccessRequest, Decision, UserInfo
from vkubelet.domain.errors import Transient

NODE = "vk-auth"
TOKEN = "good-token"


class FakeReviews:
    """TokenReview and SubjectAccessReview: ``TOKEN`` is bob; ``allowed`` users may do anything."""

    def __init__(self) -> None:
        self.allowed = {"kube-apiserver-kubelet-client", "bob"}
        self.access: list[AccessRequest] = []
        self.fail_access = False

    async def authenticate_token(self, token: str) -> UserInfo | None:
        return UserInfo(name="bob", groups=("system:authenticated",)) if token == TOKEN else None

    async def authorize(self, request: AccessRequest) -> Decision:
        self.access.append(request)
        if self.fail_access:
            raise Transient("the API server is unreachable")
        return Decision(allowed=request.user.name in self.allowed)


@dataclass
class Pki:
    directory: Path
    ca_a: certs.KeyPair
    ca_b: certs.KeyPair

    def client(self, ca: certs.KeyPair, name: str, orgs: tuple[str, ...] = ()) -> tuple[Path, Path]:
        pair = certs.issue(ca, common_name=name, organizations=orgs, client=True)
        cert, key = self.directory / f"{name}-{id(ca)}.crt", self.directory / f"{name}-{id(ca)}.key"
        cert.write_bytes(pair.cert_pem)
        key.write_bytes(pair.key_pem)
        return cert, key


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path, certs.new_ca("client-ca-a"), certs.new_ca("client-ca-b"))


@dataclass
class Served:
    url: str
    tls: ServerTls
    reviews: FakeReviews
    client_ca: ClientCa | None


@contextlib.asynccontextmanager
async def serve(
    *, ca_file: Path | None, webhook: bool = False, anonymous: bool = False
) -> AsyncIterator[Served]:
    tls = server_tls(node_name=NODE, node_ip="127.0.0.1", client_ca_file=str(ca_file) if ca_file else None)
    reviews = FakeReviews()
    policy = auth_policy(client_ca=ca_file is not None, token_webhook=webhook, anonymous=anonymous)
    auth = KubeletAuth(policy=policy, node_name=NODE, authenticator=reviews, authorizer=reviews)
    client_ca = ClientCa(ca_file, clock=SystemClock(), ssl_context=tls.context) if ca_file else None
    api = KubeletApi(provider=FakeProvider(), node_pods=list, node_name=NODE)
    server = KubeletServer(
        api,
        listen_host="127.0.0.1",
        listen_port=0,
        ssl_context=tls.context,
        middlewares=[AuthMiddleware(auth, client_ca=client_ca)],
    )
    await server.start()
    try:
        yield Served(f"https://127.0.0.1:{server.port}", tls, reviews, client_ca)
    finally:
        await server.stop()


async def get(
    served: Served, path: str = "/pods", *, cert: tuple[Path, Path] | None = None, token: str | None = None
) -> tuple[int, str]:
    context = ssl.create_default_context(cadata=served.tls.cert_pem.decode())
    if cert:
        context.load_cert_chain(*cert)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.get(served.url + path, ssl=context, headers=headers) as response,
    ):
        return response.status, await response.text()


@pytest.fixture
def ca_file(pki: Pki) -> Iterator[Path]:
    path = pki.directory / "client-ca.crt"
    path.write_bytes(pki.ca_a.cert_pem)
    yield path


async def test_a_client_certificate_of_the_ca_is_the_user_it_names(pki: Pki, ca_file: Path) -> None:
    async with serve(ca_file=ca_file) as served:
        cert = pki.client(pki.ca_a, "kube-apiserver-kubelet-client", ("system:masters",))
        status, body = await get(served, "/pods", cert=cert)
        assert status == 200, body
        (request,) = served.reviews.access
        assert request.user == UserInfo(name="kube-apiserver-kubelet-client", groups=("system:masters",))
        assert (request.verb, request.resource, request.subresource, request.name) == (
            "get",
            "nodes",
            "proxy",
            NODE,
        )


async def test_no_credentials_get_401_but_healthz_is_open(ca_file: Path) -> None:
    async with serve(ca_file=ca_file, webhook=True) as served:
        assert await get(served, "/pods") == (401, "Unauthorized\n")
        assert await get(served, "/exec/ns/pod/c") == (401, "Unauthorized\n")
        assert await get(served, "/healthz") == (200, "ok")
        assert served.reviews.access == []


async def test_a_certificate_of_another_ca_is_refused(pki: Pki, ca_file: Path) -> None:
    """Never-loaded CA: the TLS layer verifies and refuses (no verify callback in Python's ssl)."""
    async with serve(ca_file=ca_file) as served:
        cert = pki.client(pki.ca_b, "mallory", ("system:masters",))
        try:
            status, _ = await get(served, "/pods", cert=cert)
        except (aiohttp.ClientError, ssl.SSLError):
            status = 0  # handshake failure
        assert status == 0
        assert served.reviews.access == []


async def test_a_rotated_ca_file_is_picked_up_without_restart(pki: Pki, ca_file: Path) -> None:
    async with serve(ca_file=ca_file) as served:
        assert served.client_ca is not None
        old = pki.client(pki.ca_a, "bob")
        new = pki.client(pki.ca_b, "bob")
        assert (await get(served, cert=old))[0] == 200
        watch = asyncio.create_task(served.client_ca.watch(interval=0.05))
        try:
            replacement = ca_file.with_suffix(".new")
            replacement.write_bytes(pki.ca_b.cert_pem)
            replacement.replace(ca_file)  # atomic, as a Secret volume update
            deadline = time.monotonic() + 10
            while True:
                with contextlib.suppress(aiohttp.ClientError, ssl.SSLError):
                    if (await get(served, cert=new))[0] == 200:
                        break
                assert time.monotonic() < deadline, "the new CA was not picked up within 10 s"
                await asyncio.sleep(0.05)
            # The old CA passes the handshake (the TLS store only grows) but is no longer trusted.
            assert await get(served, cert=old) == (401, "Unauthorized\n")
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch


def test_an_unreadable_ca_file_keeps_the_previous_cas(pki: Pki, ca_file: Path) -> None:
    client_ca = ClientCa(ca_file, clock=SystemClock(), ssl_context=None)
    ca_file.write_bytes(b"not a certificate")
    assert client_ca.reload_if_changed()
    assert [ca.subject.rfc4514_string() for ca in client_ca.authorities] == ["CN=client-ca-a"]
    ca_file.unlink()
    with pytest.raises(ClientCaError, match="--client-ca-file"):
        ClientCa(ca_file, clock=SystemClock(), ssl_context=None)


async def test_bearer_tokens_are_reviewed_and_denials_get_403(ca_file: Path) -> None:
    async with serve(ca_file=ca_file, webhook=True) as served:
        assert (await get(served, "/stats/summary", token=TOKEN))[0] != 401  # 501: no stats; past auth
        assert await get(served, "/pods", token="forged") == (401, "Unauthorized\n")
        served.reviews.allowed.discard("bob")
        status, body = await get(served, "/exec/ns/pod/c", token=TOKEN)
        assert status == 403
        assert body == "Forbidden (user=bob, verb=get, resource=nodes, subresource=proxy)\n"


async def test_tokens_are_ignored_without_the_webhook(ca_file: Path) -> None:
    async with serve(ca_file=ca_file) as served:
        assert (await get(served, "/pods", token=TOKEN))[0] == 401


async def test_a_failing_review_answers_500(ca_file: Path) -> None:
    async with serve(ca_file=ca_file, webhook=True) as served:
        served.reviews.fail_access = True
        status, body = await get(served, "/pods", token=TOKEN)
        assert status == 500
        assert "unreachable" in body and "bob" in body


async def test_anonymous_requests_are_reviewed_as_system_anonymous(ca_file: Path) -> None:
    async with serve(ca_file=ca_file, anonymous=True) as served:
        status, body = await get(served, "/pods")
        assert status == 403
        assert "user=system:anonymous" in body
        assert served.reviews.access[0].user.groups == ("system:unauthenticated",)


async def test_open_mode_serves_everyone() -> None:
    async with serve(ca_file=None, anonymous=True) as served:
        assert (await get(served, "/pods"))[0] == 200
        assert served.reviews.access == []  # no review: anonymous-only is the explicit open mode
