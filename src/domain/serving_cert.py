"""The kubelet API's serving certificate through the CertificateSigningRequest API: what a valid
``kubernetes.io/kubelet-serving`` request for this node is, what state a CSR is in, and when to
renew an issued certificate.

A kubelet-serving CSR, as kube-controller-manager's signer accepts it and as vkubelet's
opt-in self-approval checks it before approving its own request:

* signer ``kubernetes.io/kubelet-serving``;
* subject exactly ``CN=system:node:<node>``, ``O=system:nodes`` (one organization);
* usages exactly digital signature + key encipherment + server auth for an RSA key, or digital
  signature + server auth for any other key (ECDSA has no key encipherment);
* SANs exactly the node's addresses: IP SANs from its InternalIP/ExternalIP addresses, DNS SANs
  from Hostname/InternalDNS/ExternalDNS ones (what the API server may dial, see
  ``--kubelet-preferred-address-types``); no e-mail or URI SANs.

Renewal follows the kubelet's certificate manager: at a random point between 70 % and 90 % of
the certificate's validity, so a fleet of nodes issued at once does not renew at once.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from vkubelet.domain.errors import InvalidInput

KUBELET_SERVING_SIGNER = "kubernetes.io/kubelet-serving"
NODES_GROUP = "system:nodes"
NODE_USER_PREFIX = "system:node:"

USAGE_DIGITAL_SIGNATURE = "digital signature"
USAGE_KEY_ENCIPHERMENT = "key encipherment"
USAGE_SERVER_AUTH = "server auth"

# Node address types whose address is a certificate SAN, and of which kind.
_IP_ADDRESS_TYPES = frozenset({"InternalIP", "ExternalIP"})
_DNS_ADDRESS_TYPES = frozenset({"Hostname", "InternalDNS", "ExternalDNS"})


class KeyAlgorithm(StrEnum):
    RSA = "RSA"
    ECDSA = "ECDSA"
    OTHER = "other"  # Ed25519 and the like: no key encipherment either


def allowed_usages(algorithm: KeyAlgorithm) -> frozenset[str]:
    """The one usage set a kubelet-serving CSR with a key of ``algorithm`` may ask for."""
    if algorithm is KeyAlgorithm.RSA:
        return frozenset({USAGE_DIGITAL_SIGNATURE, USAGE_KEY_ENCIPHERMENT, USAGE_SERVER_AUTH})
    return frozenset({USAGE_DIGITAL_SIGNATURE, USAGE_SERVER_AUTH})


@dataclass(frozen=True, slots=True)
class ServingIdentity:
    """Who the serving certificate is for: the node's name and the addresses it is reached at."""

    node_name: str
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]  # normalised (``str(ipaddress.ip_address(...))``)

    @property
    def common_name(self) -> str:
        return NODE_USER_PREFIX + self.node_name

    @property
    def organizations(self) -> tuple[str, ...]:
        return (NODES_GROUP,)

    def describe_sans(self) -> str:
        return ", ".join([*(f"DNS:{n}" for n in self.dns_names), *(f"IP:{ip}" for ip in self.ip_addresses)])


def serving_identity(node_name: str, addresses: Iterable[Mapping[str, Any]]) -> ServingIdentity:
    """The identity from the Node's ``status.addresses`` (``[{"type", "address"}]``).

    Duplicates are dropped, order kept. Raises InvalidInput when the node reports no address a
    certificate can name (the signer refuses a CSR without SANs) or an IP address is not one.
    """
    if not node_name:
        raise InvalidInput("a serving certificate needs the node's name")
    dns_names: list[str] = []
    ip_addresses: list[str] = []
    for entry in addresses:
        kind, value = str(entry.get("type") or ""), str(entry.get("address") or "").strip()
        if not value:
            continue
        if kind in _IP_ADDRESS_TYPES:
            try:
                normalised = str(ipaddress.ip_address(value))
            except ValueError:
                raise InvalidInput(f"node {node_name}: {kind} {value!r} is not an IP address") from None
            if normalised not in ip_addresses:
                ip_addresses.append(normalised)
        elif kind in _DNS_ADDRESS_TYPES:
            name = value.lower().rstrip(".")
            if name not in dns_names:
                dns_names.append(name)
    if not dns_names and not ip_addresses:
        raise InvalidInput(
            f"node {node_name} reports no IP or DNS address yet; a serving certificate needs at least one"
        )
    return ServingIdentity(node_name=node_name, dns_names=tuple(dns_names), ip_addresses=tuple(ip_addresses))


