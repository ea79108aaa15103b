"""``samsvar adapter block …`` and ``samsvar adapter log``: the producer's register and log.

::

    samsvar adapter --config adapter.toml                      # run the adapter (as before)
    samsvar adapter block init   --config adapter.toml
    samsvar adapter block add    --config adapter.toml --subject 199103012382 \\
        --level unit --target SE2321000999-U300 --registered-by person [--note …] [--operator …]
    samsvar adapter block remove --config adapter.toml --subject … --level … --target …
    samsvar adapter block remove --config adapter.toml --id 7
    samsvar adapter block list   --config adapter.toml [--subject …] [--history] [--json]
    samsvar adapter log          --config adapter.toml [--subject …] [--limit N] [--json]

These commands read the adapter's config for the producer, registry and stores only
(the register is SQLite or PostgreSQL, as ``[blocks]`` says); never its private key. A
refusal (a guardian's block, a foreign target, an unreadable register) is one line on stderr
and exit 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import getpass
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import msgspec
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .common import CliError

__all__ = ["add_adapter_commands"]

_LEVELS = ("organisation", "unit", "care_process")


def add_adapter_commands(adapter_parser: argparse.ArgumentParser) -> None:
    """Add ``block`` and ``log`` under the ``adapter`` parser; bare ``adapter`` still runs it."""
    # The daemon's own --config stays, but is checked only when no subcommand is given,
    # so that each subcommand can take its own (argparse has no public API for this).
    daemon_config = adapter_parser._option_string_actions["--config"]
    daemon_config.required = False
    run_daemon: Callable[[argparse.Namespace], int] = adapter_parser.get_default("func")

    def run(args: argparse.Namespace) -> int:
        if not args.config:
            adapter_parser.error("the following arguments are required: --config")
        return run_daemon(args)

    adapter_parser.set_defaults(func=run)
    sub = adapter_parser.add_subparsers(dest="adapter_command", required=False,
                                        metavar="COMMAND")

    block = sub.add_parser("block", help="the producer's block register (spärrar)")
    blocks = block.add_subparsers(dest="block_command", required=True, metavar="ACTION")

    p = blocks.add_parser("init", help="create the block register (or migrate it)")
    _config(p)
    p.set_defaults(func=cmd_block_init)

    p = blocks.add_parser("add", help="register a person's block")
    _config(p)
    p.add_argument("--subject", required=True, help="the person's personnummer")
    p.add_argument("--level", required=True, choices=_LEVELS)
    p.add_argument("--target", required=True,
                   help="the organisation id, unit id or care-process id blocked")
    p.add_argument("--registered-by", required=True, choices=("person", "guardian"),
                   help="who asks for the block: only the person themselves may")
    p.add_argument("--note", default="", help="free text kept with the block")
    p.add_argument("--operator", help="who enters it (default: your user name)")
    p.set_defaults(func=cmd_block_add)

    p = blocks.add_parser("remove", help="lift a block (the history keeps it)")
    _config(p)
    p.add_argument("--id", type=int, help="the block's id (from `block list`)")
    p.add_argument("--subject", help="the person's personnummer")
    p.add_argument("--level", choices=_LEVELS)
    p.add_argument("--target")
    p.add_argument("--note", default="", help="why, e.g. how the person asked")
    p.add_argument("--operator", help="who enters it (default: your user name)")
    p.set_defaults(func=cmd_block_remove)

    p = blocks.add_parser("list", help="list the blocks in force (or their history)")
    _config(p)
    p.add_argument("--subject", help="only this person")
    p.add_argument("--history", action="store_true", help="every block added and removed")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_block_list)

    guardian = sub.add_parser(
        "guardian-block",
        help="units' blocks of a guardian's access to a child in the own view")
    guardians = guardian.add_subparsers(dest="guardian_command", required=True,
                                        metavar="ACTION")
    p = guardians.add_parser("add", help="a unit bars a guardian from a child's own view")
    _config(p)
    p.add_argument("--child", required=True, help="the child's personnummer")
    p.add_argument("--guardian", required=True, help="the guardian's personnummer")
    p.add_argument("--unit", required=True, help="the deciding unit (HSA-id, in the registry)")
    p.add_argument("--note", default="", help="e.g. the decision's reference (no content)")
    p.add_argument("--operator", help="who enters it (default: your user name)")
    p.set_defaults(func=cmd_guardian_block_add)
    p = guardians.add_parser("remove", help="lift a unit's block of a guardian")
    _config(p)
    p.add_argument("--child", required=True)
    p.add_argument("--guardian", required=True)
    p.add_argument("--unit", required=True)
    p.add_argument("--operator", help="who enters it (default: your user name)")
    p.set_defaults(func=cmd_guardian_block_remove)
    p = guardians.add_parser("list", help="list the guardian blocks in force")
    _config(p)
    p.add_argument("--child", help="only this child")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_guardian_block_list)

    p = sub.add_parser("log", help="the adapter's disclosure log: what it gave to whom")
    _config(p)
    p.add_argument("--subject", help="only questions about this person")
    p.add_argument("--limit", type=int, help="only the newest N entries")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_log)


def _config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="the adapter's TOML config")


def _fail(message: str) -> NoReturn:
    raise CliError(message)


def _guard(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn the adapter's and registry's errors into the CLI's one line and exit 1."""

    def run(args: argparse.Namespace) -> int:
        from producer_adapter import AdapterError
        from schemas.errors import InvalidPersonId, RegistryError

        try:
            return command(args)
        except (AdapterError, RegistryError, InvalidPersonId) as exc:
            _fail(" ".join(str(exc).split()))

    run.__doc__ = command.__doc__
    return run


