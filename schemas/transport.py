"""How a role reaches the federation's MQTT server: one settings shape for every role.

Read from the ``[mqtt]`` table of a broker's or adapter's config::

    [mqtt]
    url = "mqtts://mqtt.example.se:8883"   # mqtt:// (plain) or mqtts:// (TLS)
    prefix = "samsvar/v1"
    protocol = "5"                         # "5" or "3.1.1" (the embedded amqtt server)
    shared_subscriptions = true            # false on servers without $share (amqtt)
    ca = "ca.pem"                          # TLS: the server's CA, and our client certificate
    cert = "client.pem"
    key = "client.key"
    client = "gmqtt"                       # the MQTT client library, broker and adapters
                                           # alike: "gmqtt" or "aiomqtt" (bench/RESULTS.md)
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from .topics import DEFAULT_PREFIX

__all__ = ["NODELAY", "MqttSettings"]

NODELAY: Final = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)
"""Socket options for every MQTT client: paho leaves Nagle's algorithm on, which holds each
small publish ~40 ms waiting for an ACK (measured: one question and reply took 88 ms with
it, 0.6 ms without; bench/RESULTS.md)."""


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
    password: str | None = None
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    client: Literal["aiomqtt", "gmqtt"] = "gmqtt"
    """Which MQTT client library a role drives: gmqtt (the default; the plumbing both roles
    share is schemas.gmqtt_link) or aiomqtt. The broker's bus is then broker.mqtt_gmqtt or
    broker.mqtt, an adapter's link producer_adapter.mqtt_gmqtt or producer_adapter.mqtt.
    gmqtt cut the broker's CPU per reply by about 40 % (bench/RESULTS.md "Choosing the
    broker's MQTT client"); the adapter's link avoids the same costs (paho's MQTT 5
    Properties, its overhead per publish)."""

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> MqttSettings:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(f"MQTT url must be mqtt://host:port or mqtts://host:port, not {url!r}")
        tls = parts.scheme == "mqtts"
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError as exc:
            raise ValueError(f"MQTT url has an invalid port: {url!r}") from exc
        return cls(host=parts.hostname, port=port, tls=tls, username=parts.username,
                   password=parts.password, **overrides)

    @classmethod
    def from_table(cls, table: Mapping[str, Any], *, base: Path) -> MqttSettings:
        """From a config's ``[mqtt]`` table; file paths are relative to ``base``."""
        known = {"url", "prefix", "protocol", "shared_subscriptions", "qos", "keepalive",
                 "ca", "cert", "key", "client"}
        unknown = set(table) - known
        if unknown:
            raise ValueError(f"[mqtt] has unknown keys: {', '.join(sorted(unknown))}")
        protocol = str(table.get("protocol", "5"))
        if protocol not in ("5", "3.1.1"):
            raise ValueError("[mqtt] protocol must be \"5\" or \"3.1.1\"")
        client = table.get("client", "gmqtt")
        if client not in ("aiomqtt", "gmqtt"):
            raise ValueError(f"[mqtt] client must be \"aiomqtt\" or \"gmqtt\", not {client!r}")
        files = {k: str(base / table[k]) for k in ("ca", "cert", "key") if table.get(k)}
        return cls.from_url(
            str(table.get("url", "mqtt://127.0.0.1:1883")),
            prefix=str(table.get("prefix", DEFAULT_PREFIX)).rstrip("/"),
            protocol=protocol,
            shared_subscriptions=bool(table.get("shared_subscriptions", True)),
            qos=int(table.get("qos", 1)),
            keepalive=int(table.get("keepalive", 10)),
            client=client,
            **files,
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context (server verified by ``ca``, client certificate if given)."""
        if not self.tls:
            return None
        ctx = ssl.create_default_context(cafile=self.ca)
        if self.cert:
            ctx.load_cert_chain(self.cert, self.key)
        return ctx
