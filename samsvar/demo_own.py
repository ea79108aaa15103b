"""The demo's persons and records for the person's own view (SPEC sections 8 and 9).

Written into the producers' data when the demo builds its work folder, dated relative to
the day it runs: bookings lie ahead, the ``delayed`` person's result lies inside its
producer's release delay, ages hold by the identity number on that day. Every number is
from Skatteverket's list of test personnummer.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final
from zoneinfo import ZoneInfo

__all__ = ["OWN_PERSONS", "OWN_VIEW_TYPES_BY_PRODUCER", "RELEASE_DELAYS", "own_records"]

SWEDEN: Final = ZoneInfo("Europe/Stockholm")

REGION: Final = {"id": "SE2321000999-RE01", "name": "Region Exempel"}
KOMMUN: Final = {"id": "SE2120009999-EK01", "name": "Exempel kommun"}
P001: Final = "SE2321000999-P001"
VO01: Final = "SE2120009999-VO01"
LSS1: Final = "SE2120009999-LSS1"

VC: Final = {"id": "SE2321000999-U200", "name": "Vårdcentralen Exempelby"}
MED: Final = {"id": "SE2321000999-U300", "name": "Medicinkliniken, Exempelsjukhuset"}
BUM: Final = {"id": "SE2321000999-U400", "name": "Barn- och ungdomsmedicin, Exempelsjukhuset"}
HSV: Final = {"id": "SE2120009999-U110", "name": "Hemsjukvården Exempel"}
HTJ: Final = {"id": "SE2120009999-U120", "name": "Hemtjänsten Norra"}
BIST: Final = {"id": "SE2120009999-U130", "name": "Biståndsenheten äldreomsorg"}

OWN_VIEW_TYPES_BY_PRODUCER: Final[dict[str, list[str]]] = {
    P001: ["care_plans", "bookings", "fixed_contacts", "self_care", "medication",
           "lab_results", "care_contacts", "diagnoses"],
    VO01: ["care_plans", "bookings", "fixed_contacts", "self_care", "medication",
           "social_care_interventions"],
    LSS1: ["care_plans", "social_care_interventions"],
}
"""What each demo producer offers in the own view (``own_view_types`` in the registry)."""

RELEASE_DELAYS: Final[dict[str, dict[str, int]]] = {P001: {"lab_results": 14}}
"""Days after a record's time before it shows in the own view, per producer and type."""

SIP_PERSON: Final = "195205131575"
GUARDIAN_1: Final = "198504012389"
GUARDIAN_2: Final = "198504012397"
CHILD: Final = "201503012385"
TEEN: Final = "201204012395"
PROTECTED: Final = "197607012387"
DELAYED: Final = "199012012390"
NOT_FOR_PATIENT: Final = "196809139295"

