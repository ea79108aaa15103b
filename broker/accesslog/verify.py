"""Proving the log intact, or naming the first entry that is not.

The walk goes through the entries in ``seq`` order and recomputes every hash (see
:mod:`.chain`). It names the first entry that was changed (its hash does not match its
content), removed (a gap in ``seq``, or a ``prev_hash`` that is not the previous entry's
hash) or moved. Every checkpoint must be signed by a key registered for the broker and
name the hash stored at its ``seq`` (a retired key, ``[broker] retired_keys``, only up to
the entry the registry gives it); a checkpoint beyond the last entry means entries were
removed from the end. A chain starting above 1 is accepted only after a signed ``prune``
checkpoint for exactly that start. Entries after the last checkpoint are reported as
``unsigned_tail``: a chain proves them ordered, but only a checkpoint proves none was cut.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Final, NamedTuple

import msgspec

from schemas.accesslog import CHECKPOINT_TYP, AccessEntry, Checkpoint
from schemas.errors import JoseError
from schemas.jose import Header, PublicKey, unknown_key, verify
from schemas.registry import RetiredKey

from .chain import GENESIS, link, time_text
from .config import AccessLogConfig
from .ports import EntryRow, LogSnapshot
from .stores import store_for

__all__ = ["VerifyReport", "verify_log"]

_CHUNK: Final = 5000
_checkpoint_decoder: Final = msgspec.json.Decoder(Checkpoint)
_entry_decoder: Final = msgspec.json.Decoder(AccessEntry)


@dataclass(frozen=True, kw_only=True)
class VerifyReport:
    """What :func:`verify_log` found; ``problem`` and ``bad_seq`` say where it breaks."""

    intact: bool
    entries: int
    checkpoints: int
    first_seq: int | None
    last_seq: int | None
    unsigned_tail: int
    """Entries after the last checkpoint: chained, not yet signed."""
    problem: str | None = None
    bad_seq: int | None = None
    signed_to: Mapping[str, int] = field(default_factory=dict)
    """kid → the last entry a valid checkpoint signed with that key vouches for: what a
    key's ``last_seq`` is when it is retired."""


async def verify_log(config: AccessLogConfig, *, broker_keys: Mapping[str, PublicKey],
                     retired_keys: Mapping[str, RetiredKey] | None = None) -> VerifyReport:
    """Walk the whole log; raises :class:`AccessLogError` when it cannot be read."""
    store = store_for(config)
    await store.open(create=False)
    try:
        async with store.snapshot() as snapshot:
            return await _verify(snapshot, broker_keys, retired_keys or {})
    finally:
        await store.close()


def _span(first: int, last: int) -> str:
    return f"entry {first}" if first == last else f"entries {first}..{last}"


class _Problem(NamedTuple):
    seq: int
    text: str


def _were(first: int, last: int) -> str:
    return f"entry {first} was" if first == last else f"entries {first}..{last} were"


def _column_problem(row: EntryRow) -> str | None:
    try:
        entry = _entry_decoder.decode(row.body)
    except msgspec.DecodeError as exc:
        return f"entry {row.seq} is not an access entry: {exc}"
    if (row.subject != entry.subject or row.day != entry.time.date().isoformat()
            or row.time != time_text(entry.time)):
        return (f"entry {row.seq}: its subject or time columns differ from its content "
                "(extract and prune would be misled)")
    return None


