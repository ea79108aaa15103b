"""Hostile input at the broker: whatever arrives, the answer is a refusal, never a crash.

* The query JWT parser (:meth:`QueryService.authenticate`) raises only
  :class:`QueryRejected` (a problem+json 4xx), never anything that would be a 500, for
  arbitrary bytes, JWS-shaped forgeries, arbitrary claims signed with a valid key and
  mutated valid tokens; and what it accepts always meets the contract.
* Identity numbers: :func:`schemas.identity.normalise` raises only ``InvalidPersonId``.
* Reply decoding (:meth:`Gatherer.on_reply`) never raises and never lets a source be ``ok``
  unless a reply verified with that producer's key and matched the query.
* Algorithm confusion through the running broker over HTTP: 401 every time.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
from typing import Any, Final

import msgspec
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from broker.config import BrokerConfig
from broker.errors import MalformedQuery, QueryRejected, Unauthenticated
from broker.fanout import Gatherer, Outcome
from broker.merge import merge
from broker.service import AuthenticatedQuery, QueryService
from consumer_client import make_claims, sign_query
from schemas.errors import InvalidPersonId
from schemas.identity import luhn_ok, normalise
from schemas.jose import (
    PrivateKey,
    b64url_encode,
    generate_key,
    private_key_from_jwk,
    sign,
)
from schemas.messages import QUERY_TYP, REPLY_TYP, QueryClaims, Reply, User
from schemas.records import (
    DISCLOSABLE_SCOPES,
    INFORMATION_TYPES,
    Medication,
    OrgRef,
    RecordSource,
    UnitRef,
)
from schemas.registry import Registry, parse_registry
from tests.broker.ports import unstarted_ports
from tests.e2e import conftest as e2e
from tests.e2e.conftest import Federation, ProducerSpec
from tests.hostile_strategies import (
    DELETE,
    apply,
    byte_edits,
    json_values,
    jws,
    mutate_bytes,
    nested,
)

BROKER_ID: Final = "SE0000000000-HOST"
CONSUMER: Final = "SE2321000999-RE01"
PRODUCER_ORG: Final = "SE2321000999-PORG"
P1: Final = "SE2321000999-P001"
P2: Final = "SE2321000999-P002"
PERSON: Final = "193803039142"  # Skatteverket's test personnummer
NOW: Final = 1_750_000_000

federation_factory = e2e.federation_factory
"""The end-to-end federation fixture, for algorithm confusion through the running broker."""
USER: Final = User(id="SE2321000999-ANLI", name="Anna Lind", role="Läkare",
                   unit=UnitRef(id="SE2321000999-U100", name="Akuten"))

HYPOTHESIS: Final = settings(deadline=None, max_examples=150,
                             suppress_health_check=[HealthCheck.too_slow])


class Keys:
    def __init__(self) -> None:
        self.broker = generate_key("EdDSA")
        self.consumer_es = generate_key("ES256")
        self.consumer_ed = generate_key("EdDSA")
        self.org = generate_key("EdDSA")
        self.p1 = generate_key("EdDSA")
        self.p2 = generate_key("ES256")
        self.stranger = generate_key("EdDSA")


KEYS: Final = Keys()


def _jwk(*keys: PrivateKey) -> str:
    return "[" + ", ".join(
        "{ " + ", ".join(f'{k} = "{v}"' for k, v in key.public.to_jwk().items()) + " }"
        for key in keys) + "]"


REGISTRY: Final[Registry] = parse_registry(f"""
[broker]
id = "{BROKER_ID}"
keys = {_jwk(KEYS.broker)}

[[participants]]
id = "{CONSUMER}"
name = "Region Exempel"
kind = "vårdgivare"
roles = ["consumer"]
keys = {_jwk(KEYS.consumer_es, KEYS.consumer_ed)}

[[participants]]
id = "{PRODUCER_ORG}"
name = "Producentorganisation"
kind = "vårdgivare"
roles = ["producer"]
keys = {_jwk(KEYS.org)}

[[producers]]
id = "{P1}"
organisation = "{PRODUCER_ORG}"
types = ["medication", "alerts"]
keys = {_jwk(KEYS.p1)}

