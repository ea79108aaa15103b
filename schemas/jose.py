"""Compact JWS (RFC 7515) with EdDSA (Ed25519) and ES256, on top of ``cryptography``.

A few lines instead of a JOSE library because the broker verifies one signature per
producer reply (311 of them for a national question) and the cost must be the
cryptographic operation alone. Interoperability with standard libraries (joserfc,
PyJWT) is tested.

Algorithm confusion is impossible by construction: a key knows its own algorithm and a
token whose header names another one is refused; ``none`` and HMAC are never accepted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from .errors import HOSTILE_DECODE_ERRORS, BadSignature, BadToken, UnknownKey

__all__ = [
    "ALGORITHMS",
    "Alg",
    "Header",
    "PrivateKey",
    "PublicKey",
    "b64url_decode",
    "b64url_encode",
    "generate_key",
    "load_private_key",
    "private_key_from_jwk",
    "public_key_from_jwk",
    "read_header",
    "sign",
    "unknown_key",
    "verify",
]

Alg = Literal["EdDSA", "ES256"]
ALGORITHMS: Final[tuple[str, ...]] = ("EdDSA", "ES256")
_B64URL: Final = re.compile(rb"^[A-Za-z0-9_-]*$")
_P256_BYTES: Final = 32
_SHA256: Final = hashes.SHA256()


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str | bytes) -> bytes:
    raw = text.encode("ascii") if isinstance(text, str) else text
    if not _B64URL.match(raw) or len(raw) % 4 == 1:
        raise BadToken("not base64url")
    try:
        data = base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
    except (binascii.Error, ValueError) as exc:  # pragma: no cover - regex guards it
        raise BadToken("not base64url") from exc
    if base64.urlsafe_b64encode(data).rstrip(b"=") != raw:
        raise BadToken("not canonical base64url (spare bits set)")
    return data


class Header(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    alg: str
    kid: str
    typ: str | None = None
    crit: list[str] | None = None


_header_decoder: Final = msgspec.json.Decoder(Header)


def _thumbprint(members: dict[str, str]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256) over the required members."""
    canonical = msgspec.json.encode(dict(sorted(members.items())))
    return b64url_encode(hashlib.sha256(canonical).digest())


class PublicKey:
    """A verification key with its ``kid`` and the one algorithm it may be used with."""

    __slots__ = ("_key", "alg", "kid")

    def __init__(
        self, key: ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey, *, kid: str | None = None
    ) -> None:
        if isinstance(key, ed25519.Ed25519PublicKey):
            self.alg: Alg = "EdDSA"
        elif isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
            self.alg = "ES256"
        else:
            raise ValueError("only Ed25519 and P-256 keys are supported")
        self._key = key
        self.kid = kid or _thumbprint(self._members())

    def _members(self) -> dict[str, str]:
        if isinstance(self._key, ed25519.Ed25519PublicKey):
            raw = self._key.public_bytes_raw()
            return {"crv": "Ed25519", "kty": "OKP", "x": b64url_encode(raw)}
        numbers = self._key.public_numbers()
        return {
            "crv": "P-256",
            "kty": "EC",
            "x": b64url_encode(numbers.x.to_bytes(_P256_BYTES, "big")),
            "y": b64url_encode(numbers.y.to_bytes(_P256_BYTES, "big")),
        }

    def to_jwk(self) -> dict[str, str]:
        return {**self._members(), "kid": self.kid, "alg": self.alg, "use": "sig"}

    def verify(self, signing_input: bytes, signature: bytes) -> bool:
        try:
            if isinstance(self._key, ed25519.Ed25519PublicKey):
                self._key.verify(signature, signing_input)
            else:
                if len(signature) != 2 * _P256_BYTES:
                    return False
                r = int.from_bytes(signature[:_P256_BYTES], "big")
                s = int.from_bytes(signature[_P256_BYTES:], "big")
                self._key.verify(
                    encode_dss_signature(r, s), signing_input, ec.ECDSA(_SHA256)
                )
        except InvalidSignature:
            return False
        return True


class PrivateKey:
    """A signing key; ``public`` is its verification half with the same ``kid``."""

    __slots__ = ("_key", "public")

    def __init__(
        self, key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey, *, kid: str | None = None
    ) -> None:
        self._key = key
        self.public = PublicKey(key.public_key(), kid=kid)

    @property
    def kid(self) -> str:
        return self.public.kid

    @property
    def alg(self) -> Alg:
        return self.public.alg

    def sign(self, data: bytes) -> bytes:
        if isinstance(self._key, ed25519.Ed25519PrivateKey):
            return self._key.sign(data)
        r, s = decode_dss_signature(self._key.sign(data, ec.ECDSA(_SHA256)))
        return r.to_bytes(_P256_BYTES, "big") + s.to_bytes(_P256_BYTES, "big")

    def to_jwk(self) -> dict[str, str]:
        """The private JWK (including ``d``): keep it secret."""
        jwk = self.public.to_jwk()
        if isinstance(self._key, ed25519.Ed25519PrivateKey):
            jwk["d"] = b64url_encode(self._key.private_bytes_raw())
        else:
            d = self._key.private_numbers().private_value
            jwk["d"] = b64url_encode(d.to_bytes(_P256_BYTES, "big"))
        return jwk


def generate_key(alg: Alg = "EdDSA") -> PrivateKey:
    """A fresh key pair; its ``kid`` is the RFC 7638 thumbprint."""
    if alg == "EdDSA":
        return PrivateKey(ed25519.Ed25519PrivateKey.generate())
    if alg == "ES256":
        return PrivateKey(ec.generate_private_key(ec.SECP256R1()))
    raise ValueError(f"unsupported algorithm {alg!r}; use EdDSA or ES256")


