"""The running broker answers exactly as its own ``/openapi.json`` says (schemathesis).

A real federation (MQTT server, broker, two adapters, one of them holding blocked
records) serves; schemathesis reads the served document and, for every operation,
generates requests (positive and negative) and runs its response conformance checks:
documented status code, documented content type, response headers and body matching the
schema, and never a 5xx. A problem must also carry a ``type`` listed in
``broker.errors.PROBLEM_TYPES`` with that type's status.

Random strings as a signed JWT only reach 400 and 401, so for the two signed endpoints
each generated case may have its body replaced by a freshly signed token: valid queries
of every basis, type, period and unblock step (answers, refusals by each rule of the law)
and broken ones (expired, from the future, replayed, wrong key, wrong ``typ``, claims
that do not match their schema), sent with each documented ``Accept``, plus oversized
bodies and the wrong ``Content-Type``. Hypothesis runs derandomized, so a CI run is
repeatable; schemathesis is synchronous, so it runs in a thread while the event loop
serves the federation.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Final, get_args

import msgspec
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]  # no type hints
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from broker.errors import PROBLEM_BASE, PROBLEM_TYPES
from producer_adapter import Adapter
from producer_adapter.blocks import InMemoryBlockSource
from producer_adapter.policy import Block
from schemas.accesslog import EXTRACT_TYP
from schemas.jose import PrivateKey, generate_key, sign
from schemas.messages import QUERY_TYP, Basis
from schemas.records import INFORMATION_TYPES
from tests.conftest import require_mosquitto
from tests.e2e.conftest import (
    BROKER_ID,
    CARE_GIVER,
    CITIZEN_PORTAL,
    PERSON,
    SOCIAL_CARE_GIVER,
    Federation,
    ProducerSpec,
    record,
    user_of,
)

EXAMPLES: Final = 50
"""Generated cases per operation; the signed endpoints get this many more with tokens."""
CHILD: Final = "201503012385"  # Skatteverket test personnummer, born 2015
QUERY: Final = ("/v1/queries", "POST")
EXTRACT: Final = ("/v1/access-log/extract", "POST")
ACCEPTS: Final = (None, "application/json", "application/fhir+json", "application/x-ndjson",
                  "*/*")

# The signed bodies are text on the wire; schemathesis sends them like text/plain.
schemathesis.serializer.alias("application/jwt", "text/plain")


def problem_type_is_known(ctx: Any, response: schemathesis.Response,
                          case: schemathesis.Case[Any]) -> bool | None:
    """A problem's ``type`` is a listed slug, with the status PROBLEM_TYPES gives it."""
    if not response.headers.get("content-type", [""])[0].startswith("application/problem+json"):
        return None
    problem = msgspec.json.decode(response.content)
    slug = problem["type"].removeprefix(PROBLEM_BASE)
    assert problem["type"].startswith(PROBLEM_BASE) and slug in PROBLEM_TYPES, problem
    assert PROBLEM_TYPES[slug].status == response.status_code == problem["status"], problem
    return None


def ndjson_lines_match(doc: dict[str, Any]) -> Any:
    """Each line of a streamed answer matches the ``x-ndjson-line`` schema of the document.

    The OpenAPI 3.1 schema of ``application/x-ndjson`` can only say "a string"; the
    document names the schema of one line in ``x-ndjson-line``.
    """
    content = doc["paths"]["/v1/queries"]["post"]["responses"]["200"]["content"]
    validator = Draft202012Validator({**content["application/x-ndjson"]["x-ndjson-line"],
                                      "components": doc["components"]})

    def check(ctx: Any, response: schemathesis.Response,
              case: schemathesis.Case[Any]) -> bool | None:
        if not response.headers.get("content-type", [""])[0].startswith("application/x-ndjson"):
            return None
        lines = [msgspec.json.decode(line) for line in response.content.splitlines()]
        assert lines, "an empty stream"
        for line in lines:
            errors = [error.message for error in validator.iter_errors(line)]
            assert not errors, f"a streamed line does not match StreamLine: {errors} in {line}"
        assert [line["kind"] for line in lines][-1] in ("summary", "error"), lines
        return None

    return check


CHECKS: Final = [not_a_server_error, status_code_conformance, content_type_conformance,
                 response_headers_conformance, response_schema_conformance,
                 problem_type_is_known]


