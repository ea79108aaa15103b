"""Removing old entries without breaking the chain's proof.

Only a prefix goes: the entries before the first one dated at or after ``before``. In the
same transaction a signed ``prune`` checkpoint records the new start (its ``seq`` is the
last removed entry, its ``head_hash`` that entry's hash, its ``first_seq`` the first
kept), which is what lets :func:`verify_log` accept a chain not starting at 1. That
checkpoint is the record of the prune; nothing is logged.
"""

from __future__ import annotations

import datetime as dt

from schemas.jose import PrivateKey

from .chain import seal
from .config import AccessLogConfig
from .stores import store_for

__all__ = ["prune"]

async def prune(config: AccessLogConfig, *, key: PrivateKey, instance: str,
                before: dt.datetime) -> int:
    """Delete the entries older than ``before`` (a prefix of the chain); return how many."""
    store = store_for(config)
    await store.open(create=False)
    try:
        return await store.prune(
            before, lambda head: seal(head, key=key, instance=instance, reason="prune"))
    finally:
        await store.close()
