"""Hand-written fakes of the serving-certificate ports (``application/ports/certificates.py``).

:class:`FakeCertificateSigningRequests` keeps CSRs in memory like the API server: a name from
``generateName`` plus a suffix, a uid, a resourceVersion bumped on every write, an approval
that refuses a stale resourceVersion or another uid (Conflict). With ``signer_validity`` set it
also plays kube-controller-manager's signer: an approved CSR gets a certificate at once.
:class:`FakeServingKeys` makes "requests" that are JSON of what they ask for (no cryptography
in unit tests); the fake gateway reads them back, and ``on_create`` lets a test change what is
stored (as a mutating webhook or a bug would).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Callable, Sequence
from datetime import timedelta

from tests.fakes.clock import FakeClock
from vkubelet.application.ports.certificates import KeyAndRequest
from vkubelet.domain.errors import Conflict, InvalidInput, NotFound
from vkubelet.domain.serving_cert import (
    CertificateRequestContent,
    CsrCondition,
    IssuedCertificate,
    KeyAlgorithm,
    ServingIdentity,
    SigningRequest,
)


class FakeServingKeys:
    """``ServingKeys``: numbered keys; the request is JSON of the identity."""

    def __init__(self, algorithm: KeyAlgorithm = KeyAlgorithm.ECDSA) -> None:
        self.algorithm = algorithm
        self.made: list[KeyAndRequest] = []
        self._numbers = itertools.count(1)

    def new_request(self, identity: ServingIdentity) -> KeyAndRequest:
        content = {
            "cn": identity.common_name,
            "o": list(identity.organizations),
            "dns": list(identity.dns_names),
            "ip": list(identity.ip_addresses),
            "alg": self.algorithm.value,
        }
        pair = KeyAndRequest(
            key_pem=f"key-{next(self._numbers)}".encode(),
            request_pem=json.dumps(content).encode(),
            algorithm=self.algorithm,
        )
        self.made.append(pair)
        return pair


def _content(request_pem: bytes) -> CertificateRequestContent:
    raw = json.loads(request_pem)
    return CertificateRequestContent(
        common_name=raw["cn"],
        organizations=tuple(raw["o"]),
        dns_names=tuple(raw["dns"]),
        ip_addresses=tuple(raw["ip"]),
        key_algorithm=KeyAlgorithm(raw["alg"]),
    )


class FakeCertificateSigningRequests:
    """``CertificateSigningRequests`` in memory (see the module doc)."""

    def __init__(self, clock: FakeClock, *, signer_validity: timedelta | None = timedelta(days=365)) -> None:
        self.clock = clock
        self.signer_validity = signer_validity
        self.stored: dict[str, SigningRequest] = {}
        self.created: list[str] = []
        self.approvals: list[str] = []  # names approved through the port
        self.gets = 0
        self.on_create: Callable[[SigningRequest], SigningRequest] | None = None
        self.approve_error: Exception | None = None  # raised by approve(), e.g. RBAC's 403
        self._rv = itertools.count(1)
        self._suffix = itertools.count(1)

    async def create(
        self,
        *,
        generate_name: str,
        request_pem: bytes,
        signer_name: str,
        usages: Sequence[str],
        expiration_seconds: int | None = None,
    ) -> SigningRequest:
        if expiration_seconds is not None and expiration_seconds < 600:
            raise InvalidInput("spec.expirationSeconds: may not specify a duration less than 600 seconds")
        name = f"{generate_name}{next(self._suffix):05d}"
        request = SigningRequest(
            name=name,
            uid=f"uid-{name}",
            resource_version=str(next(self._rv)),
            signer_name=signer_name,
            usages=tuple(usages),
            content=_content(request_pem),
        )
        if self.on_create is not None:
            request = self.on_create(request)
        self.stored[name] = request
        self.created.append(name)
        return request

    async def get(self, name: str) -> SigningRequest:
        self.gets += 1
        if name not in self.stored:
            raise NotFound(f'certificatesigningrequests "{name}" not found')
        return self.stored[name]

    async def approve(self, request: SigningRequest, *, reason: str, message: str) -> SigningRequest:
        if self.approve_error is not None:
            raise self.approve_error
        current = await self.get(request.name)
        if current.uid != request.uid or current.resource_version != request.resource_version:
            raise Conflict(f"certificatesigningrequest {request.name} changed")
        self.approvals.append(request.name)
        return self._approve(request.name, reason=reason, message=message)

    # -- what other actors do (not port calls) ---------------------------------------------------
    def latest(self) -> SigningRequest:
        return self.stored[self.created[-1]]

    def approve_as_admin(self, name: str) -> SigningRequest:
        return self._approve(name, reason="KubectlApprove", message="approved by kubectl")

    def deny(self, name: str, *, reason: str = "Nope", message: str = "denied by an admin") -> None:
        self._add_condition(name, CsrCondition("Denied", "True", reason, message))

    def fail(
        self, name: str, *, reason: str = "SignerValidationFailure", message: str = "bad request"
    ) -> None:
        self._add_condition(name, CsrCondition("Failed", "True", reason, message))

    def issue(self, name: str, *, valid_for: timedelta) -> IssuedCertificate:
        now = self.clock.now()
        certificate = IssuedCertificate(f"cert-of-{name}".encode(), now, now + valid_for)
        self._write(name, certificate=certificate)
        return certificate

    def replace_object(self, name: str) -> None:
        """Delete and recreate ``name`` (another uid), as another actor could."""
        old = self.stored[name]
        self.stored[name] = dataclasses.replace(
            old, uid=old.uid + "-other", resource_version=str(next(self._rv))
        )

    def _approve(self, name: str, *, reason: str, message: str) -> SigningRequest:
        approved = self._add_condition(name, CsrCondition("Approved", "True", reason, message))
        if self.signer_validity is not None:
            self.issue(name, valid_for=self.signer_validity)
        return approved

    def _add_condition(self, name: str, condition: CsrCondition) -> SigningRequest:
        return self._write(name, conditions=(*self.stored[name].conditions, condition))

    def _write(self, name: str, **changes: object) -> SigningRequest:
        updated = dataclasses.replace(self.stored[name], resource_version=str(next(self._rv)), **changes)  # type: ignore[arg-type]
        self.stored[name] = updated
        return updated


class FakeCertificateSink:
    """``ServingCertificateSink``: remembers what was installed; ``refuse`` makes it fail."""

    def __init__(self) -> None:
        self.installed: list[tuple[bytes, bytes]] = []
        self.refuse = False

    def install(self, *, cert_pem: bytes, key_pem: bytes) -> None:
        if self.refuse:
            raise InvalidInput("the certificate does not match the key")
        self.installed.append((cert_pem, key_pem))