# -- signed bodies --------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """How to sign one body; signed only when sent, so ``iat`` is now and ``jti`` fresh."""

    kind: str
    issuer: str = CARE_GIVER
    claims: dict[str, Any] = field(default_factory=dict)
    accept: str | None = None


@dataclass
class Mint:
    """Signs recipes with the federation's keys; remembers valid tokens to replay."""

    keys: dict[str, PrivateKey]
    sent: dict[bool, list[str]] = field(default_factory=lambda: {False: [], True: []})
    stranger: PrivateKey = field(default_factory=lambda: generate_key("EdDSA"))

    def body(self, recipe: Recipe, *, extract: bool) -> tuple[bytes, dict[str, str]]:
        headers = {"Content-Type": "application/jwt"}
        if recipe.accept:
            headers["Accept"] = recipe.accept
        if recipe.kind == "oversize":
            return b"x" * 70_000, headers
        if recipe.kind == "wrong-content-type":
            return self._token(recipe, extract).encode(), {"Content-Type": "text/plain"}
        if recipe.kind == "replay" and self.sent[extract]:
            return self.sent[extract][-1].encode(), headers
        token = self._token(recipe, extract)
        if recipe.kind == "valid":
            self.sent[extract].append(token)
        return token.encode(), headers

    def _token(self, recipe: Recipe, extract: bool) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {"iss": recipe.issuer, "aud": BROKER_ID, "iat": now,
                                  "exp": now + 60, "jti": str(uuid.uuid4()), "sub": PERSON}
        if not extract:
            claims.update(user=msgspec.to_builtins(user_of(recipe.issuer)), relation=True,
                          basis="consent",
                          types=["medication"])
        claims.update({k: v for k, v in recipe.claims.items() if v is not None})
        match recipe.kind:
            case "expired":
                claims.update(iat=now - 400, exp=now - 340)
            case "future":
                claims.update(iat=now + 120, exp=now + 180)
            case "long-life":
                claims["exp"] = now + 3600
            case "wrong-audience":
                claims["aud"] = "some-other-broker"
            case "bad-claims":
                claims.pop("sub")
                claims["iat"] = "yesterday"
        key = self.stranger if recipe.kind == "foreign-key" else self.keys[recipe.issuer]
        typ = EXTRACT_TYP if extract else QUERY_TYP
        if recipe.kind == "wrong-typ":
            typ = QUERY_TYP if extract else EXTRACT_TYP
        return sign(msgspec.json.encode(claims), key, typ=typ)


BROKEN: Final = ("expired", "future", "long-life", "wrong-audience", "bad-claims",
                 "foreign-key", "wrong-typ", "replay", "oversize", "wrong-content-type")

REVERSED: Final = {"from": "2026-12-31", "to": "2026-01-01"}
PERIODS: Final = [None, {"from": "2026-01-01"}, {"to": "2026-10-15"},
                  {"from": "2026-01-01", "to": "2026-12-31"}, REVERSED]
UNBLOCKS: Final = [None, None, {"step": "locate"}, {"step": "read", "producers": ["P2"]},
                   {"step": "read"}]


def query_recipes() -> st.SearchStrategy[Recipe]:
    claims = st.fixed_dictionaries({
        "sub": st.sampled_from([PERSON, PERSON, CHILD, "19380303-9142", "380303-9142",
                                "193803039143"]),
        "types": st.lists(st.sampled_from(INFORMATION_TYPES), min_size=1, max_size=4,
                          unique=True),
        "basis": st.sampled_from(get_args(Basis)),
        "relation": st.sampled_from([True, True, True, False]),
        "period": st.sampled_from(PERIODS),
        "unblock": st.sampled_from(UNBLOCKS),
        "deadline_ms": st.sampled_from([None, None, 1, 2000, 0]),
    })
    valid = st.builds(Recipe, kind=st.just("valid"),
                      issuer=st.sampled_from([CARE_GIVER, SOCIAL_CARE_GIVER]),
                      claims=claims, accept=st.sampled_from(ACCEPTS))
    broken = st.builds(Recipe, kind=st.sampled_from(BROKEN), accept=st.sampled_from(ACCEPTS))
    not_a_consumer = st.just(Recipe("valid", CITIZEN_PORTAL))
    return st.one_of(valid, valid, broken, not_a_consumer)


