"""``samsvar log``: verify, extract and prune the broker's access log.

    samsvar log verify  (--config BROKER_TOML [--witness FILE ...] | --workdir DIR)
    samsvar log extract --config BROKER_TOML --subject PNR [--from DATE] [--to DATE] [--json]
    samsvar log prune   --config BROKER_TOML (--before DATE | --older-than-days N)

Each reads the broker's config for where the log is (``[access_log]``), its registry (the
broker's public keys, for verify) and its key (prune signs a checkpoint). ``verify`` checks
the log against the checkpoints its witnesses kept (each producer adapter's
``witness.json``, named with ``--witness``; with ``--workdir`` the demo's broker and every
demo producer's file under ``DIR/producers/<id>/``): that is what catches a log cut short
or an older copy put back. Exit codes: 0 success, 1 a failure or a broken log (one line
says why), 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

__all__ = ["add_log_commands", "cmd_log_extract", "cmd_log_prune", "cmd_log_verify"]

if TYPE_CHECKING:  # the commands import lazily so ``samsvar --help`` stays fast
    from broker.config import BrokerConfig
    from schemas.accesslog import AccessEntry
    from schemas.messages import Period


class _Failed(Exception):
    """One line for stderr, exit 1."""


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _days(text: str) -> int:
    try:
        days = int(text)
    except ValueError:
        days = -1
    if days < 0:
        raise argparse.ArgumentTypeError(f"not a number of days: {text!r}")
    return days


def add_log_commands(subparsers: Any) -> None:
    """Add ``log verify``, ``log extract`` and ``log prune`` to the ``samsvar`` parser."""
    log = subparsers.add_parser("log", help="the broker's access log: verify, extract, prune")
    sub = log.add_subparsers(dest="log_cmd", required=True, metavar="ACTION")

    p = sub.add_parser("verify", help="prove the log intact, or name the first broken entry")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", help="the broker's TOML config")
    where.add_argument("--workdir", metavar="DIR",
                       help="a `samsvar demo` work folder: its broker, every demo producer "
                            "as witness")
    p.add_argument("--witness", action="append", default=[], metavar="FILE",
                   help="a producer adapter's witness file (witness.json); repeat for each")
    p.set_defaults(func=cmd_log_verify)

    p = sub.add_parser("extract", help="every access to one person (the person's extract)")
    p.add_argument("--config", required=True, help="the broker's TOML config")
    p.add_argument("--subject", required=True, help="personnummer or samordningsnummer")
    p.add_argument("--from", dest="period_from", type=_date, help="first day, YYYY-MM-DD")
    p.add_argument("--to", dest="period_to", type=_date, help="last day, YYYY-MM-DD")
    p.add_argument("--json", action="store_true", help="print the extract as the API returns it")
    p.set_defaults(func=cmd_log_extract)

    p = sub.add_parser("prune", help="remove old entries; the log stays verifiable")
    p.add_argument("--config", required=True, help="the broker's TOML config")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--before", type=_date, help="remove entries before this day (UTC)")
    when.add_argument("--older-than-days", type=_days, metavar="N",
                      help="remove entries older than N days")
    p.set_defaults(func=cmd_log_prune)


# -- helpers ---------------------------------------------------------------------------


def _load(path: str) -> BrokerConfig:
    from broker.config import load_broker_config

    return load_broker_config(path)


def _run(action: Any) -> int:
    """Run a coroutine; known failures become one line on stderr and exit 1."""
    from broker.errors import BrokerError
    from schemas.errors import SchemasError

    try:
        return int(asyncio.run(action))
    except (_Failed, BrokerError, SchemasError) as exc:
        print(f"samsvar: {exc}", file=sys.stderr)
        return 1


# -- verify ----------------------------------------------------------------------------


def cmd_log_verify(args: argparse.Namespace) -> int:
    """Exit 0 and say how much is proven, or exit 1 naming the first broken entry."""
    if args.workdir and args.witness:
        print("samsvar: --workdir takes every demo producer as witness; leave out --witness",
              file=sys.stderr)
        return 2
    return _run(_verify(args))


def _workdir_witnesses(root: Path) -> tuple[Path, list[tuple[str, Path]]]:
    """The demo's broker config and each demo producer's witness file."""
    import json

    config = root / "broker.toml"
    try:
        demo = json.loads((root / "demo.json").read_text(encoding="utf-8"))
        producers = [str(p["id"]) for p in demo["producers"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _Failed(f"{root}: not a samsvar demo work folder (demo.json: {exc})") from exc
    if not config.is_file():
        raise _Failed(f"{root}: not a samsvar demo work folder (no broker.toml)")
    return config, [(f"producer {pid}", root / "producers" / pid / "witness.json")
                    for pid in producers]


async def _verify(args: argparse.Namespace) -> int:
    from broker.accesslog import Witnessed, verify_log
    from producer_adapter.witness import WitnessError, read_witnessed
    from schemas.registry import load_registry

    if args.workdir:
        config_path, files = _workdir_witnesses(Path(args.workdir))
    else:
        config_path, files = Path(args.config), [(str(f), Path(f)) for f in args.witness]
    config = _load(str(config_path))
    registry = load_registry(config.registry_path)
    witnessed: list[Witnessed] = []
    silent: list[str] = []
    for name, path in files:
        if not args.workdir and not path.is_file():
            raise _Failed(f"--witness {path}: no such file")
        try:
            tokens = read_witnessed(path)
        except WitnessError as exc:
            raise _Failed(str(exc)) from exc
        if not tokens:
            silent.append(name)
        witnessed += [Witnessed(witness=name, token=t) for t in tokens]
    log = config.access_log
    report = await verify_log(log, broker_keys=registry.broker.keys,
                              retired_keys=registry.broker.retired_keys, witnessed=witnessed,
                              instance=config.instance if log.kind == "sqlite" else None)
    if not report.intact:
        print(f"BROKEN at entry {report.bad_seq}: {report.problem}")
        return 1
    print(f"intact: {report.entries} entries, {report.checkpoints} checkpoints "
          f"({report.unsigned_tail} after the last checkpoint, not yet signed)")
    if files:
        print(f"  consistent with {report.witnessed} witnessed checkpoints from "
              f"{report.witnesses} of {len(files)} witnesses, up to entry {report.witnessed_to}")
        for name in silent:
            print(f"  {name} has witnessed no checkpoint yet")
    else:
        print("  no witness given: a log cut short or an older copy put back cannot be told "
              "from the database alone (use --witness FILE, or --workdir DIR for the demo)")
    for kid, seq in sorted(report.signed_to.items(), key=lambda item: item[1]):
        state = " (retired)" if kid in registry.broker.retired_keys else ""
        print(f"  key {kid}{state}: checkpoints up to entry {seq}")
    return 0


# -- extract ---------------------------------------------------------------------------


def cmd_log_extract(args: argparse.Namespace) -> int:
    """Print every access to ``--subject`` in the period: a table, or JSON with ``--json``."""
    return _run(_extract(args))


async def _extract(args: argparse.Namespace) -> int:
    import msgspec

    from broker.accesslog import extract_log
    from schemas.accesslog import ExtractResponse
    from schemas.errors import InvalidPersonId
    from schemas.identity import normalise
    from schemas.messages import Period

    try:
        subject = normalise(args.subject)
    except InvalidPersonId as exc:
        raise _Failed(f"--subject: {exc}") from exc
    if args.period_from and args.period_to and args.period_from > args.period_to:
        raise _Failed("--from is after --to")
    period = (Period(from_=args.period_from, to=args.period_to)
              if args.period_from or args.period_to else None)
    entries = await extract_log(_load(args.config).access_log, subject=subject, period=period)
    if args.json:
        response = ExtractResponse(subject=subject, period=period, accesses=entries)
        sys.stdout.write(msgspec.json.format(msgspec.json.encode(response)).decode() + "\n")
        return 0
    _print_table(subject, period, entries)
    return 0


def _disclosed(entry: AccessEntry) -> str:
    lines = []
    for source in entry.sources:
        counts = ", ".join(f"{n} {t}" for t, n in sorted(source.disclosed.items()) if n)
        if counts:
            lines.append(f"{source.organisation.name} ({source.producer}):\n  {counts}")
    return "\n".join(lines) or "nothing"


def _print_table(subject: str, period: Period | None, entries: list[AccessEntry]) -> None:
    from rich.console import Console
    from rich.table import Table

    span = ""
    if period is not None:
        span = f", {period.from_ or '…'} – {period.to or '…'}"
    table = Table(title=f"Accesses to {subject}{span}: {len(entries)}", show_lines=True)
    from consumer_client.render import describe_access

    for column in ("When", "Who read what (in words)", "Organisation", "Unit", "User (role)",
                   "Basis", "Types", "Disclosed", "Outcome"):
        table.add_column(column, overflow="fold")
    for e in entries:
        basis = ", ".join([*([e.basis] if e.basis else []), *e.flags,
                           *([f"unblock {e.unblock.step}"] if e.unblock else [])])
        outcome = ("answered" if e.outcome == "answered"
                   # only a broken stream's "opened" entry is left after collapse_streams
                   else "streamed, not completed" if e.outcome == "opened"
                   else f"refused ({e.rule})" if e.rule else "refused")
        if e.action == "own_view":
            basis = ", ".join(p for p in (f"own view as {e.acting_as}", e.loa and
                                          e.loa.rsplit("/", 1)[-1],
                                          e.mandate and f"mandate {e.mandate.source}") if p)
        table.add_row(
            e.time.astimezone().strftime("%Y-%m-%d %H:%M"),
            describe_access(e)[0],
            e.consumer.name if e.consumer else "—",
            e.unit.name if e.unit else "—",
            f"{e.user.name} ({e.user.role})" if e.user else (
                f"{e.actor} ({e.acting_as})" if e.actor else "—"),
            basis or "—",
            ", ".join(e.types) or "—",
            _disclosed(e),
            f"{outcome}, {e.status}",
        )
    # A terminal gets its own width; a pipe or file gets room enough not to fold much.
    Console(file=sys.stdout, width=None if sys.stdout.isatty() else 200).print(table)


# -- prune -----------------------------------------------------------------------------


def cmd_log_prune(args: argparse.Namespace) -> int:
    """Verify the log, then remove the entries before the cut-off and sign the new start."""
    return _run(_prune(args))


async def _prune(args: argparse.Namespace) -> int:
    from broker.accesslog import prune, verify_log
    from schemas.jose import load_private_key
    from schemas.registry import load_registry

    if args.before is not None:
        before = dt.datetime.combine(args.before, dt.time.min, tzinfo=dt.UTC)
    else:
        before = dt.datetime.now(dt.UTC) - dt.timedelta(days=args.older_than_days)
    config = _load(args.config)
    registry = load_registry(config.registry_path)
    try:
        key = load_private_key(config.key_path)
    except ValueError as exc:
        raise _Failed(str(exc)) from exc
    if key.kid not in registry.broker.keys:
        raise _Failed(f"the broker's key {key.kid!r} is not in the registry's [broker] keys")
    report = await verify_log(config.access_log, broker_keys=registry.broker.keys,
                              retired_keys=registry.broker.retired_keys)
    if not report.intact:
        raise _Failed(f"refusing to prune a broken log: BROKEN at entry {report.bad_seq}: "
                      f"{report.problem}")
    removed = await prune(config.access_log, key=key, instance=config.instance, before=before)
    print(f"pruned {removed} entries before {before:%Y-%m-%d %H:%M} UTC")
    return 0