[[producers]]
id = "{P2}"
organisation = "{PRODUCER_ORG}"
types = ["medication"]
keys = {_jwk(KEYS.p2)}
""")


def service() -> QueryService:
    config = BrokerConfig(registry_path=__file__, key_path=__file__)  # type: ignore[arg-type]
    return QueryService(config=config, registry=REGISTRY, key=KEYS.broker, clock=lambda: NOW,
                        **unstarted_ports(config, KEYS.broker))


def authenticate(token: bytes) -> AuthenticatedQuery:
    """A fresh service's :meth:`QueryService.authenticate` (async: the replay check)."""
    return asyncio.run(service().authenticate(token))


def valid_claims(**kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"issuer": CONSUMER, "audience": BROKER_ID, "user": USER,
                            "subject": PERSON, "types": ["medication"], "basis": "consent",
                            "now": NOW}
    args.update(kw)
    return msgspec.to_builtins(make_claims(**args))  # type: ignore[no-any-return]


# -- strategies ------------------------------------------------------------------------------

plausible = st.one_of(
    json_values,
    st.integers(min_value=NOW - 1000, max_value=NOW + 1000),
    st.from_regex(r"\A(19|20)?[0-9]{6}[-+]?[0-9]{4}\Z"),
    st.sampled_from([CONSUMER, BROKER_ID, P1, PERSON, "consent", "emergency", "child",
                     "lacks_capacity", "locate", "read", "", True, False, 0, -1]),
    st.lists(st.sampled_from([*INFORMATION_TYPES, "sol_other", ""]), max_size=4),
)
"""JSON values near the valid ones, so mutations reach the checks behind the decoder."""

CLAIM_PATHS: Final = ("iss", "aud", "iat", "exp", "jti", "sub", "user", "user.id", "user.unit",
                      "user.unit.id", "relation", "basis", "types", "period", "period.from",
                      "period.to", "unblock", "unblock.step", "unblock.producers",
                      "deadline_ms", "extra")


mutations = st.lists(
    st.tuples(st.sampled_from(CLAIM_PATHS), plausible | st.just(DELETE)), min_size=1,
    max_size=4)


def check_accepted(query: AuthenticatedQuery) -> None:
    """What the broker accepts always meets the contract, whatever produced it."""
    c = query.claims
    assert isinstance(c, QueryClaims)  # a care query, never a person's own
    assert query.participant.id == c.iss == CONSUMER
    assert c.aud == BROKER_ID
    assert 0 < c.exp - c.iat <= 300
    assert c.exp >= NOW - 30 and c.iat <= NOW + 30
    assert c.relation is True
    assert len(query.subject) == 12 and query.subject.isdigit()
    assert normalise(query.subject) == query.subject


# -- the query JWT -----------------------------------------------------------------------------


@HYPOTHESIS
@given(body=st.binary(max_size=3000))
@example(body=b"")
@example(body=b"..")
@example(body=b"a.b.c")
@example(body=b"e30.e30.")
@example(body=("." + b64url_encode(nested(5000)) + ".").encode())
def test_arbitrary_bytes_are_only_ever_refused(body: bytes) -> None:
    with pytest.raises(QueryRejected):
        authenticate(body)


forged_headers = st.fixed_dictionaries(
    {},
    optional={
        "alg": st.sampled_from(["EdDSA", "ES256", "none", "HS256", "RS256", "", "eddsa"])
        | json_values,
        "kid": st.sampled_from([KEYS.consumer_es.kid, KEYS.consumer_ed.kid, KEYS.org.kid])
        | json_values,
        "typ": st.sampled_from([QUERY_TYP, "JWT", "samsvar-question+jws"]) | json_values,
        "crit": json_values,
    },
) | json_values


@HYPOTHESIS
@given(header=forged_headers, payload=json_values | st.builds(valid_claims),
       signature=st.binary(max_size=80) | st.sampled_from([bytes(64), b"\xff" * 64]))
def test_forged_tokens_are_only_ever_refused(header: Any, payload: Any,
                                             signature: bytes) -> None:
    """JWS-shaped, with any header (``none``, HMAC, unknown kids, junk), never validly
    signed: refused, and never with anything but a problem."""
    token = jws(header, json.dumps(payload).encode(), signature)
    with pytest.raises(QueryRejected):
        authenticate(token)


