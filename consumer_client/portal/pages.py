"""The pages of "Min översikt", server-rendered HTML in Swedish.

Everything a producer wrote is escaped; no script runs on the page and the styles are one
inline sheet allowed by its hash (:data:`CSP`). The layout is one column that widens on a
desktop: cards, definition lists and one table whose rows stack on a phone. Colours keep
at least 4.5:1 contrast, and no status is told by colour alone.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal
from zoneinfo import ZoneInfo

from schemas.messages import Answer, Problem, SourceResult
from schemas.records import (
    Booking,
    CarePlan,
    Diagnosis,
    FixedContact,
    LabResult,
    Medication,
    PersonRef,
    Record,
    SelfCare,
    SocialCareIntervention,
    record_type,
)

from .register import Person

__all__ = [
    "CSP",
    "THEMES",
    "Outcome",
    "Target",
    "Theme",
    "overview_page",
    "sign_in_page",
    "source_state",
]

SWEDEN: Final = ZoneInfo("Europe/Stockholm")
_e: Final = html.escape


@dataclass(frozen=True, kw_only=True)
class Theme:
    """One section of the overview: an information type under a heading a person knows."""

    type: str
    anchor: str
    heading: str
    empty: str


THEMES: Final[tuple[Theme, ...]] = (
    Theme(type="bookings", anchor="besok", heading="Kommande besök",
          empty="Inga kommande besök."),
    Theme(type="fixed_contacts", anchor="kontakter", heading="Mina kontakter",
          empty="Inga fasta kontakter."),
    Theme(type="care_plans", anchor="planer", heading="Mina planer",
          empty="Inga planer."),
    Theme(type="self_care", anchor="egenvard", heading="Egenvård",
          empty="Ingen egenvård."),
    Theme(type="medication", anchor="lakemedel", heading="Läkemedel",
          empty="Inga läkemedel."),
    Theme(type="lab_results", anchor="provsvar", heading="Provsvar",
          empty="Inga provsvar."),
    Theme(type="diagnoses", anchor="diagnoser", heading="Diagnoser",
          empty="Inga diagnoser."),
    Theme(type="social_care_interventions", anchor="insatser", heading="Insatser",
          empty="Inga insatser från kommunen."),
)
"""In the order of the page: what lies ahead, whom to call, the plans (the SIP first)."""

SourceKind = Literal["answered", "no_data", "unreachable", "refused"]
_SOURCE_STATE: Final[dict[str, tuple[SourceKind, str]]] = {
    "ok": ("answered", "Svarade"),
    "no_data": ("no_data", "Svarade: inga uppgifter att visa"),
    "timeout": ("unreachable", "Gick inte att nå: svarade inte i tid"),
    "unavailable": ("unreachable", "Gick inte att nå just nu"),
    "error": ("unreachable", "Gick inte att nå: svaret kunde inte läsas"),
    "refused": ("refused", "Lämnade inte ut några uppgifter"),
}


def source_state(status: str) -> tuple[SourceKind, str]:
    """What a source's status means to a person: its kind and the words shown."""
    return _SOURCE_STATE.get(status, ("unreachable", f"Okänd status ({status})"))


@dataclass(frozen=True, kw_only=True)
class Target:
    """Someone the signed-in person may look at: themself or a child."""

    person: Person
    relation: Literal["self", "child"]
    viewable: bool = True
    why_not: str = ""


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """What came of asking for one overview: an answer, a refusal, or nothing asked."""

    types: tuple[str, ...] = ()
    answer: Answer | None = None
    refusal: Problem | None = None
    failure: str | None = None
    """The broker could not be reached: what happened, in Swedish."""
    not_asked: str | None = None
    """Why the portal did not ask (e.g. under 13 on one's own), in Swedish."""
    limited: str | None = None
    """Why only some themes were asked (e.g. 13–15 years), in Swedish."""
    producer_names: dict[str, str] = field(default_factory=dict)


