"""Every log line of a query carries its query id, on the broker and on the adapters.

The broker names ``query_id`` in each line of an authenticated query (binding it in a
context variable would hold ~120 B more per query in flight) and binds it with
``structlog.contextvars`` for a refused one, in the request's own task (aiohttp gives each
request one), so it ends with the request; the adapters bind it to each question's
logger. No line carries content: no record text, no
person, no employee's name.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog
from structlog.testing import capture_logs
from structlog.typing import EventDict

from tests.e2e.conftest import (
    PERSON,
    USER,
    Federation,
    ProducerSpec,
    record,
)

SECRET = "Xylofonterapi-4411"


@contextmanager
def captured() -> Iterator[list[EventDict]]:
    """Capture as production does: with the context variables merged into each line."""
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        yield logs


def assert_no_content(lines: list[EventDict]) -> None:
    text = repr(lines)
    for secret in (SECRET, PERSON, USER.name):
        assert secret not in text, f"{secret!r} was logged"


async def test_every_line_of_one_query_carries_its_query_id(federation_factory: Any) -> None:
    fed: Federation = await federation_factory([
        ProducerSpec("P1", records={PERSON: [
            record("P1", 1, when="2026-11-01T10:00:00+01:00", text=SECRET)]}),
        ProducerSpec("P2"),
    ])
    await fed.start_broker()
    for pid in fed.producers:
        await fed.start_adapter(pid)
        await fed.wait_presence(pid)

    with captured() as lines:
        answer = await fed.ask()
    assert answer["records"][0]["drug"] == SECRET
    query_id = answer["query_id"]
    events = {line["event"] for line in lines}
    assert {"query_fanout", "query_answered", "question answered"} <= events
    assert [line for line in lines if line.get("query_id") != query_id] == []
    adapters = {line["producer"] for line in lines if line["event"] == "question answered"}
    assert adapters == {"P1", "P2"}
    assert_no_content(lines)

    # A refused query's lines carry the id of its access-log entry; nothing leaks on.
    with captured() as lines:
        status, _, _ = await fed.post(fed.token(relation=False))
        assert status == 403
        status, _, _ = await fed.post("not a token")  # same keep-alive connection
        assert status == 400
    refused, malformed = ([line for line in lines if line.get("status") == code]
                          for code in (403, 400))
    assert [line["event"] for line in refused] == ["query_refused"]
    assert refused[0]["query_id"] not in (None, query_id)
    assert [line["event"] for line in malformed] == ["query_refused"]
    assert "query_id" not in malformed[0]  # nothing to identify: no id, and none left over
    assert_no_content(lines)


async def test_a_question_s_adapter_lines_carry_its_query_id_when_it_times_out(
    federation_factory: Any,
) -> None:
    fed: Federation = await federation_factory([ProducerSpec("P1")])
    await fed.start_broker()

    class Slow:
        async def fetch(self, *args: Any) -> Any:
            await asyncio.sleep(5)

        async def aclose(self) -> None:
            pass

    await fed.start_adapter("P1", backend=Slow())
    await fed.wait_presence("P1")
    with captured() as lines:
        answer = await fed.ask(deadline_ms=300)
        async with asyncio.timeout(5):  # the adapter gives up at the same deadline
            while not any("replica" in line for line in lines):
                await asyncio.sleep(0.01)
    assert answer["sources"][0]["status"] == "timeout"
    adapter = [line for line in lines if "replica" in line]
    assert [line["producer"] for line in adapter] == ["P1"]
    assert {line.get("query_id") for line in lines} == {answer["query_id"]}
    assert_no_content(lines)
