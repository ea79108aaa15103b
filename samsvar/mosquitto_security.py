"""Mosquitto as deployed: a TLS listener, client certificates and ACLs from the registry.

    samsvar registry mosquitto registry.toml --out mqtt/ --make-ca \\
        --brokers broker-1,broker-2 --server-host mqtt.example.se

Every MQTT client authenticates with a client certificate issued by the federation's own
CA; Mosquitto takes the certificate's common name as the username
(``use_identity_as_username``) and the ACL file decides what that name may touch:

=================  ========================  =============================================
client             certificate CN            may
=================  ========================  =============================================
producer adapter   the producer id           read ``{prefix}/q/{id}`` (also as
                   (``SE2321000999-P001``);  ``$share/{id}/{prefix}/q/{id}``); write
                   every replica shares it   ``{prefix}/r/+``; read and write
                                             ``{prefix}/presence/{id}``; read
                                             ``{prefix}/checkpoint/+`` (it witnesses)
broker instance    ``broker:{instance}``     write ``{prefix}/q/+`` and
                   (``broker:broker-1``)     ``{prefix}/checkpoint/{instance}``; read
                                             ``{prefix}/r/{instance}`` and
                                             ``{prefix}/presence/+``
broker pool        ``broker:{pool}``         as a broker instance, but read every
                   (``broker:samsvar-        instance's replies ``{prefix}/r/+`` (and
                                             write ``{prefix}/checkpoint/+``): for
                   broker``)                 instances named at start (Kubernetes pods)
=================  ========================  =============================================

A pool (``--broker-pool NAME``) is for broker instances whose ids are not known in
advance, such as pods named by Kubernetes: they share one certificate, and each reads its
own reply topic under it. Every broker instance is the same operator with the same
signing key, so a pool member reading another's replies crosses no trust boundary; a
named instance still reads only its own.

A producer id can never hold a ``:`` (see :mod:`schemas.registry`), so no producer's
certificate can ever pass for a broker's. A certificate whose CN is in neither list
(a producer removed from the registry, say) may read and write nothing.

Two ways to enforce it:

* ``acl_file`` (the default): Mosquitto's built-in ACL file. It checks every publish and
  every delivery, but **never a SUBSCRIBE**: a producer's subscription to another's topic
  is granted and then receives nothing, yet by joining another producer's shared
  subscription group (``$share/{other}/...``) it takes that group's turn for some
  questions, and Mosquitto drops them instead of giving them to a real member: the other
  producer times out. Apply a registry change with ``SIGHUP``.
* ``--dynsec PLUGIN`` (recommended): Mosquitto's dynamic-security plugin with a
  ``dynamic-security.json`` generated from the same rules. It also refuses such
  subscriptions (SUBACK "not authorized"). Apply a registry change with a restart.

What ``--out DIR`` receives::

    DIR/mosquitto.conf             the listener, TLS and ACL settings
    DIR/acl                        generated from the registry; regenerate, don't edit
    DIR/dynamic-security.json      instead of DIR/acl with --dynsec
    DIR/ca.pem                     the CA certificate: every client needs it
    DIR/ca.key                     --make-ca only: move it offline after issuing (0600)
    DIR/server.pem, server.key     the MQTT server's certificate (SANs: --server-host)
    DIR/producers/{id}.pem, .key   one client certificate per producer (CN = producer id)
    DIR/brokers/{instance}.pem, .key   one per broker instance (CN = broker:{instance})
    DIR/brokers/{pool}.pem, .key       one per broker pool (CN = broker:{pool})

Existing certificates that the CA issued, with the right name and more than 30 days left,
are kept (so rerunning after a registry change only issues what is new); ``--reissue``
replaces them all. Private keys are written with mode 0600.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from schemas.registry import Registry
from schemas.topics import (
    DEFAULT_PREFIX,
    checkpoint_topic,
    presence_topic,
    question_topic,
    replica_topic,
    reply_topic,
    shared,
)
from transport.settings import DEFAULT_MAX_MESSAGE_BYTES, HEADROOM

from .secret_files import write_secret

__all__ = [
    "BROKER_CN_PREFIX",
    "CertificateAuthority",
    "MosquittoSetupError",
    "Written",
    "acl_text",
    "add_mosquitto_command",
    "broker_cn",
    "dynsec_config",
    "mosquitto_conf",
    "write_mosquitto_security",
]

BROKER_CN_PREFIX: Final = "broker:"
"""A broker instance's certificate CN is ``broker:{instance}``."""

