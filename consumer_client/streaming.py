"""Reading a streamed answer (``application/x-ndjson``) and putting it back together.

The broker sends one :class:`~schemas.messages.SourceLine` per source as it answers,
then one :class:`~schemas.messages.SummaryLine`. :func:`assemble_answer` turns them into
the very :class:`~schemas.messages.Answer` the broker would have returned as JSON:
records of the sources in the summary's order, newest first (a stable sort, as the
broker's).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Final

from schemas.messages import NDJSON_MEDIA_TYPE, Answer, SourceLine, SummaryLine
from schemas.records import Record

from .errors import BadResponse

__all__ = ["MAX_LINE_BYTES", "assemble_answer", "split_lines"]

MAX_LINE_BYTES: Final = 256 * 1024 * 1024
"""A longer line is refused: nothing the broker sends comes near it."""


async def split_lines(chunks: AsyncIterable[bytes], *,
                      max_line: int = MAX_LINE_BYTES) -> AsyncIterator[bytes]:
    """The non-empty lines of a ``200`` answer stream, however it is cut into chunks.

    Raises :class:`BadResponse` for a line longer than ``max_line``.
    """
    buffer = bytearray()
    searched = 0
    async for chunk in chunks:
        buffer += chunk
        while (end := buffer.find(b"\n", searched)) >= 0:
            line = bytes(buffer[:end])
            del buffer[:end + 1]
            searched = 0
            if line.strip():
                yield line
        searched = len(buffer)
        if len(buffer) > max_line:
            raise BadResponse(f"a line of the answer stream exceeds {max_line} bytes",
                              status=200, content_type=NDJSON_MEDIA_TYPE)
    if bytes(buffer).strip():
        yield bytes(buffer)


def _time_key(record: Record) -> float:
    return record.time.timestamp()


def assemble_answer(lines: Iterable[SourceLine | SummaryLine]) -> Answer:
    """The :class:`Answer` a streamed answer's lines make up; ``ValueError`` if they are
    not a whole answer (no summary, or a source's records missing)."""
    records_of: dict[str, list[Record]] = {}
    summary: SummaryLine | None = None
    for line in lines:
        match line:
            case SourceLine():
                records_of[line.source.producer] = line.records
            case SummaryLine():
                summary = line
    if summary is None:
        raise ValueError("the stream has no summary line")
    records: list[Record] = []
    for source in summary.sources:
        got = records_of.get(source.producer, [])
        if len(got) != source.records:
            raise ValueError(f"source {source.producer!r}: the summary says {source.records} "
                             f"records, its line had {len(got)}")
        records.extend(got)
    records.sort(key=_time_key, reverse=True)
    return Answer(
        query_id=summary.query_id, subject=summary.subject, complete=summary.complete,
        blocked_information_exists=summary.blocked_information_exists,
        sources=summary.sources, records=records, blocked_at=summary.blocked_at,
    )