_CSS: Final = """
:root{--ink:#1b1b1b;--muted:#4a4a4a;--line:#c9c9c9;--accent:#00557f;--bg:#f3f5f7;
--ok:#125c2b;--warn-bg:#fff3cd;--warn:#4d3800;--bad-bg:#fbe9e9;--bad:#8a1515}
*{box-sizing:border-box}
html{font-size:100%}
body{margin:0;font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;
line-height:1.5;color:var(--ink);background:var(--bg)}
a{color:var(--accent)}
a:focus-visible,button:focus-visible,input:focus-visible{outline:3px solid var(--ink);
outline-offset:2px}
.skip{position:absolute;left:-999px;top:0;background:#fff;padding:.5rem 1rem}
.skip:focus{left:.5rem;z-index:2}
.demo{background:#4d3800;color:#fff;padding:.5rem 1rem;margin:0}
.demo strong{color:#fff}
.bar{background:var(--accent);color:#fff;padding:.75rem 1rem;display:flex;flex-wrap:wrap;
gap:.5rem 1rem;align-items:center;justify-content:space-between}
.brand{font-size:1.25rem;font-weight:700;margin:0}
.who{margin:0}
.bar form{margin:0}
.bar button{background:#fff;color:var(--accent);border:0;border-radius:.25rem;
padding:.4rem .9rem;font:inherit;font-weight:600;cursor:pointer}
.wrap{max-width:62rem;margin:0 auto;padding:1rem}
nav.switch{background:#fff;border-bottom:1px solid var(--line)}
nav.switch ul{list-style:none;margin:0;padding:0;display:flex;flex-wrap:wrap;gap:.5rem}
nav.switch button{font:inherit;border:2px solid var(--accent);background:#fff;color:var(--accent);
border-radius:999px;padding:.35rem .9rem;cursor:pointer}
nav.switch button[aria-current="true"]{background:var(--accent);color:#fff;font-weight:700}
nav.switch .not{color:var(--muted);font-size:.95rem}
nav.themes ul{list-style:none;padding:0;margin:.5rem 0 0;display:flex;flex-wrap:wrap;
gap:.25rem 1rem}
h1{font-size:1.6rem;margin:.5rem 0}
h2{font-size:1.3rem;margin:1.75rem 0 .5rem}
h3{font-size:1.1rem;margin:0 0 .25rem}
h4{font-size:1rem;margin:1rem 0 .25rem}
.card{background:#fff;border:1px solid var(--line);border-radius:.5rem;padding:1rem;
margin:.75rem 0}
.card.sip{border-left:.4rem solid var(--accent)}
.meta{color:var(--muted);font-size:.95rem;margin:.25rem 0 0}
dl{margin:.5rem 0 0;display:grid;grid-template-columns:1fr;gap:0}
dt{font-weight:600;margin-top:.4rem}
dd{margin:0}
.badge{display:inline-block;border:1px solid currentColor;border-radius:.25rem;
padding:0 .4rem;font-size:.9rem;font-weight:600;margin-left:.25rem}
.notice{border-radius:.5rem;padding:.75rem 1rem;margin:1rem 0;border:1px solid}
.notice.warn{background:var(--warn-bg);color:var(--warn);border-color:var(--warn)}
.notice.bad{background:var(--bad-bg);color:var(--bad);border-color:var(--bad)}
.notice.info{background:#fff;color:var(--ink);border-color:var(--line)}
.sources{list-style:none;padding:0;margin:0}
.sources li{background:#fff;border:1px solid var(--line);border-left-width:.4rem;
border-radius:.25rem;padding:.5rem .75rem;margin:.4rem 0}
.sources li.answered{border-left-color:var(--ok)}
.sources li.no_data{border-left-color:var(--muted)}
.sources li.unreachable,.sources li.refused{border-left-color:var(--bad);background:var(--bad-bg)}
.sources .state{font-weight:600}
table.activities{border-collapse:collapse;width:100%;margin-top:.25rem}
table.activities caption{text-align:left;font-weight:600;padding:.25rem 0}
table.activities th,table.activities td{border-top:1px solid var(--line);padding:.4rem;
text-align:left;vertical-align:top}
.abnormal{color:var(--bad);font-weight:600}
fieldset{border:1px solid var(--line);border-radius:.5rem;background:#fff;padding:1rem;
margin:1rem 0}
legend{font-weight:700;padding:0 .25rem}
.choice{display:flex;gap:.6rem;align-items:flex-start;padding:.5rem 0;
border-top:1px solid #e4e4e4}
.choice:first-of-type{border-top:0}
.choice input{width:1.25rem;height:1.25rem;margin-top:.2rem;flex:none}
.choice small{display:block;color:var(--muted)}
.primary{font:inherit;font-weight:700;background:var(--accent);color:#fff;border:0;
border-radius:.35rem;padding:.7rem 1.4rem;cursor:pointer}
footer{color:var(--muted);font-size:.9rem;border-top:1px solid var(--line);margin-top:2rem}
@media (max-width:40rem){
table.activities thead{position:absolute;left:-999px}
table.activities tr{display:block;border-top:2px solid var(--line);padding:.25rem 0}
table.activities td{display:block;border:0;padding:.15rem 0}
table.activities td::before{content:attr(data-label) ": ";font-weight:600}
}
@media (min-width:48rem){dl{grid-template-columns:max-content 1fr;column-gap:1rem}
dt{margin-top:.2rem}dd{margin-top:.2rem}}
"""

