"""X.509 material for the local control plane, the kubelet API's self-signed fallback, and the
keys and PKCS#10 requests of ``--rotate-server-certificates`` (:class:`ServingKeyFactory`)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vkubelet.application.ports.certificates import KeyAndRequest
from vkubelet.domain.errors import InvalidInput
from vkubelet.domain.serving_cert import (
    CertificateRequestContent,
    IssuedCertificate,
    KeyAlgorithm,
    ServingIdentity,
)


@dataclass(frozen=True, slots=True)
class KeyPair:
    cert_pem: bytes
    key_pem: bytes


def _name(common_name: str, organizations: Sequence[str] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _build(
    *,
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    issuer: x509.Name,
    signer: ec.EllipticCurvePrivateKey,
    is_ca: bool,
    days: int,
    usages: Sequence[x509.ObjectIdentifier] = (),
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # tolerate small clock skew
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=not is_ca,
                key_cert_sign=is_ca,
                crl_sign=is_ca,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(signer, hashes.SHA256())


def new_ca(common_name: str, *, days: int = 365) -> KeyPair:
    """A self-signed certificate authority (ECDSA P-256)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    cert = _build(subject=name, public_key=key.public_key(), issuer=name, signer=key, is_ca=True, days=days)
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def issue(
    ca: KeyPair,
    *,
    common_name: str,
    organizations: Sequence[str] = (),
    server: bool = False,
    client: bool = False,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    days: int = 365,
) -> KeyPair:
    """A leaf certificate signed by ``ca`` for server and/or client authentication."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TypeError("the CA key must be an EC key created by new_ca()")
    key = ec.generate_private_key(ec.SECP256R1())
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] * server + [ExtendedKeyUsageOID.CLIENT_AUTH] * client
    cert = _build(
        subject=_name(common_name, organizations),
        public_key=key.public_key(),
        issuer=ca_cert.subject,
        signer=ca_key,
        is_ca=False,
        days=days,
        usages=usages,
        dns_names=dns_names,
        ip_addresses=ip_addresses,
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def self_signed_server(
    *, common_name: str, dns_names: Sequence[str] = (), ip_addresses: Sequence[str] = (), days: int = 365
) -> KeyPair:
    """A self-signed serving certificate (its own issuer), e.g. for the kubelet API fallback."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    cert = _build(
        subject=name,
        public_key=key.public_key(),
        issuer=name,
        signer=key,
        is_ca=False,
        days=days,
        usages=[ExtendedKeyUsageOID.SERVER_AUTH],
        dns_names=dns_names,
        ip_addresses=ip_addresses,
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def rsa_private_key_pem(bits: int = 2048) -> bytes:
    """An RSA private key (the API server's service-account signing key)."""
    return _key_pem(rsa.generate_private_key(public_exponent=65537, key_size=bits))


def fingerprint_sha256(cert_pem: bytes) -> str:
    """The certificate's SHA-256 fingerprint as colon-separated hex, as openssl prints it."""
    digest = x509.load_pem_x509_certificate(cert_pem).fingerprint(hashes.SHA256())
    return ":".join(f"{byte:02X}" for byte in digest)


class ServingKeyFactory:
    """``ServingKeys``: an ECDSA P-256 key per request (fast to make, and what the kubelet uses),
    so the request's usages are digital signature + server auth."""

    def new_request(self, identity: ServingIdentity) -> KeyAndRequest:
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = [x509.DNSName(name) for name in identity.dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in identity.ip_addresses]
        request = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(_name(identity.common_name, identity.organizations))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(key, hashes.SHA256())
        )
        return KeyAndRequest(
            key_pem=_key_pem(key),
            request_pem=request.public_bytes(serialization.Encoding.PEM),
            algorithm=KeyAlgorithm.ECDSA,
        )


def parse_certificate_request(pem: bytes) -> CertificateRequestContent:
    """What a PEM PKCS#10 request asks for. Raises InvalidInput when it does not parse or its
    signature is wrong."""
    try:
        request = x509.load_pem_x509_csr(pem)
    except ValueError as error:
        raise InvalidInput(f"not a PEM certificate request: {error}") from error
    if not request.is_signature_valid:
        raise InvalidInput("the certificate request's signature is not valid")
    common_names: list[str] = []
    organizations: list[str] = []
    others: list[str] = []
    for attribute in request.subject:
        value = str(attribute.value)
        if attribute.oid == NameOID.COMMON_NAME:
            common_names.append(value)
        elif attribute.oid == NameOID.ORGANIZATION_NAME:
            organizations.append(value)
        else:
            others.append(f"subject {attribute.rfc4514_string()}")
    if len(common_names) > 1:
        others.append(f"{len(common_names)} common names")
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    try:
        sans = request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        pass
    else:
        dns_names = tuple(sans.get_values_for_type(x509.DNSName))
        ip_addresses = tuple(str(ip) for ip in sans.get_values_for_type(x509.IPAddress))
        others += [f"email SAN {v}" for v in sans.get_values_for_type(x509.RFC822Name)]
        others += [f"URI SAN {v}" for v in sans.get_values_for_type(x509.UniformResourceIdentifier)]
        known = (x509.DNSName, x509.IPAddress, x509.RFC822Name, x509.UniformResourceIdentifier)
        others += [f"SAN {name}" for name in sans if not isinstance(name, known)]
    key = request.public_key()
    algorithm = (
        KeyAlgorithm.RSA
        if isinstance(key, rsa.RSAPublicKey)
        else KeyAlgorithm.ECDSA
        if isinstance(key, ec.EllipticCurvePublicKey)
        else KeyAlgorithm.OTHER
    )
    return CertificateRequestContent(
        common_name=common_names[0] if common_names else "",
        organizations=tuple(organizations),
        dns_names=dns_names,
        ip_addresses=ip_addresses,
        key_algorithm=algorithm,
        other_names=tuple(others),
    )


def issued_certificate(pem: bytes) -> IssuedCertificate:
    """The validity of the first certificate of a PEM chain. Raises InvalidInput."""
    try:
        first = x509.load_pem_x509_certificates(pem)[0]
    except (ValueError, IndexError) as error:
        raise InvalidInput(f"not a PEM certificate: {error}") from error
    return IssuedCertificate(
        cert_pem=pem, not_before=first.not_valid_before_utc, not_after=first.not_valid_after_utc
    )