@HYPOTHESIS
@given(payload=json_values, es=st.booleans())
def test_arbitrary_json_signed_with_a_valid_key_is_only_ever_refused(payload: Any,
                                                                     es: bool) -> None:
    key = KEYS.consumer_es if es else KEYS.consumer_ed
    token = sign(json.dumps(payload).encode(), key, typ=QUERY_TYP).encode()
    with pytest.raises(QueryRejected):
        authenticate(token)


@HYPOTHESIS
@given(edits=mutations, es=st.booleans())
@example(edits=[("sub", "19380303-9143")], es=True)
@example(edits=[("iat", 2**70), ("exp", 2**70 + 1)], es=False)
@example(edits=[("iat", -2**70)], es=False)
@example(edits=[("types", [])], es=True)
@example(edits=[("period", {"from": "2024-02-30"})], es=True)
@example(edits=[("unblock", {"step": "read", "producers": None})], es=True)
def test_mutated_claims_signed_with_a_valid_key_are_refused_or_valid(
        edits: list[tuple[str, Any]], es: bool) -> None:
    """Valid claims with fields replaced, emptied or removed, then properly signed: either a
    refusal (QueryRejected), or an accepted query that meets the contract."""
    doc = valid_claims()
    for path, value in edits:
        doc = apply(doc, path, value)
    key = KEYS.consumer_es if es else KEYS.consumer_ed
    token = sign(json.dumps(doc).encode(), key, typ=QUERY_TYP).encode()
    try:
        query = authenticate(token)
    except QueryRejected:
        return
    check_accepted(query)


@HYPOTHESIS
@given(edits=byte_edits)
def test_mutated_valid_tokens_are_refused_or_unchanged(edits: list[tuple[int, int, bytes]]
                                                       ) -> None:
    claims = make_claims(issuer=CONSUMER, audience=BROKER_ID, user=USER, subject=PERSON,
                         types=["medication"], basis="consent", now=NOW, jti="fixed-jti")
    original = msgspec.to_builtins(claims)
    token = sign_query(claims, KEYS.consumer_es).encode()
    mutated = mutate_bytes(token, edits)
    try:
        query = authenticate(mutated)
    except QueryRejected:
        return
    # Only a change the signature does not cover (such as surrounding whitespace) passes.
    assert msgspec.to_builtins(query.claims) == original
    check_accepted(query)


@pytest.mark.parametrize("where", ["header", "payload", "signed-payload"])
def test_deeply_nested_json_is_a_400_or_401_not_a_500(where: str) -> None:
    deep = nested(5000)
    if where == "header":
        token = (b64url_encode(deep) + "." + b64url_encode(
            json.dumps(valid_claims()).encode()) + "." + b64url_encode(bytes(64))).encode()
    elif where == "payload":
        token = jws({"alg": "ES256", "kid": KEYS.consumer_es.kid, "typ": QUERY_TYP}, deep)
    else:
        token = sign(deep, KEYS.consumer_es, typ=QUERY_TYP).encode()
    with pytest.raises((MalformedQuery, Unauthenticated)):
        authenticate(token)


@pytest.mark.parametrize("attack", ["alg-none", "hs256-public-jwk", "es256-with-eddsa-kid",
                                    "eddsa-with-es256-kid"])
def test_algorithm_confusion_is_unauthenticated(attack: str) -> None:
    payload = json.dumps(valid_claims()).encode()
    token = confused_token(attack, payload, es_key=KEYS.consumer_es, ed_key=KEYS.consumer_ed)
    with pytest.raises(Unauthenticated):
        authenticate(token)


