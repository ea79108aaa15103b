"""The law as rules (SPEC section 6), end to end over a real MQTT server.

One test per rule and outcome. Each docstring names the rule in Swedish and English.
Stage 2 (andra steget) is the broker's access decision; stage 1 (första steget) is what a
producer makes available, enforced again by the broker where it can see.
Record texts are distinctive so a leak is found by searching the whole answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import aiomqtt
import msgspec
import pytest
from structlog.testing import capture_logs

from broker import BrokerConfig
from broker.errors import PolicyRefused
from broker.service import QueryService
from producer_adapter import Adapter
from producer_adapter.blocks import InMemoryBlockSource
from producer_adapter.policy import RULE_EXCLUDED_UNIT, RULE_SCOPE, Block
from schemas.jose import b64url_decode, b64url_encode, generate_key, sign
from schemas.messages import QUERY_TYP, REPLY_TYP, Presence, Reply, Unblock
from schemas.records import Record
from schemas.topics import presence_topic, question_topic
from tests.broker.ports import unstarted_ports
from tests.e2e.conftest import (
    CARE_GIVER,
    PERSON,
    SOCIAL_CARE_GIVER,
    Federation,
    ProducerSpec,
    record,
)

PROBLEM = "urn:samsvar:problem:"
CHILD = "201503012385"  # Skatteverket test personnummer, born 2015
OTHER_PERSON = "195001182046"  # Skatteverket test personnummer
TURNS_18_ON_28_NOV_2026 = "200811282383"  # Skatteverket test personnummer
WHEN = "2026-10-01T10:00:00+02:00"


# -- helpers ------------------------------------------------------------------------


def med(pid: str, n: int, drug: str, *, unit: str = "U1", scope: str = "hsl",
        care_process: str | None = None, when: str = WHEN) -> dict[str, Any]:
    """A medication record with a distinctive drug name."""
    r = record(pid, n, when=when, scope=scope, unit=unit, text=drug)
    if care_process is not None:
        r["care_process"] = care_process
    return r


def person_block(level: str, target: str, subject: str = PERSON) -> Block:
    """A block (spärr) the person registered themselves."""
    return Block(subject=subject, level=level, target=target,  # type: ignore[arg-type]
                 registered_by=subject)


async def start_adapter_with_blocks(fed: Federation, pid: str,
                                    blocks: Sequence[Block] = ()) -> Adapter:
    """Like ``Federation.start_adapter``, with a block register of its own."""
    adapter = Adapter(fed.adapter_config(pid), fed.registry,
                      blocks=InMemoryBlockSource(blocks))
    stop = asyncio.Event()
    task = asyncio.create_task(adapter.run(shutdown=stop))
    fed.adapters.setdefault(pid, []).append((adapter, stop, task))
    await asyncio.wait_for(adapter.ready.wait(), 10)
    await fed.wait_presence(pid)
    return adapter


async def start_all(fed: Federation, blocks: Mapping[str, Sequence[Block]] | None = None) -> None:
    await fed.start_broker()
    for pid in fed.producers:
        await start_adapter_with_blocks(fed, pid, (blocks or {}).get(pid, ()))


def text_of(answer: Any) -> str:
    return json.dumps(answer, ensure_ascii=False)


def drugs(answer: dict[str, Any]) -> set[str]:
    return {r["drug"] for r in answer["records"] if r["type"] == "medication"}


def by_producer(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["producer"]: s for s in answer["sources"]}


async def refused(fed: Federation, token: str | bytes, status: int, rule: str) -> dict[str, Any]:
    got, headers, body = await fed.post(token)
    assert got == status, body
    assert headers["Content-Type"].startswith("application/problem+json")
    assert body["type"] == PROBLEM + rule, body
    assert "records" not in body
    if status == 403:
        assert body["rule"] == rule
    return body  # type: ignore[no-any-return]


def jws_payload(message: aiomqtt.Message, topic: str) -> Any:
    """The decoded payload of a signed message on ``topic``, else ``None`` (amqtt also
    delivers retained messages from topics nobody subscribed to)."""
    parts = bytes(message.payload).split(b".")
    if not message.topic.matches(topic) or len(parts) != 3:
        return None
    return msgspec.json.decode(b64url_decode(parts[1]))


@contextlib.asynccontextmanager
async def rogue_producer(fed: Federation, pid: str,
                         records: list[dict[str, Any]]) -> AsyncIterator[None]:
    """A producer that breaks the law: a raw MQTT client with ``pid``'s real registered key
    that answers every question with ``records``, whatever they are."""
    settings = fed.server.settings(fed.prefix)
    version = (aiomqtt.ProtocolVersion.V5 if settings.protocol == "5"
               else aiomqtt.ProtocolVersion.V311)
    typed = msgspec.json.decode(json.dumps(records), type=list[Record])
    async with aiomqtt.Client("127.0.0.1", settings.port, protocol=version) as rogue:
        await rogue.subscribe(question_topic(fed.prefix, pid), qos=1)
        await rogue.publish(presence_topic(fed.prefix, pid),
                            msgspec.json.encode(Presence(producer=pid, online=True)),
                            qos=1, retain=True)
        await fed.wait_presence(pid)

        async def respond() -> None:
            async for message in rogue.messages:
                question = jws_payload(message, question_topic(fed.prefix, pid))
                if question is None:
                    continue
                reply = Reply(query_id=question["query_id"], producer=pid, status="ok",
                              records=typed)
                token = sign(msgspec.json.encode(reply), fed.keys[pid], typ=REPLY_TYP)
                await rogue.publish(question["reply_topic"], token.encode(), qos=1)

        responder = asyncio.create_task(respond())
        try:
            yield
        finally:
            responder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await responder
            await rogue.publish(presence_topic(fed.prefix, pid), b"", qos=1, retain=True)


# -- stage 2 (andra steget): access at the broker --------------------------------------


@pytest.fixture
async def fed(federation_factory: Any) -> Federation:
    """One producer with a record for the adult and one for the child."""
    fed: Federation = await federation_factory([ProducerSpec("P1", records={
        PERSON: [med("P1", 1, "Vuxen-Metoprolol-7Q")],
        CHILD: [med("P1", 2, "Barn-Salbutamol-4K")],
    })])
    await start_all(fed)
    return fed


@pytest.mark.parametrize("case", ["unknown-issuer", "not-a-consumer", "bad-signature"])
async def test_unregistered_issuer_or_bad_signature_is_401(fed: Federation, case: str) -> None:
    """Okänd utfärdare eller ogiltig signatur (issuer not a registered consumer participant,
    or signature invalid): 401."""
    if case == "unknown-issuer":
        claims = msgspec.structs.replace(fed.claims(), iss="SE0000000000-NOBODY")
        token = sign(msgspec.json.encode(claims), generate_key("EdDSA"), typ=QUERY_TYP)
    elif case == "not-a-consumer":  # registered, but only as a producer organisation
        token = fed.token("PRODORG")
    else:
        head, body, _ = fed.token().split(".")
        token = f"{head}.{body}.{b64url_encode(bytes(64))}"
    # an unknown issuer and a participant without the role get one answer (SPEC 3)
    await refused(fed, token, 401, "bad-signature" if case == "bad-signature" else "unknown-key")


async def test_relation_false_is_refused(fed: Federation) -> None:
    """Aktuell vård- eller omsorgsrelation krävs (a current care relation is required):
    ``relation`` false is 403 ``relation-required``."""
    await refused(fed, fed.token(relation=False), 403, "relation-required")


@pytest.mark.parametrize("issuer", [CARE_GIVER, SOCIAL_CARE_GIVER],
                         ids=["vårdgivare", "omsorgsgivare"])
async def test_consent_is_allowed_for_both_kinds(fed: Federation, issuer: str) -> None:
    """Samtycke (consent): allowed for a vårdgivare (care giver) and an omsorgsgivare
    (social care giver)."""
    answer = await fed.ask(issuer=issuer, basis="consent")
    assert drugs(answer) == {"Vuxen-Metoprolol-7Q"}


async def test_emergency_by_care_giver_is_allowed(fed: Federation) -> None:
    """Nödsituation (emergency) by a vårdgivare (care giver): allowed."""
    answer = await fed.ask(basis="emergency")
    assert drugs(answer) == {"Vuxen-Metoprolol-7Q"}


async def test_emergency_by_social_care_giver_is_refused(fed: Federation) -> None:
    """Nödsituation (emergency) by an omsorgsgivare (social care giver), no unblock:
    403 ``emergency-care-giver-only``."""
    await refused(fed, fed.token(SOCIAL_CARE_GIVER, basis="emergency"), 403,
                  "emergency-care-giver-only")


async def test_lacks_capacity_is_allowed(fed: Federation) -> None:
    """Varaktigt saknar förmåga att samtycka (lacks capacity, not only temporarily):
    allowed (and logged as such)."""
    answer = await fed.ask(issuer=SOCIAL_CARE_GIVER, basis="lacks_capacity")
    assert drugs(answer) == {"Vuxen-Metoprolol-7Q"}


async def test_child_basis_for_a_child_is_allowed(fed: Federation) -> None:
    """Barn som inte kan samtycka (a child who cannot consent), the person under 18 by
    the identity number: allowed without consent."""
    answer = await fed.ask(subject=CHILD, basis="child")
    assert answer["subject"] == CHILD
    assert drugs(answer) == {"Barn-Salbutamol-4K"}


async def test_child_basis_for_an_adult_is_refused(fed: Federation) -> None:
    """Barn (child) as basis for a person 18 or older by the identity number:
    403 ``child-under-18``."""
    await refused(fed, fed.token(subject=PERSON, basis="child"), 403, "child-under-18")


@pytest.mark.parametrize(("utc", "allowed"), [
    ("2026-11-27T22:30:00+00:00", True),    # 23:30 on 27 Nov in Sweden: still 17
    ("2026-11-27T23:30:00+00:00", False),   # 00:30 on 28 Nov in Sweden: 18 today
])
async def test_child_basis_counts_age_by_the_swedish_date(federation_factory: Any, utc: str,
                                                          allowed: bool) -> None:
    """Barn (child): the person's age is counted on the Swedish calendar date, so basis
    ``child`` ends at midnight Swedish time on the 18th birthday, not at midnight UTC.

    Through the broker's core with its clock set (no MQTT: the decision precedes it)."""
    fed: Federation = await federation_factory([ProducerSpec("P1")])
    now = dt.datetime.fromisoformat(utc).timestamp()
    config = BrokerConfig(registry_path=fed.tmp / "registry.toml",
                          key_path=fed.tmp / "broker.jwk", port=0)
    service = QueryService(config=config, registry=fed.registry, key=fed.keys["broker"],
                           clock=lambda: now, **unstarted_ports(config, fed.keys["broker"]))
    token = fed.token(subject=TURNS_18_ON_28_NOV_2026, basis="child", now=int(now))
    if allowed:
        assert (await service.authenticate(token.encode())).decision.allowed
    else:
        with pytest.raises(PolicyRefused) as refusal:
            await service.authenticate(token.encode())
        assert refusal.value.rule == "child-under-18"


