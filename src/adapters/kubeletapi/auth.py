"""Authentication and authorization of the kubelet API, as an aiohttp middleware.

Order of credentials, as the kubelet's union authenticator:

1. a client certificate issued by a CA of ``--client-ca-file``: the user is its CN, the groups
   its O values (the API server's kubelet client certificate is ``O=system:masters``);
2. ``Authorization: Bearer <token>`` checked by TokenReview (``--authentication-token-webhook``);
3. anonymous (``system:anonymous``), only with ``--anonymous-auth``.

Nothing valid: 401. Then a SubjectAccessReview (cached; see ``application.kubelet_auth``) for
``nodes/<subresource>``: denied 403 naming user, verb, resource and subresource; no answer from
the API server 500. ``/healthz`` is served without credentials.

The client CA file is watched (:meth:`ClientCa.watch`) and re-read when it changes. Python's ssl
module has no verify callback, so the TLS layer itself verifies any certificate a client sends
(it requests one, without requiring it): a reload *adds* the new CA to the live context's trust
store, so certificates of the new CA pass the handshake without a restart, and the CA set this
middleware checks against is the authoritative one (certificates of a CA that was removed from
the file pass the handshake but get 401 here). A certificate of a CA never loaded fails the
handshake instead of getting 401.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vkubelet.application.kubelet_auth import KubeletAuth
from vkubelet.application.ports.runtime import Clock
from vkubelet.domain.auth import ANONYMOUS, UserInfo
from vkubelet.domain.errors import DomainError

log = logging.getLogger(__name__)

UNAUTHENTICATED_PATHS = frozenset({"/healthz"})
DEFAULT_CA_CHECK_INTERVAL = 10.0


class ClientCaError(ValueError):
    """The client CA file cannot be read or holds no certificate; the message names it."""


@dataclass(frozen=True, slots=True)
class _FileStamp:
    mtime_ns: int
    size: int
    inode: int


class ClientCa:
    """The CAs of ``--client-ca-file``, re-read when the file changes.

    ``ssl_context`` (the server's) learns every CA loaded, so new clients pass the handshake.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, clock: Clock, ssl_context: ssl.SSLContext | None
    ) -> None:
        self._path = os.fspath(path)
        self._clock = clock
        self._ssl_context = ssl_context
        self._stamp: _FileStamp | None = None
        self._cas: tuple[x509.Certificate, ...] = ()
        if not self.reload_if_changed():
            raise ClientCaError(f"cannot load the client CA file {self._path} (--client-ca-file)")

    @property
    def path(self) -> str:
        return self._path

    @property
    def authorities(self) -> Sequence[x509.Certificate]:
        return self._cas

    def reload_if_changed(self) -> bool:
        """Re-read the file when its mtime, size or inode changed. A file that cannot be read
        or parsed keeps the previous CAs (logged). True when CAs are loaded after the call."""
        try:
            stat = os.stat(self._path)
            stamp = _FileStamp(stat.st_mtime_ns, stat.st_size, stat.st_ino)
            if stamp == self._stamp:
                return True
            with open(self._path, "rb") as handle:
                cas = tuple(x509.load_pem_x509_certificates(handle.read()))
            if self._ssl_context is not None:
                self._ssl_context.load_verify_locations(cafile=self._path)
        except (OSError, ValueError, ssl.SSLError) as error:
            log.error(
                "kubelet API: cannot load the client CA file %s, keeping the old CAs: %s", self._path, error
            )
            return bool(self._cas)
        first = self._stamp is None
        self._stamp, self._cas = stamp, cas
        log.info(
            "kubelet API: %s client CA file %s (%d certificates)",
            "loaded" if first else "reloaded",
            self._path,
            len(cas),
        )
        return True

    async def watch(self, interval: float = DEFAULT_CA_CHECK_INTERVAL) -> None:
        """Check the file every ``interval`` seconds, forever (cancel to stop)."""
        while True:
            await self._clock.sleep(interval)
            await asyncio.to_thread(self.reload_if_changed)

    def authenticate(self, der: bytes) -> UserInfo | None:
        """The user of a client certificate (DER) issued directly by one of the current CAs,
        valid now and usable for client authentication; None otherwise."""
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            return None
        now = self._clock.now()
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            return None
        if not _client_usage(cert):
            return None
        for ca in self._cas:
            if ca.subject != cert.issuer:
                continue
            try:
                cert.verify_directly_issued_by(ca)
            except (ValueError, TypeError, InvalidSignature):
                continue
            if ca.not_valid_before_utc <= now <= ca.not_valid_after_utc:
                return _user_of(cert)
        return None


def _client_usage(cert: x509.Certificate) -> bool:
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return ExtendedKeyUsageOID.CLIENT_AUTH in usages or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in usages


def _user_of(cert: x509.Certificate) -> UserInfo | None:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        return None
    groups = tuple(str(attr.value) for attr in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))
    return UserInfo(name=str(names[0].value), groups=groups)


def _text(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message + "\n")


class AuthMiddleware:
    """The aiohttp middleware (pass the instance in ``KubeletServer(middlewares=[...])``)."""

    __middleware_version__ = 1  # what @web.middleware marks: the (request, handler) signature

    def __init__(self, auth: KubeletAuth, *, client_ca: ClientCa | None) -> None:
        self._auth = auth
        self._client_ca = client_ca

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in UNAUTHENTICATED_PATHS:
            return await handler(request)
        user = await self._authenticate(request)
        if user is None:
            return _text(401, "Unauthorized")
        try:
            access, decision = await self._auth.authorize(user, method=request.method, path=request.path)
        except DomainError as error:
            log.warning("kubelet API: authorization of %s %s failed: %s", request.method, request.path, error)
            return _text(500, f"Authorization error (user={user.name}): {error}")
        if not decision.allowed:
            log.info("kubelet API: forbidden %s %s (%s)", request.method, request.path, access.describe())
            return _text(403, f"Forbidden ({access.describe()})")
        return await handler(request)

    async def _authenticate(self, request: web.Request) -> UserInfo | None:
        if self._client_ca is not None:
            der = _peer_certificate(request)
            if der is not None:
                user = self._client_ca.authenticate(der)
                if user is not None:
                    return user
        token = _bearer_token(request)
        if token and self._auth.policy.token_webhook:
            try:
                user = await self._auth.authenticate_token(token)
            except DomainError as error:
                # The kubelet answers 401 when the webhook fails; the log says why.
                log.warning("kubelet API: token review failed: %s", error)
                return None
            if user is not None:
                return user
            return None  # an invalid token is not anonymous: the client meant to authenticate
        if self._auth.policy.anonymous:
            return ANONYMOUS
        return None


def _peer_certificate(request: web.Request) -> bytes | None:
    transport = request.transport
    if transport is None:
        return None
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return bytes(der) if der else None


def _bearer_token(request: web.Request) -> str | None:
    header = request.headers.get(hdrs.AUTHORIZATION, "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def load_client_ca(
    path: str | os.PathLike[str] | None, *, clock: Clock, ssl_context: ssl.SSLContext | None
) -> ClientCa | None:
    """The :class:`ClientCa` of ``--client-ca-file``; None when the flag is not given."""
    return ClientCa(path, clock=clock, ssl_context=ssl_context) if path else None