_CSS_HASH: Final = base64.b64encode(hashlib.sha256(_CSS.encode()).digest()).decode()
CSP: Final = (f"default-src 'none'; style-src 'sha256-{_CSS_HASH}'; base-uri 'none'; "
              "form-action 'self'; frame-ancestors 'none'")
"""No script at all; the one inline style sheet by its hash; forms post to the portal only."""

DEMO_NOTICE: Final = ("<strong>Demo.</strong> Inloggningen här är inte BankID och ingen "
                      "e-legitimation: du väljer en testperson. Alla personer är påhittade "
                      "testpersoner med personnummer från Skatteverkets lista.")

_WEEKDAYS: Final = ("måndag", "tisdag", "onsdag", "torsdag", "fredag", "lördag", "söndag")
_MONTHS: Final = ("januari", "februari", "mars", "april", "maj", "juni", "juli", "augusti",
                  "september", "oktober", "november", "december")
_PLAN_TYPES: Final = {
    "SIP": "Samordnad individuell plan (SIP)",
    "SPLPTLRV": "Samordnad plan vid utskrivning från psykiatrisk tvångsvård",
    "SPU": "Samordnad plan vid utskrivning",
    "VP": "Vårdplan",
    "HP": "Habiliteringsplan",
    "RP": "Rehabiliteringsplan",
    "GP": "Genomförandeplan",
    "SVP": "Samordnad vårdplan",
}
_PLAN_STATUS: Final = {"draft": "Utkast", "active": "Gäller", "completed": "Avslutad",
                       "cancelled": "Avbruten"}
_ACTIVITY_STATUS: Final = {"planned": "Planerad", "in_progress": "Pågår", "done": "Klar",
                           "cancelled": "Inställd"}
_BOOKING_STATUS: Final = {"booked": "", "cancelled": "Inställd", "fulfilled": "Genomförd",
                          "noshow": "Uteblev"}
_CONTACT_ROLES: Final = {"fast_vardkontakt": "Fast vårdkontakt",
                         "fast_omsorgskontakt": "Fast omsorgskontakt",
                         "fast_lakarkontakt": "Fast läkarkontakt",
                         "kontaktsjukskoterska": "Kontaktsjuksköterska", "other": "Kontakt"}
_CONTACT_SYSTEMS: Final = {"phone": "Telefon", "email": "E-post", "1177": "1177",
                           "address": "Adress", "other": "Annat sätt"}
_PHASES: Final = {"handlaggning": "Handläggs", "beslut": "Beslutad",
                   "verkstallighet": "Pågår"}
