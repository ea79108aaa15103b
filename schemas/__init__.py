"""samsvar's wire contract: the messages, records, keys and registry every role shares.

Imported by every role (broker, producer_adapter, consumer_client). Nothing here does
I/O beyond reading a registry or key file: how a role reaches the MQTT server (sockets,
TLS, server lists, reconnecting, the MQTT client library) is the :mod:`transport`
package, which imports this one and is never imported by it.
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
