"""The ``samsvar`` command: one entry point for every role, and the demo.

Exit codes: 0 success, 1 a failure or refusal (one line on stderr says why), 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transport.settings import MqttSettings

from .common import CliError, write_private_jwk

__all__ = ["build_parser", "main"]


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop for the long-running roles where it is installed (Linux, macOS), else asyncio's
    own loop; ``SAMSVAR_EVENT_LOOP=asyncio`` chooses asyncio's. uvloop's transports and
    callbacks cost the broker about a fifth less CPU per answer (bench/RESULTS.md)."""
    choice = os.environ.get("SAMSVAR_EVENT_LOOP", "uvloop")
    if choice not in ("uvloop", "asyncio"):
        raise CliError(f"SAMSVAR_EVENT_LOOP must be uvloop or asyncio, not {choice!r}")
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _run_until_signal(make: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> None:
    """Run a service until SIGINT or SIGTERM, then let it shut down cleanly."""

    async def runner() -> None:
        shutdown = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, shutdown.set)
        await make(shutdown)

    with asyncio.Runner(loop_factory=event_loop_factory()) as run:
        run.run(runner())


# -- roles -------------------------------------------------------------------------


def _mqtt_urls(settings: MqttSettings, urls: str) -> MqttSettings:
    """``--mqtt a,b,c`` in place of the config's servers; a one-line error if malformed."""
    try:
        return settings.with_urls(urls)
    except ValueError as exc:
        raise CliError(str(exc)) from exc


def cmd_broker(args: argparse.Namespace) -> int:
    from broker import BrokerServer, ConfigError, load_broker_config

    from .logs import configure_logging

    configure_logging(args.log_format, level=args.log_level, final=True)
    try:
        config = load_broker_config(args.config)
        if args.mqtt:
            config = dataclasses.replace(config, mqtt=_mqtt_urls(config.mqtt, args.mqtt))
        server = BrokerServer(config)
        _run_until_signal(lambda shutdown: server.run(shutdown=shutdown))
    except ConfigError as exc:
        raise CliError(str(exc)) from exc
    return 0


def cmd_adapter(args: argparse.Namespace) -> int:
    from producer_adapter import AdapterError, open_adapter

    from .logs import configure_logging

    configure_logging(args.log_format, level=args.log_level, final=True)
    try:
        adapter = open_adapter(args.config, mqtt_urls=args.mqtt)
    except ValueError as exc:
        raise CliError(f"--mqtt: {exc}") from exc
    except AdapterError as exc:
        raise CliError(str(exc)) from exc
    _run_until_signal(lambda shutdown: adapter.run(shutdown=shutdown))
    return 0


# -- keys and registry -----------------------------------------------------------------


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from schemas.jose import generate_key

    key = generate_key(args.alg)
    out = Path(args.out) if args.out else Path(f"{key.kid}.jwk")
    if out.exists() and not args.force:
        raise CliError(f"{out} exists; pass --force to overwrite it")
    write_private_jwk(out, key.to_jwk())
    print(json.dumps(key.public.to_jwk(), indent=2))
    print(f"private key written to {out} (keep it secret); the public JWK above goes into "
          "the registry", file=sys.stderr)
    return 0


def cmd_registry(args: argparse.Namespace) -> int:
    from schemas.errors import RegistryError
    from schemas.registry import load_registry

    try:
        registry = load_registry(args.file)
    except RegistryError as exc:
        raise CliError(str(exc)) from exc
    if args.action == "list":
        retired = "".join(f"  retired: {kid} (checkpoints up to entry {r.last_seq})"
                          for kid, r in registry.broker.retired_keys.items())
        print(f"broker  {registry.broker.id}  keys: {', '.join(registry.broker.keys)}{retired}")
        for p in registry.participants.values():
            print(f"participant  {p.id}  {p.kind:<13}  {','.join(sorted(p.roles)):<26}  {p.name}")
        for prod in registry.producers.values():
            print(f"producer  {prod.id}  org {prod.organisation.id}  "
                  f"types {','.join(sorted(prod.types))}  units {len(prod.units)}  {prod.name}")
    print(f"{args.file}: OK ({len(registry.participants)} participants, "
          f"{len(registry.producers)} producers)")
    return 0


