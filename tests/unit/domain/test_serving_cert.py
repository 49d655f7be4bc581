"""The kubelet-serving CSR rules: identity from node addresses, the exact-match check that
self-approval relies on, CSR phases, and the renewal point."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from vkubelet.domain.errors import InvalidInput
from vkubelet.domain.serving_cert import (
    KUBELET_SERVING_SIGNER,
    CertificateRequestContent,
    CsrCondition,
    CsrPhase,
    IssuedCertificate,
    KeyAlgorithm,
    RenewalPolicy,
    SigningRequest,
    allowed_usages,
    csr_phase,
    serving_identity,
    serving_request_problems,
)

ADDRESSES = [
    {"type": "InternalIP", "address": "10.1.2.3"},
    {"type": "Hostname", "address": "vk-0"},
    {"type": "ExternalDNS", "address": "vk-0.example.com."},
]
IDENTITY = serving_identity("vk-0", ADDRESSES)


def _request(**changes: object) -> SigningRequest:
    content = CertificateRequestContent(
        common_name="system:node:vk-0",
        organizations=("system:nodes",),
        dns_names=("vk-0", "vk-0.example.com"),
        ip_addresses=("10.1.2.3",),
        key_algorithm=KeyAlgorithm.ECDSA,
    )
    content_changes = {k: v for k, v in changes.items() if k in {f.name for f in dataclasses.fields(content)}}
    request = SigningRequest(
        name="csr-vk-0-1",
        uid="u1",
        resource_version="1",
        signer_name=KUBELET_SERVING_SIGNER,
        usages=("digital signature", "server auth"),
        content=dataclasses.replace(content, **content_changes),  # type: ignore[arg-type]
    )
    return dataclasses.replace(
        request,
        **{k: v for k, v in changes.items() if k not in content_changes},  # type: ignore[arg-type]
    )


def test_identity_takes_ips_and_dns_names_from_the_node_addresses() -> None:
    assert IDENTITY.common_name == "system:node:vk-0"
    assert IDENTITY.organizations == ("system:nodes",)
    assert IDENTITY.ip_addresses == ("10.1.2.3",)
    assert IDENTITY.dns_names == ("vk-0", "vk-0.example.com")


def test_identity_normalises_and_deduplicates() -> None:
    identity = serving_identity(
        "n",
        [
            {"type": "InternalIP", "address": "fd00:0::1"},
            {"type": "ExternalIP", "address": "fd00::1"},
            {"type": "Hostname", "address": "N"},
            {"type": "InternalDNS", "address": "n"},
        ],
    )
    assert identity.ip_addresses == ("fd00::1",)
    assert identity.dns_names == ("n",)


def test_identity_needs_an_address_and_valid_ips() -> None:
    with pytest.raises(InvalidInput, match="no IP or DNS address"):
        serving_identity("vk-0", [])
    with pytest.raises(InvalidInput, match="not an IP address"):
        serving_identity("vk-0", [{"type": "InternalIP", "address": "vk-0"}])


def test_usages_depend_on_the_key_type() -> None:
    assert allowed_usages(KeyAlgorithm.RSA) == {"digital signature", "key encipherment", "server auth"}
    assert allowed_usages(KeyAlgorithm.ECDSA) == {"digital signature", "server auth"}


def test_the_request_vkubelet_makes_passes_the_check() -> None:
    assert serving_request_problems(_request(), IDENTITY) == ()


def test_an_rsa_request_needs_key_encipherment() -> None:
    rsa = _request(key_algorithm=KeyAlgorithm.RSA)
    assert serving_request_problems(rsa, IDENTITY)
    ok = dataclasses.replace(rsa, usages=("digital signature", "key encipherment", "server auth"))
    assert serving_request_problems(ok, IDENTITY) == ()


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        ({"signer_name": "kubernetes.io/kube-apiserver-client"}, "signer"),
        ({"common_name": "system:node:vk-1"}, "CN"),
        ({"common_name": "system:admin"}, "CN"),
        ({"organizations": ("system:nodes", "system:masters")}, "subject O"),
        ({"organizations": ("system:masters",)}, "subject O"),
        ({"usages": ("digital signature", "server auth", "client auth")}, "usages"),
        ({"usages": ("server auth",)}, "usages"),
        ({"usages": ("digital signature", "server auth", "server auth")}, "usages"),
        ({"dns_names": ("vk-0", "vk-0.example.com", "kubernetes.default")}, "DNS SANs"),
        ({"dns_names": ("vk-0",)}, "DNS SANs"),
        ({"ip_addresses": ("10.1.2.3", "10.0.0.1")}, "IP SANs"),
        ({"ip_addresses": ()}, "IP SANs"),
        ({"other_names": ("email SAN root@example.com",)}, "also asks"),
    ],
)
def test_anything_but_exactly_this_node_is_refused(changes: dict[str, object], complaint: str) -> None:
    problems = serving_request_problems(_request(**changes), IDENTITY)
    assert len(problems) == 1 and complaint in problems[0], problems


def test_phases() -> None:
    approved = CsrCondition("Approved")
    assert csr_phase((), issued=False) is CsrPhase.PENDING
    assert csr_phase((approved,), issued=False) is CsrPhase.APPROVED
    assert csr_phase((approved,), issued=True) is CsrPhase.ISSUED
    assert csr_phase((CsrCondition("Denied"),), issued=False) is CsrPhase.DENIED
    assert csr_phase((approved, CsrCondition("Failed")), issued=False) is CsrPhase.FAILED
    assert csr_phase((CsrCondition("Approved", status="False"),), issued=False) is CsrPhase.PENDING


START = datetime(2025, 1, 1, tzinfo=UTC)
YEAR = IssuedCertificate(b"", START, START + timedelta(days=100))


@pytest.mark.parametrize(("jitter", "day"), [(0.0, 70), (0.5, 80), (0.999999, 90)])
def test_renewal_is_between_70_and_90_percent_of_the_validity(jitter: float, day: int) -> None:
    at = RenewalPolicy().renew_at(YEAR, jitter=jitter)
    assert abs(at - (START + timedelta(days=day))) < timedelta(seconds=10)


def test_renewal_of_a_certificate_with_no_validity_is_at_once() -> None:
    assert RenewalPolicy().renew_at(IssuedCertificate(b"", START, START), jitter=0.3) == START


def test_renewal_policy_validates() -> None:
    with pytest.raises(ValueError):
        RenewalPolicy(earliest=0.9, latest=0.7)
    with pytest.raises(ValueError):
        RenewalPolicy().renew_at(YEAR, jitter=1.0)