DEFAULT_SERVER_HOSTS: Final = ("localhost", "127.0.0.1")
_INSTANCE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_RENEW_BEFORE: Final = dt.timedelta(days=30)
_BACKDATE: Final = dt.timedelta(minutes=5)
"""Certificates start a little in the past, for clocks that lag."""


class MosquittoSetupError(ValueError):
    """The inputs cannot make a working setup; the message says which and why."""


def broker_cn(instance: str) -> str:
    """The certificate CN (and so the Mosquitto username) of a broker instance."""
    return f"{BROKER_CN_PREFIX}{instance}"


# -- the ACL and the config -------------------------------------------------------------


def _check_prefix(prefix: str) -> str:
    if not prefix or prefix != prefix.strip("/") or any(c in prefix for c in "+#\0 "):
        raise MosquittoSetupError(
            f"topic prefix {prefix!r} must be non-empty, without wildcards, spaces or "
            "leading/trailing '/'"
        )
    return prefix


def _check_instances(brokers: Iterable[str], pools: Iterable[str] = ()) -> list[str]:
    instances, pool_names = list(dict.fromkeys(brokers)), list(dict.fromkeys(pools))
    if not instances and not pool_names:
        raise MosquittoSetupError("name at least one broker instance (--brokers) or pool "
                                  "(--broker-pool)")
    for name, what in [*((i, "broker instance") for i in instances),
                       *((p, "broker pool") for p in pool_names)]:
        if not _INSTANCE.match(name):
            raise MosquittoSetupError(
                f"{what} {name!r} may hold only letters, digits, '.', '_' and '-'")
    both = set(instances) & set(pool_names)
    if both:
        raise MosquittoSetupError(f"{min(both)!r} cannot be both a broker instance and "
                                  "a pool: they would share a certificate name")
    return instances


def _brokers(prefix: str, instances: Sequence[str],
             pools: Sequence[str]) -> Iterator[tuple[str, str, bool]]:
    """Each broker user: its name, the reply topic (filter) it may read, and whether it is
    a pool (whose members each read their own reply topic, so any of them)."""
    for instance in instances:
        yield instance, reply_topic(prefix, instance), False
    for pool in dict.fromkeys(pools):
        yield pool, reply_topic(prefix, "+"), True


def acl_text(registry: Registry, *, prefix: str = DEFAULT_PREFIX,
             brokers: Sequence[str] = ("broker-1",), pools: Sequence[str] = ()) -> str:
    """The Mosquitto ``acl_file`` for the registry's producers, these broker instances and
    these broker pools."""
    prefix = _check_prefix(prefix)
    instances = _check_instances(brokers, pools)
    source = f" from {registry.path}" if registry.path else ""
    lines = [
        f"# Generated by `samsvar registry mosquitto`{source}. Do not edit: regenerate it",
        "# when the registry changes, then send Mosquitto SIGHUP to re-read it.",
        "# Usernames are client certificate CNs (use_identity_as_username): a producer's",
        f"# CN is its producer id, a broker instance's is {BROKER_CN_PREFIX}<instance>.",
        "# Anything not granted here is denied. Mosquitto checks publishes and deliveries",
        "# against this file but never a SUBSCRIBE: the $share lines state the intent only",
        "# (see docs/security.md; --dynsec enforces subscriptions too).",
        "",
    ]
    for name, replies, pool in _brokers(prefix, instances, pools):
        lines += [
            f"# broker pool {name}: instances named at start, each reading its own replies"
            if pool else f"# broker instance {name}",
            f"user {broker_cn(name)}",
            f"topic write {question_topic(prefix, '+')}",
            f"topic read {replies}",
            f"topic read {presence_topic(prefix, '+')}",
            f"topic write {checkpoint_topic(prefix, '+' if pool else name)}",
            "",
        ]
    for producer in registry.producers.values():
        q = question_topic(prefix, producer.id)
        lines += [
            f"# producer {producer.id} ({producer.name})",
            f"user {producer.id}",
            f"topic read {q}",
            f"topic read {shared(producer.id, q)}",
            f"topic write {reply_topic(prefix, '+')}",
            f"topic readwrite {presence_topic(prefix, producer.id)}",
            f"topic read {checkpoint_topic(prefix, '+')}",
            f"topic readwrite {replica_topic(prefix, producer.id, '+')}",
            "",
        ]
    return "\n".join(lines)