def _subject(raw: str | None) -> str | None:
    from schemas.identity import normalise

    return None if raw is None else normalise(raw)


def _operator(raw: str | None) -> str:
    if raw:
        return raw
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in the environment or passwd
        _fail("--operator is required here (no user name could be found)")


def _stores(args: argparse.Namespace) -> Any:
    from producer_adapter import load_stores_config

    return load_stores_config(args.config)


def _print_json(value: object) -> None:
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(value)).decode("utf-8") + "\n")


@_guard
def cmd_block_init(args: argparse.Namespace) -> int:
    register = _stores(args).block_register()
    register.create()
    print(f"{register.location}: block register ready ({len(register.blocks())} blocks in force)")
    return 0


@_guard
def cmd_block_add(args: argparse.Namespace) -> int:
    from producer_adapter import AdapterConfigError, BlockScope
    from schemas.errors import RegistryError
    from schemas.registry import load_registry

    stores = _stores(args)
    try:
        registry = load_registry(stores.registry)
    except RegistryError as exc:
        raise AdapterConfigError(f"{stores.source}: [adapter] registry: {exc}") from exc
    producer = registry.producers.get(stores.producer)
    if producer is None:
        raise AdapterConfigError(f"{stores.source}: [adapter] producer {stores.producer!r} is "
                                 f"not in the registry {stores.registry}")
    register = stores.block_register(scope=BlockScope.of(producer))
    block = register.add(subject=args.subject, level=args.level, target=args.target,
                         registered_by=args.registered_by, operator=_operator(args.operator),
                         note=args.note)
    print(f"block #{block.id} added: {block.subject} {block.level} {block.target} "
          f"(registered by the person; entered by {block.operator})")
    return 0


def _producer_units(stores: Any) -> frozenset[str]:
    from producer_adapter import AdapterConfigError
    from schemas.errors import RegistryError
    from schemas.registry import load_registry

    try:
        registry = load_registry(stores.registry)
    except RegistryError as exc:
        raise AdapterConfigError(f"{stores.source}: [adapter] registry: {exc}") from exc
    producer = registry.producers.get(stores.producer)
    if producer is None:
        raise AdapterConfigError(f"{stores.source}: [adapter] producer {stores.producer!r} is "
                                 f"not in the registry {stores.registry}")
    return frozenset(u.id for u in producer.units)


@_guard
def cmd_guardian_block_add(args: argparse.Namespace) -> int:
    stores = _stores(args)
    block = stores.guardian_register().add(
        child=args.child, guardian=args.guardian, unit=args.unit,
        operator=_operator(args.operator), units=_producer_units(stores), note=args.note)
    print(f"guardian block added: {block.guardian} may not read {block.child}'s own view "
          f"(unit {block.unit}; entered by {block.operator}). This producer now answers "
          "that guardian no_data about that child.")
    return 0


@_guard
def cmd_guardian_block_remove(args: argparse.Namespace) -> int:
    _stores(args).guardian_register().remove(child=args.child, guardian=args.guardian,
                                             unit=args.unit, operator=_operator(args.operator))
    print("guardian block removed")
    return 0


@_guard
def cmd_guardian_block_list(args: argparse.Namespace) -> int:
    register = _stores(args).guardian_register()
    rows = register.list(_subject(args.child))
    if args.json:
        _print_json([dataclasses.asdict(r) for r in rows])
        return 0
    table = _table("Guardian blocks in force (own view)", str(register.path),
                   ("child", "guardian", "unit", "entered (UTC) / by", "note"),
                   no_wrap={"child", "guardian"})
    for b in rows:
        table.add_row(*map(Text, (b.child, b.guardian, b.unit, f"{b.created}\n{b.operator}",
                                  b.note)))
    console = Console()
    console.print(table)
    if not rows:
        console.print("(none)")
    return 0