_MED_STATUS: Final = {"active": "Pågående", "paused": "Uppehåll", "stopped": "Avslutad"}
_REFUSALS: Final = {
    "self-under-age": "Du som är under 13 år kan inte se dina uppgifter här. Fråga din "
                      "vårdnadshavare.",
    "guardian-child-too-old": "Som vårdnadshavare kan du se ditt barns uppgifter här tills "
                              "barnet fyller 13 år.",
    "mandate-missing": "Portalen kunde inte visa att du är vårdnadshavare.",
    "protected-identity": "Uppgifterna kan inte visas här eftersom någon av er har skyddade "
                          "personuppgifter.",
    "assurance-too-low": "Din inloggning räcker inte eller är för gammal. Logga in igen.",
    "actor-not-subject": "Du kan bara se dina egna uppgifter här.",
    "ombud-not-permitted": "Ombud kan inte se uppgifter här.",
    "type-not-for-person": "Portalen frågade efter uppgifter som inte visas för invånare.",
}


def pnr(pid: str) -> str:
    """``YYYYMMDD-NNNN``, the way a person writes their own number."""
    return f"{pid[:8]}-{pid[8:]}" if len(pid) == 12 and pid.isdigit() else pid


def genitive(name: str) -> str:
    """Swedish genitive: "Elsa Nordins", but "Lars" and "Max" stay as they are."""
    return name if name[-1:].lower() in ("s", "x", "z") else f"{name}s"


def _when_text(when: str) -> str:
    """An activity's "when": a bare ISO date in words, anything else as written."""
    try:
        return _day(dt.date.fromisoformat(when))
    except ValueError:
        return when


def _local(when: dt.datetime) -> dt.datetime:
    return when.astimezone(SWEDEN)


def _day(day: dt.date) -> str:
    return f"{day.day} {_MONTHS[day.month - 1]} {day.year}"


def _when(when: dt.datetime) -> str:
    t = _local(when)
    return f"{_WEEKDAYS[t.weekday()]} {_day(t.date())}, kl. {t:%H.%M}"


def _date_of(when: dt.datetime | None) -> str:
    return _day(_local(when).date()) if when is not None else "okänt datum"


def _period(start: dt.date | None, end: dt.date | None) -> str:
    if start and end:
        return f"{_day(start)} – {_day(end)}"
    if start:
        return f"från {_day(start)}"
    return f"till {_day(end)}" if end else ""


def _dl(rows: Iterable[tuple[str, str]]) -> str:
    """A definition list of the rows that have a value; values are already HTML."""
    items = "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in rows if v)
    return f"<dl>{items}</dl>" if items else ""


def _who(ref: PersonRef | None) -> str:
    if ref is None:
        return ""
    where = ref.unit.name if ref.unit else (ref.organisation.name if ref.organisation else "")
    return _e(", ".join(p for p in (ref.name, ref.role, where) if p))


def _from(record: Record) -> str:
    src = record.source
    return (f'<p class="meta">Från {_e(src.unit.name)}, {_e(src.organisation.name)}'
            f" · {_e(_date_of(record.time))}</p>")


def _booking(b: Booking) -> str:
    status = _BOOKING_STATUS.get(b.status, b.status)
    badges = ""
    if b.invitation:
        badges += '<span class="badge">Kallelse</span>'
    if status:
        badges += f'<span class="badge">{_e(status)}</span>'
    kind = " · ".join(p for p in (b.time_type, b.care_type) if p)
    end = f"–{_local(b.end):%H.%M}" if b.end else ""
    return (f'<article class="card booking"><h3>{_e(_when(b.start))}{_e(end)}{badges}</h3>'
            + _dl([("Var", _e(b.unit.name)), ("Adress", _e(b.address)),
                   ("Vad", _e(b.purpose or b.reason)), ("Typ", _e(kind)),
                   ("Träffar", _who(b.performer))])
            + f'<p class="meta">Från {_e(b.source.organisation.name)}</p></article>')


