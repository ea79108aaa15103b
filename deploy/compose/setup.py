"""Write the compose federation into one directory: registry, keys, demo data, configs, MQTT TLS.

The compose file's ``setup`` service runs it before anything else starts::

    python /opt/samsvar-setup/setup.py /srv/samsvar

and ``tests/deploy`` runs it with local hosts and ports to start the same federation
without Docker. What it writes into ROOT::

    registry.toml, keys/, demo.json, README.txt   the demo federation (``samsvar demo``'s)
    producers/<id>/adapter.toml, data/, blocks.db  three producer adapters with demo data
    brokers/broker-1.toml, brokers/broker-2.toml  two broker instances, one PostgreSQL log
    mqtt/                                          ``samsvar registry mosquitto`` output:
                                                   mosquitto.conf, acl, CA, certificates
    secrets/pgpass                                 the PostgreSQL password (0600), if given

Run it again at will: keys, the MQTT CA and the certificates are kept (so configs and
clients stay valid); demo data and the demo block registers are written afresh.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

# The demo's producers whose records are files (its RIV-TA producer needs the demo's stub).
from samsvar.demo import JSON_DIR_PRODUCERS as PRODUCERS
from samsvar.demo import build_workdir
from samsvar.secret_files import write_secret
from transport.settings import MqttSettings

BROKERS = ("broker-1", "broker-2")


def _toml(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _mqtt_table(url: str, *, ca: str, cert: str, key: str) -> list[str]:
    return ["[mqtt]", f"url = {_toml(url)}", 'prefix = "samsvar/v1"', 'protocol = "5"',
            "shared_subscriptions = true", f"ca = {_toml(ca)}", f"cert = {_toml(cert)}",
            f"key = {_toml(key)}", ""]


def write_broker_configs(root: Path, *, mqtt_url: str, pg_dsn: str, pg_schema: str,
                         listen: Sequence[str]) -> list[Path]:
    """``brokers/<instance>.toml``: own instance id, reply topic and certificate; one log."""
    directory = root / "brokers"
    directory.mkdir(exist_ok=True)
    paths = []
    for instance, address in zip(BROKERS, listen, strict=True):
        path = directory / f"{instance}.toml"
        path.write_text("\n".join([
            f"# Broker instance {instance} (written by deploy/compose/setup.py).",
            "[broker]", 'registry = "../registry.toml"', 'key = "../keys/broker.jwk"',
            f"instance = {_toml(instance)}", f"listen = {_toml(address)}",
            "default_deadline_ms = 5000", "max_deadline_ms = 30000", "",
            *_mqtt_table(mqtt_url, ca="../mqtt/ca.pem", cert=f"../mqtt/brokers/{instance}.pem",
                         key=f"../mqtt/brokers/{instance}.key"),
            "[access_log]  # shared by every instance: one chain, serialised appends",
            'kind = "postgresql"', f"dsn = {_toml(pg_dsn)}", f"schema = {_toml(pg_schema)}",
            "checkpoint_interval_s = 1  # signed tree heads the adapters witness", "",
        ]), encoding="utf-8")
        paths.append(path)
    return paths


def write_adapter_configs(root: Path, *, mqtt_url: str) -> list[Path]:
    """``producers/<id>/adapter.toml``, as ``samsvar demo`` writes them, with TLS to MQTT."""
    paths = []
    for prod in PRODUCERS:
        pid = prod["id"]
        path = root / "producers" / pid / "adapter.toml"
        excluded = ", ".join(_toml(u) for u in prod["excluded_units"])
        path.write_text("\n".join([
            f"# Producer adapter for {prod['name']} (written by deploy/compose/setup.py).",
            "[adapter]", f"producer = {_toml(pid)}", 'registry = "../../registry.toml"',
            f"key = {_toml(f'../../keys/{pid}.jwk')}", f"excluded_units = [{excluded}]", "",
            *_mqtt_table(mqtt_url, ca="../../mqtt/ca.pem", cert=f"../../mqtt/producers/{pid}.pem",
                         key=f"../../mqtt/producers/{pid}.key"),
            "[backend]", 'kind = "json_dir"', 'path = "data"', "",
            "[blocks]", 'kind = "sqlite"', 'path = "blocks.db"', "",
            "[disclosure_log]", 'path = "disclosures.db"', "",
            "[witness]", 'path = "witness.json"', "",
        ]), encoding="utf-8")
        paths.append(path)
    return paths


def write_mosquitto(root: Path, *, port: int, bind: str | None,
                    server_hosts: Sequence[str]) -> None:
    """``samsvar registry mosquitto``: TLS listener, ACLs from the registry, certificates."""
    command = [sys.executable, "-m", "samsvar", "registry", "mosquitto",
               str(root / "registry.toml"), "--out", str(root / "mqtt"), "--make-ca",
               "--port", str(port), "--brokers", ",".join(BROKERS)]
    if bind:
        command += ["--bind", bind]
    for host in server_hosts:
        command += ["--server-host", host]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def write_pgpass(root: Path, password_file: Path) -> None:
    """``secrets/pgpass`` for PGPASSFILE, so no config holds the database password."""
    password = password_file.read_text(encoding="utf-8").strip()
    escaped = password.replace("\\", "\\\\").replace(":", "\\:")
    directory = root / "secrets"
    directory.mkdir(mode=0o700, exist_ok=True)
    write_secret(directory / "pgpass", f"*:*:*:*:{escaped}\n".encode())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="the directory to write (a shared volume)")
    parser.add_argument("--mqtt-host", default="mosquitto",
                        help="the MQTT server's name as clients reach it (mosquitto)")
    parser.add_argument("--mqtt-port", type=int, default=8883)
    parser.add_argument("--mqtt-bind", help="the TLS listener's address (default: all)")
    parser.add_argument("--pg-dsn", default="postgresql://samsvar@postgres:5432/samsvar",
                        help="the access log's database, without a password")
    parser.add_argument("--pg-schema", default="samsvar", help="the access log's schema")
    parser.add_argument("--pg-password-file", type=Path,
                        default=Path("/run/secrets/postgres_password"),
                        help="the database password, copied into secrets/pgpass if it exists")
    parser.add_argument("--listen", action="append",
                        help="each broker's listen address, in order (default 0.0.0.0:8080)")
    parser.add_argument("--public-port", type=int, default=8080,
                        help="the load balancer's port on 127.0.0.1, for demo.json")
    args = parser.parse_args(argv)
    root: Path = args.root
    listen = args.listen or ["0.0.0.0:8080"] * len(BROKERS)
    if len(listen) != len(BROKERS):
        parser.error(f"give --listen once per broker ({len(BROKERS)})")
    mqtt_url = f"mqtts://{args.mqtt_host}:{args.mqtt_port}"

    build_workdir(root, port=args.public_port, mqtt=MqttSettings.from_url(mqtt_url),
                  rivta=False)
    (root / "broker.toml").unlink(missing_ok=True)  # the demo's single broker: not used here
    write_broker_configs(root, mqtt_url=mqtt_url, pg_dsn=args.pg_dsn,
                         pg_schema=args.pg_schema, listen=listen)
    write_adapter_configs(root, mqtt_url=mqtt_url)
    hosts = list(dict.fromkeys([args.mqtt_host, "localhost", "127.0.0.1"]))
    write_mosquitto(root, port=args.mqtt_port, bind=args.mqtt_bind, server_hosts=hosts)
    if args.pg_password_file.is_file():
        write_pgpass(root, args.pg_password_file)
    print(f"samsvar federation written to {root}: brokers {', '.join(BROKERS)}, "
          f"producers {', '.join(p['id'] for p in PRODUCERS)}, MQTT at {mqtt_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
