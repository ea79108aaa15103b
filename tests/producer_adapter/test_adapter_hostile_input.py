"""Hostile questions at the adapter: refused unanswered, never a crash, never a reply.

Whatever arrives on the question topic (arbitrary bytes, JWS-shaped forgeries, anything
signed by a key other than the broker's, arbitrary payloads the broker's key signed,
mutated valid tokens), :meth:`Adapter.verify_question` raises only
:class:`QuestionRefused` and :meth:`Adapter.answer` returns ``None`` without reading the
record system, unless the question is valid in every respect the adapter checks. Over real
MQTT a malformed question is dropped and logged, and the adapter keeps answering.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Final

import aiomqtt
import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from producer_adapter import (
    Adapter,
    AdapterConfig,
    BackendResult,
    InMemoryBlockSource,
    QuestionRefused,
    SignedReply,
)
from producer_adapter.daemon import CLOCK_SKEW_MS, MAX_QUESTION_LIFETIME_MS
from schemas.identity import normalise
from schemas.jose import Alg, PrivateKey, generate_key, private_key_from_jwk, sign, verify
from schemas.messages import QUESTION_TYP, REPLY_TYP, Period, Question, Reply
from schemas.records import DISCLOSABLE_SCOPES, INFORMATION_TYPES
from schemas.registry import Registry
from schemas.topics import question_topic, reply_topic
from tests.hostile_strategies import (
    DELETE,
    apply,
    byte_edits,
    json_values,
    jws,
    mutate_bytes,
    nested,
)
from transport.settings import MqttSettings

PREFIX: Final = "samsvar/v1"
REASONS: Final = frozenset({"not-a-jws", "unknown-key", "bad-signature", "bad-payload",
                            "wrong-broker", "bad-reply-topic", "bad-subject", "expired",
                            "not-yet-valid", "deadline-too-far"})
"""Every reason the adapter gives for dropping a question (producer_adapter.daemon)."""

HYPOTHESIS: Final = settings(
    deadline=None, max_examples=150,
    # ``kit`` is function-scoped but only the fixtures module (constants and builders):
    # nothing in it changes between examples. Each example builds its own adapter.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
STEP: Final = 5.0


class CountingBackend:
    """The kit's records for the kit's person; counts how often it is read."""

    def __init__(self, kit: Any) -> None:
        self.records = {kit.PERSON: [kit.medication("m1"), kit.alert("a1"),
                                     kit.note("n-sol-other", scope="sol_other"),
                                     kit.note("n-excluded", unit=kit.EXCLUDED_UNIT)]}
        self.calls = 0

    async def fetch(self, subject: str, types: frozenset[str], period: Period | None
                    ) -> BackendResult:
        self.calls += 1
        return BackendResult(records=list(self.records.get(subject, [])))

    async def aclose(self) -> None:
        return None


def make_adapter(kit: Any, keys: Any, registry: Registry,
                 settings: MqttSettings | None = None) -> tuple[Adapter, CountingBackend]:
    backend = CountingBackend(kit)
    cfg = AdapterConfig(**kit.adapter_config_kwargs(keys, settings or MqttSettings()))
    return Adapter(cfg, registry, backend=backend, blocks=InMemoryBlockSource()), backend


async def refused_unanswered(adapter: Adapter, backend: CountingBackend,
                             token: bytes | str) -> str:
    """Assert the question is refused with a known reason and nothing is read; the reason."""
    with pytest.raises(QuestionRefused) as refused:
        adapter.verify_question(token)
    assert refused.value.reason in REASONS
    with capture_logs() as logs:
        assert await adapter.answer(token) is None
    assert [e.get("reason") for e in logs if e["event"] == "question refused"] == [
        refused.value.reason]
    assert backend.calls == 0
    return refused.value.reason


def question_doc(kit: Any, **overrides: Any) -> dict[str, Any]:
    return msgspec.to_builtins(kit.make_question(prefix=PREFIX, **overrides))  # type: ignore[no-any-return]


def check_reply(out: SignedReply, payload: bytes, kit: Any, registry: Registry) -> None:
    """A reply went out: the question was valid in every respect, and so is the reply."""
    q = msgspec.json.decode(payload, type=Question)
    now = time.time() * 1000
    assert q.broker == kit.BROKER
    assert q.reply_topic.startswith(f"{PREFIX}/r/") and out.topic == q.reply_topic
    assert not any(c in q.reply_topic.removeprefix(f"{PREFIX}/r/") for c in "+#\0")
    assert normalise(q.subject) == q.subject
    assert now - 2000 < q.deadline <= now + MAX_QUESTION_LIFETIME_MS + CLOCK_SKEW_MS
    assert q.iat * 1000 <= now + CLOCK_SKEW_MS
    _, signed = verify(out.token, lambda h: registry.producer_key(kit.PRODUCER, h),
                       typ=REPLY_TYP)
    reply = msgspec.json.decode(signed, type=Reply)
    assert reply.query_id == q.query_id and reply.producer == kit.PRODUCER
    for record in reply.records:
        assert record.scope in DISCLOSABLE_SCOPES
        assert record.source.unit.id != kit.EXCLUDED_UNIT


# -- properties -----------------------------------------------------------------------------


@HYPOTHESIS
@given(data=st.binary(max_size=2000) | st.text(max_size=500))
@example(data=b"")
@example(data="garbage")
@example(data=b"a.b.c")
@example(data="\u00e5.\u00e4.\u00f6")
async def test_arbitrary_bytes_are_refused_unanswered(kit: Any, keys: Any, registry: Registry,
                                                      data: bytes | str) -> None:
    adapter, backend = make_adapter(kit, keys, registry)
    await refused_unanswered(adapter, backend, data)


headers = st.fixed_dictionaries(
    {},
    optional={"alg": st.sampled_from(["EdDSA", "ES256", "none", "HS256", ""]) | json_values,
              "kid": st.sampled_from(["broker-kid", "x"]) | json_values,
              "typ": st.sampled_from([QUESTION_TYP, "samsvar-reply+jws"]) | json_values,
              "crit": json_values},
) | json_values


@HYPOTHESIS
@given(header=headers, payload=json_values, signature=st.binary(max_size=80), valid=st.booleans())
async def test_forged_questions_are_refused_unanswered(
        kit: Any, keys: Any, registry: Registry, header: Any, payload: Any, signature: bytes,
        valid: bool) -> None:
    """JWS-shaped, any header (``none``, HMAC, the broker's kid, junk), never signed by the
    broker; the payload is junk or a valid question."""
    if isinstance(header, dict) and header.get("kid") == "broker-kid":
        header["kid"] = keys.broker.kid
    body = json.dumps(question_doc(kit) if valid else payload).encode()
    adapter, backend = make_adapter(kit, keys, registry)
    await refused_unanswered(adapter, backend, jws(header, body, signature))


def _forged_broker_key(keys: Any) -> PrivateKey:
    """A key of the other algorithm wearing the broker's kid."""
    other: Alg = "ES256" if keys.broker.alg == "EdDSA" else "EdDSA"
    return private_key_from_jwk({**generate_key(other).to_jwk(), "kid": keys.broker.kid})


@pytest.mark.parametrize("signer", ["stranger", "producer", "org", "consumer",
                                    "forged-broker-kid"])
async def test_valid_questions_signed_by_others_are_refused(kit: Any, keys: Any,
                                                            registry: Registry,
                                                            signer: str) -> None:
    key = _forged_broker_key(keys) if signer == "forged-broker-kid" else getattr(keys, signer)
    token = sign(json.dumps(question_doc(kit)).encode(), key, typ=QUESTION_TYP)
    adapter, backend = make_adapter(kit, keys, registry)
    reason = await refused_unanswered(adapter, backend, token)
    assert reason == ("bad-signature" if signer == "forged-broker-kid" else "unknown-key")


@HYPOTHESIS
@given(payload=json_values)
@example(payload={})
@example(payload=[])
async def test_arbitrary_payloads_the_broker_signed_are_refused(
        kit: Any, keys: Any, registry: Registry, payload: Any) -> None:
    token = sign(json.dumps(payload).encode(), keys.broker, typ=QUESTION_TYP)
    adapter, backend = make_adapter(kit, keys, registry)
    assert await refused_unanswered(adapter, backend, token) == "bad-payload"


QUESTION_PATHS: Final = ("v", "query_id", "broker", "reply_topic", "iat", "deadline",
                         "consumer", "consumer.kind", "consumer.organisation.id",
                         "consumer.user", "consumer.user.unit.id", "subject", "types",
                         "period", "period.from", "basis", "unblock", "unblock.step",
                         "unblock.producers", "extra")


@dataclass(frozen=True)
class FromNow:
    """A time ``seconds`` from when the example runs, in seconds or milliseconds: resolved
    then, so that what Hypothesis draws does not depend on the clock."""

    seconds: int
    ms: bool

    def resolve(self) -> int:
        at = int(time.time()) + self.seconds
        return at * 1000 if self.ms else at


def resolved(value: Any) -> Any:
    return value.resolve() if isinstance(value, FromNow) else value


def plausible(kit: Any) -> st.SearchStrategy[Any]:
    return st.one_of(
        json_values,
        st.builds(FromNow, st.integers(min_value=-400, max_value=400), st.booleans()),
        st.from_regex(r"\A(19|20)?[0-9]{6}[-+]?[0-9]{4}\Z"),
        st.sampled_from([
            kit.BROKER, kit.PRODUCER, kit.PERSON, f"{PREFIX}/r/", f"{PREFIX}/r/b1/+",
            f"{PREFIX}/r/#", f"{PREFIX}/q/{kit.OTHER_PRODUCER}", f"{PREFIX}/r/ok",
            f"{PREFIX}/presence/{kit.PRODUCER}", "vårdgivare", "omsorgsgivare", "consent",
            "emergency", "read", "locate", [kit.PRODUCER], "", None, True, 0,
        ]),
        st.lists(st.sampled_from([*INFORMATION_TYPES, "sol_other"]), max_size=3),
    )


async def test_the_unmutated_question_is_answered(kit: Any, keys: Any,
                                                  registry: Registry) -> None:
    """The control for the property below: without edits, a reply within the rules."""
    payload = json.dumps(question_doc(kit)).encode()
    adapter, _ = make_adapter(kit, keys, registry)
    out = await adapter.answer(sign(payload, keys.broker, typ=QUESTION_TYP))
    assert out is not None and out.reply.status == "ok"
    check_reply(out, payload, kit, registry)


@HYPOTHESIS
@given(data=st.data())
async def test_mutated_questions_the_broker_signed_are_refused_or_valid(
        kit: Any, keys: Any, registry: Registry, data: Any) -> None:
    """A valid question with members replaced or removed, signed by the broker: refused
    unanswered, or (when still valid) answered within the rules; never anything else."""
    doc = question_doc(kit)
    edits = data.draw(st.lists(st.tuples(st.sampled_from(QUESTION_PATHS),
                                         plausible(kit) | st.just(DELETE)),
                               min_size=1, max_size=3))
    for path, value in edits:
        doc = apply(doc, path, resolved(value))
    payload = json.dumps(doc).encode()
    token = sign(payload, keys.broker, typ=QUESTION_TYP)
    adapter, backend = make_adapter(kit, keys, registry)
    try:
        adapter.verify_question(token)
    except QuestionRefused as exc:
        assert exc.reason in REASONS
        assert await adapter.answer(token) is None
        assert backend.calls == 0
        return
    out = await adapter.answer(token)
    assert out is not None
    check_reply(out, payload, kit, registry)


@HYPOTHESIS
@given(edits=byte_edits)
async def test_mutated_valid_tokens_are_refused_or_the_original(
        kit: Any, keys: Any, registry: Registry, edits: list[tuple[int, int, bytes]]) -> None:
    question = kit.make_question(prefix=PREFIX)
    token = kit.sign_question(question, keys.broker).encode()
    mutated = mutate_bytes(token, edits)
    adapter, backend = make_adapter(kit, keys, registry)
    try:
        accepted = adapter.verify_question(mutated)
    except QuestionRefused as exc:
        assert exc.reason in REASONS
        assert await adapter.answer(mutated) is None and backend.calls == 0
        return
    # Only what the signature does not cover (surrounding whitespace) may change.
    assert accepted == question
    out = await adapter.answer(mutated)
    assert out is not None and out.reply.query_id == question.query_id


@pytest.mark.parametrize("where", ["header", "payload"])
async def test_deeply_nested_json_is_refused(kit: Any, keys: Any, registry: Registry,
                                             where: str) -> None:
    """JSON nested deeper than the decoder follows is a refusal, not a crash."""
    deep = nested(5000)
    if where == "header":
        from schemas.jose import b64url_encode

        token = f"{b64url_encode(deep)}.{b64url_encode(b'{}')}.{b64url_encode(bytes(64))}"
        expected = "not-a-jws"
    else:
        token = sign(deep, keys.broker, typ=QUESTION_TYP)
        expected = "bad-payload"
    adapter, backend = make_adapter(kit, keys, registry)
    assert await refused_unanswered(adapter, backend, token) == expected


# -- over real MQTT --------------------------------------------------------------------------------


async def test_malformed_questions_over_mqtt_are_dropped_logged_and_survived(
        mqtt_server: Any, unique_prefix: str, kit: Any, keys: Any, registry: Registry) -> None:
    """Garbage on the producer's question topic is dropped with a logged reason, no reply
    goes out for it, nothing crashes, and the next real question is answered."""
    settings = mqtt_server.settings(unique_prefix)
    p = settings.prefix
    adapter, backend = make_adapter(kit, keys, registry, settings)
    hostile = {
        "not-a-jws": [b"", b"\x00\xff" * 50, b"a.b.c", nested(5000),
                      f"{jws({}, b'{}').decode()}".encode()],
        "unknown-key": [kit.sign_question(kit.make_question(prefix=p), keys.stranger).encode()],
        "bad-signature": [sign(json.dumps(question_doc(kit)).encode(), _forged_broker_key(keys),
                               typ=QUESTION_TYP).encode()],
        "bad-payload": [sign(nested(5000), keys.broker, typ=QUESTION_TYP).encode(),
                        sign(b'{"query_id": 1}', keys.broker, typ=QUESTION_TYP).encode()],
        "bad-reply-topic": [kit.sign_question(kit.make_question(
            prefix=p, reply_topic=question_topic(p, kit.OTHER_PRODUCER)), keys.broker).encode()],
    }
    good = kit.make_question(prefix=p)
    protocol = (aiomqtt.ProtocolVersion.V5 if settings.protocol == "5"
                else aiomqtt.ProtocolVersion.V311)
    stop = asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(adapter.run(shutdown=stop))
        try:
            async with asyncio.timeout(STEP):
                await adapter.ready.wait()
            async with aiomqtt.Client(settings.host, settings.port, protocol=protocol,
                                      identifier=f"test-{uuid.uuid4().hex[:8]}") as c:
                await c.subscribe(reply_topic(p, "#"), qos=1)
                await c.subscribe(question_topic(p, kit.OTHER_PRODUCER), qos=1)
                for tokens in hostile.values():
                    for token in tokens:
                        await c.publish(question_topic(p, kit.PRODUCER), token, qos=1)
                await c.publish(question_topic(p, kit.PRODUCER),
                                kit.sign_question(good, keys.broker).encode(), qos=1)
                received = await _messages(c, until=reply_topic(p, "test-broker"))
        finally:
            stop.set()
            async with asyncio.timeout(STEP):
                await task
    # amqtt (the fallback without Mosquitto) also sends retained presence nobody asked for.
    received = [(topic, body) for topic, body in received if "/presence/" not in topic]
    assert [topic for topic, _ in received] == [reply_topic(p, "test-broker")]
    _, payload = verify(received[0][1], lambda h: registry.producer_key(kit.PRODUCER, h),
                        typ=REPLY_TYP)
    reply = msgspec.json.decode(payload, type=Reply)
    assert reply.query_id == good.query_id and reply.status == "ok"
    assert backend.calls == 1
    refused = sorted(e["reason"] for e in logs if e["event"] == "question refused")
    assert refused == sorted(r for r, tokens in hostile.items() for _ in tokens)
    assert not [e for e in logs if e["event"] == "question handling failed"]


async def _messages(c: aiomqtt.Client, *, until: str, linger: float = 0.5
                    ) -> list[tuple[str, bytes]]:
    """Every message until one on ``until`` arrives, then whatever follows within ``linger``."""
    got: list[tuple[str, bytes]] = []

    async def read(stop_at: str | None) -> None:
        async for message in c.messages:
            assert isinstance(message.payload, bytes)
            got.append((message.topic.value, message.payload))
            if message.topic.value == stop_at:
                return

    async with asyncio.timeout(STEP):
        await read(until)
    try:
        async with asyncio.timeout(linger):
            await read(None)
    except TimeoutError:
        pass
    return got
