"""The certificates: the federation's MQTT CA, and issuing what is missing or ageing."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..secret_files import write_secret
from .errors import MosquittoSetupError

__all__ = ["CertificateAuthority", "Issuer", "cert_pem", "key_pem"]

_RENEW_BEFORE: Final = dt.timedelta(days=30)
_BACKDATE: Final = dt.timedelta(minutes=5)
"""Certificates start a little in the past, for clocks that lag."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cn_of(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = attrs[0].value if attrs else ""
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


@dataclass(frozen=True, kw_only=True)
class CertificateAuthority:
    """The federation's MQTT CA: it issues the server's and every client's certificate."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, name: str, *, days: int = 3650) -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name)).issuer_name(_name(name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert=cert, key=key)

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> CertificateAuthority:
        """An existing CA (PEM certificate, unencrypted PEM EC P-256 key)."""
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        except (OSError, ValueError) as exc:
            raise MosquittoSetupError(f"{cert_path}: not a PEM certificate: {exc}") from exc
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except TypeError as exc:
            raise MosquittoSetupError(
                f"{key_path}: the CA key is encrypted; give an unencrypted copy") from exc
        except (OSError, ValueError) as exc:
            raise MosquittoSetupError(f"{key_path}: not a PEM private key: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise MosquittoSetupError(f"{key_path}: the CA key must be an EC key")
        if key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) != cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ):
            raise MosquittoSetupError(f"{key_path} is not the key of {cert_path}")
        try:
            is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            raise MosquittoSetupError(f"{cert_path} is not a CA certificate (basicConstraints)")
        return cls(cert=cert, key=key)

    def issue(self, cn: str, *, server_hosts: Sequence[str] = (), days: int = 365,
              ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """A leaf certificate and its new key: a server one if ``server_hosts``, else a client."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server_hosts else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn)).issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.key.public_key()), critical=False)
        )
        if server_hosts:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_general_name(h) for h in server_hosts]),
                critical=False)
        return builder.sign(self.key, hashes.SHA256()), key

    def issued(self, cert: x509.Certificate) -> bool:
        """True if this CA signed ``cert``."""
        try:
            cert.verify_directly_issued_by(self.cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _sans(cert: x509.Certificate) -> set[str]:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(n.value) for n in names}


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


class Issuer:
    """Issues a certificate unless a usable one is already there; remembers which it issued."""

    def __init__(self, ca: CertificateAuthority, *, days: int, reissue: bool) -> None:
        self.ca, self.days, self.reissue = ca, days, reissue
        self.issued: list[str] = []

    def _usable(self, cert_path: Path, key_path: Path, cn: str, hosts: set[str] | None) -> bool:
        if self.reissue or not cert_path.exists() or not key_path.exists():
            return False
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        except ValueError:
            return False
        return (self.ca.issued(cert) and _cn_of(cert) == cn
                and cert.not_valid_after_utc - _RENEW_BEFORE > _now()
                and (hosts is None or _sans(cert) == hosts))

    def ensure(self, cert_path: Path, key_path: Path, cn: str,
               server_hosts: Sequence[str] = ()) -> None:
        hosts = {str(_general_name(h).value) for h in server_hosts} if server_hosts else None
        if self._usable(cert_path, key_path, cn, hosts):
            return
        cert_path.parent.mkdir(parents=True, exist_ok=True)
        cert, key = self.ca.issue(cn, server_hosts=server_hosts, days=self.days)
        write_secret(key_path, key_pem(key))
        cert_path.write_bytes(cert_pem(cert))
        self.issued.append(cn)
