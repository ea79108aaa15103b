"""The pages of "Min översikt" rendered from an own-view answer of SPEC section 9's shape.

The browser tests (tests/samsvar_cli/test_portal_browser.py) drive the same pages over the
demo; these check what each page says, source by source and theme by theme.
"""

from __future__ import annotations

import datetime as dt
import re
from html.parser import HTMLParser

from consumer_client.portal import CSP, Outcome, Person, Target, overview_page, sign_in_page
from consumer_client.portal.register import DemoRegister
from schemas.messages import Answer, Problem, SourceResult
from schemas.records import (
    Activity,
    Booking,
    CarePlan,
    ContactPoint,
    FixedContact,
    LabResult,
    Medication,
    OrgRef,
    PersonRef,
    Record,
    RecordSource,
    SelfCare,
    UnitRef,
)

NOW = dt.datetime(2026, 12, 8, 9, 0, tzinfo=dt.UTC)
REGION = OrgRef(id="SE2321000999-RE01", name="Region Exempel")
KOMMUN = OrgRef(id="SE2120009999-EK01", name="Exempel kommun")
VC = UnitRef(id="SE2321000999-U200", name="Vårdcentralen Exempelby")
HTJ = UnitRef(id="SE2120009999-U120", name="Hemtjänsten Norra")
ADULT = Person(id="195205131575", name="Karl-Erik Holm")
CHILD = Person(id="201503012385", name="Elsa Nordin", guardians=("198504012389",))
GUARDIAN = Person(id="198504012389", name="Sara Nordin")
SECRET_NOTE = "Intern anteckning: ringer ofta, Zebrafeber-9071"


def src(producer: str) -> RecordSource:
    region = producer == "SE2321000999-P001"
    return RecordSource(producer=producer, organisation=REGION if region else KOMMUN,
                        unit=VC if region else HTJ)


P001, VO01, LSS1 = "SE2321000999-P001", "SE2120009999-VO01", "SE2120009999-LSS1"


def records() -> list[Record]:
    t = NOW - dt.timedelta(days=3)
    return [
        CarePlan(id="vp", source=src(P001), time=t, scope="hsl", title="Vårdplan hjärta",
                 plan_type="VP"),
        CarePlan(id="sip", source=src(VO01), time=t - dt.timedelta(days=30),
                 scope="sol_elderly", title="SIP – hemma efter stroke", plan_type="SIP",
                 needs=["Träna gång och balans"], goals=["Bo kvar hemma"],
                 activities=[
                     Activity(what="Hemtjänst morgon och kväll", responsible_org=KOMMUN,
                              responsible="Hemtjänsten Norra", when="Dagligen",
                              status="in_progress"),
                     Activity(what="Fysioterapi: gång- och balansträning",
                              responsible_org=REGION, responsible="Fysioterapeut",
                              when="Tisdagar", status="planned"),
                     Activity(what="Läkemedelsgenomgång", responsible_org=REGION,
                              when="2026-12-17"),
                 ],
                 overall_responsible_org=KOMMUN,
                 coordinator=PersonRef(name="Lena Fors", role="SIP-samordnare",
                                       organisation=KOMMUN),
                 follow_up_date=dt.date(2027, 1, 15), participants=["Karl-Erik", "Hustrun"]),
        Booking(id="b-past", source=src(P001), time=t, scope="hsl",
                start=NOW - dt.timedelta(days=2), unit=VC, purpose="Gammalt besök"),
        Booking(id="b-late", source=src(VO01), time=t, scope="sol_elderly",
                start=NOW + dt.timedelta(days=20), unit=HTJ, purpose="Uppföljning hemtjänst",
                invitation=True),
        Booking(id="b-soon", source=src(P001), time=t, scope="hsl",
                start=dt.datetime(2026, 12, 15, 8, 30, tzinfo=dt.UTC), unit=VC,
                purpose="Blodtryckskontroll", time_type="Besök", care_type="Sjuksköterska"),
        FixedContact(id="fc", source=src(P001), time=t, scope="hsl", role="fast_vardkontakt",
                     person=PersonRef(name="Anna Berg", role="Distriktssköterska"), unit=VC,
                     contact=[ContactPoint(system="phone", value="010-123 45 67",
                                           hours="vardagar 8–10")],
                     internal_note=SECRET_NOTE),
        SelfCare(id="sc", source=src(P001), time=t, scope="hsl",
                 activity="Blodtrycksmätning hemma", instructions="Mät varje morgon",
                 performed_by="Du själv"),
        Medication(id="m", source=src(VO01), time=t, scope="hsl", drug="Furosemid 40 mg",
                   dose="1 tablett", schedule="på morgonen",
                   administered_by="Hemsjukvården"),
        LabResult(id="l", source=src(P001), time=t, scope="hsl", analysis="P-Kalium",
                  value="3.1", unit="mmol/L", reference_range="3.5–4.4", abnormal=True),
    ]