def _contact(c: FixedContact) -> str:
    role = c.role_display or _CONTACT_ROLES.get(c.role, c.role)
    reach = "".join(
        f"<li>{_e(_CONTACT_SYSTEMS.get(p.system, p.system))}: "
        + (f'<a href="tel:{_e(p.value.replace(" ", ""))}">{_e(p.value)}</a>'
           if p.system == "phone" else _e(p.value))
        + (f" ({_e(p.hours)})" if p.hours else "") + "</li>"
        for p in c.contact)
    where = c.unit.name if c.unit else c.source.unit.name
    # internal_note is for staff and never shown to the person, whatever the producer sent.
    return (f'<article class="card contact"><h3>{_e(role)}: {_e(c.person.name)}</h3>'
            + _dl([("Roll", _e(c.person.role)), ("Enhet", _e(where)),
                   ("Team", _e(c.care_team)), ("Period", _e(_period(c.start, c.end))),
                   ("Nå", f"<ul>{reach}</ul>" if reach else ""), ("Att veta", _e(c.note))])
            + f'<p class="meta">Från {_e(c.source.organisation.name)}</p></article>')


def _plan(p: CarePlan) -> str:
    kind = _PLAN_TYPES.get(p.plan_type, p.plan_type)
    sip = p.plan_type == "SIP"
    rows = "".join(
        "<tr>"
        f'<td data-label="Vad">{_e(a.what)}</td>'
        f'<td data-label="Ansvarar">{_e(a.responsible_org.name) if a.responsible_org else ""}'
        + (f"<br>{_e(a.responsible)}" if a.responsible else "") + "</td>"
        f'<td data-label="När">{_e(_when_text(a.when))}</td>'
        f'<td data-label="Status">{_e(_ACTIVITY_STATUS.get(a.status, a.status))}</td>'
        "</tr>"
        for a in p.activities)
    table = ("<table class=\"activities\"><caption>Vem gör vad</caption><thead><tr>"
             '<th scope="col">Vad</th><th scope="col">Ansvarar</th><th scope="col">När</th>'
             f'<th scope="col">Status</th></tr></thead><tbody>{rows}</tbody></table>'
             if rows else "")
    listed = [(h, "<ul>" + "".join(f"<li>{_e(x)}</li>" for x in xs) + "</ul>" if xs else "")
              for h, xs in (("Behov", p.needs), ("Mål", p.goals))]
    coordinator = _who(p.coordinator)
    return (f'<article class="card plan{" sip" if sip else ""}">'
            f"<h3>{_e(p.title)}</h3>"
            f'<p class="meta">{_e(kind)} · {_e(_PLAN_STATUS.get(p.status, p.status))}</p>'
            + _dl([*listed,
                   ("Huvudansvar", _e(p.overall_responsible_org.name)
                    if p.overall_responsible_org else ""),
                   ("Samordnare", coordinator),
                   ("Uppföljning", _e(_day(p.follow_up_date)) if p.follow_up_date else ""),
                   ("Deltog", _e(", ".join(p.participants)))])
            + table + _from(p) + "</article>")


def _self_care(s: SelfCare) -> str:
    return (f'<article class="card selfcare"><h3>{_e(s.activity)}</h3>'
            + _dl([("Så gör du", _e(s.instructions)), ("Utförs av", _e(s.performed_by)),
                   ("Bedömd av", _who(s.assessed_by)), ("Period", _e(_period(s.start, s.end))),
                   ("Uppföljning", _e(_day(s.follow_up_date)) if s.follow_up_date else ""),
                   ("Status", "Avslutad" if s.status == "ended" else "")])
            + _from(s) + "</article>")


def _medication(m: Medication) -> str:
    return (f'<article class="card medication"><h3>{_e(m.drug)}'
            f'<span class="badge">{_e(_MED_STATUS.get(m.status, m.status))}</span></h3>'
            + _dl([("Dos", _e(" ".join(x for x in (m.dose, m.schedule) if x))),
                   ("Hur", _e(m.route)), ("Mot", _e(m.purpose)),
                   ("Ges av", _e(m.administered_by)), ("Period", _e(_period(m.start, m.stop)))])
            + _from(m) + "</article>")


def _lab(r: LabResult) -> str:
    value = f"{r.value} {r.unit}".strip()
    flag = (' <span class="abnormal">(utanför referensintervallet)</span>'
            if r.abnormal else "")
    return (f'<article class="card lab"><h3>{_e(r.analysis)}</h3>'
            + _dl([("Resultat", _e(value) + flag), ("Referensintervall", _e(r.reference_range))])
            + _from(r) + "</article>")