# -- the consumer's side -----------------------------------------------------------------


def cmd_query(args: argparse.Namespace) -> int:
    from .query import run_query

    return asyncio.run(run_query(args))


def cmd_own(args: argparse.Namespace) -> int:
    from .query import run_own_query

    return asyncio.run(run_own_query(args))


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo
    from .logs import configure_logging

    configure_logging("console", level=args.log_level)
    if args.serve and not args.workdir:
        raise CliError("--serve needs --workdir DIR (where the demo writes its keys and files)")
    return asyncio.run(run_demo(args))


_MQTT_HELP = ("MQTT server URL(s), comma-separated (mqtt[s]://[user:password@]host:port): "
              "replace the config's; a lost connection moves on to the next")


# -- parser ------------------------------------------------------------------------------


def _log_options(p: argparse.ArgumentParser, fmt: str = "json") -> None:
    p.add_argument("--log-format", choices=("json", "console"), default=fmt)
    p.add_argument("--log-level", default="info",
                   choices=("debug", "info", "warning", "error"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="samsvar",
        description="Federated query-response broker for Swedish health and social care.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("broker", help="run a broker instance")
    p.add_argument("--config", required=True, help="the broker's TOML config")
    p.add_argument("--mqtt", metavar="URLS", help=_MQTT_HELP)
    _log_options(p)
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser("adapter", help="run a producer adapter")
    p.add_argument("--config", required=True, help="the adapter's TOML config")
    p.add_argument("--mqtt", metavar="URLS", help=_MQTT_HELP)
    _log_options(p)
    p.set_defaults(func=cmd_adapter)
    from .adapter_cli import add_adapter_commands

    add_adapter_commands(p)

    keys = sub.add_parser("keys", help="key pairs").add_subparsers(dest="keys_cmd", required=True)
    p = keys.add_parser("generate", help="make a key pair; print the public JWK")
    from schemas.jose import ALGORITHMS, DEFAULT_ALG

    p.add_argument("--alg", choices=ALGORITHMS, default=DEFAULT_ALG,
                   help=f"signature algorithm (default {DEFAULT_ALG}: Ed25519, the least CPU "
                        "per answer as bench/RESULTS.md measures it; ES256 is also accepted)")
    p.add_argument("--out", help="where to write the private JWK (default ./<kid>.jwk)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.set_defaults(func=cmd_keys_generate)

    reg = sub.add_parser("registry", help="check and list the federation registry; "
                         "generate Mosquitto TLS and ACLs")
    reg_sub = reg.add_subparsers(dest="action", required=True)
    for action, text in (("check", "check the file; errors name the line"),
                         ("list", "check, then list participants and producers")):
        p = reg_sub.add_parser(action, help=text)
        p.add_argument("file", help="the registry TOML file")
        p.set_defaults(func=cmd_registry)
    from .mosquitto.cli import add_mosquitto_command

    add_mosquitto_command(reg_sub)

    from .log_cli import add_log_commands

    add_log_commands(sub)

    p = sub.add_parser("query", help="ask the broker one question and print the answer")
    p.add_argument("--workdir", help="a demo workdir: take broker, audience and keys from "
                   "its demo.json")
    p.add_argument("--as", dest="issuer", help="the consumer organisation's id (iss)")
    p.add_argument("--broker", help="the broker's URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--aud", help="the broker's id (aud)")
    p.add_argument("--key", help="the organisation's private JWK file")
    p.add_argument("--subject", required=True, help="personnummer or samordningsnummer")
    p.add_argument("--types", required=True,
                   help="comma-separated information types, e.g. medication,alerts")
    p.add_argument("--basis", default="consent",
                   choices=("consent", "emergency", "lacks_capacity", "child"))
    p.add_argument("--no-relation", action="store_true",
                   help="do not assert a care relation (the broker will refuse)")
    p.add_argument("--from", dest="period_from", help="period start, YYYY-MM-DD")
    p.add_argument("--to", dest="period_to", help="period end, YYYY-MM-DD")
    p.add_argument("--unblock", choices=("locate", "read"), help="unblock step")
    p.add_argument("--unblock-producers", default="",
                   help="comma-separated producer ids for --unblock read")
    p.add_argument("--deadline-ms", type=int)
    p.add_argument("--user-id", help="the asking employee's HSA-id "
                   "(default: {organisation}-DEMO1, of the --as organisation)")
    p.add_argument("--user-name", default="Demo Användare")
    p.add_argument("--role", default="Läkare")
    p.add_argument("--unit-id", help="the employee's unit's HSA-id "
                   "(default: {organisation}-U100, of the --as organisation)")
    p.add_argument("--unit-name", default="Akutmottagningen, Exempelsjukhuset")
    p.add_argument("--json", action="store_true", help="print the answer as the API returns it")
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("own", help="ask for a person's own view, as a citizen portal")
    p.add_argument("--workdir", help="a demo workdir: take broker, audience and the "
                   "citizen-portal participant's key from its demo.json")
    p.add_argument("--as", dest="issuer", help="the citizen portal's id (iss)")
    p.add_argument("--broker", help="the broker's URL")
    p.add_argument("--aud", help="the broker's id (aud)")
    p.add_argument("--key", help="the portal's private JWK file")
    p.add_argument("--subject", required=True, help="whose own view: personnummer")
    p.add_argument("--actor", help="the signed-in person (default: the subject)")
    p.add_argument("--acting-as", default="self", choices=("self", "guardian", "ombud"))
    p.add_argument("--loa", default="loa3", choices=("loa3", "loa4"))
    p.add_argument("--mandate-checked-at",
                   help="guardian: when custody was checked in folkbokföringen (default today)")
    p.add_argument("--protected-identity", action="store_true",
                   help="the person or the actor has protected personal data")
    p.add_argument("--types", default="care_plans,bookings,fixed_contacts,self_care,"
                   "medication,lab_results", help="comma-separated own-view types")
    p.add_argument("--json", action="store_true", help="print the answer as the API returns it")
    p.set_defaults(func=cmd_own)

    p = sub.add_parser("demo", help="run the whole federation in one process and ask once")
    p.add_argument("--json", action="store_true", help="print the answer as the API returns it")
    p.add_argument("--serve", action="store_true", help="keep serving until interrupted")
    p.add_argument("--port", type=int, default=0, help="the broker's port (with --serve)")
    p.add_argument("--portal-port", type=int, default=0,
                   help="the demo citizen portal \"Min översikt\" (with --serve; default: "
                        "the broker's port + 1, or a free port when that one is taken)")
    p.add_argument("--workdir", help="write registry, keys, data and configs here")
    p.add_argument("--mqtt", metavar="URLS",
                   help="use this MQTT server (mqtt://[user:password@]host:port), or these "
                        "servers of one cluster, comma-separated, instead of the embedded one")
    p.add_argument("--mqtt-protocol", choices=("3.1.1", "5"), default="5",
                   help="the MQTT version spoken to --mqtt (default 5)")
    p.add_argument("--no-shared-subscriptions", dest="shared_subscriptions",
                   action="store_false",
                   help="the --mqtt server has no $share subscriptions (NATS, RabbitMQ, "
                        "ejabberd): one replica of each producer answers")
    p.add_argument("--log-level", default="warning",
                   choices=("debug", "info", "warning", "error"))
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except CliError as exc:
        print(f"samsvar: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