def answer(*, sources: list[SourceResult] | None = None, blocked: bool = False,
           recs: list[Record] | None = None) -> Answer:
    return Answer(
        query_id="q1", subject=ADULT.id, complete=True, blocked_information_exists=blocked,
        acting_as="self", records=records() if recs is None else recs,
        sources=sources or [
            SourceResult(producer=P001, organisation=REGION, status="ok", records=6),
            SourceResult(producer=VO01, organisation=KOMMUN, status="ok", records=3),
            SourceResult(producer=LSS1, organisation=KOMMUN, status="no_data"),
        ])


ALL = ("bookings", "fixed_contacts", "care_plans", "self_care", "medication", "lab_results",
       "diagnoses", "social_care_interventions")
NAMES = {P001: "Region Exempel", VO01: "Exempel kommun vård och omsorg",
         LSS1: "Exempel kommun LSS"}


def render(outcome: Outcome, *, actor: Person = ADULT, target: Target | None = None,
           targets: list[Target] | None = None) -> str:
    target = target or Target(person=actor, relation="self")
    return overview_page(actor=actor, target=target, targets=targets or [target],
                         outcome=outcome, csrf="tok", now=NOW)


def section(page: str, anchor: str) -> str:
    m = re.search(rf'<section aria-labelledby="h-{anchor}".*?</section>', page, re.DOTALL)
    assert m, anchor
    return m.group(0)