def _member(jwk: Mapping[str, Any], name: str) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise ValueError(f"JWK member {name!r} is missing")
    try:
        return b64url_decode(value)
    except BadToken as exc:
        raise ValueError(f"JWK member {name!r} is not base64url") from exc


def _check_alg(jwk: Mapping[str, Any], expected: str) -> None:
    alg = jwk.get("alg")
    if alg is not None and alg != expected:
        raise ValueError(f"JWK alg {alg!r} does not fit its key type (expected {expected})")


def public_key_from_jwk(jwk: Mapping[str, Any]) -> PublicKey:
    """Read a public JWK (OKP/Ed25519 or EC/P-256). Raises ``ValueError`` with the reason."""
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise ValueError("JWK kid must be a string")
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if kty == "OKP" and crv == "Ed25519":
        _check_alg(jwk, "EdDSA")
        x = _member(jwk, "x")
        if len(x) != 32:
            raise ValueError("Ed25519 JWK x must be 32 bytes")
        return PublicKey(ed25519.Ed25519PublicKey.from_public_bytes(x), kid=kid)
    if kty == "EC" and crv == "P-256":
        _check_alg(jwk, "ES256")
        x, y = _member(jwk, "x"), _member(jwk, "y")
        if len(x) != _P256_BYTES or len(y) != _P256_BYTES:
            raise ValueError("P-256 JWK x and y must be 32 bytes")
        try:
            key = ec.EllipticCurvePublicNumbers(
                int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
            ).public_key()
        except ValueError as exc:
            raise ValueError("P-256 JWK point is not on the curve") from exc
        return PublicKey(key, kid=kid)
    raise ValueError(f"unsupported JWK (kty={kty!r}, crv={crv!r}); use OKP/Ed25519 or EC/P-256")


def private_key_from_jwk(jwk: Mapping[str, Any]) -> PrivateKey:
    """Read a private JWK (with ``d``)."""
    public = public_key_from_jwk(jwk)
    d = _member(jwk, "d")
    key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
    if public.alg == "EdDSA":
        key = ed25519.Ed25519PrivateKey.from_private_bytes(d)
    else:
        key = ec.derive_private_key(int.from_bytes(d, "big"), ec.SECP256R1())
    private = PrivateKey(key, kid=public.kid)
    if private.public.to_jwk() != public.to_jwk():
        raise ValueError("JWK d does not belong to its public key")
    return private


def sign(payload: bytes, key: PrivateKey, *, typ: str) -> str:
    """A compact JWS over ``payload`` (already-encoded JSON)."""
    header = msgspec.json.encode(Header(alg=key.alg, kid=key.kid, typ=typ))
    signing_input = f"{b64url_encode(header)}.{b64url_encode(payload)}".encode("ascii")
    return f"{signing_input.decode('ascii')}.{b64url_encode(key.sign(signing_input))}"


def _split(token: str | bytes) -> tuple[bytes, bytes, bytes]:
    raw = token.encode("ascii", "replace") if isinstance(token, str) else bytes(token)
    parts = raw.strip().split(b".")
    if len(parts) != 3:
        raise BadToken("not a compact JWS (expected three dot-separated parts)")
    return parts[0], parts[1], parts[2]


def read_header(token: str | bytes) -> Header:
    """The protected header, unverified: use it only to find the key."""
    head, _, _ = _split(token)
    try:
        header = _header_decoder.decode(b64url_decode(head))
    except HOSTILE_DECODE_ERRORS as exc:
        # RecursionError: JSON nested deeper than the decoder will follow (hostile input).
        raise BadToken(f"JWS header is invalid: {exc}") from exc
    if header.alg not in ALGORITHMS:
        raise BadSignature(f"algorithm {header.alg!r} is not accepted (use EdDSA or ES256)")
    if header.crit:
        raise BadToken("JWS header has critical extensions this broker does not understand")
    return header


def verify(
    token: str | bytes,
    key_for: Callable[[Header], PublicKey],
    *,
    typ: str | None,
) -> tuple[Header, bytes]:
    """Verify a compact JWS; ``key_for`` maps its header to the registered key.

    Returns the header and the payload bytes. Raises :class:`BadToken`,
    :class:`UnknownKey` (from ``key_for``) or :class:`BadSignature`.
    """
    head, body, sig = _split(token)
    header = read_header(token)
    payload, signature = b64url_decode(body), b64url_decode(sig)
    if typ is not None and header.typ != typ:
        raise BadToken(f"JWS typ must be {typ!r}")
    key = key_for(header)
    if key.alg != header.alg:
        raise BadSignature(f"key {key.kid!r} is registered for {key.alg}, not {header.alg}")
    if not key.verify(head + b"." + body, signature):
        raise BadSignature("signature does not verify")
    return header, payload


def unknown_key(kid: str, who: str) -> UnknownKey:
    """The error a ``key_for`` callback raises for an unregistered ``kid``."""
    return UnknownKey(f"kid {kid!r} is not registered for {who}")


def load_private_key(path: str | os.PathLike[str]) -> PrivateKey:
    """Read a private JWK file (JSON with ``kid`` and ``d``); ``ValueError`` names the file."""
    try:
        with open(path, "rb") as f:
            jwk = msgspec.json.decode(f.read())
    except OSError as exc:
        raise ValueError(f"{path}: cannot read key file: {exc.strerror}") from exc
    except msgspec.DecodeError as exc:
        raise ValueError(f"{path}: key file is not JSON: {exc}") from exc
    if not isinstance(jwk, dict):
        raise ValueError(f"{path}: key file must hold one JWK object")
    if "d" not in jwk:
        raise ValueError(f"{path}: key file holds a public JWK; a private key (with 'd') is needed")
    try:
        return private_key_from_jwk(jwk)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
