"""The portal app against a stand-in broker: what it signs and sends for each visitor.

The stand-in only records and verifies the portal's tokens and answers in SPEC 9's shape;
the browser tests over the demo (tests/samsvar_cli/test_portal_browser.py) use the real
broker. Here: the claims of each kind of visitor, and the session's rules.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web

from consumer_client.portal import DemoRegister, PortalConfig, make_app
from schemas import jose
from schemas.jose import PrivateKey, generate_key
from schemas.messages import OWN_QUERY_TYP, Answer, SourceResult
from schemas.records import OrgRef

ISSUER = "SE5560000000-INV1"
AUDIENCE = "SE0000000000-SAMSVAR"
ADULT, TEEN, CHILD = "195205131575", "201204012395", "201503012385"
GUARDIAN, OTHER, PROTECTED = "198504012389", "199012012390", "197607012387"
T0 = 1_796_720_400.0  # 2026-12-08 09:40 UTC
PERSONS = [
    {"id": ADULT, "name": "Karl-Erik Holm", "tags": ["sip"]},
    {"id": TEEN, "name": "Oskar Berg", "tags": ["teen_13_15"], "guardians": [GUARDIAN]},
    {"id": CHILD, "name": "Elsa Nordin", "tags": ["child_under_13"], "guardians": [GUARDIAN]},
    {"id": GUARDIAN, "name": "Sara Nordin", "tags": ["bookings"]},
    {"id": OTHER, "name": "Ali Hassan", "tags": ["delayed"]},
    {"id": PROTECTED, "name": "Skyddad Person", "tags": ["protected_identity"]},
]


@dataclass
class Clock:
    now: float = T0

    def __call__(self) -> float:
        return self.now


@dataclass
class Broker:
    key: PrivateKey
    url: str = ""
    claims: list[dict[str, Any]] = field(default_factory=list)
    status: str = "ok"
    refuse: str | None = None
    """A rule to refuse every query by, with 403 problem details."""
    runner: web.AppRunner | None = None

    async def stop(self) -> None:
        runner, self.runner = self.runner, None
        if runner is not None:
            await runner.cleanup()


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    stub = Broker(key=generate_key("EdDSA"))

    async def own_query(request: web.Request) -> web.Response:
        token = await request.text()
        _, payload = jose.verify(token, lambda h: stub.key.public, typ=OWN_QUERY_TYP)
        claims = json.loads(payload)
        stub.claims.append(claims)
        if stub.refuse:
            return web.json_response(
                {"type": f"https://samsvar.se/problems/{stub.refuse}", "title": "refused",
                 "status": 403, "rule": stub.refuse, "detail": "as the law says"},
                status=403, content_type="application/problem+json")
        answer = Answer(query_id="q", subject=claims["sub"], complete=stub.status == "ok",
                        blocked_information_exists=False, acting_as=claims["acting_as"],
                        records=[], sources=[SourceResult(
                            producer="SE2321000999-P001", status=stub.status,  # type: ignore[arg-type]
                            organisation=OrgRef(id="SE2321000999-RE01", name="Region Exempel"))])
        return web.Response(body=msgspec.json.encode(answer), content_type="application/json")

    async def producers(request: web.Request) -> web.Response:
        return web.json_response({"producers": [
            {"id": "SE2321000999-P001", "name": "Regionens journal"}]})

    app = web.Application()
    app.router.add_post("/v1/own/queries", own_query)
    app.router.add_get("/v1/producers", producers)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    stub.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    stub.runner = runner
    try:
        yield stub
    finally:
        await stub.stop()


@dataclass
class Portal:
    http: aiohttp.ClientSession
    url: str
    clock: Clock

    async def get(self) -> str:
        async with self.http.get(f"{self.url}/") as resp:
            assert resp.status == 200
            assert resp.headers["Cache-Control"] == "no-store"
            return await resp.text()

    async def post(self, path: str, **form: str) -> int:
        async with self.http.post(f"{self.url}{path}", data=form,
                                  allow_redirects=False) as resp:
            return resp.status

    async def sign_in(self, person: str) -> str:
        assert await self.post("/logga-in", person=person) == 303
        return await self.get()

    def csrf(self, page: str) -> str:
        marker = 'name="csrf" value="'
        return page.split(marker, 1)[1].split('"', 1)[0]


@pytest.fixture
async def portal(broker: Broker) -> AsyncIterator[Portal]:
    clock = Clock()
    config = PortalConfig(broker_url=broker.url, issuer=ISSUER, key=broker.key,
                          audience=AUDIENCE, register=DemoRegister.from_demo(PERSONS),
                          clock=clock)
    runner = web.AppRunner(make_app(config))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    # unsafe=True: keep cookies from an IP address (the portal listens on 127.0.0.1)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        yield Portal(http, f"http://127.0.0.1:{runner.addresses[0][1]}", clock)
    await runner.cleanup()


async def test_signed_out_the_page_is_the_demo_sign_in(portal: Portal, broker: Broker) -> None:
    page = await portal.get()
    assert "Logga in i Min översikt" in page and "inte BankID" in page
    assert broker.claims == []


async def test_a_person_signs_in_and_the_portal_asks_as_self_at_loa3(
    portal: Portal, broker: Broker,
) -> None:
    page = await portal.sign_in(ADULT)
    assert "Inloggad: Karl-Erik Holm (19520513-1575)" in page
    (claims,) = broker.claims
    assert claims["iss"] == ISSUER and claims["aud"] == AUDIENCE and claims["sub"] == ADULT
    assert claims["actor"] == {"id": ADULT, "loa": "http://id.elegnamnden.se/loa/1.0/loa3",
                               "auth_time": int(T0)}
    assert claims["acting_as"] == "self" and "mandate" not in claims
    assert claims["types"] == ["bookings", "fixed_contacts", "care_plans", "self_care",
                               "medication", "lab_results", "diagnoses",
                               "social_care_interventions"]
    assert not {"user", "relation", "basis", "unblock"} & set(claims)
    assert claims.get("protected_identity", False) is False
    assert 0 < claims["exp"] - claims["iat"] <= 300
    assert "Regionens journal" in page  # the source named as the broker lists it


async def test_a_guardian_switches_to_a_child_under_13(portal: Portal, broker: Broker) -> None:
    page = await portal.sign_in(GUARDIAN)
    assert 'value="201503012385">Elsa Nordin (barn, 11 år)</button>' in page
    assert await portal.post("/vaxla", subject=CHILD, csrf=portal.csrf(page)) == 303
    page = await portal.get()
    assert "<h1>Elsa Nordins översikt</h1>" in page
    claims = broker.claims[-1]
    assert claims["sub"] == CHILD and claims["acting_as"] == "guardian"
    assert claims["actor"]["id"] == GUARDIAN
    assert claims["mandate"] == {"source": "folkbokforing", "checked_at": "2026-12-08"}
    assert await portal.post("/vaxla", subject=GUARDIAN, csrf=portal.csrf(page)) == 303
    assert "<h1>Min översikt</h1>" in await portal.get()
    assert broker.claims[-1]["sub"] == GUARDIAN


async def test_protected_personal_data_is_asserted(portal: Portal, broker: Broker) -> None:
    await portal.sign_in(PROTECTED)
    assert broker.claims[-1]["protected_identity"] is True
    assert broker.claims[-1]["acting_as"] == "self"


async def test_a_guardian_cannot_switch_to_a_child_of_13_or_more(
    portal: Portal, broker: Broker,
) -> None:
    page = await portal.sign_in(GUARDIAN)
    assert ("Oskar Berg (barn, 14 år): från 13 år kan vårdnadshavare inte se barnets "
            "uppgifter här") in page
    assert 'value="201204012395"' not in page
    await portal.post("/vaxla", subject=TEEN, csrf=portal.csrf(page))
    await portal.get()
    assert {c["sub"] for c in broker.claims} == {GUARDIAN}


async def test_no_switch_to_someone_else_nor_without_the_form_token(
    portal: Portal, broker: Broker,
) -> None:
    page = await portal.sign_in(GUARDIAN)
    await portal.post("/vaxla", subject=OTHER, csrf=portal.csrf(page))
    await portal.post("/vaxla", subject=CHILD, csrf="forged")
    await portal.post("/vaxla", subject=CHILD)
    await portal.get()
    assert {c["sub"] for c in broker.claims} == {GUARDIAN}


async def test_a_13_to_15_year_old_is_asked_only_bookings_and_contacts(
    portal: Portal, broker: Broker,
) -> None:
    page = await portal.sign_in(TEEN)
    assert broker.claims[-1]["types"] == ["bookings", "fixed_contacts"]
    assert "13–15 år" in page and 'id="h-planer"' not in page


async def test_a_child_under_13_on_their_own_is_not_asked_for(
    portal: Portal, broker: Broker,
) -> None:
    page = await portal.sign_in(CHILD)
    assert "under 13 år" in page and broker.claims == []


async def test_the_sign_in_ends_after_an_hour(portal: Portal, broker: Broker) -> None:
    await portal.sign_in(ADULT)
    portal.clock.now += 3599
    assert "Inloggad" in await portal.get()
    assert broker.claims[-1]["actor"]["auth_time"] == int(T0)
    portal.clock.now += 1
    page = await portal.get()
    assert "Du har blivit utloggad" in page and "Inloggad" not in page
    assert len(broker.claims) == 2


async def test_signing_out_ends_the_session(portal: Portal, broker: Broker) -> None:
    page = await portal.sign_in(ADULT)
    assert await portal.post("/logga-ut", csrf=portal.csrf(page)) == 303
    assert "Logga in i Min översikt" in await portal.get()


async def test_an_unknown_person_cannot_sign_in(portal: Portal, broker: Broker) -> None:
    assert await portal.post("/logga-in", person="191212121212") == 400
    assert await portal.post("/logga-in", person="nonsense") == 400
    assert "Logga in i Min översikt" in await portal.get()


async def test_a_source_not_reachable_is_said_plainly(portal: Portal, broker: Broker) -> None:
    broker.status = "unavailable"
    page = await portal.sign_in(ADULT)
    assert 'data-status="unavailable"' in page and "Gick inte att nå just nu" in page
    assert "Översikten är inte komplett" in page


async def test_a_refusal_is_said_in_words_and_shows_nothing_else(
    portal: Portal, broker: Broker,
) -> None:
    broker.refuse = "protected-identity"
    page = await portal.sign_in(ADULT)
    assert 'data-rule="protected-identity"' in page and "skyddade personuppgifter" in page
    assert 'id="h-besok"' not in page and 'id="h-kallor"' not in page


async def test_a_broker_out_of_reach_is_said_plainly(portal: Portal, broker: Broker) -> None:
    await portal.sign_in(ADULT)
    await broker.stop()
    page = await portal.get()
    assert "Översikten kunde inte hämtas" in page and "svarar inte" in page
    assert 'id="h-besok"' not in page
