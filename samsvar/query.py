"""``samsvar query``: sign one question as a consumer organisation and print the answer.

The answer is asked for as a stream (``application/x-ndjson``), so a progress bar on
standard error shows the producers answering (on a terminal only); then the whole answer
is printed as before. ``--json`` prints the :class:`~schemas.messages.Answer` assembled from
the stream, which is the JSON the API returns without streaming.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any, Final

import msgspec
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from consumer_client import Client, ClientError, QueryRefused, assemble_answer
from consumer_client.render import render_answer
from schemas.identity import hsa_organisation
from schemas.messages import (
    LOA3,
    LOA4,
    Actor,
    Answer,
    Mandate,
    Period,
    SourceLine,
    SummaryLine,
    Unblock,
    User,
)
from schemas.records import UnitRef

__all__ = ["run_own_query", "run_query"]


def _fail(message: str) -> int:
    print(f"samsvar: {message}", file=sys.stderr)
    return 1


def _from_workdir(args: argparse.Namespace) -> dict[str, Any]:
    """Fill broker, audience and key from a demo workdir's demo.json."""
    path = Path(args.workdir) / "demo.json"
    try:
        demo = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc
    issuer = args.issuer or next(
        (p["id"] for p in demo["participants"] if "consumer" in p["roles"]), None)
    match = next((p for p in demo["participants"] if p["id"] == issuer), None)
    if match is None:
        raise ValueError(f"{issuer!r} is not a participant in {path}")
    return {"broker": args.broker or demo["broker_url"], "aud": args.aud or demo["aud"],
            "key": args.key or str(Path(args.workdir) / match["key_file"]), "issuer": issuer}


async def _streamed_answer(client: Client, progress_to: Console,
                           **question: Any) -> Answer:
    """Ask as a stream, with a bar of the producers answered; return the whole answer."""
    lines: list[SourceLine | SummaryLine] = []
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[last]}", markup=False), TimeElapsedColumn(),
        console=progress_to, disable=not progress_to.is_terminal,
    )
    with progress:
        task = progress.add_task("Källor / sources", total=None, last="")
        async for line in client.stream(**question):
            lines.append(line)
            if isinstance(line, SourceLine):
                source = line.source
                progress.update(task, total=line.total, completed=line.done,
                                last=f"{source.organisation.name or source.producer}: "
                                     f"{source.status}")
    return assemble_answer(lines)


def _date(text: str | None, flag: str) -> dt.date | None:
    if text is None:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"{flag} must be YYYY-MM-DD, not {text!r}") from exc


async def run_query(args: argparse.Namespace) -> int:
    try:
        opts = _from_workdir(args) if args.workdir else {
            "broker": args.broker, "aud": args.aud, "key": args.key, "issuer": args.issuer}
        missing = [flag for flag, k in (("--broker", "broker"), ("--aud", "aud"),
                                        ("--key", "key"), ("--as", "issuer")) if not opts[k]]
        if missing:
            return _fail(f"missing {', '.join(missing)} (or give --workdir of a demo)")
        period = None
        if args.period_from or args.period_to:
            period = Period(from_=_date(args.period_from, "--from"),
                            to=_date(args.period_to, "--to"))
        unblock = None
        if args.unblock:
            producers = [p for p in args.unblock_producers.split(",") if p] or None
            unblock = Unblock(step=args.unblock, producers=producers)
        # The broker takes only users and units of the issuing organisation (SPEC 3).
        org = hsa_organisation(opts["issuer"])
        user = User(id=args.user_id or f"{org}-DEMO1", name=args.user_name, role=args.role,
                    unit=UnitRef(id=args.unit_id or f"{org}-U100", name=args.unit_name))
        client = Client.from_files(opts["broker"], opts["key"], opts["issuer"], opts["aud"], user)
        types = [t.strip() for t in args.types.split(",") if t.strip()]
        async with client:
            answer = await _streamed_answer(
                client, Console(stderr=True),
                subject=args.subject, types=types, basis=args.basis,
                relation=not args.no_relation, period=period, unblock=unblock,
                deadline_ms=args.deadline_ms,
            )
    except QueryRefused as exc:
        return _fail(f"refused: {exc}")
    except (ClientError, ValueError) as exc:
        return _fail(str(exc))
    if args.json:
        sys.stdout.write(msgspec.json.encode(answer).decode("utf-8") + "\n")
    else:
        render_answer(answer, Console())
    return 0


LOA: Final = {"loa3": LOA3, "loa4": LOA4}


async def run_own_query(args: argparse.Namespace) -> int:
    """``samsvar own``: ask for a person's own view as a citizen portal (SPEC section 9)."""
    try:
        if args.workdir:
            path = Path(args.workdir) / "demo.json"
            try:
                demo = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ValueError(f"cannot read {path}: {exc}") from exc
            portal = next((p for p in demo["participants"]
                           if (args.issuer and p["id"] == args.issuer)
                           or (not args.issuer and "citizen-portal" in p["roles"])), None)
            if portal is None:
                raise ValueError(f"no citizen-portal participant in {path}")
            opts = {"broker": args.broker or demo["broker_url"], "aud": args.aud or demo["aud"],
                    "key": args.key or str(Path(args.workdir) / portal["key_file"]),
                    "issuer": portal["id"]}
        else:
            opts = {"broker": args.broker, "aud": args.aud, "key": args.key,
                    "issuer": args.issuer}
        missing = [flag for flag, k in (("--broker", "broker"), ("--aud", "aud"),
                                        ("--key", "key"), ("--as", "issuer")) if not opts[k]]
        if missing:
            return _fail(f"missing {', '.join(missing)} (or give --workdir of a demo)")
        mandate = None
        if args.acting_as == "guardian":
            mandate = Mandate(source="folkbokforing",
                              checked_at=args.mandate_checked_at or dt.date.today().isoformat())
        actor = Actor(id=args.actor or args.subject, loa=LOA[args.loa],
                      auth_time=int(time.time()))
        nobody = User(id="-", name="-", role="-", unit=UnitRef(id="-", name="-"))
        client = Client.from_files(opts["broker"], opts["key"], opts["issuer"], opts["aud"],
                                   nobody)
        types = [t.strip() for t in args.types.split(",") if t.strip()]
        async with client:
            answer = await client.own_query(
                subject=args.subject, types=types, actor=actor, acting_as=args.acting_as,
                mandate=mandate, protected_identity=args.protected_identity)
    except QueryRefused as exc:
        return _fail(f"refused: {exc}")
    except (ClientError, ValueError) as exc:
        return _fail(str(exc))
    if args.json:
        sys.stdout.write(msgspec.json.encode(answer).decode("utf-8") + "\n")
    else:
        out = Console()
        out.print(f"Egen vy / own view of {args.subject}, read as {args.acting_as} "
                  f"by {actor.id}", markup=False)
        render_answer(answer, out)
    return 0