def _diagnosis(d: Diagnosis) -> str:
    code = d.codes[0].code if d.codes else ""
    return (f'<article class="card diagnosis"><h3>{_e(d.display)}'
            + (f' <span class="badge">{_e(code)}</span>' if code else "") + "</h3>"
            + _dl([("Status", "Läkt" if d.status == "resolved" else "Aktuell"),
                   ("Sedan", _e(_day(d.onset)) if d.onset else "")])
            + _from(d) + "</article>")


def _intervention(i: SocialCareIntervention) -> str:
    phase = _PHASES.get(i.phase, i.phase)
    return (f'<article class="card intervention"><h3>{_e(i.intervention)}</h3>'
            + _dl([("Skede", _e(phase)), ("Omfattning", _e(i.extent)),
                   ("Beslut", _e(_day(i.decision_date)) if i.decision_date else ""),
                   ("Period", _e(_period(i.start, i.end))), ("Lag", _e(i.legal_basis)),
                   ("Beskrivning", _e(i.description))])
            + _from(i) + "</article>")


def _sorted(theme: str, records: Sequence[Record], now: dt.datetime) -> list[Record]:
    far = dt.datetime.max.replace(tzinfo=dt.UTC)
    match theme:
        case "bookings":
            ahead = [r for r in records if isinstance(r, Booking) and (r.end or r.start) >= now]
            return sorted(ahead, key=lambda r: r.start if isinstance(r, Booking) else far)
        case "care_plans":
            def plan_key(r: Record) -> tuple[bool, bool, float]:
                p = r if isinstance(r, CarePlan) else None
                return (p is None or p.plan_type != "SIP",
                        p is None or p.status not in ("active", "draft"), -r.time.timestamp())
            return sorted(records, key=plan_key)
        case "medication":
            return sorted(records, key=lambda r: (isinstance(r, Medication)
                                                  and r.status == "stopped",
                                                  -r.time.timestamp()))
        case _:
            return sorted(records, key=lambda r: -r.time.timestamp())


_RENDER: Final[dict[str, Callable[[Record], str]]] = {
    "bookings": lambda r: _booking(r) if isinstance(r, Booking) else "",
    "fixed_contacts": lambda r: _contact(r) if isinstance(r, FixedContact) else "",
    "care_plans": lambda r: _plan(r) if isinstance(r, CarePlan) else "",
    "self_care": lambda r: _self_care(r) if isinstance(r, SelfCare) else "",
    "medication": lambda r: _medication(r) if isinstance(r, Medication) else "",
    "lab_results": lambda r: _lab(r) if isinstance(r, LabResult) else "",
    "diagnoses": lambda r: _diagnosis(r) if isinstance(r, Diagnosis) else "",
    "social_care_interventions":
        lambda r: _intervention(r) if isinstance(r, SocialCareIntervention) else "",
}


def _source_name(s: SourceResult, names: dict[str, str]) -> str:
    return names.get(s.producer) or s.organisation.name or s.producer


def _sources(answer: Answer, names: dict[str, str]) -> str:
    items = []
    for s in answer.sources:
        kind, words = source_state(s.status)
        count = (f" – {s.records} {'uppgift' if s.records == 1 else 'uppgifter'} visas"
                 if s.status == "ok" else "")
        if s.truncated:
            count += " (svaret var för stort: alla uppgifter kom inte med)"
        name = _source_name(s, names)
        org = f" ({_e(s.organisation.name)})" if s.organisation.name != name else ""
        items.append(f'<li class="{kind}" data-producer="{_e(s.producer)}" '
                     f'data-status="{_e(s.status)}"><strong>{_e(name)}</strong>{org}: '
                     f'<span class="state">{_e(words)}</span>{_e(count)}</li>')
    return f'<ul class="sources">{"".join(items)}</ul>'


