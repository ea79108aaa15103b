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

The entries are also the leaves of an RFC 9162 Merkle tree (pruned entries keep their
leaves). Every stored checkpoint with a ``root`` must be the root of the tree of its size.
Checkpoints held by witnesses (the producer adapters, :class:`Witnessed`) are what catches
truncation and rollback, which the database alone cannot show: each must be signed by the
broker and the log as it is now must extend it (an RFC 9162 consistency proof from its size
to the log's). A witnessed checkpoint larger than the log names the entries missing from
the end; one the log does not extend names the range in which entries were changed, removed
or reordered (after the last checkpoint the log still matches).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final, NamedTuple

import msgspec

from schemas.accesslog import CHECKPOINT_TYP, AccessEntry, Checkpoint
from schemas.errors import JoseError
from schemas.jose import Header, PublicKey, unknown_key, verify
from schemas.merkle import Leaves, ProofError, consistency_proof, leaf_hash, verify_consistency
from schemas.registry import RetiredKey

from .chain import GENESIS, link, time_text
from .config import AccessLogConfig
from .errors import AccessLogError
from .ports import EntryRow, LogSnapshot
from .stores import store_for

__all__ = ["VerifyReport", "Witnessed", "verify_log"]


@dataclass(frozen=True, kw_only=True)
class Witnessed:
    """A checkpoint a witness kept: who holds it (for messages) and its token."""

    witness: str
    token: str

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
    witnessed: int = 0
    """Witnessed checkpoints the log was proven consistent with."""
    witnesses: int = 0
    """Distinct witnesses among them."""
    witnessed_to: int = 0
    """The largest witnessed tree size the log extends."""


async def verify_log(config: AccessLogConfig, *, broker_keys: Mapping[str, PublicKey],
                     retired_keys: Mapping[str, RetiredKey] | None = None,
                     witnessed: Sequence[Witnessed] = (),
                     instance: str | None = None) -> VerifyReport:
    """Walk the whole log and check it against the ``witnessed`` checkpoints (only those
    signed by ``instance`` when given: a SQLite log is one instance's); raises
    :class:`AccessLogError` when it cannot be read."""
    store = store_for(config)
    await store.open(create=False)
    try:
        async with store.snapshot() as snapshot:
            return await _verify(snapshot, broker_keys, retired_keys or {}, witnessed, instance)
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
                  retired: Mapping[str, RetiredKey], witnessed: Sequence[Witnessed] = (),
                  instance: str | None = None) -> VerifyReport:
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
            problems.append(_Problem(cp_row.seq, f"the checkpoint at entry {cp_row.seq} is not "
                                         f"signed by the broker ({exc})"))
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
    leaves = Leaves()
    leaves_whole = True  # False after a gap: the tree past it is unknown
    while batch := await snapshot.entries(after, _CHUNK):
        after = batch[-1].seq
        for row in batch:
            count += 1
            if leaves_whole:
                if count == 1 and row.seq > 1:
                    try:  # the leaves of pruned entries
                        leaves = await snapshot.leaves(0, row.seq - 1)
                    except AccessLogError:
                        leaves_whole = False
                if leaves_whole and row.seq == len(leaves) + 1:
                    leaves.append(leaf_hash(row.body))
                else:
                    leaves_whole = False
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
                        broken = _Problem(gone, f"{_were(gone, row.seq - 1)} removed from the "
                                        "start: no signed prune checkpoint marks entry "
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
                broken = _Problem(row.seq, f"entry {row.seq} was changed or moved: its content "
                                   "does not match its hash")
            elif row.prev_hash != expected:
                broken = _Problem(row.seq, f"entry {row.seq} does not follow entry {row.seq - 1}: "
                                   "an entry was removed or the order changed")
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
        try:
            leaves = await snapshot.leaves(0, end)
        except AccessLogError:
            leaves_whole = False
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
                problems.append(_Problem(end + 1, f"{_were(end + 1, cp.seq)} removed from the end: "
                                          f"a checkpoint of {cp.time:%Y-%m-%d %H:%M:%S} signed the "
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
            problems.append(_Problem(since, f"the checkpoint at entry {cp.seq} does not match the "
                                    f"log: it was rewritten in {_span(since, cp.seq)}"))

    # The Merkle tree: stored roots, then the witnesses' checkpoints.
    size = len(leaves) if leaves_whole else None
    roots: dict[int, bytes] = {}

    def root_at(n: int) -> bytes:
        if n not in roots:
            roots[n] = leaves.mth(0, n)
        return roots[n]

    matching: set[int] = {0}  # sizes at which a signed root matches the log
    for cp in signed:
        if cp.root is None or cp.seq < floor or size is None or cp.seq > checked_to:
            continue  # (past a broken entry the walk has named it already)
        if root_at(cp.seq).hex() == cp.root:
            matching.add(cp.seq)
        else:
            problems.append(_Problem(max(m for m in matching if m < cp.seq) + 1,
                                     f"the checkpoint at entry {cp.seq} does not match the "
                                     "log's Merkle tree"))
    heads: list[tuple[Witnessed, Checkpoint]] = []
    for w in witnessed:
        try:
            _, payload = verify(w.token, key_for, typ=CHECKPOINT_TYP)
            cp = _checkpoint_decoder.decode(payload)
        except (JoseError, msgspec.DecodeError) as exc:
            problems.append(_Problem(1, f"{w.witness} holds a checkpoint not signed by the "
                                        f"broker ({exc})"))
            continue
        if instance is not None and cp.instance != instance:
            continue
        if cp.root is not None and cp.seq > 0:
            heads.append((w, cp))
    proven: list[tuple[Witnessed, Checkpoint]] = []
    for w, cp in heads:
        assert cp.root is not None
        if size is None:
            problems.append(_Problem(len(leaves) + 1, "the log has a gap: it cannot be checked "
                                     f"against the checkpoint {w.witness} witnessed"))
            continue
        when = f"{cp.time:%Y-%m-%d %H:%M:%S} UTC"
        if cp.seq > size:
            problems.append(_Problem(size + 1, f"{_were(size + 1, cp.seq)} removed from the end "
                                     f"or rolled back: {w.witness} witnessed a checkpoint of "
                                     f"{cp.seq} entries signed {when} by broker instance "
                                     f"{cp.instance!r}; the log now has {size}"))
            continue
        try:
            verify_consistency(cp.seq, size, bytes.fromhex(cp.root), root_at(size),
                               consistency_proof(leaves, cp.seq, size))
        except (ProofError, ValueError):
            if broken is not None and broken.seq <= cp.seq:
                continue  # the walk named the first broken entry already
            since = max(m for m in matching if m < cp.seq) + 1
            problems.append(_Problem(since, f"the log does not extend the checkpoint of "
                                     f"{cp.seq} entries {w.witness} witnessed ({when}): "
                                     f"{_were(since, cp.seq)} changed, removed or "
                                     "reordered"))
            continue
        matching.add(cp.seq)
        proven.append((w, cp))

    if broken is not None:
        problems.insert(0, broken)
    last_signed = max((cp.seq for cp in signed if cp.seq <= end), default=floor)
    report = VerifyReport(
        intact=not problems, entries=count, checkpoints=len(rows),
        first_seq=first or None, last_seq=last or None,
        unsigned_tail=max(0, end - last_signed), signed_to=signed_to,
        witnessed=len(proven), witnesses=len({w.witness for w, _ in proven}),
        witnessed_to=max((cp.seq for _, cp in proven), default=0),
    )
    if problems:
        first_problem = min(problems, key=lambda p: p.seq)
        return replace(report, intact=False, problem=first_problem.text,
                       bad_seq=first_problem.seq)
    return report