async def test_kind_claim_cannot_make_a_care_giver(fed: Federation) -> None:
    """Aktörens slag kommer från registret (participant kind comes from the registry, never
    from claims): an omsorgsgivare adding ``"kind": "vårdgivare"`` to its token is still
    refused in an emergency."""
    payload = msgspec.to_builtins(fed.claims(SOCIAL_CARE_GIVER, basis="emergency"))
    payload["kind"] = "vårdgivare"
    token = sign(msgspec.json.encode(payload), fed.keys[SOCIAL_CARE_GIVER], typ=QUERY_TYP)
    await refused(fed, token, 403, "emergency-care-giver-only")


async def test_producer_is_told_the_registry_kind(fed: Federation) -> None:
    """Aktörens slag kommer från registret (participant kind comes from the registry): the
    question a producer receives carries the registry's kind, not the token's claim."""
    payload = msgspec.to_builtins(fed.claims(SOCIAL_CARE_GIVER, basis="consent"))
    payload["kind"] = "vårdgivare"
    token = sign(msgspec.json.encode(payload), fed.keys[SOCIAL_CARE_GIVER], typ=QUERY_TYP)
    settings = fed.server.settings(fed.prefix)
    version = (aiomqtt.ProtocolVersion.V5 if settings.protocol == "5"
               else aiomqtt.ProtocolVersion.V311)
    topic = question_topic(fed.prefix, "P1")
    async with aiomqtt.Client("127.0.0.1", settings.port, protocol=version) as spy:
        await spy.subscribe(topic, qos=1)
        status, _, answer = await fed.post(token)
        assert status == 200, answer
        async with asyncio.timeout(5):
            async for message in spy.messages:
                question = jws_payload(message, topic)
                if question is not None:
                    break
    assert question["query_id"] == answer["query_id"]
    assert question["consumer"]["kind"] == "omsorgsgivare"
    assert question["consumer"]["organisation"]["id"] == SOCIAL_CARE_GIVER


