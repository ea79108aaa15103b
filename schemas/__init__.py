"""samsvar's wire contract: the messages, records, keys and registry every role shares.

Only this package is imported by more than one role (broker, producer_adapter,
consumer_client). Nothing here does I/O beyond reading a registry or key file, except
:mod:`schemas.gmqtt_link`: how the broker and the adapters drive their MQTT connections
(gmqtt), kept here so both roles share one copy; only those roles import it.
"""

from .errors import (
    BadSignature,
    BadToken,
    DecodeError,
    DuplicateMember,
    InvalidPersonId,
    JoseError,
    RegistryError,
    SchemasError,
    UnknownKey,
)

__all__ = [
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
