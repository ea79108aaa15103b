"""How a role reaches the federation's MQTT server: one settings shape for every role.

Read from the ``[mqtt]`` table of a broker's or adapter's config::

    [mqtt]
    url = "mqtts://mqtt.example.se:8883"   # mqtt:// (plain) or mqtts:// (TLS); user:password@
                                           # in the URL is kept (and never logged)
    urls = ["mqtts://a:8883", "mqtts://b:8883"]  # or: several servers of one cluster; a
                                           # role moves to the next when its server is lost
    prefix = "samsvar/v1"
    protocol = "5"                         # "5" or "3.1.1" (the embedded amqtt server)
    shared_subscriptions = true            # false on servers without $share (amqtt)
    ca = "ca.pem"                          # TLS: the server's CA, and our client certificate
    cert = "client.pem"
    key = "client.key"
    max_message_bytes = 4194304            # larger incoming messages are dropped and counted
    timeout_s = 10.0                       # for a CONNACK or SUBACK, then the next server
    heartbeat_s = 5.0                      # adapters refresh their presence this often
"""

from __future__ import annotations

import dataclasses
import random
import secrets
import socket
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import quote, unquote, urlsplit

from schemas.topics import DEFAULT_PREFIX

__all__ = [
    "BACKOFF_MAX",
    "BACKOFF_MIN",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "HEADROOM",
    "NODELAY",
    "MqttServer",
    "MqttSettings",
    "Reconnect",
    "session_client_id",
    "suback_reason",
]

NODELAY: Final = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)
"""Socket options for every MQTT client: paho leaves Nagle's algorithm on, which holds each
small publish ~40 ms waiting for an ACK (measured: one question and reply took 88 ms with
it, 0.6 ms without; bench/RESULTS.md)."""


BACKOFF_MIN: Final = 0.1
BACKOFF_MAX: Final = 5.0

HEADROOM: Final = 65_536 + 1_024
"""Bytes an MQTT packet may carry beyond its payload limit: the longest topic, and
properties (a packet above limit + HEADROOM is read past unbuffered, by gmqtt)."""

DEFAULT_MAX_MESSAGE_BYTES: Final = 4 * 1024 * 1024
"""4 MiB: an MQTT message above this is dropped by every role (SPEC section 4), and the
Mosquitto configuration ``samsvar registry mosquitto`` writes refuses it too."""


@dataclass(frozen=True, kw_only=True)
class MqttServer:
    """One MQTT server of a list (a cluster's nodes): where, and with which credentials."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """The server's URL without credentials: the only form that is ever logged."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    def config_url(self) -> str:
        """The URL with its credentials, for a config file (never for a log)."""
        if self.username is None:
            return self.url
        auth = quote(self.username, safe="")
        if self.password is not None:
            auth += ":" + quote(self.password, safe="")
        return f"{'mqtts' if self.tls else 'mqtt'}://{auth}@{self.host}:{self.port}"

    @classmethod
    def parse(cls, url: str) -> MqttServer:
        parts = urlsplit(url.strip())
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("MQTT url must be mqtt://host:port or mqtts://host:port, "
                             f"not {_redacted(url)!r}")
        tls = parts.scheme == "mqtts"
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError as exc:
            raise ValueError(f"MQTT url has an invalid port: {_redacted(url)!r}") from exc
        return cls(host=parts.hostname, port=port, tls=tls,
                   username=None if parts.username is None else unquote(parts.username),
                   password=None if parts.password is None else unquote(parts.password))


def _redacted(url: str) -> str:
    """``url`` without what could be a password, for an error message."""
    scheme, sep, rest = url.strip().partition("://")
    if "@" in rest:
        rest = "***@" + rest.rpartition("@")[2]
    return scheme + sep + rest