# -- stage 1 (första steget): marking (uppmärkning) ------------------------------------


async def test_sol_other_never_leaves_the_adapter(federation_factory: Any) -> None:
    """Uppmärkning (marking): övrig socialtjänstdokumentation (``sol_other``, e.g.
    individ- och familjeomsorg) is never disclosed; the adapter drops it."""
    fed: Federation = await federation_factory([
        ProducerSpec("P-KOMMUN", records={PERSON: [
            med("P-KOMMUN", 1, "Hemtjanst-Alvedon-3R", scope="sol_elderly"),
            med("P-KOMMUN", 2, "IFO-Hemlig-Subutex-9X", scope="sol_other"),
            record("P-KOMMUN", 3, when=WHEN, type_="care_documentation", scope="sol_other",
                   text="IFO-utredning-orosanmalan-5M"),
        ]}),
        ProducerSpec("P-IFO", records={PERSON: [
            med("P-IFO", 1, "Endast-IFO-Metadon-2W", scope="sol_other"),
        ]}),
    ])
    await start_all(fed)
    with capture_logs() as logs:
        answer = await fed.ask(types=["medication", "care_documentation"])
    assert drugs(answer) == {"Hemtjanst-Alvedon-3R"}
    for secret in ("IFO-Hemlig-Subutex-9X", "IFO-utredning-orosanmalan-5M",
                   "Endast-IFO-Metadon-2W"):
        assert secret not in text_of(answer)
    sources = by_producer(answer)
    assert (sources["P-KOMMUN"]["status"], sources["P-KOMMUN"]["records"]) == ("ok", 1)
    assert (sources["P-IFO"]["status"], sources["P-IFO"]["records"]) == ("no_data", 0)
    assert answer["blocked_information_exists"] is False  # sol_other is no block
    dropped = {e["producer"]: e["dropped"] for e in logs if e["event"] == "question answered"}
    assert dropped == {"P-KOMMUN": {RULE_SCOPE: 2}, "P-IFO": {RULE_SCOPE: 1}}
    assert not [e for e in logs if e["event"] == "producer_violation"]