async def _verify(snapshot: LogSnapshot, keys: Mapping[str, PublicKey],
                  retired: Mapping[str, RetiredKey]) -> VerifyReport:
    def key_for(header: Header) -> PublicKey:
        if header.kid in keys:
            return keys[header.kid]
        if header.kid in retired:
            return retired[header.kid].key
        raise unknown_key(header.kid, "the broker")

    problems: list[_Problem] = []
    rows = await snapshot.checkpoints()
    signed: list[Checkpoint] = []
    signer: dict[Checkpoint, str] = {}  # → the kid it is signed with
    for cp_row in rows:
        try:
            header, payload = verify(cp_row.token, key_for, typ=CHECKPOINT_TYP)
            cp = _checkpoint_decoder.decode(payload)
        except (JoseError, msgspec.DecodeError) as exc:
            problems.append(_Problem(cp_row.seq, f"the checkpoint at entry {cp_row.seq} is not signed "
                                         f"by the broker ({exc})"))
            continue
        old = retired.get(header.kid)
        if old is not None and cp.seq > old.last_seq:
            problems.append(_Problem(cp.seq, f"the checkpoint at entry {cp.seq} is signed with the "
                                     f"retired key {header.kid!r}, which vouches only up to entry "
                                     f"{old.last_seq}"))
            continue
        signed.append(cp)
        signer[cp] = header.kid
    signed.sort(key=lambda cp: cp.seq)
    prunes = [cp for cp in signed if cp.reason == "prune"]
    wanted = {cp.seq for cp in signed}
    hash_at: dict[int, str] = {}

    count, first, last = 0, 0, 0
    start_hash, prev_hash = GENESIS, GENESIS
    broken: _Problem | None = None
    after = 0
    while batch := await snapshot.entries(after, _CHUNK):
        after = batch[-1].seq
        for row in batch:
            count += 1
            if broken is not None:  # only counting now
                last = row.seq
                continue
            if first == 0:
                first = row.seq
                if row.seq > 1:
                    if not any(cp.seq == row.seq - 1 and cp.first_seq == row.seq
                               and cp.head_hash == row.prev_hash for cp in prunes):
                        gone = max((cp.seq for cp in prunes if cp.seq < row.seq - 1),
                                   default=0) + 1
                        broken = _Problem(gone, f"{_were(gone, row.seq - 1)} removed from the start: "
                                        "no signed prune checkpoint marks entry "
                                        f"{row.seq} as the first kept")
                        last = row.seq
                        continue
                    start_hash = row.prev_hash
                expected = start_hash
            elif row.seq != last + 1:
                broken = _Problem(last + 1, f"{_were(last + 1, row.seq - 1)} removed from the log")
                last = row.seq
                continue
            else:
                expected = prev_hash
            try:
                recomputed = link(row.prev_hash, row.body)
            except ValueError:
                recomputed = ""
            if recomputed != row.hash:
                broken = _Problem(row.seq, f"entry {row.seq} was changed or moved: its content does not "
                                   "match its hash")
            elif row.prev_hash != expected:
                broken = _Problem(row.seq, f"entry {row.seq} does not follow entry {row.seq - 1}: an "
                                   "entry was removed or the order changed")
            elif (column := _column_problem(row)) is not None:
                broken = _Problem(row.seq, column)
            last, prev_hash = row.seq, row.hash
            if row.seq in wanted:
                hash_at[row.seq] = row.hash

    if count == 0:  # empty, perhaps emptied by a prune
        starts = [cp for cp in prunes if cp.first_seq == cp.seq + 1]
        floor = starts[-1].seq if starts else 0
        start_hash = starts[-1].head_hash if starts else GENESIS
        end = floor
    else:
        floor, end = first - 1, last
    checked_to = broken.seq - 1 if broken else end
    good: list[int] = []
    signed_to: dict[str, int] = {}
    for cp in signed:
        if cp.seq < floor:
            continue  # before the kept part: its signature was checked, nothing else can be
        if cp.seq > end:
            if broken is None:
                problems.append(_Problem(end + 1, f"{_were(end + 1, cp.seq)} removed from the end: a "
                                          f"checkpoint of {cp.time:%Y-%m-%d %H:%M:%S} signed the "
                                          f"log up to entry {cp.seq}, it now ends at {end}"))
            continue
        if cp.seq > checked_to:
            continue
        stored = start_hash if cp.seq == floor else hash_at.get(cp.seq)
        if cp.head_hash == stored:
            good.append(cp.seq)
            kid = signer[cp]
            signed_to[kid] = max(signed_to.get(kid, 0), cp.seq)
        else:
            since = max(good, default=floor) + 1
            problems.append(_Problem(since, f"the checkpoint at entry {cp.seq} does not match the log: "
                                    f"it was rewritten in {_span(since, cp.seq)}"))

    if broken is not None:
        problems.insert(0, broken)
    last_signed = max((cp.seq for cp in signed if cp.seq <= end), default=floor)
    report = VerifyReport(
        intact=not problems, entries=count, checkpoints=len(rows),
        first_seq=first or None, last_seq=last or None,
        unsigned_tail=max(0, end - last_signed), signed_to=signed_to,
    )
    if problems:
        first_problem = min(problems, key=lambda p: p.seq)
        return replace(report, intact=False, problem=first_problem.text,
                       bad_seq=first_problem.seq)
    return report