def explicit_recipes(*, extract: bool) -> list[Recipe]:
    """Run first, in order: a valid token (so ``replay`` has one), each broken kind, a
    reversed period, a query without a care relation, and a valid query asking for each
    representation."""
    issuer = CITIZEN_PORTAL if extract else CARE_GIVER
    accepts = () if extract else ACCEPTS[1:]
    return [Recipe("valid", issuer), *(Recipe(kind, issuer) for kind in BROKEN),
            Recipe("valid", issuer, {"period": REVERSED}),
            *([] if extract else [Recipe("valid", issuer, {"relation": False})]),
            *(Recipe("valid", issuer, accept=accept) for accept in accepts)]


def extract_recipes() -> st.SearchStrategy[Recipe]:
    claims = st.fixed_dictionaries({"sub": st.sampled_from([PERSON, CHILD, "193803039143"]),
                                    "period": st.sampled_from(PERIODS)})
    valid = st.builds(Recipe, kind=st.just("valid"), issuer=st.just(CITIZEN_PORTAL),
                      claims=claims)
    not_allowed = st.builds(Recipe, kind=st.just("valid"), issuer=st.just(CARE_GIVER))
    broken = st.builds(Recipe, kind=st.sampled_from(BROKEN), issuer=st.just(CITIZEN_PORTAL))
    return st.one_of(valid, not_allowed, broken)


# -- the run --------------------------------------------------------------------------


@dataclass
class Seen:
    statuses: dict[tuple[str, str], set[int]] = field(default_factory=lambda: defaultdict(set))
    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    problems: dict[tuple[str, str], set[str]] = field(default_factory=lambda: defaultdict(set))
    media: dict[tuple[str, str], set[str]] = field(default_factory=lambda: defaultdict(set))

    def add(self, key: tuple[str, str], response: schemathesis.Response) -> None:
        self.calls[key] += 1
        self.statuses[key].add(response.status_code)
        content_type = response.headers.get("content-type", [""])[0]
        self.media[key].add(content_type.split(";")[0].strip())
        if response.status_code >= 400:
            with contextlib.suppress(Exception):
                slug = msgspec.json.decode(response.content)["type"].removeprefix(PROBLEM_BASE)
                self.problems[key].add(slug)


def _fuzz_operation(operation: Any, key: tuple[str, str], *, base_url: str,
                    session: requests.Session, mint: Mint, seen: Seen,
                    checks: list[Any]) -> None:
    """Generated cases for one operation, some with their body replaced by a signed one."""
    cases = (operation.as_strategy(GenerationMode.POSITIVE)
             | operation.as_strategy(GenerationMode.NEGATIVE))
    extract = key == EXTRACT
    signed = {QUERY: query_recipes(), EXTRACT: extract_recipes()}.get(key)
    bodies = st.none() if signed is None else st.none() | signed | signed

    @settings(max_examples=EXAMPLES * (1 if signed is None else 2), deadline=None,
              database=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=cases, recipe=bodies)
    def run(case: schemathesis.Case[Any], recipe: Recipe | None) -> None:
        headers = None
        if recipe is not None:
            case.body, headers = mint.body(recipe, extract=extract)
        response = case.call(base_url=base_url, session=session, headers=headers, timeout=10)
        seen.add(key, response)
        case.validate_response(response, checks=checks, headers=headers)

    if signed is not None:  # every kind of signed body at least once, in order
        blank = operation.Case(body="", media_type="application/jwt")
        for recipe in reversed(explicit_recipes(extract=extract)):
            run = example(case=blank, recipe=recipe)(run)  # the last added runs first
    run()


def _fuzz(doc: dict[str, Any], base_url: str, mint: Mint) -> Seen:
    """Every operation of ``doc`` against the broker at ``base_url``; raises on a failure."""
    schema = schemathesis.openapi.from_dict(doc)
    seen = Seen()
    checks = [*CHECKS, ndjson_lines_match(doc)]
    with requests.Session() as session:
        for path, item in doc["paths"].items():
            for method in item:
                key = (path, method.upper())
                _fuzz_operation(schema[path][key[1]], key, base_url=base_url,
                                session=session, mint=mint, seen=seen, checks=checks)
    return seen