def text(fragment: str) -> str:
    class P(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.out: list[str] = []

        def handle_data(self, data: str) -> None:
            self.out.append(data)

    p = P()
    p.feed(fragment)
    return re.sub(r" ([:,.)])", r"\1", " ".join(" ".join(p.out).split()))


def test_the_overview_has_every_theme_in_order_with_landmarks() -> None:
    page = render(Outcome(types=ALL, answer=answer(), producer_names=NAMES))
    assert '<html lang="sv">' in page and "<main" in page and "<header>" in page
    headings = re.findall(r"<h2 id=\"h-(\w+)\">", page)
    assert headings == ["kallor", "besok", "kontakter", "planer", "egenvard", "lakemedel",
                        "provsvar", "diagnoser", "insatser"]
    assert page.count("<h1>") == 1
    assert "inte BankID och ingen e-legitimation" in page


def test_the_sip_comes_first_with_who_does_what_in_region_and_municipality() -> None:
    plans = section(render(Outcome(types=ALL, answer=answer())), "planer")
    assert plans.index("SIP – hemma efter stroke") < plans.index("Vårdplan hjärta")
    sip = plans[:plans.index("Vårdplan hjärta")]
    rows = re.findall(r"<tr>(.*?)</tr>", sip.split("<tbody>")[1], re.DOTALL)
    assert [text(r) for r in rows] == [
        "Hemtjänst morgon och kväll Exempel kommun Hemtjänsten Norra Dagligen Pågår",
        "Fysioterapi: gång- och balansträning Region Exempel Fysioterapeut Tisdagar Planerad",
        "Läkemedelsgenomgång Region Exempel 17 december 2026 Planerad",
    ]
    t = text(sip)
    assert "Samordnad individuell plan (SIP)" in t
    assert "Huvudansvar Exempel kommun" in t and "Samordnare Lena Fors, SIP-samordnare" in t
    assert "Uppföljning 15 januari 2027" in t and "Behov Träna gång och balans" in t


def test_only_upcoming_bookings_soonest_first_in_swedish_time() -> None:
    bookings = text(section(render(Outcome(types=ALL, answer=answer())), "besok"))
    assert "Gammalt besök" not in bookings
    assert bookings.index("Blodtryckskontroll") < bookings.index("Uppföljning hemtjänst")
    assert "tisdag 15 december 2026, kl. 09.30" in bookings  # 08:30 UTC is 09:30 in Sweden
    assert "Kallelse" in bookings and "1 tidigare besök visas inte" in bookings


def test_contacts_show_how_to_reach_them_and_never_the_internal_note() -> None:
    page = render(Outcome(types=ALL, answer=answer()))
    contacts = section(page, "kontakter")
    assert 'href="tel:010-1234567"' in contacts
    assert "Fast vårdkontakt: Anna Berg" in text(contacts)
    assert "vardagar 8–10" in text(contacts)
    assert "Zebrafeber" not in page and "Intern anteckning" not in page


def test_self_care_medication_and_results() -> None:
    page = render(Outcome(types=ALL, answer=answer()))
    assert "Blodtrycksmätning hemma" in text(section(page, "egenvard"))
    med = text(section(page, "lakemedel"))
    assert "Furosemid 40 mg" in med and "Ges av Hemsjukvården" in med
    lab = text(section(page, "provsvar"))
    assert "3.1 mmol/L (utanför referensintervallet)" in lab


def test_each_source_is_shown_honestly() -> None:
    sources = [
        SourceResult(producer=P001, organisation=REGION, status="ok", records=6),
        SourceResult(producer=VO01, organisation=KOMMUN, status="unavailable"),
        SourceResult(producer=LSS1, organisation=KOMMUN, status="no_data"),
    ]
    page = render(Outcome(types=ALL, answer=answer(sources=sources), producer_names=NAMES))
    listed = {m[0]: text(m[1]) for m in re.findall(
        r'<li class="\w+" data-producer="([^"]+)" data-status="\w+">(.*?)</li>',
        section(page, "kallor"), re.DOTALL)}
    assert listed[P001] == "Region Exempel: Svarade – 6 uppgifter visas"
    assert listed[VO01] == ("Exempel kommun vård och omsorg (Exempel kommun): "
                            "Gick inte att nå just nu")
    assert listed[LSS1] == "Exempel kommun LSS (Exempel kommun): Svarade: inga uppgifter att visa"
    notice = re.search(r'<div class="notice warn" role="status" id="incomplete">(.*?)</div>',
                       page, re.DOTALL)
    assert notice and "Exempel kommun vård och omsorg" in text(notice.group(1))
    assert "inte komplett" in text(notice.group(1))
    assert 'id="incomplete"' not in render(Outcome(types=ALL, answer=answer()))


def test_a_truncated_source_is_said_to_be_incomplete() -> None:
    sources = [SourceResult(producer=P001, organisation=REGION, status="ok", records=6,
                            truncated=True)]
    page = render(Outcome(types=ALL, answer=answer(sources=sources), producer_names=NAMES))
    assert "alla uppgifter kom inte med" in text(section(page, "kallor"))
    assert 'id="truncated"' in page and 'id="incomplete"' not in page


def test_a_theme_with_nothing_says_so() -> None:
    page = render(Outcome(types=ALL, answer=answer(recs=[])))
    assert text(section(page, "provsvar")) == "Provsvar Inga provsvar."
    assert text(section(page, "besok")) == "Kommande besök Inga kommande besök."


def test_blocked_information_is_mentioned_only_to_the_person_themself() -> None:
    mine = render(Outcome(types=ALL, answer=answer(blocked=True)))
    assert 'id="blocked"' in mine and "själv har spärrat" in mine
    child = Target(person=CHILD, relation="child")
    theirs = render(Outcome(types=ALL, answer=answer(blocked=True)), actor=GUARDIAN,
                    target=child, targets=[Target(person=GUARDIAN, relation="self"), child])
    assert 'id="blocked"' not in theirs


def test_a_guardian_sees_whom_they_look_at_and_can_switch() -> None:
    me = Target(person=GUARDIAN, relation="self")
    child = Target(person=CHILD, relation="child")
    page = render(Outcome(types=ALL, answer=answer()), actor=GUARDIAN, target=child,
                  targets=[me, child])
    assert "<h1>Elsa Nordins översikt</h1>" in page
    assert "som vårdnadshavare (20150301-2385)" in page
    nav = re.search(r'<nav class="switch" aria-label="Vems uppgifter">.*?</nav>', page, re.DOTALL)
    assert nav
    buttons = re.findall(r'<button type="submit" name="subject" value="(\d+)"( aria-current'
                         r'="true")?>([^<]*)</button>', nav.group(0))
    assert buttons == [(GUARDIAN.id, "", "Mig själv"),
                       (CHILD.id, ' aria-current="true"', "Elsa Nordin (barn, 11 år)")]


def test_a_name_ending_in_s_takes_no_extra_s() -> None:
    lars = Target(person=Person(id=CHILD.id, name="Lars"), relation="child")
    page = render(Outcome(types=ALL, answer=answer()), actor=GUARDIAN, target=lars,
                  targets=[Target(person=GUARDIAN, relation="self"), lars])
    assert "<h1>Lars översikt</h1>" in page and "Du ser Lars uppgifter" in page


def test_a_refusal_is_shown_in_words_and_nothing_else() -> None:
    problem = Problem(type="https://samsvar.se/problems/protected-identity", title="refused",
                      status=403, rule="protected-identity", detail="not for others")
    page = render(Outcome(types=ALL, refusal=problem))
    assert "skyddade personuppgifter" in text(page) and "<section" not in page


def test_producer_text_is_escaped() -> None:
    evil = Medication(id="x", source=src(P001), time=NOW, scope="hsl",
                      drug='<script>alert(1)</script>"><img src=x>')
    page = render(Outcome(types=ALL, answer=answer(recs=[evil])))
    assert "<script>" not in page and "<img" not in page
    assert "&lt;script&gt;" in page


def test_the_page_runs_no_script_and_loads_nothing_from_elsewhere() -> None:
    page = render(Outcome(types=ALL, answer=answer()))
    assert "<script" not in page and "<link" not in page
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "script-src" not in CSP and "default-src 'none'" in CSP


def test_sign_in_is_a_labelled_choice_of_test_persons() -> None:
    register = DemoRegister.from_demo([
        {"id": ADULT.id, "name": ADULT.name, "tags": ["sip"]},
        {"id": CHILD.id, "name": CHILD.name, "tags": ["child_under_13"],
         "guardians": [GUARDIAN.id]},
    ])
    page = sign_in_page(register.sign_in_choices(), today=NOW.date())
    ids = re.findall(r'<input type="radio" name="person" id="(p\d+)"', page)
    labels = re.findall(r'<label for="(p\d+)">', page)
    assert ids == labels and len(ids) == 3
    assert "Vårdnadshavare till Elsa Nordin, 19850401-2389" in text(page)
    assert "Det här är inte BankID och ingen e-legitimation." in text(page)
    assert register.children(GUARDIAN.id)[0].name == "Elsa Nordin"