def _layout(*, title: str, body: str, header_right: str = "", nav: str = "") -> str:
    return f"""<!doctype html>
<html lang="sv">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<a class="skip" href="#innehall">Hoppa till innehållet</a>
<header>
<p class="demo" id="demo-notice">{DEMO_NOTICE}</p>
<div class="bar"><p class="brand">Min översikt</p>{header_right}</div>
</header>
{nav}
<main id="innehall" class="wrap">
{body}
</main>
<footer class="wrap"><p>Uppgifterna hämtas från regionens och kommunens system när du öppnar
sidan och sparas inte i portalen. Demo av samsvar.</p></footer>
</body>
</html>
"""


def sign_in_page(choices: Sequence[Person], *, message: str = "", today: dt.date) -> str:
    """The demo sign-in: pick a test person (adults first, then children)."""
    adults = [p for p in choices if p.age(today) >= 18]
    young = [p for p in choices if p.age(today) < 18]

    def choice(p: Person, i: int) -> str:
        about = f"{p.age(today)} år" + (f", {p.about}" if p.about else "")
        return (f'<div class="choice"><input type="radio" name="person" id="p{i}" '
                f'value="{_e(p.id)}"{" required" if i == 0 else ""}>'
                f'<label for="p{i}">{_e(p.name)}, {_e(pnr(p.id))}'
                f"<small>{_e(about)}</small></label></div>")

    listed = [*adults, *young]
    groups = ""
    if adults:
        groups += ('<fieldset><legend>Vuxna testpersoner</legend>'
                   + "".join(choice(p, i) for i, p in enumerate(listed[:len(adults)]))
                   + "</fieldset>")
    if young:
        groups += ('<fieldset><legend>Barn och unga</legend>'
                   + "".join(choice(p, i) for i, p in enumerate(young, start=len(adults)))
                   + "</fieldset>")
    alert = (f'<div class="notice warn" role="alert">{_e(message)}</div>' if message else "")
    body = f"""<h1>Logga in i Min översikt</h1>
{alert}
<div class="notice info"><p><strong>Det här är inte BankID och ingen e-legitimation.</strong>
I demon loggar du in genom att välja en testperson. En riktig portal identifierar dig med
e-legitimation (tillitsnivå 3 eller högre).</p></div>
<form method="post" action="/logga-in">
{groups}
<button class="primary" type="submit">Logga in som vald testperson</button>
</form>"""
    return _layout(title="Logga in – Min översikt (demo)", body=body)


def overview_page(
    *,
    actor: Person,
    target: Target,
    targets: Sequence[Target],
    outcome: Outcome,
    csrf: str,
    now: dt.datetime,
) -> str:
    """The signed-in page: whom one looks at, the sources' state, then every theme."""
    subject = target.person
    is_self = target.relation == "self"
    header_right = (
        f'<p class="who">Inloggad: {_e(actor.name)} ({_e(pnr(actor.id))})</p>'
        '<form method="post" action="/logga-ut">'
        f'<input type="hidden" name="csrf" value="{_e(csrf)}">'
        '<button type="submit">Logga ut</button></form>')
    nav = ""
    if len(targets) > 1:
        items = []
        for t in targets:
            label = ("Mig själv" if t.relation == "self"
                     else f"{t.person.name} (barn, {t.person.age(now.date())} år)")
            if t.viewable:
                current = ' aria-current="true"' if t.person.id == subject.id else ""
                items.append(f'<li><button type="submit" name="subject" value="{_e(t.person.id)}"'
                             f"{current}>{_e(label)}</button></li>")
            else:
                items.append(f'<li class="not">{_e(label)}: {_e(t.why_not)}</li>')
        nav = ('<nav class="switch" aria-label="Vems uppgifter"><div class="wrap">'
               '<form method="post" action="/vaxla">'
               f'<input type="hidden" name="csrf" value="{_e(csrf)}">'
               '<p class="meta">Visa uppgifter för:</p>'
               f'<ul>{"".join(items)}</ul></form></div></nav>')

    heading = "Min översikt" if is_self else f"{genitive(subject.name)} översikt"
    lead = ("Dina planer, besök, kontakter, egenvård, läkemedel och provsvar från region och "
            "kommun på ett ställe." if is_self else
            f"Du ser {genitive(subject.name)} uppgifter som vårdnadshavare "
            f"({pnr(subject.id)}).")
    parts = [f"<h1>{_e(heading)}</h1>", f"<p>{_e(lead)}</p>"]

    if outcome.not_asked:
        parts.append(f'<div class="notice info" role="status">{_e(outcome.not_asked)}</div>')
    elif outcome.failure:
        parts.append('<div class="notice bad" role="alert"><p><strong>Översikten kunde inte '
                     f"hämtas.</strong> {_e(outcome.failure)}</p><p>Försök igen om en stund."
                     "</p></div>")
    elif outcome.refusal is not None:
        p = outcome.refusal
        words = _REFUSALS.get(p.rule or "", "") or p.detail or p.title
        parts.append('<div class="notice bad" role="alert" id="refusal" '
                     f'data-rule="{_e(p.rule or "")}"><p><strong>Uppgifterna kan inte visas.'
                     f"</strong> {_e(words)}</p></div>")
    elif outcome.answer is not None:
        parts += _answer_parts(outcome, now=now, is_self=is_self)
    title = "Min översikt (demo)" if is_self else f"{heading} – Min översikt (demo)"
    return _layout(title=title, body="\n".join(parts),
                   header_right=header_right, nav=nav)


