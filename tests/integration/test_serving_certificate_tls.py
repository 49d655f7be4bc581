"""The serving-certificate adapters against real cryptography and a real TLS listener: the
PKCS#10 request ServingKeyFactory makes passes the self-approval check, the CSR manifest decodes,
and ListenerCertificate swaps the certificate of a listening server for new connections only.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ipaddress
import ssl
from collections.abc import AsyncIterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vkubelet.adapters.certs import (
    KeyPair,
    ServingKeyFactory,
    fingerprint_sha256,
    issue,
    new_ca,
    parse_certificate_request,
)
from vkubelet.adapters.kubeletapi.tls import ListenerCertificate, server_tls
from vkubelet.adapters.kubernetes.certificates import signing_request_from_manifest
from vkubelet.domain.errors import InvalidInput
from vkubelet.domain.serving_cert import (
    KUBELET_SERVING_SIGNER,
    CsrPhase,
    KeyAlgorithm,
    allowed_usages,
    serving_identity,
    serving_request_problems,
)

NODE = "vk-0"
IDENTITY = serving_identity(
    NODE, [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": NODE}]
)


def sign(ca: KeyPair, request_pem: bytes, *, days: int = 1) -> bytes:
    """What the kubelet-serving signer does with an approved request: a leaf for its key,
    subject and SANs, server auth, signed by ``ca``."""
    request = x509.load_pem_x509_csr(request_pem)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    sans = request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(request.subject)
        .issuer_name(ca_cert.subject)
        .public_key(request.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(sans, critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def csr_manifest(request_pem: bytes, certificate_pem: bytes | None = None) -> dict[str, object]:
    status: dict[str, object] = {
        "conditions": [{"type": "Approved", "status": "True", "reason": "R", "message": "ok"}]
    }
    if certificate_pem is not None:
        status["certificate"] = base64.b64encode(certificate_pem).decode()
    return {
        "metadata": {"name": "csr-vk-0-abcde", "uid": "u-1", "resourceVersion": "7"},
        "spec": {
            "request": base64.b64encode(request_pem).decode(),
            "signerName": KUBELET_SERVING_SIGNER,
            "usages": sorted(allowed_usages(KeyAlgorithm.ECDSA)),
        },
        "status": status,
    }


def test_the_factory_request_is_exactly_this_nodes_and_decodes_from_a_manifest() -> None:
    pair = ServingKeyFactory().new_request(IDENTITY)
    assert pair.algorithm is KeyAlgorithm.ECDSA
    content = parse_certificate_request(pair.request_pem)
    assert content.common_name == "system:node:vk-0" and content.organizations == ("system:nodes",)
    assert (content.dns_names, content.ip_addresses) == (("vk-0",), ("127.0.0.1",))

    ca = new_ca("kubelet-serving-test-ca")
    request = signing_request_from_manifest(csr_manifest(pair.request_pem, sign(ca, pair.request_pem)))
    assert serving_request_problems(request, IDENTITY) == ()
    assert request.phase is CsrPhase.ISSUED and request.certificate is not None
    assert request.certificate.not_after - request.certificate.not_before > dt.timedelta(hours=23)
    # Approved but not issued yet: no certificate.
    assert signing_request_from_manifest(csr_manifest(pair.request_pem)).phase is CsrPhase.APPROVED


def test_an_extra_san_or_subject_attribute_fails_the_check() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "extra"),
            x509.NameAttribute(NameOID.COMMON_NAME, "system:node:vk-0"),
        ]
    )
    sans = x509.SubjectAlternativeName(
        [
            x509.DNSName("vk-0"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.RFC822Name("root@example.com"),
        ]
    )
    pem = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject)
        .add_extension(sans, critical=False)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    problems = serving_request_problems(signing_request_from_manifest(csr_manifest(pem)), IDENTITY)
    assert len(problems) == 1
    assert "email SAN root@example.com" in problems[0] and "OU=extra" in problems[0]


def test_garbage_in_a_manifest_is_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        signing_request_from_manifest(csr_manifest(b"not a request"))


async def _serve(context: ssl.SSLContext) -> tuple[asyncio.Server, int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(100):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=context)
    return server, server.sockets[0].getsockname()[1]


@pytest.fixture
async def listener() -> AsyncIterator[tuple[ListenerCertificate, int, bytes]]:
    tls = server_tls(node_name=NODE, node_ip="127.0.0.1")
    server, port = await _serve(tls.context)
    try:
        yield ListenerCertificate(tls.context), port, tls.cert_pem
    finally:
        server.close()
        await server.wait_closed()


async def _connect(port: int, trust: bytes | None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
    """A TLS connection and the fingerprint of the certificate the server presented. With
    ``trust`` the certificate must verify against it for the address 127.0.0.1."""
    client = ssl.create_default_context(cadata=trust.decode()) if trust else ssl.create_default_context()
    if trust is None:
        client.check_hostname = False
        client.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname="127.0.0.1")
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    pem = ssl.DER_cert_to_PEM_cert(der).encode()
    return reader, writer, fingerprint_sha256(pem)


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes) -> bytes:
    writer.write(data)
    await writer.drain()
    return await reader.readexactly(len(data))


async def test_install_swaps_the_certificate_for_new_connections_only(
    listener: tuple[ListenerCertificate, int, bytes],
) -> None:
    sink, port, self_signed = listener
    ca = new_ca("kubelet-serving-test-ca")
    old_reader, old_writer, before = await _connect(port, None)
    assert before == fingerprint_sha256(self_signed)
    with pytest.raises(ssl.SSLCertVerificationError):
        await _connect(port, ca.cert_pem)  # the self-signed one does not verify against the CA

    pair = ServingKeyFactory().new_request(IDENTITY)
    issued = sign(ca, pair.request_pem)
    sink.install(cert_pem=issued, key_pem=pair.key_pem)

    reader, writer, after = await _connect(port, ca.cert_pem)  # verified: CA and IP SAN
    assert after == fingerprint_sha256(issued)
    assert await _echo(reader, writer, b"new") == b"new"
    # The connection made before the swap is untouched.
    assert await _echo(old_reader, old_writer, b"old") == b"old"
    for w in (writer, old_writer):
        w.close()

    # A renewal: another key and certificate, and the next connection gets that one.
    renewed_pair = ServingKeyFactory().new_request(IDENTITY)
    renewed = sign(ca, renewed_pair.request_pem)
    sink.install(cert_pem=renewed, key_pem=renewed_pair.key_pem)
    _, writer, third = await _connect(port, ca.cert_pem)
    assert third == fingerprint_sha256(renewed) != after
    writer.close()


async def test_a_mismatched_pair_is_refused_and_the_old_one_kept(
    listener: tuple[ListenerCertificate, int, bytes],
) -> None:
    sink, port, self_signed = listener
    ca = new_ca("kubelet-serving-test-ca")
    other = issue(ca, common_name="system:node:vk-0", server=True, ip_addresses=["127.0.0.1"])
    pair = ServingKeyFactory().new_request(IDENTITY)
    with pytest.raises(InvalidInput):
        sink.install(cert_pem=other.cert_pem, key_pem=pair.key_pem)  # another key's certificate
    with pytest.raises(InvalidInput):
        sink.install(cert_pem=b"garbage", key_pem=pair.key_pem)
    _, writer, served = await _connect(port, None)
    assert served == fingerprint_sha256(self_signed)
    writer.close()