def _acl(acltype: str, topic: str) -> dict[str, Any]:
    return {"acltype": acltype, "topic": topic, "allow": True}


def dynsec_config(registry: Registry, *, prefix: str = DEFAULT_PREFIX,
                  brokers: Sequence[str] = ("broker-1",),
                  pools: Sequence[str] = ()) -> dict[str, Any]:
    """The dynamic-security plugin's JSON: the rules of :func:`acl_text`, subscriptions
    included. No client may administer it over MQTT (``$CONTROL`` is denied to all)."""
    prefix = _check_prefix(prefix)
    clients: list[dict[str, Any]] = []
    roles: list[dict[str, Any]] = []
    for name, replies, pool in _brokers(prefix, _check_instances(brokers, pools), pools):
        role = f"samsvar-broker-pool-{name}" if pool else f"samsvar-broker-{name}"
        presence = presence_topic(prefix, "+")
        roles.append({"rolename": role, "acls": [
            _acl("publishClientSend", question_topic(prefix, "+")),
            # a pool member subscribes to its own reply topic, a name matching the pattern
            _acl("subscribePattern" if pool else "subscribeLiteral", replies),
            _acl("publishClientReceive", replies),
            _acl("subscribeLiteral", presence), _acl("publishClientReceive", presence),
            _acl("publishClientSend", checkpoint_topic(prefix, "+" if pool else name)),
        ]})
        clients.append({"username": broker_cn(name),
                        "textname": f"broker pool {name}" if pool else f"broker {name}",
                        "roles": [{"rolename": role}]})
    for producer in registry.producers.values():
        role = f"samsvar-producer-{producer.id}"
        q, presence = question_topic(prefix, producer.id), presence_topic(prefix, producer.id)
        roles.append({"rolename": role, "acls": [
            _acl("subscribeLiteral", q), _acl("subscribeLiteral", shared(producer.id, q)),
            _acl("publishClientReceive", q),
            _acl("publishClientSend", reply_topic(prefix, "+")),
            _acl("subscribeLiteral", presence), _acl("publishClientReceive", presence),
            _acl("publishClientSend", presence),
            _acl("subscribeLiteral", checkpoint_topic(prefix, "+")),
            _acl("publishClientReceive", checkpoint_topic(prefix, "+")),
            _acl("subscribeLiteral", replica_topic(prefix, producer.id, "+")),
            _acl("publishClientReceive", replica_topic(prefix, producer.id, "+")),
            _acl("publishClientSend", replica_topic(prefix, producer.id, "+")),
        ]})
        clients.append({"username": producer.id, "textname": producer.name,
                        "roles": [{"rolename": role}]})
    return {
        "defaultACLAccess": {"publishClientSend": False, "publishClientReceive": False,
                             "subscribe": False, "unsubscribe": True},
        "clients": clients, "groups": [], "roles": roles,
    }


