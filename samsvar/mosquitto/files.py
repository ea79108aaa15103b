"""``write_mosquitto_security``: the config, the rules and the certificates into one folder."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from schemas.registry import Registry
from schemas.topics import DEFAULT_PREFIX
from transport.settings import DEFAULT_MAX_MESSAGE_BYTES

from ..secret_files import write_secret
from .acl import acl_text, broker_cn, check_instances, dynsec_config, mosquitto_conf
from .errors import MosquittoSetupError
from .pki import CertificateAuthority, Issuer, cert_pem, key_pem

__all__ = ["DEFAULT_SERVER_HOSTS", "Written", "write_mosquitto_security"]

DEFAULT_SERVER_HOSTS: Final = ("localhost", "127.0.0.1")


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
    instances = check_instances(brokers, pools)
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
            write_secret(ca_key, key_pem(ca.key))
            files.ca.write_bytes(cert_pem(ca.cert))
    elif ca is not None:
        files.ca.write_bytes(cert_pem(ca.cert))
    for name in (*instances, *pools):
        files.clients[broker_cn(name)] = (out / "brokers" / f"{name}.pem",
                                          out / "brokers" / f"{name}.key")
    for producer_id in registry.producers:
        files.clients[producer_id] = (out / "producers" / f"{producer_id}.pem",
                                      out / "producers" / f"{producer_id}.key")
    if ca is not None:
        issuer = Issuer(ca, days=days, reissue=reissue)
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