OWN_PERSONS: Final[list[dict[str, Any]]] = [
    {"id": SIP_PERSON, "name": "Karl-Erik Holm",
     "tags": ["sip", "bookings", "several_producers", "social_care"],
     "note": "SIP efter stroke där både regionen och kommunen har aktiviteter; bokade tider, "
             "fasta kontakter och egenvård hos båda. / A coordinated plan (SIP) after a stroke "
             "with activities by both the region and the municipality; bookings, fixed "
             "contacts and self-care at both."},
    {"id": GUARDIAN_1, "name": "Sara Nordin", "tags": ["bookings"],
     "note": "Vårdnadshavare till Elsa Nordin; egen bokad tid på vårdcentralen. / Guardian of "
             "Elsa Nordin; her own booking at the health centre."},
    {"id": GUARDIAN_2, "name": "Jonas Nordin", "tags": ["bookings"],
     "note": "Vårdnadshavare till Elsa Nordin; egen bokad tid. / Guardian of Elsa Nordin; his "
             "own booking."},
    {"id": TEEN, "name": "Oskar Berg", "tags": ["teen_13_15"],
     "note": "13–15 år: ser själv bara bokade tider och fasta kontakter; har även läkemedel "
             "som han inte ser själv. / Aged 13-15: sees only his bookings and fixed contacts "
             "himself; also has medication he cannot see himself."},
    {"id": PROTECTED, "name": "Person med skyddade personuppgifter",
     "tags": ["protected_identity"],
     "note": "Skyddade personuppgifter: bara personen själv får läsa i egen vy (portalen sätter "
             "protected_identity). / Protected personal data: only the person may read their "
             "own view (the portal sets protected_identity)."},
    {"id": DELAYED, "name": "Ali Hassan", "tags": ["delayed"],
     "note": "Ett labbsvar från i förrgår är inom regionens fördröjning (14 dagar) och syns "
             "inte i egen vy än; personalen ser det. / A lab result from two days ago is "
             "inside the region's release delay (14 days): not in the own view yet; staff "
             "see it."},
    {"id": NOT_FOR_PATIENT, "name": "Göran Lund", "tags": ["not_for_patient"],
     "note": "En diagnos är markerad att inte visas för patienten (approved_for_patient: "
             "false); personalen ser den. / A diagnosis is marked not to be shown to the "
             "patient; staff see it."},
]
"""The own-view persons, added to the demo's persons (the child Elsa Nordin is there)."""

CHILD_GUARDIANS: Final[dict[str, list[str]]] = {CHILD: [GUARDIAN_1, GUARDIAN_2]}
CHILD_TAGS: Final[dict[str, list[str]]] = {CHILD: ["child_under_13"]}
"""Added to the child already among the persons (those tagged bookings are adults)."""


def _src(producer: str, unit: dict[str, str]) -> dict[str, Any]:
    org = REGION if producer == P001 else KOMMUN
    system = "Exempeljournal" if producer == P001 else "Omsorgssystemet"
    return {"producer": producer, "organisation": org, "unit": unit, "system": system}


def _at(day: dt.date, hour: int, minute: int = 0) -> str:
    return dt.datetime.combine(day, dt.time(hour, minute), SWEDEN).isoformat()


