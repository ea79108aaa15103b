"""Compact JWS (RFC 7515) with EdDSA (Ed25519) and ES256, on top of ``cryptography``.

A few lines instead of a JOSE library because the broker verifies one signature per
producer reply (311 of them for a national question) and the cost must be the
cryptographic operation alone. Interoperability with standard libraries (joserfc,
PyJWT) is tested.

Ed25519 signs and verifies with libsodium (PyNaCl): on this machine's OpenSSL (the one in
``cryptography``'s wheel) an Ed25519 verify of a 2 KB reply took 107 µs, libsodium's 61 µs,
and signing 36 against 28 µs (bench/RESULTS.md). Keys are still read, written and
thumbprinted with ``cryptography``; ES256 stays there (verify 64 µs, sign 24 µs).

Algorithm confusion is impossible by construction: a key knows its own algorithm and a
token whose header names another one is refused; ``none`` and HMAC are never accepted.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import msgspec
import nacl.bindings
import nacl.exceptions
import pybase64
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from .errors import HOSTILE_DECODE_ERRORS, BadSignature, BadToken, DuplicateMember, UnknownKey

__all__ = [
    "ALGORITHMS",
    "DEFAULT_ALG",
    "Alg",
    "Compact",
    "Header",
    "PrivateKey",
    "PublicKey",
    "b64url_decode",
    "b64url_encode",
    "check",
    "generate_key",
    "load_private_key",
    "parse",
    "private_key_from_jwk",
    "public_key_from_jwk",
    "read_header",
    "reject_duplicate_members",
    "sign",
    "unknown_key",
    "verify",
]

Alg = Literal["EdDSA", "ES256"]
ALGORITHMS: Final[tuple[str, ...]] = ("EdDSA", "ES256")
DEFAULT_ALG: Final[Alg] = "EdDSA"
"""The algorithm of new keys (``samsvar keys generate``, the demo): the one that costs least
per answer. ``python -m bench.floor algorithms`` measures them on the real payload sizes
(bench/RESULTS.md, "Signature algorithms"): Ed25519 through libsodium signs and verifies a
2 KB reply in about 60 µs together, ES256 in about 80, Ed25519 through OpenSSL in about
110. ES256 stays supported: a registry may hold keys of either algorithm."""
_P256_BYTES: Final = 32
_SHA256: Final = hashes.SHA256()


def b64url_encode(data: bytes) -> str:
    return pybase64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str | bytes) -> bytes:
    """Strict, canonical base64url without padding (RFC 7515 section 2): anything else is
    :class:`BadToken`, so one token has exactly one spelling."""
    raw = text.encode("ascii") if isinstance(text, str) else text
    rem = len(raw) % 4
    # '+', '/' and '=' would survive the translation below: they are not base64url.
    if rem == 1 or b"+" in raw or b"/" in raw or b"=" in raw:
        raise BadToken("not base64url")
    try:
        # pybase64 (SIMD): 0.8 µs for a 2 KB reply, where binascii takes 7.5.
        data = pybase64.b64decode(raw + _PADDING[rem], altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadToken("not base64url") from exc
    if rem and _SPARE_BITS[rem] & _B64_VALUE[raw[-1]]:
        raise BadToken("not canonical base64url (spare bits set)")
    return data


_PADDING: Final = (b"", b"", b"==", b"=")
_SPARE_BITS: Final = (0, 0, 0b1111, 0b11)
"""Bits of the last character that carry no data, by length modulo 4: they must be 0."""
_B64_VALUE: Final = bytes(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".find(bytes([c])) & 0x3F
    for c in range(256)
)
"""A base64url character's 6-bit value (others never reach the lookup)."""