def confused_token(attack: str, payload: bytes, *, es_key: PrivateKey,
                   ed_key: PrivateKey) -> bytes:
    """A token that tries to pass by confusing algorithms, aimed at the issuer's keys."""
    if attack == "alg-none":
        return jws({"alg": "none", "kid": es_key.kid, "typ": QUERY_TYP}, payload)
    if attack == "hs256-public-jwk":
        head = b64url_encode(json.dumps({"alg": "HS256", "kid": es_key.kid,
                                         "typ": QUERY_TYP}).encode())
        signing_input = f"{head}.{b64url_encode(payload)}".encode()
        secret = json.dumps(es_key.public.to_jwk()).encode()
        mac = hmac.new(secret, signing_input, hashlib.sha256).digest()
        return signing_input + b"." + b64url_encode(mac).encode()
    signer, victim = {"es256-with-eddsa-kid": ("ES256", ed_key),
                      "eddsa-with-es256-kid": ("EdDSA", es_key)}[attack]
    forger = private_key_from_jwk({**generate_key(signer).to_jwk(),  # type: ignore[arg-type]
                                   "kid": victim.kid})
    return sign(payload, forger, typ=QUERY_TYP).encode()


# -- identity numbers -------------------------------------------------------------------------


@HYPOTHESIS
@given(raw=st.text(max_size=20) | st.from_regex(r"\A\s*[0-9]{6,8}[-+]?[0-9]{4}\s*\Z"),
       today=st.none() | st.dates())
@example(raw="19380303-9142", today=None)
@example(raw="000000-0000", today=dt.date(1, 1, 1))
@example(raw="991231+9999", today=dt.date(150, 1, 1))
@example(raw="19380303\n9142", today=None)
@example(raw="１９３８０３０３９１４２", today=None)  # full-width digits
def test_normalise_raises_only_invalid_person_id(raw: str, today: dt.date | None) -> None:
    try:
        pid = normalise(raw, today=today)
    except InvalidPersonId:
        return
    assert len(pid) == 12 and pid.isascii() and pid.isdigit()
    assert luhn_ok(pid[2:])
    assert normalise(pid, today=today) == pid


@pytest.mark.parametrize("raw", [None, 193803039142, b"193803039142", ["193803039142"]])
def test_normalise_refuses_what_is_not_a_string(raw: Any) -> None:
    with pytest.raises(InvalidPersonId):
        normalise(raw)


# -- replies from producers --------------------------------------------------------------------

QUERY_ID: Final = "11111111-2222-3333-4444-555555555555"


def med(rid: str, *, scope: str = "hsl", blocked: bool = False, producer: str = P1) -> Medication:
    return Medication(
        id=rid, scope=scope, blocked=blocked,  # type: ignore[arg-type]
        source=RecordSource(producer=producer, organisation=OrgRef(id=PRODUCER_ORG, name="O"),
                            unit=UnitRef(id="U1", name="Enhet")),
        time=dt.datetime(2024, 3, 1, 10, tzinfo=dt.UTC), drug="Alvedon")


def valid_reply(**kw: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"query_id": QUERY_ID, "producer": P1, "status": "ok",
                              "records": [med("m1"), med("m2")]}
    fields.update(kw)
    return msgspec.to_builtins(Reply(**fields))  # type: ignore[no-any-return]


REPLY_PATHS: Final = ("v", "query_id", "producer", "status", "records", "blocked", "truncated",
                      "reason", "records.0", "extra")
reply_values = st.one_of(
    json_values,
    st.sampled_from([QUERY_ID, P1, P2, "ok", "no_data", "error", "refused", "timeout",
                     "unavailable", True, False, None, []]),
    st.lists(st.builds(
        lambda scope, blocked, producer: msgspec.to_builtins(med("x", scope=scope,
                                                                 blocked=blocked,
                                                                 producer=producer)),
        st.sampled_from(["hsl", "sol_elderly", "lss", "sol_other", "secret"]), st.booleans(),
        st.sampled_from([P1, P2, "SOMEONE"])), max_size=3),
)


def open_gatherer() -> tuple[Gatherer, Any]:
    gatherer = Gatherer(REGISTRY)
    pending = gatherer.open(QUERY_ID, [REGISTRY.producers[P1], REGISTRY.producers[P2]])
    return gatherer, pending


