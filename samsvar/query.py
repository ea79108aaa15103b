"""``samsvar query``: sign one question as a consumer organisation and print the answer."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console

from consumer_client import Client, ClientError, QueryRefused
from consumer_client.render import render_answer
from schemas.messages import Period, Unblock, User
from schemas.records import UnitRef

__all__ = ["run_query"]


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
        user = User(id=args.user_id, name=args.user_name, role=args.role,
                    unit=UnitRef(id=args.unit_id, name=args.unit_name))
        client = Client.from_files(opts["broker"], opts["key"], opts["issuer"], opts["aud"], user)
        types = [t.strip() for t in args.types.split(",") if t.strip()]
        async with client:
            answer = await client.query(
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
