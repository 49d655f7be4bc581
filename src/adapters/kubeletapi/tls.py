"""The kubelet API's server-side TLS.

Upstream exits at startup when ``APISERVER_CERT_LOCATION``/``APISERVER_KEY_LOCATION`` are unset
(its bug 5). We serve a real key pair when both paths are given and otherwise generate a
self-signed certificate in memory (SANs: ``localhost``, ``127.0.0.1``, the node's IP and name),
logging its SHA-256 fingerprint and how to supply a real one. Giving only one of the two paths is
an error: it is almost certainly a mistake.

TLS 1.2 is the minimum; TLS 1.2 suites are restricted to forward-secret AEAD ones (upstream still
offered CBC). With a client CA file the server *requests* a client certificate and verifies any
that is sent, without requiring one: authentication proper (client certificate or bearer token,
then authorization) is a middleware's job, which reads the verified peer certificate from the
connection. ``require_client_cert=True`` is the hook for strict mTLS (upstream's behaviour).

Hot swap (``--rotate-server-certificates``): :class:`ListenerCertificate` loads a new key pair
into the *live* server context. OpenSSL copies a context's certificate and key into each
connection when the connection is made, so every handshake from then on presents the new pair
while connections already open keep the one they were made with; the listener, its client-CA
trust store and its settings stay as they are, and nothing restarts. The pair is first loaded
into a scratch context, so a mismatched or broken pair is refused without touching the live one.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vkubelet.adapters.certs import fingerprint_sha256, self_signed_server
from vkubelet.domain.errors import InvalidInput

log = logging.getLogger(__name__)

CERT_ENV = "APISERVER_CERT_LOCATION"
KEY_ENV = "APISERVER_KEY_LOCATION"
CA_ENV = "APISERVER_CA_CERT_LOCATION"

# OpenSSL names for TLS 1.2 suites; TLS 1.3 suites are configured separately and all are AEAD.
_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


class TlsConfigError(ValueError):
    """The TLS files are missing, unreadable or do not match; the message names them."""


@dataclass(frozen=True, slots=True)
class ServerTls:
    """A ready server context plus what is worth logging or trusting about it."""

    context: ssl.SSLContext
    cert_pem: bytes  # the serving certificate (first of the chain), e.g. for a test to trust
    fingerprint: str  # SHA-256, colon-separated hex
    self_signed: bool


def server_tls(
    *,
    node_name: str,
    node_ip: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
    client_ca_file: str | None = None,
    require_client_cert: bool = False,
    extra_sans: Sequence[str] = (),
    from_csr: bool = False,
) -> ServerTls:
    """Build the kubelet API's server TLS (see the module doc). Raises :class:`TlsConfigError`.

    ``from_csr``: the real certificate arrives later through :class:`ListenerCertificate`
    (``--rotate-server-certificates``), so the self-signed one is expected, not a warning."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(_TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION

    if cert_file and key_file:
        cert_pem = _load_key_pair(context, cert_file, key_file)
        self_signed = False
    elif cert_file or key_file:
        given, missing = (CERT_ENV, KEY_ENV) if cert_file else (KEY_ENV, CERT_ENV)
        raise TlsConfigError(
            f"the kubelet API got {given} but not {missing}: give both (a real serving "
            "certificate) or neither (a generated self-signed one)"
        )
    else:
        cert_pem = _load_generated(context, node_name=node_name, node_ip=node_ip, extra_sans=extra_sans)
        self_signed = True

    if client_ca_file:
        try:
            context.load_verify_locations(cafile=client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise TlsConfigError(
                f"cannot load the client CA file {client_ca_file} ({CA_ENV}): {exc}"
            ) from exc
        context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    elif require_client_cert:
        raise TlsConfigError(f"requiring client certificates needs a client CA file ({CA_ENV})")

    fingerprint = fingerprint_sha256(cert_pem)
    if self_signed and from_csr:
        # --rotate-server-certificates: the fallback is expected, and short-lived.
        log.info(
            "kubelet API: serving a generated self-signed certificate for %s (SHA-256 fingerprint %s) "
            "until the CertificateSigningRequest for its serving certificate is issued",
            node_name,
            fingerprint,
        )
    elif self_signed:
        log.warning(
            "kubelet API: serving a generated self-signed certificate for %s (SHA-256 fingerprint %s); "
            "the API server cannot verify it. To serve a real certificate, set %s and %s to the paths "
            "of a PEM certificate and key signed by a CA the API server trusts",
            node_name,
            fingerprint,
            CERT_ENV,
            KEY_ENV,
        )
    else:
        log.info("kubelet API: serving certificate %s (SHA-256 fingerprint %s)", cert_file, fingerprint)
    return ServerTls(context=context, cert_pem=cert_pem, fingerprint=fingerprint, self_signed=self_signed)


def server_ssl_context(
    *,
    node_name: str,
    node_ip: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
    client_ca_file: str | None = None,
) -> ssl.SSLContext:
    """Just the context of :func:`server_tls`, for callers that need nothing else."""
    return server_tls(
        node_name=node_name,
        node_ip=node_ip,
        cert_file=cert_file,
        key_file=key_file,
        client_ca_file=client_ca_file,
    ).context


class ListenerCertificate:
    """``ServingCertificateSink`` over the kubelet API's live server context (module doc)."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context

    def install(self, *, cert_pem: bytes, key_pem: bytes) -> None:
        # OpenSSL keeps one certificate per key type: the new pair replaces the old one only if
        # both are ECDSA (the self-signed fallback and ServingKeyFactory's keys both are).
        # Must run on the event loop's thread (handshakes run there): no handshake can see the
        # context between loading the certificate and loading its key.
        try:
            _load_pem_pair(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), cert_pem, key_pem)
        except (OSError, ssl.SSLError, ValueError) as error:
            raise InvalidInput(f"the certificate and key do not make a usable key pair: {error}") from error
        _load_pem_pair(self._context, cert_pem, key_pem)
        log.info(
            "kubelet API: new serving certificate installed (SHA-256 fingerprint %s)",
            fingerprint_sha256(cert_pem),
        )


def _load_key_pair(context: ssl.SSLContext, cert_file: str, key_file: str) -> bytes:
    try:
        context.load_cert_chain(certfile=cert_file, keyfile=key_file)
        text = Path(cert_file).read_bytes()
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError(
            f"cannot load the kubelet API key pair {cert_file} ({CERT_ENV}) and {key_file} ({KEY_ENV}): {exc}"
        ) from exc
    end = b"-----END CERTIFICATE-----"
    if end not in text:
        raise TlsConfigError(f"{cert_file} ({CERT_ENV}) holds no PEM certificate")
    return text[: text.index(end) + len(end)] + b"\n"


def _sans(node_name: str, node_ip: str | None, extra: Sequence[str]) -> tuple[list[str], list[str]]:
    dns_names: list[str] = []
    ip_addresses: list[str] = []
    for name in ("localhost", "127.0.0.1", node_ip or "", node_name, *extra):
        if not name:
            continue
        try:
            ipaddress.ip_address(name)
        except ValueError:
            if name not in dns_names:
                dns_names.append(name)
        else:
            if name not in ip_addresses:
                ip_addresses.append(name)
    return dns_names, ip_addresses


def _load_generated(
    context: ssl.SSLContext, *, node_name: str, node_ip: str | None, extra_sans: Sequence[str]
) -> bytes:
    dns_names, ip_addresses = _sans(node_name, node_ip, extra_sans)
    pair = self_signed_server(
        common_name=node_name or "localhost", dns_names=dns_names, ip_addresses=ip_addresses
    )
    _load_pem_pair(context, pair.cert_pem, pair.key_pem)
    return pair.cert_pem


def _load_pem_pair(context: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    # The ssl module loads key pairs from files only: write them to a private directory that
    # exists just for the duration of the load.
    with tempfile.TemporaryDirectory(prefix="vkubelet-tls-") as directory:
        cert_path = os.path.join(directory, "tls.crt")
        key_path = os.path.join(directory, "tls.key")
        for path, data in ((cert_path, cert_pem), (key_path, key_pem)):
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
        context.load_cert_chain(certfile=cert_path, keyfile=key_path)