def _answer_parts(outcome: Outcome, *, now: dt.datetime, is_self: bool) -> list[str]:
    answer = outcome.answer
    assert answer is not None
    parts: list[str] = []
    missing = [s for s in answer.sources if source_state(s.status)[0] in ("unreachable",
                                                                          "refused")]
    if missing:
        names = ", ".join(_source_name(s, outcome.producer_names) for s in missing)
        parts.append('<div class="notice warn" role="status" id="incomplete"><p><strong>'
                     "Översikten är inte komplett.</strong> Uppgifter från "
                     f"{_e(names)} saknas nedan eftersom de inte gick att nå just nu.</p></div>")
    cut = [s for s in answer.sources if s.truncated and s not in missing]
    if cut:
        names = ", ".join(_source_name(s, outcome.producer_names) for s in cut)
        parts.append('<div class="notice warn" role="status" id="truncated"><p><strong>'
                     "Översikten är inte komplett.</strong> Alla uppgifter från "
                     f"{_e(names)} kom inte med.</p></div>")
    if answer.blocked_information_exists and is_self:
        parts.append('<div class="notice info" role="status" id="blocked"><p>Det finns '
                     "uppgifter som du själv har spärrat. De visas inte här; du kan häva en "
                     "spärr hos den vårdgivare eller kommun som har uppgifterna.</p></div>")
    if outcome.limited:
        parts.append(f'<div class="notice info" role="status">{_e(outcome.limited)}</div>')
    asked = [t for t in THEMES if t.type in outcome.types]
    parts.append('<nav class="themes" aria-label="Teman på sidan"><ul>'
                 + "".join(f'<li><a href="#{t.anchor}">{_e(t.heading)}</a></li>' for t in asked)
                 + "</ul></nav>")
    by_type: dict[str, list[Record]] = {}
    for r in answer.records:
        by_type.setdefault(record_type(r), []).append(r)
    parts.append('<section aria-labelledby="h-kallor" id="kallor"><h2 id="h-kallor">'
                 "Varifrån uppgifterna kommer</h2>"
                 + _sources(answer, outcome.producer_names) + "</section>")
    for theme in asked:
        shown = _sorted(theme.type, by_type.get(theme.type, []), now)
        cards = "".join(_RENDER[theme.type](r) for r in shown)
        if theme.type == "bookings":
            earlier = len(by_type.get("bookings", [])) - len(shown)
            if earlier > 0:
                cards += f'<p class="meta">{earlier} tidigare besök visas inte.</p>'

        empty = f'<p class="empty">{_e(theme.empty)}</p>' if not shown else ""
        parts.append(f'<section aria-labelledby="h-{theme.anchor}" id="{theme.anchor}" '
                     f'data-type="{theme.type}"><h2 id="h-{theme.anchor}">{_e(theme.heading)}'
                     f"</h2>{empty}{cards}</section>")
    return parts