class Header(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    alg: str
    kid: str
    typ: str | None = None


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members = dict(pairs)
    if len(members) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise DuplicateMember(f"member {name!r} appears more than once")
            seen.add(name)
    return members


def reject_duplicate_members(document: bytes) -> dict[str, Any]:
    """The JSON object ``document``, refused with :class:`DuplicateMember` if any object in
    it names a member twice (:class:`BadToken` if it is no JSON object at all): RFC 7515
    section 5.2 and RFC 7519 section 7.2 allow a parser to take the last one, and two
    readers taking different ones would verify one thing and act on another
    (``{"alg": "none", ..., "alg": "EdDSA"}``). The standard
    library's ``object_pairs_hook`` sees every member; msgspec then decodes the same
    bytes into their type."""
    try:
        value = json.loads(document, object_pairs_hook=_unique_members)
    except BadToken:
        raise
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise BadToken(f"not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise BadToken("not a JSON object")
    return value


_header_decoder: Final = msgspec.json.Decoder(Header)


def _thumbprint(members: dict[str, str]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256) over the required members."""
    canonical = msgspec.json.encode(dict(sorted(members.items())))
    return b64url_encode(hashlib.sha256(canonical).digest())


class PublicKey:
    """A verification key with its ``kid`` and the one algorithm it may be used with."""

    __slots__ = ("_key", "_raw", "alg", "kid")

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
        self._raw = key.public_bytes_raw() if isinstance(key, ed25519.Ed25519PublicKey) else b""
        """The Ed25519 public key as libsodium takes it."""
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
        if self._raw:
            if len(signature) != nacl.bindings.crypto_sign_BYTES:
                return False
            try:
                nacl.bindings.crypto_sign_open(signature + signing_input, self._raw)
            except nacl.exceptions.BadSignatureError:
                return False
            return True
        assert isinstance(self._key, ec.EllipticCurvePublicKey)
        if len(signature) != 2 * _P256_BYTES:
            return False
        r = int.from_bytes(signature[:_P256_BYTES], "big")
        s = int.from_bytes(signature[_P256_BYTES:], "big")
        try:
            self._key.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(_SHA256))
        except InvalidSignature:
            return False
        return True


class PrivateKey:
    """A signing key; ``public`` is its verification half with the same ``kid``."""

    __slots__ = ("_key", "_secret", "public")

    def __init__(
        self, key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey, *, kid: str | None = None
    ) -> None:
        self._key = key
        self.public = PublicKey(key.public_key(), kid=kid)
        self._secret = b""
        """The Ed25519 secret key as libsodium takes it (seed and public key)."""
        if isinstance(key, ed25519.Ed25519PrivateKey):
            _, self._secret = nacl.bindings.crypto_sign_seed_keypair(key.private_bytes_raw())

    @property
    def kid(self) -> str:
        return self.public.kid

    @property
    def alg(self) -> Alg:
        return self.public.alg

    def sign(self, data: bytes) -> bytes:
        if self._secret:
            return nacl.bindings.crypto_sign(data, self._secret)[:nacl.bindings.crypto_sign_BYTES]
        assert isinstance(self._key, ec.EllipticCurvePrivateKey)
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


def generate_key(alg: Alg = DEFAULT_ALG) -> PrivateKey:
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


@dataclass(frozen=True, slots=True)
class Compact:
    """A compact JWS split, its payload decoded, nothing verified: read ``payload`` only to
    route the message; :func:`check` reads the header and the signature."""

    head: bytes
    body: bytes
    signature: bytes
    payload: bytes


def _parts(token: str | bytes) -> list[bytes]:
    raw = token.encode("ascii", "replace") if isinstance(token, str) else bytes(token)
    parts = raw.strip().split(b".")
    if len(parts) != 3:
        raise BadToken("not a compact JWS (expected three dot-separated parts)")
    return parts


def parse(token: str | bytes) -> Compact:
    """Split a compact JWS and decode its payload (once: :func:`check` reuses it)."""
    head, body, signature = _parts(token)
    return Compact(head, body, signature, b64url_decode(body))


@functools.lru_cache(maxsize=1024)
def _header(head: bytes) -> Header:
    """Remembered by the header's bytes: a signer sends the same protected header every
    time, and a header is immutable. Only a valid one is remembered (lru_cache keeps no
    exceptions), and a flood of new ones only pushes out old ones."""
    raw = b64url_decode(head)
    try:
        members = reject_duplicate_members(raw)
        header = _header_decoder.decode(raw)
    except BadToken as exc:
        raise BadToken(f"JWS header is invalid: {exc}") from exc
    except HOSTILE_DECODE_ERRORS as exc:
        # RecursionError: JSON nested deeper than the decoder will follow (hostile input).
        raise BadToken(f"JWS header is invalid: {exc}") from exc
    if header.alg not in ALGORITHMS:
        raise BadSignature(f"algorithm {header.alg!r} is not accepted (use EdDSA or ES256)")
    if "crit" in members:
        # Present at all, even empty or null (RFC 7515 4.1.11): no extension is understood.
        raise BadToken("JWS header has crit; this broker understands no extension")
    return header


def read_header(token: str | bytes) -> Header:
    """The protected header, unverified: use it only to find the key."""
    return _header(_parts(token)[0])


def check(jws: Compact, key_for: Callable[[Header], PublicKey], *,
          typ: str | None) -> tuple[Header, bytes]:
    """Verify a parsed JWS; ``key_for`` maps its header to the registered key.

    Returns the header and the payload. Raises :class:`BadToken`, :class:`UnknownKey` (from
    ``key_for``) or :class:`BadSignature`.
    """
    header = _header(jws.head)
    signature = b64url_decode(jws.signature)
    if typ is not None and header.typ != typ:
        raise BadToken(f"JWS typ must be {typ!r}")
    key = key_for(header)
    if key.alg != header.alg:
        raise BadSignature(f"key {key.kid!r} is registered for {key.alg}, not {header.alg}")
    if not key.verify(jws.head + b"." + jws.body, signature):
        raise BadSignature("signature does not verify")
    return header, jws.payload


def verify(
    token: str | bytes,
    key_for: Callable[[Header], PublicKey],
    *,
    typ: str | None,
) -> tuple[Header, bytes]:
    """Verify a compact JWS: :func:`parse`, then :func:`check`. Returns the header and the
    payload bytes."""
    return check(parse(token), key_for, typ=typ)


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
