"""Errors raised while reading the wire contract.

    SchemasError(Exception)
    ├── InvalidPersonId(SchemasError, ValueError)
    ├── DecodeError(SchemasError, ValueError)
    ├── RegistryError(SchemasError, ValueError)
    └── JoseError(SchemasError)
        ├── BadToken(JoseError, ValueError)       malformed compact JWS or header
        │   └── DuplicateMember(BadToken)         a JSON object names a member twice
        ├── UnknownKey(JoseError, LookupError)    kid not registered for the issuer
        └── BadSignature(JoseError)               signature does not verify, or wrong alg
"""

from __future__ import annotations

from typing import Final

import msgspec

__all__ = [
    "HOSTILE_DECODE_ERRORS",
    "BadSignature",
    "BadToken",
    "DecodeError",
    "DuplicateMember",
    "InvalidPersonId",
    "JoseError",
    "RegistryError",
    "SchemasError",
    "UnknownKey",
]


class SchemasError(Exception):
    """Root of every error this package raises."""


class InvalidPersonId(SchemasError, ValueError):
    """Not a personnummer or samordningsnummer."""


class DecodeError(SchemasError, ValueError):
    """A message does not match its schema."""


class RegistryError(SchemasError, ValueError):
    """The federation registry file is invalid; ``line`` names where, when known."""

    def __init__(self, message: str, *, line: int | None = None, path: str = "") -> None:
        self.line = line
        self.path = path
        where = f"{path}:{line}: " if line else (f"{path}: " if path else "")
        super().__init__(f"{where}{message}")


class JoseError(SchemasError):
    """A JWS could not be trusted."""


class BadToken(JoseError, ValueError):
    """Not a well-formed compact JWS."""


class DuplicateMember(BadToken):
    """A JOSE header or claims set names a member twice (never read as "last one wins")."""


class UnknownKey(JoseError, LookupError):
    """The ``kid`` is not registered for the signer."""


class BadSignature(JoseError):
    """The signature does not verify, or the algorithm does not fit the key."""


HOSTILE_DECODE_ERRORS: Final = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)
"""What decoding untrusted JSON can raise: schema or syntax errors, invalid UTF-8 inside a
string, and nesting deeper than the decoder follows. Catch all three at every trust edge."""
