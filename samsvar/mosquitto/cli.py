"""``samsvar registry mosquitto``: the command over :func:`write_mosquitto_security`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from schemas.topics import DEFAULT_PREFIX
from transport.settings import DEFAULT_MAX_MESSAGE_BYTES

from ..common import CliError
from .errors import MosquittoSetupError
from .files import DEFAULT_SERVER_HOSTS, write_mosquitto_security
from .pki import CertificateAuthority

__all__ = ["add_mosquitto_command", "cmd_registry_mosquitto"]


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
