"""The adapter as a witness of the broker's access log (SPEC sections 4 and 7).

Each broker instance publishes its signed checkpoints (tree size and Merkle root of its
access log) retained on ``{prefix}/checkpoint/{instance}``. The adapter checks each one's
signature against the broker's keys in the registry (retired keys too, up to the entry the
registry gives them) and keeps the latest of each instance in a file (default
``witness.json`` beside its config), written atomically. ``samsvar log verify`` reads these
files: a log that no longer extends a witnessed checkpoint was cut short, rolled back or
rewritten.

A checkpoint of fewer entries than the one kept for its instance is refused and logged as an
error (``checkpoint_rollback``): the broker's log went back. So is one of the same size with
another root (``checkpoint_fork``). Neither replaces what the witness holds.

File format::

    {"checkpoints": {"<instance>": {"token": "<compact JWS>", "seq": 12, "root": "<hex>",
                                    "time": "...", "witnessed": "..."}}}

Only ``token`` is trusted when reading it back; the other members are for people.
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

from schemas.accesslog import CHECKPOINT_TYP, Checkpoint
from schemas.errors import HOSTILE_DECODE_ERRORS, JoseError
from schemas.jose import Header, PublicKey, unknown_key, verify
from schemas.registry import Registry

from .errors import AdapterError

__all__ = ["DEFAULT_WITNESS_FILE", "Witness", "WitnessError", "read_witness_file"]

DEFAULT_WITNESS_FILE: Final = "witness.json"
_checkpoint_decoder: Final = msgspec.json.Decoder(Checkpoint)


class WitnessError(AdapterError):
    """The witness file cannot be read or written."""


def read_witness_file(path: Path) -> dict[str, str]:
    """instance → the token of the checkpoint kept for it; ``{}`` when there is no file."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise WitnessError(f"{path}: cannot read the witnessed checkpoints: {exc}") from exc
    held = doc.get("checkpoints") if isinstance(doc, dict) else None
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
        for instance, token in read_witness_file(path).items():
            cp = self._check(token)
            if cp is None or cp.instance != instance:
                raise WitnessError(f"{path}: the checkpoint kept for {instance!r} is not one "
                                   "the broker signed")
            self.latest[instance], self._tokens[instance] = cp, token

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
        """Check a checkpoint published on ``instance``'s topic; keep it if it is newer.
        Returns whether it was kept. Never raises on bad input."""
        if not payload:
            return False  # a cleared retained message
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
                return False
            if cp.seq == held.seq:
                if cp.root != held.root:
                    self.refused += 1
                    self._log.error("checkpoint_fork", instance=instance, seq=cp.seq,
                                    message="two different roots for one size of the broker's "
                                            "access log; kept the first")
                return False
        self.latest[instance], self._tokens[instance] = cp, token
        self._save()
        return True

    def _save(self) -> None:
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        doc = {"checkpoints": {
            instance: {"token": self._tokens[instance], "seq": cp.seq, "root": cp.root,
                       "time": cp.time.isoformat(), "witnessed": now}
            for instance, cp in sorted(self.latest.items())}}
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