def size_limits(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> list[str]:
    """The lines that make Mosquitto refuse what every samsvar role would drop: a payload
    above ``max_message_bytes`` (``message_size_limit``), and a packet above it plus room
    for the topic and properties (``max_packet_size``, also announced to MQTT 5 clients)."""
    if max_message_bytes < 1024:
        raise MosquittoSetupError("the message size limit must be at least 1024 bytes")
    return [
        "# One oversized message must never stall a role (SPEC section 4); each role drops",
        "# and counts messages above [mqtt] max_message_bytes, set to the same value.",
        f"message_size_limit {max_message_bytes}",
        f"max_packet_size {max_message_bytes + HEADROOM}",
    ]


def mosquitto_conf(*, port: int, cafile: Path, certfile: Path, keyfile: Path,
                   acl_file: Path | None = None, dynsec: tuple[str, Path] | None = None,
                   bind: str | None = None,
                   max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> str:
    """A ``mosquitto.conf`` with one TLS listener that requires client certificates,
    authorised by ``acl_file`` or by ``dynsec`` (the plugin's path and its JSON file)."""
    if not 0 < port < 65536:
        raise MosquittoSetupError(f"port {port} is not a TCP port")
    if (acl_file is None) == (dynsec is None):
        raise MosquittoSetupError("authorise with an ACL file or the dynamic-security plugin")
    listener = f"listener {port} {bind}" if bind else f"listener {port}"
    if dynsec is not None:
        authz = ["# Subscriptions are checked too; a registry change needs a restart.",
                 f"plugin {dynsec[0]}", f"plugin_opt_config_file {dynsec[1]}"]
    else:
        authz = ["# Publishes and deliveries are checked, SUBSCRIBEs are not (see",
                 "# docs/security.md); SIGHUP re-reads the file.", f"acl_file {acl_file}"]
    return "\n".join([
        "# Generated by `samsvar registry mosquitto`.",
        "per_listener_settings false",
        "allow_anonymous false",
        "# Without it every gather stalls ~40 ms (Nagle and delayed ACKs).",
        "set_tcp_nodelay true",
        "# The broker asks every producer at once (311 for a national question): with the",
        "# default of 20 unacknowledged it would wait 15 round trips (bench/RESULTS.md).",
        "max_inflight_messages 1000",
        *size_limits(max_message_bytes),
        "",
        listener,
        "protocol mqtt",
        f"cafile {cafile}",
        f"certfile {certfile}",
        f"keyfile {keyfile}",
        "tls_version tlsv1.2",
        "require_certificate true",
        "use_identity_as_username true",
        "",
        *authz,
        "",
    ])


# -- certificates ---------------------------------------------------------------------------


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


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(kw_only=True)
class Written:
    """What :func:`write_mosquitto_security` wrote: paths, and the CN of each client file."""

    conf: Path
    acl: Path
    """The authorisation file: the ACL file, or the dynamic-security JSON."""
    ca: Path
    server_cert: Path
    server_key: Path
    clients: dict[str, tuple[Path, Path]] = field(default_factory=dict)
    """Certificate CN → (certificate, key)."""
    issued: list[str] = field(default_factory=list)
    """CNs whose certificate was (re)issued this run; the others were kept."""


class _Issuer:
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
        write_secret(key_path, _key_pem(key))
        cert_path.write_bytes(_cert_pem(cert))
        self.issued.append(cn)


def write_mosquitto_security(
    registry: Registry,
    out: Path,
    *,
    port: int = 8883,
    bind: str | None = None,
    prefix: str = DEFAULT_PREFIX,
    brokers: Sequence[str] = ("broker-1",),
    pools: Sequence[str] = (),
    ca: CertificateAuthority | None = None,
    make_ca: bool = False,
    server_hosts: Sequence[str] = DEFAULT_SERVER_HOSTS,
    days: int = 365,
    reissue: bool = False,
    dynsec_plugin: str | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> Written:
    """Write the config and ACL into ``out``; with a CA (given, or ``make_ca``) also the
    server's and every client's certificate.

    With ``make_ca`` an existing ``out/ca.pem`` and ``out/ca.key`` are reused, so certificates
    issued before stay valid. With ``dynsec_plugin`` (the plugin's path on the MQTT server)
    the rules go to ``dynamic-security.json`` instead of an ACL file.
    """
    if ca is not None and make_ca:
        raise MosquittoSetupError("give an existing CA or ask for a new one, not both")
    if days < 1:
        raise MosquittoSetupError("certificates must be valid for at least one day")
    instances = _check_instances(brokers, pools)
    pools = list(dict.fromkeys(pools))
    if dynsec_plugin is None:
        authz = acl_text(registry, prefix=prefix, brokers=instances, pools=pools)
        authz_name = "acl"
    else:
        authz = json.dumps(dynsec_config(registry, prefix=prefix, brokers=instances,
                                         pools=pools), indent=2, ensure_ascii=False) + "\n"
        authz_name = "dynamic-security.json"
    out.mkdir(parents=True, exist_ok=True)
    out = out.resolve()
    files = Written(conf=out / "mosquitto.conf", acl=out / authz_name, ca=out / "ca.pem",
                    server_cert=out / "server.pem", server_key=out / "server.key")
    if make_ca:
        ca_key = out / "ca.key"
        if files.ca.exists() and ca_key.exists():
            ca = CertificateAuthority.load(files.ca, ca_key)
        else:
            ca = CertificateAuthority.create(f"samsvar MQTT CA ({registry.broker.id})")
            write_secret(ca_key, _key_pem(ca.key))
            files.ca.write_bytes(_cert_pem(ca.cert))
    elif ca is not None:
        files.ca.write_bytes(_cert_pem(ca.cert))
    for name in (*instances, *pools):
        files.clients[broker_cn(name)] = (out / "brokers" / f"{name}.pem",
                                          out / "brokers" / f"{name}.key")
    for producer_id in registry.producers:
        files.clients[producer_id] = (out / "producers" / f"{producer_id}.pem",
                                      out / "producers" / f"{producer_id}.key")
    if ca is not None:
        issuer = _Issuer(ca, days=days, reissue=reissue)
        hosts = server_hosts or DEFAULT_SERVER_HOSTS
        issuer.ensure(files.server_cert, files.server_key, hosts[0], hosts)
        for cn, (cert_path, key_path) in files.clients.items():
            issuer.ensure(cert_path, key_path, cn)
        files.issued = issuer.issued
    files.acl.write_text(authz, encoding="utf-8")
    files.conf.write_text(mosquitto_conf(
        port=port, bind=bind, cafile=files.ca, certfile=files.server_cert,
        keyfile=files.server_key, acl_file=None if dynsec_plugin else files.acl,
        dynsec=(dynsec_plugin, files.acl) if dynsec_plugin else None,
        max_message_bytes=max_message_bytes), encoding="utf-8")
    return files


# -- the command ------------------------------------------------------------------------------


def add_mosquitto_command(registry_subparsers: Any) -> None:
    """Add ``samsvar registry mosquitto`` to the ``registry`` command's subparsers."""
    p = registry_subparsers.add_parser(
        "mosquitto", help="write a Mosquitto TLS config, ACLs and certificates from the registry")
    p.add_argument("file", help="the registry TOML file")
    p.add_argument("--out", required=True, help="the directory to write into")
    p.add_argument("--port", type=int, default=8883, help="the TLS listener's port (8883)")
    p.add_argument("--bind", help="the listener's address (default: every interface)")
    p.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"topic prefix ({DEFAULT_PREFIX})")
    p.add_argument("--brokers",
                   help="comma-separated broker instance ids, as in each broker's "
                        "[broker] instance (default broker-1, or none with --broker-pool)")
    p.add_argument("--broker-pool", action="append", dest="pools", default=[], metavar="NAME",
                   help="a broker pool: one certificate (CN broker:NAME) for instances whose "
                        "ids are not known in advance, such as Kubernetes pods; it may read "
                        "every instance's replies. Repeat for several")
    p.add_argument("--ca-cert", help="issue certificates with this existing CA (PEM) ...")
    p.add_argument("--ca-key", help="... and its unencrypted PEM key")
    p.add_argument("--make-ca", action="store_true",
                   help="create a CA in --out (or reuse the one there) and issue certificates")
    p.add_argument("--server-host", action="append", dest="server_hosts", metavar="HOST",
                   help="DNS name or IP address clients use for the MQTT server; repeat for "
                        "several (default: localhost and 127.0.0.1)")
    p.add_argument("--days", type=int, default=365, help="leaf certificate lifetime (365)")
    p.add_argument("--reissue", action="store_true",
                   help="issue every certificate anew, even those still valid")
    p.add_argument("--dynsec", metavar="PLUGIN",
                   help="authorise with Mosquitto's dynamic-security plugin at this path on "
                        "the MQTT server (e.g. /usr/lib/x86_64-linux-gnu/"
                        "mosquitto_dynamic_security.so) instead of an ACL file: it also "
                        "refuses subscriptions to others' topics (recommended)")
    p.add_argument("--max-message-bytes", type=int, default=DEFAULT_MAX_MESSAGE_BYTES,
                   help="refuse MQTT messages above this size (message_size_limit, and "
                        "max_packet_size with room for topic and properties); the same as "
                        f"every role's [mqtt] max_message_bytes ({DEFAULT_MAX_MESSAGE_BYTES})")
    p.set_defaults(func=cmd_registry_mosquitto)


def cmd_registry_mosquitto(args: argparse.Namespace) -> int:
    from schemas.errors import RegistryError
    from schemas.registry import load_registry

    from .cli import CliError

    if args.make_ca and (args.ca_cert or args.ca_key):
        raise CliError("--make-ca and --ca-cert/--ca-key exclude each other")
    if bool(args.ca_cert) != bool(args.ca_key):
        raise CliError("--ca-cert and --ca-key go together")
    try:
        registry = load_registry(args.file)
        ca = (CertificateAuthority.load(Path(args.ca_cert), Path(args.ca_key))
              if args.ca_cert else None)
        named = args.brokers if args.brokers is not None else "" if args.pools else "broker-1"
        brokers = [b.strip() for b in named.split(",") if b.strip()]
        written = write_mosquitto_security(
            registry, Path(args.out), port=args.port, bind=args.bind, prefix=args.prefix,
            brokers=brokers, pools=args.pools, ca=ca, make_ca=args.make_ca,
            server_hosts=args.server_hosts or DEFAULT_SERVER_HOSTS, days=args.days,
            reissue=args.reissue, dynsec_plugin=args.dynsec,
            max_message_bytes=args.max_message_bytes,
        )
    except (RegistryError, MosquittoSetupError) as exc:
        raise CliError(str(exc)) from exc
    except OSError as exc:
        raise CliError(f"{exc.filename or args.out}: {exc.strerror}") from exc
    print(f"wrote {written.conf}")
    pools = f", {len(set(args.pools))} broker pool(s)" if args.pools else ""
    print(f"wrote {written.acl} ({len(brokers)} broker instance(s){pools}, "
          f"{len(registry.producers)} producer(s))")
    if not args.dynsec:
        print("note: Mosquitto's ACL file does not check subscriptions, so one producer can "
              "disturb another's shared subscription; --dynsec closes that (docs/security.md)")
    if ca is None and not args.make_ca:
        print(f"no CA given: put the CA, server certificate and key at {written.ca}, "
              f"{written.server_cert} and {written.server_key}, and issue client "
              "certificates with these CNs:")
        for cn in written.clients:
            print(f"  {cn}")
        return 0
    print(f"CA certificate {written.ca} (every client needs it)")
    if args.make_ca:
        print(f"CA key {written.ca.with_suffix('.key')}: keep it secret, ideally offline")
    for cn, (cert, key) in written.clients.items():
        state = "issued" if cn in written.issued else "kept"
        print(f"  {cn:<40} {cert}  {key}  ({state})")
    print(f"each role's [mqtt] table: url = \"mqtts://HOST:{args.port}\", ca = the CA "
          "certificate, cert and key = its own files above")
    return 0
