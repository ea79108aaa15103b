"""The person's extract (SPEC section 7): every access to one subject in a period."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Final

import msgspec

from schemas.accesslog import AccessEntry
from schemas.messages import Period

from .config import AccessLogConfig
from .errors import AccessLogError
from .ports import LogStore
from .stores import store_for

__all__ = ["collapse_streams", "decode_entries", "extract_log", "period_bounds"]

_entry_decoder: Final = msgspec.json.Decoder(AccessEntry)


def period_bounds(period: Period | None) -> tuple[dt.date | None, dt.date | None]:
    """The first and last day of ``period`` (inclusive); ``None`` leaves a side open."""
    return (period.from_, period.to) if period is not None else (None, None)


def decode_entries(bodies: Sequence[bytes]) -> list[AccessEntry]:
    """Stored bodies back to entries; :class:`AccessLogError` if one is not an entry."""
    try:
        return [_entry_decoder.decode(body) for body in bodies]
    except msgspec.DecodeError as exc:
        raise AccessLogError(f"a stored entry cannot be read: {exc}") from exc


def collapse_streams(entries: Sequence[AccessEntry]) -> list[AccessEntry]:
    """The person's view: a streamed answer's ``opened`` entry is left out when its
    ``answered`` entry is there too (that one says everything, counts included). An
    ``opened`` entry alone stays: the stream broke, and the access still happened."""
    completed = {e.query_id for e in entries if e.outcome != "opened"}
    return [e for e in entries if e.outcome != "opened" or e.query_id not in completed]


async def extract_log(config: AccessLogConfig, *, subject: str,
                      period: Period | None) -> list[AccessEntry]:
    """Read the extract from a log no broker here has open (``samsvar log extract``)."""
    store: LogStore = store_for(config)
    await store.open(create=False)
    try:
        entries = decode_entries(await store.extract(subject, *period_bounds(period)))
        return collapse_streams(entries)
    finally:
        await store.close()
