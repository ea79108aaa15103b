"""render_answer: a readable answer in an 80-column terminal."""

from __future__ import annotations

import datetime as dt

from rich.console import Console

from consumer_client import render_answer
from consumer_client.render import BLOCKED_NOTICE, INCOMPLETE_NOTICE, summary
from schemas.messages import Answer, SourceResult
from schemas.records import (
    CareDocumentation,
    Diagnosis,
    Medication,
    OrgRef,
    RecordSource,
    SocialCareIntervention,
    UnitRef,
)


def rendered(answer: Answer, width: int = 80) -> str:
    console = Console(record=True, width=width, color_system=None, force_terminal=False)
    render_answer(answer, console)
    return console.export_text()


def test_sources_records_and_notices(sample_answer: Answer) -> None:
    text = rendered(sample_answer)
    for expected in [
        "q-0001", "19380303-9142",
        # sources
        "SE2321000016-P001", "Region Exempel", "Exempels kommun", "Privata Kliniken",
        "42 ms", "timeout",
        # one line per type
        "Metformin 500 mg, 1 tablett",
        "I10 Essentiell hypertoni",
        "Inskrivningsanteckning",
        "Hemtjänst, verkställighet 20 h/mån",
        "Penicillinallergi",
        "P-Glukos 9.1 mmol/L (ref 4.0-6.0)",
        "Akutbesök: Yrsel",
        "SIP efter utskrivning",
        "Förflyttning: Behöver hjälp",
        # where, when
        "Medicinkliniken, Region Exempel", "Hemtjänst Norr, Exempels kommun",
        "2026-11-20 09:30",
        BLOCKED_NOTICE, INCOMPLETE_NOTICE, "1 of 3 sources did not answer",
    ]:
        assert expected in text, expected


def test_fits_80_columns(sample_answer: Answer) -> None:
    for line in rendered(sample_answer).splitlines():
        assert len(line) <= 80, line


def test_records_newest_first(sample_answer: Answer) -> None:
    shuffled = Answer(**{f: getattr(sample_answer, f) for f in sample_answer.__struct_fields__
                         if f != "records"}, records=list(reversed(sample_answer.records)))
    text = rendered(shuffled)
    newest, oldest = text.index("Inskrivningsanteckning"), text.index("Penicillinallergi")
    middle = text.index("Metformin")
    assert newest < middle < oldest


def test_complete_answer_without_blocks_says_neither(sample_answer: Answer) -> None:
    answer = Answer(query_id="q2", subject=sample_answer.subject, complete=True,
                    blocked_information_exists=False, sources=sample_answer.sources[:2],
                    records=sample_answer.records)
    text = rendered(answer)
    assert BLOCKED_NOTICE not in text and INCOMPLETE_NOTICE not in text
    assert "2 of 2 sources answered, 9 records" in text


def test_empty_answer(sample_answer: Answer) -> None:
    answer = Answer(query_id="q3", subject=sample_answer.subject, complete=True,
                    blocked_information_exists=False,
                    sources=[SourceResult(producer="P1", organisation=OrgRef(id="O", name="Org"),
                                          status="no_data", latency_ms=3)],
                    records=[])
    text = rendered(answer)
    assert "no_data" in text and "no records" in text


def test_blocked_at_is_listed(sample_answer: Answer) -> None:
    answer = Answer(query_id="q4", subject=sample_answer.subject, complete=True,
                    blocked_information_exists=True, sources=[], records=[],
                    blocked_at=["SE2321000016-P001", "SE2120000000-P002"])
    assert "blocked at: SE2321000016-P001, SE2120000000-P002" in rendered(answer)


def _source() -> RecordSource:
    return RecordSource(producer="P", organisation=OrgRef(id="O", name="Org"),
                        unit=UnitRef(id="U", name="Unit [bold]x[/bold]"))


def test_producer_text_is_not_markup_or_control_codes() -> None:
    record = CareDocumentation(
        id="x", source=_source(), time=dt.datetime(2026, 1, 1, 12, 0), scope="hsl",
        title="[red]alarm[/red] \x1b[2J\x07rubrik\u202eevil\nnext line",
    )
    answer = Answer(query_id="q5", subject="193803039142", complete=True,
                    blocked_information_exists=False, sources=[], records=[record])
    text = rendered(answer, width=120)
    assert "[red]alarm[/red]" in text
    assert "Unit [bold]x[/bold]" in text
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert "[2J rubrikevil next line" in text


def test_blocked_record_is_marked() -> None:
    record = Medication(id="m", source=_source(), time=dt.datetime(2026, 1, 1), scope="hsl",
                        drug="Waran", blocked=True)
    answer = Answer(query_id="q6", subject="193803039142", complete=True,
                    blocked_information_exists=True, sources=[], records=[record])
    assert "spärrad / blocked" in rendered(answer)


def test_naive_and_aware_times_sort_together() -> None:
    src = _source()
    a = Medication(id="a", source=src, time=dt.datetime(2026, 1, 2), scope="hsl", drug="A")
    b = Medication(id="b", source=src, time=dt.datetime(2026, 1, 3, tzinfo=dt.UTC),
                   scope="hsl", drug="B")
    answer = Answer(query_id="q7", subject="193803039142", complete=True,
                    blocked_information_exists=False, sources=[], records=[a, b])
    text = rendered(answer)
    assert text.index("2026-01-03") < text.index("2026-01-02")


def test_timezone_conversion(sample_answer: Answer) -> None:
    console = Console(record=True, width=80, color_system=None)
    render_answer(sample_answer, console, tz=dt.timezone(dt.timedelta(hours=1)))
    assert "2026-11-20 10:30" in console.export_text()


def test_summaries() -> None:
    src = _source()
    t = dt.datetime(2026, 1, 1)
    assert summary(Diagnosis(id="d", source=src, time=t, scope="hsl", display="Astma",
                             status="resolved")) == "Astma [resolved]"
    assert summary(Medication(id="m", source=src, time=t, scope="hsl", drug="Alvedon",
                              dose="1 g", route="oral", status="stopped",
                              stop=dt.date(2025, 12, 1))) == (
        "Alvedon, 1 g (oral) [stopped] until 2025-12-01")
    assert summary(SocialCareIntervention(
        id="s", source=src, time=t, scope="lss", intervention="Daglig verksamhet",
        legal_basis="LSS 9 § 10", phase="beslut")) == (
        "Daglig verksamhet, beslut (LSS 9 § 10)")