def own_records(today: dt.date) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Producer id → person → the own-view records to add, dated relative to ``today``."""
    d = dt.timedelta
    out: dict[str, dict[str, list[dict[str, Any]]]] = {P001: {}, VO01: {}, LSS1: {}}

    def rec(producer: str, person: str, rtype: str, rid: str, at_unit: dict[str, str],
            time: str, scope: str = "hsl", /, **fields: Any) -> None:
        out[producer].setdefault(person, []).append(
            {"type": rtype, "id": rid, "source": _src(producer, at_unit), "time": time,
             "scope": scope, **fields})

    # -- the SIP person: region and municipality both act -----------------------------
    p = SIP_PERSON
    started = today - d(days=40)
    rec(VO01, p, "care_plans", "EK-SIP-0101", BIST, _at(started, 13), "sol_elderly",
        title="SIP – hemma efter stroke", plan_type="SIP", status="active",
        author={"name": "Lena Fors", "role": "SIP-samordnare"},
        needs=["Klara morgon- och kvällsrutiner hemma", "Träna gång och balans",
               "Säker läkemedelshantering", "Stöd till hustrun som anhörig"],
        goals=["Bo kvar hemma med stöd", "Gå ut med rollator på egen hand"],
        activities=[
            {"what": "Hemtjänst morgon och kväll (personlig omvårdnad)",
             "responsible_org": KOMMUN, "responsible": "Hemtjänsten Norra",
             "when": "Dagligen 07.30 och 20.00", "status": "in_progress"},
            {"what": "Läkemedel delas i dosett och ges av hemsjukvården",
             "responsible_org": KOMMUN, "responsible": "Sjuksköterska, Hemsjukvården Exempel",
             "when": "Varje vecka", "status": "in_progress"},
            {"what": "Fysioterapi: gång- och balansträning",
             "responsible_org": REGION, "responsible": "Fysioterapeut, Vårdcentralen Exempelby",
             "when": "Tisdagar, 8 veckor", "status": "in_progress"},
            {"what": "Läkemedelsgenomgång och blodtryckskontroll",
             "responsible_org": REGION, "responsible": "Läkare, Vårdcentralen Exempelby",
             "when": (today + d(days=9)).isoformat(), "status": "planned"},
            {"what": "Anhörigstöd till hustrun",
             "responsible_org": KOMMUN, "responsible": "Anhörigkonsulent",
             "when": "Vid behov", "status": "planned"},
        ],
        overall_responsible_org=KOMMUN,
        coordinator={"name": "Lena Fors", "role": "SIP-samordnare", "organisation": KOMMUN,
                     "unit": BIST},
        participants=["Karl-Erik Holm", "Hustrun Birgitta Holm", "Biståndsenheten äldreomsorg",
                      "Hemsjukvården Exempel", "Vårdcentralen Exempelby"],
        follow_up_date=(today + d(days=50)).isoformat())
    rec(P001, p, "bookings", "RE-BOK-0101", VC, _at(today - d(days=10), 9),
        start=_at(today + d(days=9), 10, 30), end=_at(today + d(days=9), 11),
        unit=VC, performer={"name": "Per Ahlström", "role": "Läkare"},
        purpose="Läkemedelsgenomgång och blodtryck", status="booked", invitation=True,
        time_type="Besök", care_type="Läkare", address="Storgatan 1, Exempelby")
    rec(P001, p, "bookings", "RE-BOK-0102", VC, _at(today - d(days=20), 14),
        start=_at(today + d(days=2), 13), end=_at(today + d(days=2), 13, 45),
        unit=VC, performer={"name": "Nora Sund", "role": "Fysioterapeut"},
        purpose="Gång- och balansträning", status="booked", time_type="Besök",
        care_type="Fysioterapeut")
    rec(VO01, p, "bookings", "EK-BOK-0101", HSV, _at(today - d(days=3), 10),
        start=_at(today + d(days=5), 9), end=_at(today + d(days=5), 9, 30),
        unit=HSV, performer={"name": "Amir Karimi", "role": "Sjuksköterska"},
        purpose="Hembesök: såromläggning och dosett", status="booked", time_type="Hembesök",
        care_type="Sjuksköterska")
    rec(P001, p, "fixed_contacts", "RE-FVK-0101", VC, _at(started, 11),
        role="fast_vardkontakt", role_display="Fast vårdkontakt",
        person={"name": "Siv Mattsson", "role": "Distriktssköterska"}, unit=VC,
        start=started.isoformat(),
        contact=[{"system": "phone", "value": "010-123 40 00", "hours": "Vardagar 8–10"},
                 {"system": "1177", "value": "Vårdcentralen Exempelby på 1177"}],
        note="Hör av dig till mig om frågor om din vård på vårdcentralen.",
        internal_note="Hustrun orolig, ring henne vid förändring.")
    rec(VO01, p, "fixed_contacts", "EK-FOK-0101", HTJ, _at(started, 12), "sol_elderly",
        role="fast_omsorgskontakt", role_display="Fast omsorgskontakt",
        person={"name": "Maja Lind", "role": "Undersköterska"}, unit=HTJ,
        care_team="Team Norra 2", start=started.isoformat(),
        contact=[{"system": "phone", "value": "0123-456 78", "hours": "Vardagar 7–16"}],
        note="Jag är din kontaktperson i hemtjänsten.",
        internal_note="Nyckel i nyckelgömma, kod i verksamhetssystemet.")
    rec(P001, p, "self_care", "RE-EGV-0101", VC, _at(started, 15),
        activity="Blodtrycksmätning hemma", instructions="Mät morgon och kväll i sittande, "
        "skriv upp värdena och ta med till läkarbesöket.", performed_by="Karl-Erik själv, "
        "med hjälp av hustrun", assessed_by={"name": "Per Ahlström", "role": "Läkare"},
        start=started.isoformat(), follow_up_date=(today + d(days=9)).isoformat())
    rec(P001, p, "medication", "RE-LKM-0101", MED, _at(today - d(days=45), 10),
        drug="Apixaban 5 mg tablett", dose="1 tablett", route="oral", schedule="2 gånger dagligen",
        purpose="Förebygga ny stroke", start=(today - d(days=45)).isoformat(),
        administered_by="Hemsjukvården Exempel",
        codes=[{"system": "urn:oid:1.2.752.129.2.2.3.1.1", "code": "B01AF02",
                "display": "Apixaban"}])
    rec(P001, p, "lab_results", "RE-LAB-0101", VC, _at(today - d(days=30), 8, 15),
        analysis="P-Kreatinin", value="92", unit="µmol/L", reference_range="60–105",
        codes=[{"system": "urn:oid:1.2.752.108.1", "code": "NPU18016",
                "display": "P-Kreatinin"}])
    rec(VO01, p, "social_care_interventions", "EK-INS-0101", BIST, _at(started, 9),
        "sol_elderly", intervention="Hemtjänst: personlig omvårdnad", legal_basis="SoL 4 kap. 1 §",
        phase="verkstallighet", decision_date=started.isoformat(),
        start=(started + d(days=2)).isoformat(), extent="2 besök per dag")

    # -- the guardians' own bookings, and the child's -----------------------------------
    rec(P001, GUARDIAN_1, "bookings", "RE-BOK-0201", VC, _at(today - d(days=6), 9),
        start=_at(today + d(days=12), 8, 30), end=_at(today + d(days=12), 8, 50), unit=VC,
        purpose="Hälsokontroll", status="booked", time_type="Besök", care_type="Sjuksköterska")
    rec(P001, GUARDIAN_2, "bookings", "RE-BOK-0202", VC, _at(today - d(days=4), 9),
        start=_at(today + d(days=20), 15), end=_at(today + d(days=20), 15, 20), unit=VC,
        purpose="Uppföljning av blodtryck", status="booked", time_type="Telefontid",
        care_type="Sjuksköterska")
    rec(P001, CHILD, "bookings", "RE-BOK-0301", BUM, _at(today - d(days=14), 10),
        start=_at(today + d(days=16), 14), end=_at(today + d(days=16), 14, 45), unit=BUM,
        performer={"name": "Peter Nyberg", "role": "Läkare"},
        purpose="Astmakontroll och allergiuppföljning", status="booked", invitation=True,
        time_type="Besök", care_type="Läkare")
    rec(P001, CHILD, "fixed_contacts", "RE-FVK-0301", BUM, _at(today - d(days=300), 10),
        role="kontaktsjukskoterska", role_display="Kontaktsjuksköterska",
        person={"name": "Hanna Åberg", "role": "Barnsjuksköterska"}, unit=BUM,
        start=(today - d(days=300)).isoformat(),
        contact=[{"system": "phone", "value": "010-123 44 00", "hours": "Vardagar 9–11"}],
        internal_note="Föräldrarna separerade, båda vårdnadshavare.")
    rec(P001, CHILD, "self_care", "RE-EGV-0301", BUM, _at(today - d(days=200), 10),
        activity="Adrenalinpenna vid allergisk reaktion",
        instructions="Bär alltid två pennor. Ge i låret vid andningsbesvär och ring 112.",
        performed_by="Elsa, föräldrar och skolpersonal",
        assessed_by={"name": "Peter Nyberg", "role": "Läkare"},
        start=(today - d(days=200)).isoformat(),
        follow_up_date=(today + d(days=16)).isoformat())

    # -- the teenager -------------------------------------------------------------------
    rec(P001, TEEN, "bookings", "RE-BOK-0401", BUM, _at(today - d(days=8), 11),
        start=_at(today + d(days=7), 15, 30), end=_at(today + d(days=7), 16), unit=BUM,
        performer={"name": "Karin Wall", "role": "Diabetessjuksköterska"},
        purpose="Diabeteskontroll", status="booked", time_type="Besök",
        care_type="Sjuksköterska")
    rec(P001, TEEN, "fixed_contacts", "RE-FVK-0401", BUM, _at(today - d(days=500), 10),
        role="fast_vardkontakt", role_display="Fast vårdkontakt",
        person={"name": "Karin Wall", "role": "Diabetessjuksköterska"}, unit=BUM,
        start=(today - d(days=500)).isoformat(),
        contact=[{"system": "phone", "value": "010-123 44 10", "hours": "Vardagar 8–9"}])
    rec(P001, TEEN, "medication", "RE-LKM-0401", BUM, _at(today - d(days=500), 10),
        drug="Insulin aspart", dose="Enligt schema", route="subkutan",
        start=(today - d(days=500)).isoformat(),
        codes=[{"system": "urn:oid:1.2.752.129.2.2.3.1.1", "code": "A10AB05",
                "display": "Insulin aspart"}])

    # -- protected identity, delayed, not for the patient --------------------------------
    rec(P001, PROTECTED, "bookings", "RE-BOK-0501", VC, _at(today - d(days=5), 9),
        start=_at(today + d(days=11), 11), end=_at(today + d(days=11), 11, 30), unit=VC,
        purpose="Återbesök", status="booked", time_type="Besök", care_type="Läkare")
    rec(P001, PROTECTED, "medication", "RE-LKM-0501", VC, _at(today - d(days=90), 9),
        drug="Levotyroxin 50 mikrogram", dose="1 tablett", route="oral", schedule="På morgonen",
        start=(today - d(days=90)).isoformat())
    rec(P001, DELAYED, "lab_results", "RE-LAB-0601", VC, _at(today - d(days=60), 8),
        analysis="B-HbA1c", value="41", unit="mmol/mol", reference_range="27–42",
        codes=[{"system": "urn:oid:1.2.752.108.1", "code": "NPU27300", "display": "B-HbA1c"}])
    rec(P001, DELAYED, "lab_results", "RE-LAB-0602", VC, _at(today - d(days=2), 8),
        analysis="P-PSA", value="6.8", unit="µg/L", reference_range="< 3", abnormal=True,
        codes=[{"system": "urn:oid:1.2.752.108.1", "code": "NPU08669", "display": "P-PSA"}])
    rec(P001, DELAYED, "bookings", "RE-BOK-0601", VC, _at(today - d(days=2), 9),
        start=_at(today + d(days=14), 9), end=_at(today + d(days=14), 9, 30), unit=VC,
        purpose="Svar på provtagning", status="booked", time_type="Besök", care_type="Läkare")
    rec(P001, NOT_FOR_PATIENT, "diagnoses", "RE-DIA-0701", MED, _at(today - d(days=20), 14),
        display="Misstänkt kognitiv svikt, utreds", approved_for_patient=False,
        codes=[{"system": "urn:oid:1.2.752.116.1.1.1.1.3", "code": "R41.8",
                "display": "Andra och ospecificerade symtom och sjukdomstecken"}])
    rec(P001, NOT_FOR_PATIENT, "diagnoses", "RE-DIA-0702", MED, _at(today - d(days=400), 14),
        display="Förmaksflimmer", status="active",
        codes=[{"system": "urn:oid:1.2.752.116.1.1.1.1.3", "code": "I48.9",
                "display": "Förmaksflimmer och förmaksfladder, ospecificerat"}])
    rec(P001, NOT_FOR_PATIENT, "medication", "RE-LKM-0701", MED, _at(today - d(days=400), 14),
        drug="Metoprolol 50 mg", dose="1 tablett", schedule="På morgonen",
        start=(today - d(days=400)).isoformat())
    return out
