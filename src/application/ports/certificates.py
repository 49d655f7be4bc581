"""Ports of the kubelet API's serving certificate (``--rotate-server-certificates``).

Three small seams: the CertificateSigningRequest API, the key and PKCS#10 generation, and the
live TLS listener the issued certificate goes into. Errors are domain errors, as for the
cluster ports: NotFound, Conflict, InvalidInput, Transient.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from vkubelet.domain.serving_cert import KeyAlgorithm, ServingIdentity, SigningRequest


class CertificateSigningRequests(Protocol):
    """certificates.k8s.io/v1 CertificateSigningRequests (cluster-scoped)."""

    async def create(
        self,
        *,
        generate_name: str,
        request_pem: bytes,
        signer_name: str,
        usages: Sequence[str],
        expiration_seconds: int | None = None,
    ) -> SigningRequest:
        """Create a CSR named ``generate_name`` plus a random suffix (the server picks it) and
        return it as stored: its name, uid and resourceVersion identify it from then on.
        ``expiration_seconds`` None: the signer's default validity (the API minimum is 600)."""
        ...

    async def get(self, name: str) -> SigningRequest:
        """A fresh read, its request parsed and any issued certificate decoded. Raises NotFound."""
        ...

    async def approve(self, request: SigningRequest, *, reason: str, message: str) -> SigningRequest:
        """Add the ``Approved`` condition through the ``approval`` subresource.

        Only the very object given is approved: Conflict when the CSR of that name now has
        another uid, or has changed since ``request.resource_version`` was read (so what was
        checked is what gets approved). Raises NotFound when it is gone."""
        ...


@dataclass(frozen=True, slots=True)
class KeyAndRequest:
    """A fresh private key and the PKCS#10 request signed with it (both PEM)."""

    key_pem: bytes
    request_pem: bytes
    algorithm: KeyAlgorithm


class ServingKeys(Protocol):
    def new_request(self, identity: ServingIdentity) -> KeyAndRequest:
        """A new key pair and a request for ``identity`` (its CN, O and SANs, nothing more)."""
        ...


class ServingCertificateSink(Protocol):
    """The running kubelet API listener."""

    def install(self, *, cert_pem: bytes, key_pem: bytes) -> None:
        """Serve this pair to every new connection from now on; connections already open keep
        theirs. Raises InvalidInput (and keeps the old pair) when the two do not match or do
        not parse."""
        ...