@dataclass(frozen=True, slots=True)
class CertificateRequestContent:
    """What a PKCS#10 request asks for, as parsed from the CSR's ``spec.request``."""

    common_name: str
    organizations: tuple[str, ...]
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]  # normalised
    key_algorithm: KeyAlgorithm
    other_names: tuple[str, ...] = ()  # e-mail and URI SANs, other subject attributes


class CsrPhase(StrEnum):
    PENDING = "Pending"  # neither approved nor denied yet
    APPROVED = "Approved"  # approved, the signer has not issued yet
    ISSUED = "Issued"
    DENIED = "Denied"
    FAILED = "Failed"


@dataclass(frozen=True, slots=True)
class CsrCondition:
    type: str
    status: str = "True"
    reason: str = ""
    message: str = ""


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """The signed certificate (PEM, the chain as issued) and its validity window."""

    cert_pem: bytes
    not_before: datetime
    not_after: datetime


@dataclass(frozen=True, slots=True)
class SigningRequest:
    """A certificates.k8s.io/v1 CertificateSigningRequest as the application sees it."""

    name: str
    uid: str
    resource_version: str
    signer_name: str
    usages: tuple[str, ...]
    content: CertificateRequestContent
    conditions: tuple[CsrCondition, ...] = ()
    certificate: IssuedCertificate | None = None

    @property
    def phase(self) -> CsrPhase:
        return csr_phase(self.conditions, issued=self.certificate is not None)

    def condition(self, type_: str) -> CsrCondition | None:
        for condition in self.conditions:
            if condition.type == type_ and condition.status == "True":
                return condition
        return None


def csr_phase(conditions: Sequence[CsrCondition], *, issued: bool) -> CsrPhase:
    """Denied and Failed are final whatever else is set; a certificate means issued; Approved
    without a certificate waits for the signer; nothing of these is pending."""
    present = {c.type for c in conditions if c.status == "True"}
    if "Denied" in present:
        return CsrPhase.DENIED
    if "Failed" in present:
        return CsrPhase.FAILED
    if issued:
        return CsrPhase.ISSUED
    if "Approved" in present:
        return CsrPhase.APPROVED
    return CsrPhase.PENDING


def serving_request_problems(request: SigningRequest, identity: ServingIdentity) -> tuple[str, ...]:
    """Why ``request`` is not exactly a kubelet-serving CSR for ``identity``; empty when it is.

    Everything is compared exactly (sets for usages and SANs): an extra SAN, a missing one, a
    second organization or an extra usage are all refusals.
    """
    problems: list[str] = []
    content = request.content
    if request.signer_name != KUBELET_SERVING_SIGNER:
        problems.append(f"signer is {request.signer_name!r}, not {KUBELET_SERVING_SIGNER!r}")
    if content.common_name != identity.common_name:
        problems.append(f"subject CN is {content.common_name!r}, not {identity.common_name!r}")
    if content.organizations != identity.organizations:
        problems.append(f"subject O is {list(content.organizations)}, not {list(identity.organizations)}")
    usages, wanted = set(request.usages), allowed_usages(content.key_algorithm)
    if usages != wanted or len(request.usages) != len(usages):
        problems.append(
            f"usages are {sorted(request.usages)}, not {sorted(wanted)} (a {content.key_algorithm} key)"
        )
    if set(content.dns_names) != set(identity.dns_names):
        problems.append(f"DNS SANs are {sorted(content.dns_names)}, not {sorted(identity.dns_names)}")
    if set(content.ip_addresses) != set(identity.ip_addresses):
        problems.append(f"IP SANs are {sorted(content.ip_addresses)}, not {sorted(identity.ip_addresses)}")
    if content.other_names:
        problems.append(f"it also asks for {', '.join(content.other_names)}")
    return tuple(problems)


@dataclass(frozen=True, slots=True)
class RenewalPolicy:
    """Renew at ``earliest + jitter * (latest - earliest)`` of the validity (fractions of it)."""

    earliest: float = 0.7
    latest: float = 0.9

    def __post_init__(self) -> None:
        if not 0 < self.earliest <= self.latest < 1:
            raise ValueError(
                f"RenewalPolicy needs 0 < earliest <= latest < 1, got {self.earliest!r}, {self.latest!r}"
            )

    def renew_at(self, certificate: IssuedCertificate, *, jitter: float) -> datetime:
        """When to start renewing ``certificate``; ``jitter`` in [0, 1) picks the point."""
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {jitter!r}")
        validity = certificate.not_after - certificate.not_before
        if validity <= timedelta(0):
            return certificate.not_before  # nothing valid to wait for: renew at once
        fraction = self.earliest + jitter * (self.latest - self.earliest)
        return certificate.not_before + validity * fraction