@pytest.fixture
async def fed(federation_factory: Any) -> Federation:
    """Two producers; P2 holds a record in unit U2, which the person has blocked."""
    fed: Federation = await federation_factory([
        ProducerSpec("P1", records={
            PERSON: [record("P1", 1, when="2026-11-01T10:00:00+01:00"),
                     record("P1", 2, when="2026-10-02T10:00:00+02:00", type_="alerts"),
                     record("P1", 3, when="2026-09-03T10:00:00+02:00",
                            type_="care_documentation", text="Anteckning")],
            CHILD: [record("P1", 4, when="2026-11-04T10:00:00+01:00")]}),
        ProducerSpec("P2", records={
            PERSON: [record("P2", 1, when="2026-11-05T10:00:00+01:00"),
                     record("P2", 2, when="2026-11-06T10:00:00+01:00", unit="U2")]}),
    ])
    await fed.start_broker()
    blocks = {"P2": [Block(subject=PERSON, level="unit", target="U2", registered_by=PERSON)]}
    for pid in fed.producers:
        adapter = Adapter(fed.adapter_config(pid), fed.registry,
                          blocks=InMemoryBlockSource(blocks.get(pid, [])))
        stop = asyncio.Event()
        task = asyncio.create_task(adapter.run(shutdown=stop))
        fed.adapters.setdefault(pid, []).append((adapter, stop, task))
        await asyncio.wait_for(adapter.ready.wait(), 10)
        await fed.wait_presence(pid)
    return fed


async def served_document(fed: Federation) -> dict[str, Any]:
    assert fed.http is not None
    async with fed.http.get(f"{fed.url}/openapi.json") as resp:
        assert resp.status == 200
        return await resp.json()  # type: ignore[no-any-return]


async def test_every_response_matches_the_served_openapi_document(fed: Federation) -> None:
    doc = await served_document(fed)
    seen = await asyncio.to_thread(_fuzz, doc, fed.url, Mint(fed.keys))
    # The tokens reached past authentication: answers and refusals of every kind.
    assert {200, 400, 401, 403, 413, 415} <= seen.statuses[QUERY], seen.statuses
    # a participant without the role is a 401 like an unknown issuer (SPEC 3): no 403 here
    assert {200, 400, 401, 413, 415} <= seen.statuses[EXTRACT], seen.statuses
    assert {"replayed", "expired", "unknown-key", "relation-required",
            "invalid-period"} <= seen.problems[QUERY], seen.problems[QUERY]
    assert {"replayed", "expired", "unknown-key",
            "invalid-period"} <= seen.problems[EXTRACT], seen.problems[EXTRACT]
    assert {"application/json", "application/fhir+json", "application/x-ndjson",
            "application/problem+json"} <= seen.media[QUERY], seen.media[QUERY]
    assert seen.calls[QUERY] >= 2 * EXAMPLES and seen.calls[EXTRACT] >= 2 * EXAMPLES
    for path, item in doc["paths"].items():
        for method in item:
            assert seen.calls[(path, method.upper())], f"{method} {path} never called"


async def test_overload_and_lost_mqtt_match_the_document(federation_factory: Any) -> None:
    """429 (with Retry-After) and 503 are hard to reach by fuzzing: reach them on purpose.

    Here a 503 is the documented answer, so every check but ``not_a_server_error`` runs.
    """
    fed: Federation = await federation_factory([ProducerSpec("P1")])
    require_mosquitto(fed.server, "the test stops the MQTT server for its 503")
    broker = await fed.start_broker(max_in_flight=0)
    schema = schemathesis.openapi.from_dict(await served_document(fed))
    query, readyz = schema["/v1/queries"]["POST"], schema["/readyz"]["GET"]
    mint = Mint(fed.keys)

    def call(operation: Any, body: bytes | None = None) -> int:
        case = operation.Case() if body is None else operation.Case(
            body=body, media_type="application/jwt")
        response = case.call(base_url=fed.url, timeout=10)
        case.validate_response(response, checks=[c for c in CHECKS if c is not not_a_server_error])
        return int(response.status_code)

    body, _ = mint.body(Recipe("valid"), extract=False)
    assert await asyncio.to_thread(call, query, body) == 429
    fed.server.stop()
    async with asyncio.timeout(10):
        while broker.bus.connected.is_set():
            await asyncio.sleep(0.05)
    body, _ = mint.body(Recipe("valid"), extract=False)
    assert await asyncio.to_thread(call, query, body) == 503
    assert await asyncio.to_thread(call, readyz) == 503
    fed.server.start()