def check_outcomes(gatherer: Gatherer, pending: Any, signed_by: dict[str, bool]) -> None:
    """No source is ``ok`` (or anything final) unless its own key signed a matching reply;
    the merged answer never holds what the law forbids or what another source sent."""
    for pid, outcome in pending.outcomes.items():
        if pid in pending.waiting:
            assert outcome.status == "pending" and outcome.reply is None
            continue
        assert signed_by[pid], f"{pid} finished without a reply signed by its own key"
        if outcome.status in ("ok", "no_data"):
            assert outcome.reply is not None
            assert outcome.reply.query_id == QUERY_ID and outcome.reply.producer == pid
        else:
            assert outcome.status in ("error", "refused")
    gatherer.close(QUERY_ID)
    answer = merge(query_id=QUERY_ID, subject=PERSON, outcomes=pending.outcomes.values(),
                   unblock=None, types=frozenset(INFORMATION_TYPES)).answer
    for record in answer.records:
        assert record.scope in DISCLOSABLE_SCOPES and not record.blocked
        assert record.source.producer in (P1, P2)
    for source in answer.sources:
        assert source.status != "ok" or source.records > 0
        assert source.records == sum(r.source.producer == source.producer
                                     for r in answer.records)


@HYPOTHESIS
@given(messages=st.lists(st.binary(max_size=600) | st.builds(
    lambda h, p, s: jws(h, json.dumps(p).encode(), s), forged_headers,
    json_values | st.builds(valid_reply), st.binary(max_size=80)), max_size=5))
@example(messages=[b""])
@example(messages=[jws({}, nested(5000))])
@example(messages=[(b64url_encode(nested(5000)) + "."
                    + b64url_encode(json.dumps(valid_reply()).encode()) + ".").encode()])
def test_arbitrary_replies_never_raise_and_finish_nothing(messages: list[bytes]) -> None:
    gatherer, pending = open_gatherer()
    for message in messages:
        gatherer.on_reply(message)
    assert pending.waiting == {P1, P2}
    check_outcomes(gatherer, pending, {P1: False, P2: False})


SIGNERS: Final = {"p1": KEYS.p1, "p2": KEYS.p2, "org": KEYS.org, "stranger": KEYS.stranger,
                  "broker": KEYS.broker}


@HYPOTHESIS
@given(payload=json_values | st.builds(valid_reply), signer=st.sampled_from(sorted(SIGNERS)),
       edits=st.lists(st.tuples(st.sampled_from(REPLY_PATHS), reply_values | st.just(DELETE)),
                      max_size=3))
@example(payload=valid_reply(), signer="p1", edits=[])
@example(payload=valid_reply(), signer="p2", edits=[])
@example(payload=valid_reply(), signer="p1", edits=[("producer", P2)])
@example(payload=valid_reply(), signer="p1", edits=[("records.0", {"type": "medication"})])
@example(payload=nested(5000), signer="p1", edits=[])
def test_signed_arbitrary_replies_never_raise_nor_pass_as_another(
        payload: Any, signer: str, edits: list[tuple[str, Any]]) -> None:
    """Signed replies with any content, by any key, for the open query: the producer named
    finishes only with its own key's signature, and an ``ok`` holds only valid records."""
    if isinstance(payload, dict):
        for path, value in edits:
            payload = apply(payload, path, value)
    else:
        assume(not edits)
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    key = SIGNERS[signer]
    gatherer, pending = open_gatherer()
    gatherer.on_reply(sign(body, key, typ=REPLY_TYP).encode())
    check_outcomes(gatherer, pending, {P1: signer == "p1", P2: signer == "p2"})


def test_duplicate_late_and_replayed_replies_change_nothing() -> None:
    """The first verified reply is final; a second one (even validly signed, saying
    something else), a reply after the query closed, and a reply replayed into another
    query are all dropped and counted."""
    gatherer, pending = open_gatherer()
    first = sign(json.dumps(valid_reply()).encode(), KEYS.p1, typ=REPLY_TYP).encode()
    gatherer.on_reply(first)
    assert pending.outcomes[P1].status == "ok" and pending.waiting == {P2}
    gatherer.on_reply(sign(json.dumps(valid_reply(status="no_data", records=[])).encode(),
                           KEYS.p1, typ=REPLY_TYP).encode())
    assert gatherer.counters.duplicate == 1
    assert pending.outcomes[P1].status == "ok" and len(pending.outcomes[P1].reply.records) == 2
    gatherer.close(QUERY_ID)
    gatherer.on_reply(sign(json.dumps(valid_reply(producer=P2)).encode(), KEYS.p2,
                           typ=REPLY_TYP).encode())
    assert gatherer.counters.unknown_query == 1 and pending.outcomes[P2].status == "timeout"
    other = gatherer.open("another-query", [REGISTRY.producers[P1]])
    gatherer.on_reply(first)  # names the old query: not routed to the new one
    assert other.waiting == {P1} and gatherer.counters.unknown_query == 2