async def test_sol_other_from_a_rogue_producer_is_dropped_by_the_broker(
    federation_factory: Any,
) -> None:
    """Uppmärkning (marking), enforced again at the broker: a producer that signs a reply
    holding a ``sol_other`` record has that record dropped and counted as a violation."""
    fed: Federation = await federation_factory([
        ProducerSpec("P-REGION", records={PERSON: [med("P-REGION", 1, "Region-Waran-8T")]}),
        ProducerSpec("P-ROGUE"),
    ])
    await fed.start_broker()
    await start_adapter_with_blocks(fed, "P-REGION")
    async with rogue_producer(fed, "P-ROGUE", [
        med("P-ROGUE", 1, "Rogue-Lagligt-Omeprazol-6H", scope="hsl"),
        med("P-ROGUE", 2, "Rogue-IFO-Buprenorfin-1Z", scope="sol_other"),
    ]):
        with capture_logs() as logs:
            answer = await fed.ask(deadline_ms=2000)
    assert drugs(answer) == {"Region-Waran-8T", "Rogue-Lagligt-Omeprazol-6H"}
    assert "Rogue-IFO-Buprenorfin-1Z" not in text_of(answer)
    sources = by_producer(answer)
    assert (sources["P-ROGUE"]["status"], sources["P-ROGUE"]["records"]) == ("ok", 1)
    violations = [e for e in logs if e["event"] == "producer_violation"]
    assert [(e["producer"], e["dropped_records"]) for e in violations] == [("P-ROGUE", 1)]


