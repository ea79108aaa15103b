"""Checking the person's log extract (SPEC section 7): every access shown is provably in
the broker's access log.

The broker answers ``POST /v1/access-log/extract`` with the accesses, the signed tree head
(``checkpoint``) they are proven against, and for each stored entry its RFC 9162 inclusion
proof. :func:`verify_extract` checks the head's signature with the broker's keys (from the
federation registry; retired keys too), each proof against the head's root, that every
proven entry is about the person, and that every access shown is one of the proven entries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import msgspec

from schemas.accesslog import CHECKPOINT_TYP, AccessEntry, Checkpoint, ExtractResponse
from schemas.errors import JoseError
from schemas.jose import Header, PublicKey, unknown_key, verify
from schemas.merkle import ProofError, leaf_hash, verify_inclusion
from schemas.registry import RetiredKey

from .errors import ExtractNotProven

__all__ = ["verify_extract"]

_checkpoint_decoder: Final = msgspec.json.Decoder(Checkpoint)
_entry_decoder: Final = msgspec.json.Decoder(AccessEntry)


def verify_extract(response: ExtractResponse, *, broker_keys: Mapping[str, PublicKey],
                   retired_keys: Mapping[str, RetiredKey] | None = None) -> Checkpoint:
    """Return the signed head every access is proven against; raise
    :class:`ExtractNotProven` naming what does not hold. ``broker_keys`` and
    ``retired_keys`` are the registry's ``[broker]`` ones (a retired key counts only up to
    its ``last_seq``)."""
    retired = retired_keys or {}

    def key_for(header: Header) -> PublicKey:
        if header.kid in broker_keys:
            return broker_keys[header.kid]
        if header.kid in retired:
            return retired[header.kid].key
        raise unknown_key(header.kid, "the broker")

    if response.checkpoint is None:
        raise ExtractNotProven("the extract carries no signed checkpoint")
    try:
        header, payload = verify(response.checkpoint, key_for, typ=CHECKPOINT_TYP)
        head = _checkpoint_decoder.decode(payload)
    except (JoseError, msgspec.DecodeError) as exc:
        raise ExtractNotProven(f"the extract's checkpoint is not signed by the broker: "
                               f"{exc}") from exc
    if head.root is None:
        raise ExtractNotProven("the extract's checkpoint has no Merkle root")
    old = retired.get(header.kid) if header.kid not in broker_keys else None
    if old is not None and head.seq > old.last_seq:
        raise ExtractNotProven(f"the extract's checkpoint is signed with the retired key "
                               f"{header.kid!r}, which vouches only up to entry {old.last_seq}")
    root = bytes.fromhex(head.root)
    proven: list[AccessEntry] = []
    for proof in response.proofs:
        try:
            path = [bytes.fromhex(h) for h in proof.path]
            verify_inclusion(proof.seq - 1, head.seq, leaf_hash(proof.entry.encode("utf-8")),
                             path, root)
            entry = _entry_decoder.decode(proof.entry)
        except (ProofError, ValueError, msgspec.DecodeError) as exc:
            raise ExtractNotProven(f"entry {proof.seq} is not proven to be in the log of "
                                   f"{head.seq} entries: {exc}") from exc
        if entry.subject != response.subject:
            raise ExtractNotProven(f"entry {proof.seq} is about someone else")
        proven.append(entry)
    for access in response.accesses:
        if access not in proven:
            raise ExtractNotProven(f"the access of {access.time:%Y-%m-%d %H:%M} (query "
                                   f"{access.query_id}) has no inclusion proof")
    return head