def test_one_querys_unverifiable_reply_does_not_touch_another_query() -> None:
    """Queries share each producer's ``pending`` outcome (it saves memory with 10,000 in
    flight): ending one query's wait as ``error`` must replace its outcome, never change
    the shared one under another open query."""
    gatherer, first = open_gatherer()
    second = gatherer.open("another-query", [REGISTRY.producers[P1]])
    forged = sign(json.dumps(valid_reply()).encode(), KEYS.stranger, typ=REPLY_TYP).encode()
    gatherer.on_reply(forged)  # names the first query and P1, signed by someone else
    assert gatherer.counters.unverifiable == 1
    gatherer.close(QUERY_ID)
    assert first.outcomes[P1].status == "error" and "unverifiable" in first.outcomes[P1].reason
    assert second.outcomes[P1].status == "pending" and second.waiting == {P1}
    third = gatherer.open("a-third-query", [REGISTRY.producers[P1]])
    assert third.outcomes[P1].status == "pending" and third.outcomes[P1].reason == ""


async def test_a_producer_given_up_on_is_not_awaited() -> None:
    """A question that could not be published: that producer is ``unavailable`` at once,
    the wait ends when the others have answered, and a reply from it later is not used."""
    gatherer, pending = open_gatherer()
    pending.give_up(Outcome(REGISTRY.producers[P2], "unavailable"))
    assert pending.waiting == {P1} and pending.outcomes[P2].status == "unavailable"
    wait = gatherer.settled(pending, 30)
    gatherer.on_reply(sign(json.dumps(valid_reply()).encode(), KEYS.p1,
                           typ=REPLY_TYP).encode())
    await asyncio.wait_for(wait, 2)  # long before the 30 s deadline
    gatherer.on_reply(sign(json.dumps(valid_reply(producer=P2)).encode(), KEYS.p2,
                           typ=REPLY_TYP).encode())
    assert gatherer.counters.unexpected_producer == 1
    assert {pid: o.status for pid, o in pending.outcomes.items()} == {P1: "ok", P2: "unavailable"}


# -- algorithm confusion through the running broker ----------------------------------------------


@pytest.fixture
async def fed(federation_factory: Any) -> Federation:
    fed: Federation = await federation_factory([ProducerSpec("P1")])
    await fed.start_broker()
    return fed


@pytest.mark.parametrize("attack", ["alg-none", "hs256-public-jwk", "es256-with-eddsa-kid",
                                    "eddsa-with-es256-kid"])
async def test_algorithm_confusion_over_http_is_401(fed: Federation, attack: str) -> None:
    """``alg: none``; HS256 keyed with the issuer's public JWK; a token signed with another
    algorithm than the one registered for its ``kid``: each is 401 problem+json."""
    # The e2e federation registers an ES256 key for the care giver and an EdDSA key for the
    # social care giver: aim each confusion at the issuer whose kid it borrows.
    es_issuer, ed_issuer = e2e.CARE_GIVER, e2e.SOCIAL_CARE_GIVER
    assert fed.keys[es_issuer].alg == "ES256" and fed.keys[ed_issuer].alg == "EdDSA"
    issuer = ed_issuer if attack == "es256-with-eddsa-kid" else es_issuer
    payload = msgspec.json.encode(fed.claims(issuer))
    token = confused_token(attack, payload, es_key=fed.keys[es_issuer],
                           ed_key=fed.keys[ed_issuer])
    status, headers, body = await fed.post(token)
    assert status == 401, body
    assert headers["Content-Type"].startswith("application/problem+json")
    assert body["status"] == 401 and body["type"] == "urn:samsvar:problem:bad-signature"