@dataclass(frozen=True, kw_only=True)
class MqttSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    tls: bool = False
    prefix: str = DEFAULT_PREFIX
    protocol: Literal["5", "3.1.1"] = "5"
    shared_subscriptions: bool = True
    qos: int = 1
    keepalive: int = 10
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    more: tuple[MqttServer, ...] = ()
    """Further servers (a cluster's other nodes), tried in turn after the first
    (``host``/``port``/``tls``/``username``/``password``) when a connection is lost."""
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    """Incoming messages above this many bytes (the whole MQTT packet) are dropped and counted."""
    timeout_s: float = 10.0
    """Seconds to wait for a CONNACK (and each SUBACK) before trying the next server. On a
    NATS cluster recovering from a lost node a CONNECT can hang for seconds: 2 moves on
    sooner (docs/operations.md)."""
    heartbeat_s: float = 5.0
    """An adapter refreshes its presence this often; the broker counts a producer whose
    latest refresh is older than three of the intervals it announced as unavailable."""
    @property
    def servers(self) -> tuple[MqttServer, ...]:
        """Every server, in the order they are tried."""
        return (MqttServer(host=self.host, port=self.port, tls=self.tls,
                           username=self.username, password=self.password), *self.more)

    @property
    def url(self) -> str:
        """The first server's URL, without credentials."""
        return self.servers[0].url

    @property
    def urls(self) -> str:
        """Every server's URL, comma-separated, without credentials (for logs)."""
        return ",".join(server.url for server in self.servers)

    def config_urls(self) -> list[str]:
        """Every server's URL with its credentials, for writing a config file."""
        return [server.config_url() for server in self.servers]

    @classmethod
    def from_url(cls, url: str | Sequence[str], **overrides: Any) -> MqttSettings:
        """From one URL, a comma-separated list (``--mqtt a,b,c``) or a list of URLs."""
        urls = [u for u in (url.split(",") if isinstance(url, str) else url) if u.strip()]
        if not urls:
            raise ValueError("no MQTT url given")
        first, *more = (MqttServer.parse(u) for u in urls)
        return cls(host=first.host, port=first.port, tls=first.tls, username=first.username,
                   password=first.password, more=tuple(more), **overrides)

    def with_urls(self, url: str | Sequence[str]) -> MqttSettings:
        """These settings on other servers (``--mqtt a,b,c`` over a config's)."""
        other = MqttSettings.from_url(url)
        return dataclasses.replace(self, host=other.host, port=other.port, tls=other.tls,
                                   username=other.username, password=other.password,
                                   more=other.more)

    @classmethod
    def from_table(cls, table: Mapping[str, Any], *, base: Path) -> MqttSettings:
        """From a config's ``[mqtt]`` table; file paths are relative to ``base``."""
        known = {"url", "urls", "prefix", "protocol", "shared_subscriptions", "qos",
                 "keepalive", "ca", "cert", "key", "client", "max_message_bytes", "heartbeat_s",
                 "timeout_s"}
        unknown = set(table) - known
        if unknown:
            raise ValueError(f"[mqtt] has unknown keys: {', '.join(sorted(unknown))}")
        protocol = str(table.get("protocol", "5"))
        if protocol not in ("5", "3.1.1"):
            raise ValueError("[mqtt] protocol must be \"5\" or \"3.1.1\"")
        if table.get("client", "gmqtt") != "gmqtt":
            # The roles drive gmqtt only (bench/RESULTS.md); "gmqtt", the old default, is
            # still accepted so that existing configs load.
            raise ValueError(f"[mqtt] client {table['client']!r} is no longer supported: "
                             "samsvar drives gmqtt only; remove the client setting")
        files = {k: str(base / table[k]) for k in ("ca", "cert", "key") if table.get(k)}
        if "url" in table and "urls" in table:
            raise ValueError("[mqtt] has both url and urls: give one")
        urls = table.get("urls", table.get("url", "mqtt://127.0.0.1:1883"))
        if not (isinstance(urls, str) or (isinstance(urls, list)
                                          and all(isinstance(u, str) for u in urls))):
            raise ValueError("[mqtt] urls must be a list of mqtt:// or mqtts:// URLs")
        limit = int(table.get("max_message_bytes", DEFAULT_MAX_MESSAGE_BYTES))
        if limit < 1024:
            raise ValueError("[mqtt] max_message_bytes must be at least 1024")
        heartbeat = float(table.get("heartbeat_s", 5.0))
        if not 0.05 <= heartbeat <= 3600:
            raise ValueError("[mqtt] heartbeat_s must be between 0.05 and 3600 seconds")
        timeout = float(table.get("timeout_s", 10.0))
        if not 0.1 <= timeout <= 120:
            raise ValueError("[mqtt] timeout_s must be between 0.1 and 120 seconds")
        return cls.from_url(
            urls,
            max_message_bytes=limit, heartbeat_s=heartbeat, timeout_s=timeout,
            prefix=str(table.get("prefix", DEFAULT_PREFIX)).rstrip("/"),
            protocol=protocol,
            shared_subscriptions=bool(table.get("shared_subscriptions", True)),
            qos=int(table.get("qos", 1)),
            keepalive=int(table.get("keepalive", 10)),
            **files,
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context (server verified by ``ca``, client certificate if given)."""
        if not any(server.tls for server in self.servers):
            return None
        ctx = ssl.create_default_context(cafile=self.ca)
        if self.cert:
            ctx.load_cert_chain(self.cert, self.key)
        return ctx


def session_client_id(base: str) -> str:
    """A client id for one connection: ``base`` and a random suffix. A clustered server
    (NATS) that meets a known client id first removes the old session's state, which
    waits for the cluster to recover after a node loss (measured: 4 s stalls on each
    attempt); a fresh id connects at once. Mosquitto needs no takeover either: the old
    connection is gone, or ends at its keepalive."""
    return f"{base}-{secrets.token_hex(3)}"


class Reconnect:
    """Which server a role connects to next, and how long it waits first.

    A lost (or refused) connection moves on to the next server of the list at once, and
    after a whole round of them to a growing, jittered pause; the pause starts small again
    only once a session is subscribed, so a server that accepts the connection but refuses
    the subscription is not hammered (it was: ~25 attempts a second)."""

    def __init__(self, servers: Sequence[MqttServer]) -> None:
        self.servers = tuple(servers)
        self._index = 0
        self._delay = BACKOFF_MIN
        self._tried = 0
        """Servers tried since the last pause."""

    @property
    def server(self) -> MqttServer:
        """The server to connect to now."""
        return self.servers[self._index]

    def subscribed(self) -> None:
        """A session is up and subscribed: the next outage starts with a short pause."""
        self._delay = BACKOFF_MIN
        self._tried = 0

    def lost(self) -> float:
        """The connection to :attr:`server` is lost: move on; seconds to wait first. The
        next server of a list is tried at once; the pause comes (and grows) once every
        server of the list has been tried."""
        self._index = (self._index + 1) % len(self.servers)
        self._tried += 1
        if self._tried < len(self.servers):
            return 0.0
        self._tried = 0
        wait = self._delay * random.uniform(0.5, 1.0)  # jitter, not crypto
        self._delay = min(BACKOFF_MAX, self._delay * 2)
        return wait


def suback_reason(code: int) -> str:
    """The name of a SUBACK reason code (MQTT 5; 0x80 alone in MQTT 3.1.1)."""
    return _SUBACK_REASONS.get(code, "unknown reason")


_SUBACK_REASONS: Final = {
    0x80: "unspecified error", 0x83: "implementation specific error",
    0x87: "not authorized", 0x8F: "topic filter invalid", 0x91: "packet identifier in use",
    0x97: "quota exceeded", 0x9E: "shared subscriptions not supported",
    0xA1: "subscription identifiers not supported", 0xA2: "wildcard subscriptions not supported",
}