async def test_blocked_record_from_a_rogue_producer_is_dropped_by_the_broker(
    federation_factory: Any,
) -> None:
    """Spärr (block), enforced again at the broker: a record marked ``blocked`` from a
    producer the consumer did not name in an unblock ``read`` is dropped as a violation."""
    fed: Federation = await federation_factory([ProducerSpec("P-ROGUE")])
    await fed.start_broker()
    released = med("P-ROGUE", 1, "Rogue-Sparrad-Litium-5B")
    released["blocked"] = True
    async with rogue_producer(fed, "P-ROGUE", [released]):
        with capture_logs() as logs:
            locate = await fed.ask(deadline_ms=2000, unblock=Unblock(step="locate"))
    assert "Rogue-Sparrad-Litium-5B" not in text_of(locate)
    assert by_producer(locate)["P-ROGUE"]["status"] == "no_data"
    assert [e["producer"] for e in logs if e["event"] == "producer_violation"] == ["P-ROGUE"]


# -- stage 1: excluded units -----------------------------------------------------------


async def test_excluded_unit_is_never_disclosed(federation_factory: Any) -> None:
    """Undantagen enhet (excluded unit, e.g. a psychiatric or youth clinic not joined):
    never disclosed, not even with an unblock ``read`` naming the producer."""
    fed: Federation = await federation_factory([
        ProducerSpec("P-REGION", excluded_units=["U-UNGDOM"], records={PERSON: [
            med("P-REGION", 1, "Vardcentral-Enalapril-4D", unit="U1"),
            med("P-REGION", 2, "Ungdomsmottagning-Hemlig-7P", unit="U-UNGDOM"),
        ]}),
    ])
    await start_all(fed)
    with capture_logs() as logs:
        plain = await fed.ask()
        read = await fed.ask(unblock=Unblock(step="read", producers=["P-REGION"]))
    for answer in (plain, read):
        assert drugs(answer) == {"Vardcentral-Enalapril-4D"}
        assert "Ungdomsmottagning-Hemlig-7P" not in text_of(answer)
        assert answer["blocked_information_exists"] is False
    dropped = [e["dropped"] for e in logs if e["event"] == "question answered"]
    assert dropped == [{RULE_EXCLUDED_UNIT: 1}] * 2


# -- stage 1: blocks (spärrar) ---------------------------------------------------------

BLOCK_CASES = {
    # level: (the block on P-A, P-A's records, all of them covered by it)
    "organisation": (person_block("organisation", "ORG-P-A"), [
        med("P-A", 1, "Sparrad-Org-Sertralin-1A", unit="U1"),
        med("P-A", 2, "Sparrad-Org-Quetiapin-2A", unit="U2"),
    ]),
    "unit": (person_block("unit", "U-PSYK"), [
        med("P-A", 1, "Sparrad-Enhet-Klozapin-1B", unit="U-PSYK"),
    ]),
    "care_process": (person_block("care_process", "VP-4711"), [
        med("P-A", 1, "Sparrad-Vardprocess-Naltrexon-1C", care_process="VP-4711"),
        med("P-A", 2, "Sparrad-Vardprocess-Antabus-2C", unit="U2", care_process="VP-4711"),
    ]),
}