@_guard
def cmd_block_remove(args: argparse.Namespace) -> int:
    register = _stores(args).block_register()
    operator = _operator(args.operator)
    named = (args.subject, args.level, args.target)
    if args.id is not None:
        if any(v is not None for v in named):
            _fail("block remove: give either --id or --subject, --level and --target, "
                  "not both")
        block = register.remove_id(args.id, operator=operator, note=args.note)
    elif all(v is not None for v in named):
        block = register.remove(subject=args.subject, level=args.level, target=args.target,
                                operator=operator, note=args.note)
    else:
        _fail("block remove: give --id, or all of --subject, --level and --target")
    print(f"block #{block.id} removed: {block.subject} {block.level} {block.target} "
          f"(entered by {operator}; the history keeps it)")
    return 0


@_guard
def cmd_block_list(args: argparse.Namespace) -> int:
    register = _stores(args).block_register()
    subject = _subject(args.subject)
    rows: Sequence[Any] = register.history(subject) if args.history else register.blocks(subject)
    if args.json:
        _print_json(rows)
        return 0
    if args.history:
        table = _table("Block history", register.location,
                       ("#", "action", "subject", "block", "at (UTC) / by", "note"),
                       no_wrap={"#", "action", "subject"})
        for e in rows:
            table.add_row(*map(Text, (str(e.seq), e.action, e.subject,
                                      f"#{e.block_id} {e.level}\n{e.target}",
                                      f"{_time(e.at, sep=chr(10))}\n{e.operator}", e.note)))
    else:
        # Every block is registered by the person themselves (the register holds no other).
        table = _table("Blocks in force (spärrar), registered by the person",
                       register.location,
                       ("id", "subject", "block", "entered (UTC) / by", "note"),
                       no_wrap={"id", "subject"})
        for b in rows:
            table.add_row(*map(Text, (str(b.id), b.subject, f"{b.level}\n{b.target}",
                                      f"{_time(b.created, sep=chr(10))}\n{b.operator}",
                                      b.note)))
    console = Console()
    console.print(table)
    if not rows:
        console.print("(none)")
    return 0


@_guard
def cmd_log(args: argparse.Namespace) -> int:
    log = _stores(args).disclosures()
    if args.limit is not None and args.limit < 1:
        _fail("--limit must be at least 1")
    entries = log.entries(_subject(args.subject), limit=args.limit)
    if args.json:
        _print_json(entries)
        return 0
    table = _table("Disclosure log: what this producer gave to whom", str(log.path),
                   ("#", "time (UTC) / query", "asked by", "about / basis", "gave"),
                   no_wrap={"#", "time (UTC) / query", "about / basis"})
    for e in entries:
        gave = [e.status + (f": {e.reason}" if e.reason else "")]
        gave += [f"{t} {n}" for t, n in sorted(e.disclosed.items())]
        if e.blocked_withheld:
            gave.append("blocked: withheld")
        if e.blocked_released:
            gave.append("blocked: released")
        about = [e.subject, e.basis] + ([f"unblock {e.unblock}"] if e.unblock else [])
        table.add_row(*map(Text, (
            str(e.seq),
            f"{_time(e.time)}\n{e.query_id[:19]}\n{e.query_id[19:]}".rstrip(),
            (f"{e.consumer.name} ({e.consumer_kind})\n{e.unit.name}\n"
             f"{e.user.name}, {e.user.role}\n{e.user.id}"),
            "\n".join(about), "\n".join(gave),
        )))
    console = Console()
    console.print(table)
    if not entries:
        console.print("(no entries)")
    return 0


def _table(title: str, caption: str, columns: Sequence[str], *,
           no_wrap: set[str] | frozenset[str] = frozenset()) -> Table:
    """A plain table; ``no_wrap`` columns keep their cells on one line."""
    table = Table(title=title, caption=caption, title_justify="left", caption_justify="left",
                  box=box.SIMPLE_HEAD)
    for name in columns:
        # "block" cells hold unit ids (17 characters): keep them whole.
        table.add_column(name, overflow="fold", no_wrap=name in no_wrap,
                         min_width=17 if name == "block" else None)
    return table


def _time(value: dt.datetime, *, sep: str = " ") -> str:
    """UTC, to the second."""
    return value.astimezone(dt.UTC).strftime(f"%Y-%m-%d{sep}%H:%M:%S")
