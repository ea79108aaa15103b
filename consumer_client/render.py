"""Print an :class:`~schemas.messages.Answer` for a person at a terminal (80 columns).

Everything a producer wrote is shown as plain text: never parsed as rich markup, and
stripped of control and bidirectional-override characters so a record cannot repaint
the screen or disguise itself.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from typing import Final

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from schemas.accesslog import AccessEntry
from schemas.messages import Answer, SourceResult
from schemas.records import (
    Alert,
    Booking,
    CareContact,
    CareDocumentation,
    CarePlan,
    Code,
    Diagnosis,
    FixedContact,
    FunctionalStatus,
    LabResult,
    Medication,
    PersonRef,
    Record,
    SelfCare,
    SocialCareIntervention,
)

__all__ = [
    "BLOCKED_NOTICE",
    "INCOMPLETE_NOTICE",
    "TYPE_LABELS",
    "TYPE_WORDS",
    "UNREADABLE_NOTICE",
    "describe_access",
    "render_answer",
    "summary",
]

BLOCKED_NOTICE: Final = "Spärrad information finns / blocked information exists"
INCOMPLETE_NOTICE: Final = "Ofullständigt svar / incomplete answer"
UNREADABLE_NOTICE: Final = "Oläsbara uppgifter finns / records that could not be read"

TYPE_LABELS: Final[dict[str, str]] = {
    "care_documentation": "documentation",
    "diagnoses": "diagnosis",
    "medication": "medication",
    "alerts": "alert",
    "lab_results": "lab result",
    "care_contacts": "care contact",
    "care_plans": "care plan",
    "social_care_interventions": "intervention",
    "functional_status": "function",
    "bookings": "booking",
    "fixed_contacts": "contact",
    "self_care": "self-care",
}
"""One short word per information type, for the records table."""

_PHASES: Final = {"handlaggning": "handläggning", "beslut": "beslut",
                  "verkstallighet": "verkställighet"}
_STATUS_STYLE: Final = {"ok": "green", "no_data": "dim", "timeout": "yellow",
                        "unavailable": "yellow", "error": "red", "refused": "red"}
_NOT_ANSWERED: Final = ("timeout", "unavailable", "error")
_SPACE: Final = re.compile(r"\s+")
_BIDI: Final = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                         "\u2066\u2067\u2068\u2069")


def _clean(text: str) -> str:
    """One line of displayable text: no control or bidi-override characters."""
    kept = "".join(
        " " if unicodedata.category(ch) == "Cc" else ch for ch in text if ch not in _BIDI
    )
    return _SPACE.sub(" ", kept).strip()


def _join(*parts: str, sep: str = " ") -> str:
    return sep.join(p for p in (_clean(x) for x in parts) if p)


def _code(codes: list[Code]) -> str:
    return codes[0].code if codes else ""


def _date(day: dt.date | None) -> str:
    return day.isoformat() if day else ""


_VERIFICATION: Final = {"unconfirmed": "OBEKRÄFTAD / unconfirmed",
                        "provisional": "PRELIMINÄR / provisional",
                        "differential": "DIFFERENTIALDIAGNOS / differential",
                        "refuted": "MOTBEVISAD / refuted"}


def _verification(verification: str | None) -> str:
    """A finding that is not confirmed says so (none: the source did not say)."""
    label = _VERIFICATION.get(verification or "")
    return f"[{label}]" if label else ""


def summary(record: Record) -> str:
    """One line saying what the record is, by its type."""
    match record:
        case Medication():
            text = _join(record.drug, record.dose, record.schedule, sep=", ")
            if record.route:
                text = _join(text, f"({record.route})")
            if record.status != "active":
                text = _join(text, f"[{record.status}]")
            if record.stop:
                text = _join(text, f"until {_date(record.stop)}")
            return text
        case Diagnosis():
            text = _join(_code(record.codes), record.display or
                         (record.codes[0].display if record.codes else ""))
            if record.primary:
                text = _join(text, "(primary)")
            if (record.clinical_status or record.status) != "active":
                text = _join(text, f"[{record.clinical_status or record.status}]")
            return _join(text, _verification(record.verification))
        case CareDocumentation():
            return _join(record.note_type, record.title, sep=": ") + (
                " (SBAR)" if record.sbar else "")
        case Alert():
            text = _join(record.category.replace("_", " "), record.description, sep=": ")
            if record.substance:
                text = _join(text, f"({record.substance})")
            if record.severity:
                text = _join(text, f"[{record.severity.replace('_', ' ')}]")
            if record.clinical_status not in (None, "active"):
                text = _join(text, f"[{record.clinical_status}]")
            return _join(text, _verification(record.verification))
        case LabResult():
            text = _join(record.analysis, record.value, record.unit)
            if record.reference_range:
                text = _join(text, f"(ref {record.reference_range})")
            return _join(text, "[abnormal]") if record.abnormal else text
        case CareContact():
            return _join(record.contact_type, record.reason, sep=": ")
        case CarePlan():
            text = _join(record.plan_type, record.title, sep=": ")
            if record.coordinator is not None:
                text = _join(text, f"(coordinator {_who(record.coordinator)})")
            for a in record.activities:  # who does what, and when
                org = a.responsible_org.name if a.responsible_org else ""
                who = _join(org, a.responsible, sep=", ")
                text = _join(text, _join(a.what, who and f"[{who}]", a.when), sep="; ")
            if record.follow_up_date:
                text = _join(text, f"(follow-up {_date(record.follow_up_date)})")
            return text
        case Booking():
            when = record.start.strftime("%Y-%m-%d %H:%M")
            text = _join(when, record.time_type, record.purpose, sep=", ")
            text = _join(text, f"at {_clean(record.unit.name)}")
            if record.performer is not None:
                text = _join(text, f"with {_who(record.performer)}")
            if record.invitation:
                text = _join(text, "(invitation)")
            return _join(text, f"[{record.status}]") if record.status != "booked" else text
        case FixedContact():
            text = _join(record.role_display or record.role.replace("_", " "),
                         _who(record.person), sep=": ")
            reach = ", ".join(_join(c.value, c.hours and f"({c.hours})") for c in record.contact)
            text = _join(text, reach and f"- {reach}")
            return _join(text, record.internal_note and f"[internal: {record.internal_note}]")
        case SelfCare():
            text = _join(record.activity, record.performed_by and f"by {record.performed_by}")
            if record.follow_up_date:
                text = _join(text, f"(follow-up {_date(record.follow_up_date)})")
            return text
        case SocialCareIntervention():
            text = _join(record.intervention, _PHASES.get(record.phase, record.phase), sep=", ")
            return _join(text, record.extent, record.legal_basis and f"({record.legal_basis})")
        case FunctionalStatus():
            return _join(record.domain, record.assessment, sep=": ")
    return ""  # pragma: no cover - the union is exhaustive


def _who(person: PersonRef) -> str:
    return _join(person.name, person.role and f"({person.role})")


def _sort_key(record: Record) -> float:
    t = record.time
    return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp()


def _time(t: dt.datetime, tz: dt.tzinfo | None) -> str:
    if tz is not None and t.tzinfo is not None:
        t = t.astimezone(tz)
    return t.strftime("%Y-%m-%d %H:%M")


def _person(pid: str) -> str:
    return f"{pid[:8]}-{pid[8:]}" if len(pid) == 12 and pid.isdigit() else _clean(pid)


def _sources_table(sources: list[SourceResult]) -> Table:
    table = Table(title="Källor / sources", title_justify="left", box=box.SIMPLE_HEAD,
                  pad_edge=False, expand=False)
    table.add_column("Producer", overflow="fold")
    table.add_column("Organisation", overflow="fold", max_width=28)
    table.add_column("Status", no_wrap=True)
    table.add_column("Records", justify="right", no_wrap=True)
    table.add_column("Latency", justify="right", no_wrap=True)
    for s in sources:
        status = s.status + (", truncated" if s.truncated else "") + (
            f", {s.unreadable} unreadable" if s.unreadable else "")
        latency = f"{s.latency_ms} ms" if s.latency_ms is not None else "-"
        table.add_row(
            Text(_clean(s.producer)),
            Text(_clean(s.organisation.name) or _clean(s.organisation.id)),
            Text(status, style=_STATUS_STYLE.get(s.status, "")),
            str(s.records),
            latency,
        )
    return table


def _records_table(records: list[Record], tz: dt.tzinfo | None) -> Table:
    table = Table(title="Uppgifter / records, newest first", title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False, expand=True)
    table.add_column("Time", no_wrap=True)
    table.add_column("Type", no_wrap=True)
    table.add_column("Summary / unit", overflow="fold", ratio=1)
    ordered = sorted(records, key=_sort_key, reverse=True)
    for i, r in enumerate(ordered):
        cell = Text(summary(r))
        if r.blocked:
            cell.append(" [spärrad / blocked]", style="bold")
        where = _join(r.source.unit.name, r.source.organisation.name, sep=", ")
        cell.append("\n" + where, style="dim")
        day = r.time.date()
        next_day = ordered[i + 1].time.date() if i + 1 < len(ordered) else day
        table.add_row(
            _time(r.time, tz),
            TYPE_LABELS.get(str(type(r).__struct_config__.tag), "?"),
            cell,
            end_section=next_day != day,
        )
    return table


def render_answer(
    answer: Answer, console: Console | None = None, *, tz: dt.tzinfo | None = None
) -> None:
    """Print ``answer``: who answered, then the records newest first, then what is missing.

    ``tz`` converts record times (e.g. to ``ZoneInfo("Europe/Stockholm")``); by default
    they are shown as the producer stated them.
    """
    console = console or Console()
    total = len(answer.sources)
    answered = sum(1 for s in answer.sources if s.status not in _NOT_ANSWERED)
    console.print(Text.assemble(
        ("Svar / answer ", "bold"), _clean(answer.query_id),
        "  person ", (_person(answer.subject), "bold"),
    ))
    console.print(
        f"{answered} of {total} sources answered, {len(answer.records)} records", highlight=False
    )
    if answer.blocked_information_exists:
        console.print(Text(BLOCKED_NOTICE, style="bold yellow"))
        if answer.blocked_at:
            console.print(Text("Spärrad hos / blocked at: " +
                               ", ".join(_clean(p) for p in answer.blocked_at)))
    if not answer.complete:
        missing = [f"{s.status}: {_clean(s.producer)}" for s in answer.sources
                   if s.status in _NOT_ANSWERED]
        text = INCOMPLETE_NOTICE
        if missing:
            text += f": {len(missing)} of {total} sources did not answer"
        console.print(Text(text, style="bold red"))
        for line in missing:
            console.print(Text(f"  {line}"))
    unreadable = [s for s in answer.sources if s.unreadable]
    if unreadable:
        console.print(Text(
            f"{UNREADABLE_NOTICE}: " + ", ".join(
                f"{_clean(s.producer)} {s.unreadable}" for s in unreadable),
            style="bold yellow"))
    console.print()
    if answer.sources:
        console.print(_sources_table(answer.sources))
    if answer.records:
        console.print(_records_table(answer.records, tz))
    else:
        console.print("Inga uppgifter / no records")


# -- the person's access-log extract, in words ------------------------------------------

TYPE_WORDS: Final[dict[str, tuple[str, str]]] = {
    "care_documentation": ("journalanteckningar", "notes"),
    "diagnoses": ("diagnoser", "diagnoses"),
    "medication": ("läkemedel", "medication"),
    "alerts": ("uppmärksamhetsinformation", "alerts"),
    "lab_results": ("provsvar", "test results"),
    "care_contacts": ("vårdkontakter", "care contacts"),
    "care_plans": ("planer", "plans"),
    "social_care_interventions": ("insatser", "social care support"),
    "functional_status": ("funktionsbedömningar", "functional assessments"),
    "bookings": ("bokade tider", "appointments"),
    "fixed_contacts": ("fasta kontakter", "fixed contacts"),
    "self_care": ("egenvård", "self-care"),
}
"""Each information type as a person would name it (Swedish, English)."""

_ACTING_AS_WORDS: Final = {
    "self": ("Du själv", "You"),
    "guardian": ("Din vårdnadshavare", "Your guardian"),
    "ombud": ("Ditt ombud", "Your representative"),
}
_BASIS_WORDS: Final = {
    "consent": ("med ditt samtycke", "with your consent"),
    "emergency": ("i en nödsituation", "in an emergency"),
    "lacks_capacity": ("då du inte kunde ta ställning", "as you could not decide yourself"),
    "child": ("som barn utan eget samtycke", "as a child, without your own consent"),
}


def describe_access(entry: AccessEntry) -> tuple[str, str]:
    """One access from the extract as a sentence the person understands: (Swedish,
    English). Who read (an employee and their unit, a guardian or the person through a
    portal), what, and whether it was refused. Identity numbers are shown, names of
    persons other than staff never (the log holds none)."""
    sv_types = ", ".join(TYPE_WORDS.get(t, (t, t))[0] for t in entry.types) or "uppgifter"
    en_types = ", ".join(TYPE_WORDS.get(t, (t, t))[1] for t in entry.types) or "information"
    org = _clean(entry.consumer.name) if entry.consumer else "okänd / unknown"
    refused = entry.outcome == "refused"
    if entry.action == "extract":
        return (f"{org} hämtade din logg över vem som läst om dig.",
                f"{org} fetched your log of who accessed your information.")
    if entry.action == "own_view":
        who_sv, who_en = _ACTING_AS_WORDS.get(entry.acting_as or "", ("Någon", "Someone"))
        actor = f" ({_person(entry.actor)})" if entry.actor and entry.acting_as != "self" else ""
        if refused:
            refused_en = f"{who_en}{actor} tried to read your {en_types} through {org}"
            return (f"{who_sv}{actor} försökte läsa dina {sv_types} via {org}, men nekades.",
                    f"{refused_en}, but was refused.")
        return (f"{who_sv}{actor} läste dina {sv_types} via {org}.",
                f"{who_en}{actor} read your {en_types} through {org}.")
    user = entry.user
    who = _join(user.name, user.role and f"({user.role})") if user else "En anställd"
    unit = _clean(entry.unit.name) if entry.unit else ""
    where = _join(unit, org, sep=", ")
    basis_sv, basis_en = _BASIS_WORDS.get(entry.basis or "", ("", ""))
    if refused:
        return (f"{who}, {where}, försökte läsa dina {sv_types}, men nekades.",
                f"{who}, {where}, tried to read your {en_types}, but was refused.")
    return (_join(f"{who}, {where}, läste dina {sv_types}", basis_sv) + ".",
            _join(f"{who}, {where}, read your {en_types}", basis_en) + ".")