@pytest.mark.parametrize("level", BLOCK_CASES)
async def test_block_withholds_and_looks_like_no_data(federation_factory: Any,
                                                       level: str) -> None:
    """Spärr (block) at organisation, unit or care-process (vårdprocess) level, registered
    by the person: records withheld, ``blocked_information_exists`` true, and the producer
    holding only blocked records looks exactly like one with no data for the person."""
    block, blocked_records = BLOCK_CASES[level]
    fed: Federation = await federation_factory([
        ProducerSpec("P-A", records={PERSON: blocked_records}),
        ProducerSpec("P-B", records={OTHER_PERSON: [med("P-B", 1, "Annan-Person-Insulin-3E")]}),
        ProducerSpec("P-C", records={PERSON: [med("P-C", 1, "Oppen-Paracetamol-9C")]}),
    ])
    await start_all(fed, blocks={"P-A": [block]})
    answer = await fed.ask()
    assert drugs(answer) == {"Oppen-Paracetamol-9C"}
    for r in blocked_records:
        assert r["drug"] not in text_of(answer)
    assert answer["blocked_information_exists"] is True
    assert "blocked_at" not in answer
    assert [s["producer"] for s in answer["sources"]] == ["P-A", "P-B", "P-C"]  # registry order
    a, b = answer["sources"][0], answer["sources"][1]
    assert set(a) == set(b)
    assert "blocked_at" not in a and "blocked" not in a
    assert (a["status"], a["records"]) == (b["status"], b["records"]) == ("no_data", 0)
    ignore = {"latency_ms", "producer", "organisation"}
    assert {k: v for k, v in a.items() if k not in ignore} == \
           {k: v for k, v in b.items() if k not in ignore}
    assert a["organisation"].keys() == b["organisation"].keys()


def two_blocked_producers() -> list[ProducerSpec]:
    """P-A and P-B each hold blocked information (P-B also open records); P-C none."""
    return [
        ProducerSpec("P-A", records={PERSON: [
            med("P-A", 1, "Sparrad-A-Litium-1L", unit="U-PSYK")]}),
        ProducerSpec("P-B", records={PERSON: [
            med("P-B", 1, "Sparrad-B-Disulfiram-2L", care_process="VP-BEROENDE"),
            med("P-B", 2, "Oppen-B-Simvastatin-3L")]}),
        ProducerSpec("P-C", records={PERSON: [med("P-C", 1, "Oppen-C-Levaxin-4L")]}),
    ]


BLOCKS = {"P-A": [person_block("unit", "U-PSYK")],
          "P-B": [person_block("care_process", "VP-BEROENDE")]}
BLOCKED_TEXTS = ("Sparrad-A-Litium-1L", "Sparrad-B-Disulfiram-2L")


async def test_unblock_locate_with_consent_lists_the_producers(federation_factory: Any) -> None:
    """Spärröverskridande, steg 1 lokalisera (unblock step ``locate``) with samtycke
    (consent): ``blocked_at`` lists exactly the producers holding blocked information;
    without unblock it is absent; the blocked records stay withheld."""
    fed: Federation = await federation_factory(two_blocked_producers())
    await start_all(fed, blocks=BLOCKS)
    plain = await fed.ask()
    assert plain["blocked_information_exists"] is True
    assert "blocked_at" not in plain
    locate = await fed.ask(basis="consent", unblock=Unblock(step="locate"))
    assert locate["blocked_information_exists"] is True
    assert locate["blocked_at"] == ["P-A", "P-B"]
    for answer in (plain, locate):
        assert drugs(answer) == {"Oppen-B-Simvastatin-3L", "Oppen-C-Levaxin-4L"}
        for secret in BLOCKED_TEXTS:
            assert secret not in text_of(answer)


