"""The adapter as a witness of the broker's access log (SPEC sections 4 and 7).

Each broker instance publishes its signed checkpoints (tree size and Merkle root of its
access log) retained on ``{prefix}/checkpoint/{instance}``. The adapter checks each one's
signature against the broker's keys in the registry (retired keys too, up to the entry the
registry gives them) and keeps the latest of each instance in a file (default
``witness.json`` beside its config), written atomically. ``samsvar log verify`` reads these
files: a log that no longer extends a witnessed checkpoint was cut short, rolled back or
rewritten.

Each message (:class:`~schemas.accesslog.CheckpointMessage`) carries RFC 9162 consistency
proofs to its checkpoint from earlier sizes. A larger checkpoint replaces the one held only
when the proof from the held size checks out; with no proof from it (a message missed) the
held one is kept too, as ``unlinked`` evidence. A checkpoint of fewer entries than the one
held is refused and logged as an error (``checkpoint_rollback``): the broker's log went
back. So are one of the same size with another root, and a larger one whose proof fails
(``checkpoint_fork``): a rewritten history. None of them replaces what the witness holds,
and the checkpoint held at that moment is kept for good as ``evidence``: ``samsvar log
verify`` checks every one, so a log put back or rewritten fails even after it grew past
the witnessed size. (An operator who has accounted for it moves the file aside.)

File format::

    {"checkpoints": {"<instance>": {"token": "<compact JWS>", "seq": 12, "root": "<hex>",
                                    "time": "...", "witnessed": "..."}},
     "evidence": [{"instance": "...", "token": "<the held JWS>", "refused": "<the JWS
                   refused>", "why": "checkpoint_rollback", "at": "..."}]}

Only the tokens are trusted when reading it back; the other members are for people.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import msgspec
import structlog

from schemas.accesslog import CHECKPOINT_TYP, Checkpoint, CheckpointMessage
from schemas.errors import HOSTILE_DECODE_ERRORS, JoseError
from schemas.jose import Header, PublicKey, unknown_key, verify
from schemas.merkle import ProofError, verify_consistency
from schemas.registry import Registry

from .errors import AdapterError

__all__ = ["DEFAULT_WITNESS_FILE", "Witness", "WitnessError", "read_witness_file",
           "read_witnessed"]

DEFAULT_WITNESS_FILE: Final = "witness.json"
_checkpoint_decoder: Final = msgspec.json.Decoder(Checkpoint)
_message_decoder: Final = msgspec.json.Decoder(CheckpointMessage)


class WitnessError(AdapterError):
    """The witness file cannot be read or written."""


def _read(path: Path) -> dict[str, object]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"checkpoints": {}}
    except (OSError, ValueError) as exc:
        raise WitnessError(f"{path}: cannot read the witnessed checkpoints: {exc}") from exc
    if not isinstance(doc, dict):
        raise WitnessError(f"{path}: not a witness file (no \"checkpoints\" object)")
    return doc


def _evidence(path: Path, doc: Mapping[str, object]) -> list[dict[str, str]]:
    items = doc.get("evidence", [])
    if not isinstance(items, list) or not all(
            isinstance(i, dict) and isinstance(i.get("token"), str)
            and isinstance(i.get("instance"), str) for i in items):
        raise WitnessError(f"{path}: its \"evidence\" is damaged")
    return items


def read_witnessed(path: Path) -> list[str]:
    """Every checkpoint token the file holds: the latest of each instance and the evidence
    of rollbacks and forks (what ``samsvar log verify`` checks)."""
    doc = _read(path)
    return [*read_witness_file(path).values(), *(i["token"] for i in _evidence(path, doc))]


def read_witness_file(path: Path) -> dict[str, str]:
    """instance → the token of the checkpoint kept for it; ``{}`` when there is no file."""
    doc = _read(path)
    held = doc.get("checkpoints")
    if not isinstance(held, dict):
        raise WitnessError(f"{path}: not a witness file (no \"checkpoints\" object)")
    out: dict[str, str] = {}
    for instance, item in held.items():
        token = item.get("token") if isinstance(item, dict) else None
        if not isinstance(token, str):
            raise WitnessError(f"{path}: the checkpoint of {instance!r} has no token")
        out[str(instance)] = token
    return out


class Witness:
    """Keeps the latest valid checkpoint of each broker instance, in ``path``."""

    def __init__(self, path: Path, registry: Registry, *, producer: str) -> None:
        self.path = path
        self._registry = registry
        self._log = structlog.get_logger("samsvar.adapter").bind(producer=producer)
        self.latest: dict[str, Checkpoint] = {}
        self._tokens: dict[str, str] = {}
        self.refused = 0
        """Checkpoints refused (bad signature, rollback, fork) since start."""
        self.evidence: list[dict[str, str]] = _evidence(path, _read(path))
        """The checkpoints held when a rollback or a fork was refused, kept for good."""
        unverifiable = False
        for instance, token in read_witness_file(path).items():
            cp = self._check(token)
            if cp is None or cp.instance != instance:
                # Changed behind our back, or signed with a broker key since removed from
                # the registry: not trusted, but kept, so that verify shows it.
                self._log.error("witness_checkpoint_unverifiable", instance=instance,
                                path=str(path))
                self.evidence.append({"instance": instance, "token": token,
                                      "why": "unverifiable",
                                      "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")})
                unverifiable = True
                continue
            self.latest[instance], self._tokens[instance] = cp, token
        if unverifiable:
            self._save()

    def _key_for(self, header: Header) -> PublicKey:
        broker = self._registry.broker
        if header.kid in broker.keys:
            return broker.keys[header.kid]
        if header.kid in broker.retired_keys:
            return broker.retired_keys[header.kid].key
        raise unknown_key(header.kid, "the broker")

    def _check(self, token: str) -> Checkpoint | None:
        try:
            header, payload = verify(token, self._key_for, typ=CHECKPOINT_TYP)
            cp = _checkpoint_decoder.decode(payload)
        except (JoseError, *HOSTILE_DECODE_ERRORS) as exc:
            self._log.warning("checkpoint_refused", reason="bad-signature",
                              error=str(exc)[:200])
            return None
        retired = self._registry.broker.retired_keys.get(header.kid)
        if retired is not None and cp.seq > retired.last_seq:
            self._log.warning("checkpoint_refused", reason="retired-key", kid=header.kid,
                              seq=cp.seq)
            return None
        return cp

    def offer(self, instance: str, payload: bytes) -> bool:
        """Check a message published on ``instance``'s checkpoint topic (a
        :class:`CheckpointMessage`, or a bare checkpoint token); keep its checkpoint if it
        is newer. Returns whether it was kept. Never raises on bad input."""
        if not payload:
            return False  # a cleared retained message
        proofs: dict[int, list[str]] = {}
        if payload[:1] == b"{":
            try:
                message = _message_decoder.decode(payload)
            except HOSTILE_DECODE_ERRORS:
                message = CheckpointMessage(checkpoint="")
            token = message.checkpoint
            proofs = {p.from_size: p.path for p in message.consistency}
        else:
            try:
                token = payload.decode("ascii")
            except UnicodeDecodeError:
                token = ""
        cp = self._check(token)
        if cp is None or cp.root is None:
            self.refused += 1
            return False
        if cp.instance != instance:
            self.refused += 1
            self._log.warning("checkpoint_refused", reason="wrong-instance", topic=instance,
                              instance=cp.instance)
            return False
        held = self.latest.get(instance)
        if held is not None:
            if cp.seq < held.seq:
                self.refused += 1
                self._log.error("checkpoint_rollback", instance=instance, held=held.seq,
                                offered=cp.seq,
                                message="the broker's access log went back: a checkpoint of "
                                        f"{cp.seq} entries after one of {held.seq}; kept the "
                                        "larger one")
                self._keep_evidence(instance, token, "checkpoint_rollback")
                return False
            if cp.seq == held.seq:
                if cp.root != held.root:
                    self.refused += 1
                    self._log.error("checkpoint_fork", instance=instance, seq=cp.seq,
                                    message="two different roots for one size of the broker's "
                                            "access log; kept the first")
                    self._keep_evidence(instance, token, "checkpoint_fork")
                return False
            path = proofs.get(held.seq)
            if path is None:
                # Nothing proves the new head extends the held one (a message missed while
                # disconnected, a broker restarted): keep the held one too, for verify.
                self._log.info("checkpoint_unlinked", instance=instance, held=held.seq,
                               offered=cp.seq)
                self._keep_evidence(instance, token, "unlinked")
            else:
                assert held.root is not None
                try:
                    verify_consistency(held.seq, cp.seq, bytes.fromhex(held.root),
                                       bytes.fromhex(cp.root), [bytes.fromhex(h) for h in path])
                except (ProofError, ValueError) as exc:
                    self.refused += 1
                    self._log.error("checkpoint_fork", instance=instance, held=held.seq,
                                    offered=cp.seq, error=str(exc),
                                    message="the broker's new checkpoint does not extend the "
                                            "one held: its access log was rewritten; kept the "
                                            "held one")
                    self._keep_evidence(instance, token, "checkpoint_inconsistent")
                    return False
        self.latest[instance], self._tokens[instance] = cp, token
        self._save()
        return True

    _MAX_EVIDENCE: Final = 1000
    """Evidence of rollbacks and forks kept at most (one per head held, so few)."""
    _MAX_UNLINKED: Final = 64
    """Heads kept because a newer one came unproven (after an outage): the oldest go first."""

    def _keep_evidence(self, instance: str, refused: str, why: str) -> None:
        """Keep the head held for ``instance`` for good (``refused`` is the token that made
        it evidence, for people)."""
        token = self._tokens[instance]
        if any(e["token"] == token for e in self.evidence):
            return  # one piece of evidence per held checkpoint is enough
        if why == "unlinked":
            unlinked = [i for i, e in enumerate(self.evidence) if e.get("why") == "unlinked"]
            if len(unlinked) >= self._MAX_UNLINKED:
                del self.evidence[unlinked[0]]  # the oldest goes: the file stays small
        elif len(self.evidence) >= self._MAX_EVIDENCE:
            self._log.warning("witness_evidence_full", kept=len(self.evidence))
            return
        self.evidence.append({"instance": instance, "token": token, "refused": refused,
                              "why": why,
                              "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")})
        self._save()

    def _save(self) -> None:
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        doc: dict[str, object] = {"checkpoints": {
            instance: {"token": self._tokens[instance], "seq": cp.seq, "root": cp.root,
                       "time": cp.time.isoformat(), "witnessed": now}
            for instance, cp in sorted(self.latest.items())}}
        if self.evidence:
            doc["evidence"] = self.evidence
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".witness-", suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump(doc, f, indent=2)
                    f.write("\n")
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            self._log.error("witness_not_saved", path=str(self.path), error=str(exc))

    def tokens(self) -> Mapping[str, str]:
        """instance → the kept checkpoint's token."""
        return dict(self._tokens)