async def test_unblock_read_releases_only_the_named_producer(federation_factory: Any) -> None:
    """Spärröverskridande, steg 2 läsa (unblock step ``read``) with samtycke (consent),
    naming one producer: its blocked records are included marked ``blocked: true``;
    another producer's blocked records stay withheld."""
    fed: Federation = await federation_factory(two_blocked_producers())
    await start_all(fed, blocks=BLOCKS)
    answer = await fed.ask(basis="consent", unblock=Unblock(step="read", producers=["P-A"]))
    marked = {r["drug"]: r.get("blocked", False) for r in answer["records"]}
    assert marked == {"Sparrad-A-Litium-1L": True, "Oppen-B-Simvastatin-3L": False,
                      "Oppen-C-Levaxin-4L": False}
    assert "Sparrad-B-Disulfiram-2L" not in text_of(answer)
    assert answer["blocked_information_exists"] is True  # P-B still withholds
    assert "P-B" in answer["blocked_at"]  # still withholding blocked information
    assert by_producer(answer)["P-A"]["records"] == 1


@pytest.mark.parametrize("step", ["locate", "read"])
async def test_unblock_in_emergency_by_care_giver_is_allowed(federation_factory: Any,
                                                              step: str) -> None:
    """Spärröverskridande i nödsituation (unblock in an emergency) by a vårdgivare
    (care giver): allowed, both ``locate`` and ``read``."""
    fed: Federation = await federation_factory(two_blocked_producers())
    await start_all(fed, blocks=BLOCKS)
    unblock = (Unblock(step="locate") if step == "locate"
               else Unblock(step="read", producers=["P-A", "P-B"]))
    answer = await fed.ask(issuer=CARE_GIVER, basis="emergency", unblock=unblock)
    if step == "locate":
        assert answer["blocked_at"] == ["P-A", "P-B"]
        for secret in BLOCKED_TEXTS:
            assert secret not in text_of(answer)
    else:
        released = {r["drug"] for r in answer["records"] if r.get("blocked")}
        assert released == set(BLOCKED_TEXTS)


@pytest.mark.parametrize("step", ["locate", "read"])
async def test_unblock_in_emergency_by_social_care_giver_is_refused(
    federation_factory: Any, step: str,
) -> None:
    """En omsorgsgivare får aldrig häva en spärr i nödsituation (a social care giver can
    never lift a block in an emergency): 403 ``unblock-emergency-care-giver-only``."""
    fed: Federation = await federation_factory(two_blocked_producers())
    await fed.start_broker()  # refused before any producer is asked
    unblock = (Unblock(step="locate") if step == "locate"
               else Unblock(step="read", producers=["P-A"]))
    await refused(fed, fed.token(SOCIAL_CARE_GIVER, basis="emergency", unblock=unblock), 403,
                  "unblock-emergency-care-giver-only")


@pytest.mark.parametrize("basis", ["lacks_capacity", "child"])
async def test_unblock_without_consent_or_emergency_is_refused(fed: Federation,
                                                               basis: str) -> None:
    """Spärr hävs bara med samtycke eller i nödsituation (a block is lifted only with consent
    or in an emergency): 403 ``unblock-basis``."""
    subject = CHILD if basis == "child" else PERSON
    await refused(fed, fed.token(basis=basis, subject=subject, unblock=Unblock(step="locate")),
                  403, "unblock-basis")


async def test_unblock_read_must_name_producers(fed: Federation) -> None:
    """Steg 2 läsa måste ange producenter (unblock ``read`` must name the producers):
    403 ``unblock-read-names-producers``."""
    await refused(fed, fed.token(unblock=Unblock(step="read")), 403,
                  "unblock-read-names-producers")


# Not here: a block registered by a guardian (vårdnadshavare) is refused at registration,
# in the block register (producer_adapter/blocks.py), not on the query path.
