"""``GET /openapi.json``: valid OpenAPI 3.1, generated from the wire types, covering every route.

The problem slugs the document lists come from ``broker.errors.PROBLEM_TYPES``; the last
tests keep that table in step with every slug the broker's code can raise.
"""

from __future__ import annotations

import ast
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, get_args, get_type_hints

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

import broker
from broker import errors, own_view, policy
from broker.config import BrokerConfig
from broker.http_api import create_app
from broker.http_server import FALLBACK_ROUTE
from broker.openapi import ExtractJoseHeader, QueryJoseHeader, build_openapi, package_version
from broker.service import QueryService
from schemas.accesslog import EXTRACT_TYP, ExtractClaims
from schemas.jose import ALGORITHMS, PublicKey, generate_key
from schemas.messages import QUERY_TYP, Answer, Health, ProducerListing, QueryClaims
from schemas.records import INFORMATION_TYPES
from schemas.registry import parse_registry
from tests.broker.ports import unstarted_ports

BROKER_DIR = Path(broker.__file__).parent
SCHEMA_REF = "#/components/schemas/{name}"
EVERY_ENDPOINT = {
    ("post", "/v1/queries"), ("post", "/v1/access-log/extract"), ("get", "/healthz"),
    ("get", "/readyz"), ("get", "/metrics"), ("get", "/v1/producers"), ("get", "/"),
    ("get", "/v1/dashboard"), ("get", "/openapi.json"), ("post", "/v1/own/queries"),
}


def operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method, path) for path, item in doc["paths"].items() for method in item}


def _jwk(key: PublicKey) -> str:
    return "[{ " + ", ".join(f'{k} = "{v}"' for k, v in key.to_jwk().items()) + " }]"


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[tuple[web.Application, TestClient[Any, Any]]]:
    """The broker's HTTP app over a real registry and key, with no MQTT behind it."""
    broker_key, org_key, producer_key = (generate_key() for _ in range(3))
    registry = parse_registry("\n".join([
        "[broker]", 'id = "B"', f"keys = {_jwk(broker_key.public)}",
        "[[participants]]", 'id = "ORG"', 'name = "Org"', 'kind = "vårdgivare"',
        'roles = ["producer"]', f"keys = {_jwk(org_key.public)}",
        "[[producers]]", 'id = "P1"', 'name = "Producent P1"', 'organisation = "ORG"',
        'types = ["medication"]', 'units = [{ id = "U1", name = "Enhet U1" }]',
        f"keys = {_jwk(producer_key.public)}",
    ]))
    config = BrokerConfig(registry_path=tmp_path / "registry.toml",
                          key_path=tmp_path / "broker.jwk")
    service = QueryService(config=config, registry=registry, key=broker_key,
                           **unstarted_ports(config, broker_key))
    application = create_app(service)
    async with TestClient(TestServer(application)) as client:
        yield application, client


async def served(client: TestClient[Any, Any], path: str) -> Any:
    resp = await client.get(path)
    assert resp.status == 200, await resp.text()
    return await resp.json()


def test_the_full_document_is_valid_openapi_3_1() -> None:
    doc = build_openapi(version="1.2.3")
    validate(doc, cls=OpenAPIV31SpecValidator)
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["title"] == "samsvar" and doc["info"]["version"] == "1.2.3"
    assert doc["servers"] == [{"url": "/"}]
    assert operations(doc) == EVERY_ENDPOINT


async def test_served_document_is_valid_and_documents_every_route(
    app: tuple[web.Application, TestClient[Any, Any]],
) -> None:
    application, client = app
    doc = await served(client, "/openapi.json")
    validate(doc, cls=OpenAPIV31SpecValidator)
    assert doc["info"]["version"] == package_version()
    routes = {(route.method.lower(), route.resource.canonical)
              for route in application.router.routes()
              if route.resource is not None and route.method != "HEAD"
              and route.resource.name != FALLBACK_ROUTE}  # answers only 404 and 405
    assert routes - operations(doc) == set(), "routes the document does not describe"
    assert operations(doc) - routes == set(), "the document promises routes nobody serves"


def test_bodies_are_the_msgspec_schemas() -> None:
    doc = build_openapi()
    schemas = doc["components"]["schemas"]
    _, expected = msgspec.json.schema_components(
        [QueryClaims, ExtractClaims, Health, ProducerListing], ref_template=SCHEMA_REF)
    for name in ("QueryClaims", "ExtractClaims", "Health", "ProducerListing", "ListedProducer",
                 "User", "Period", "Unblock"):
        assert schemas[name] == expected[name], name
    _, answer = msgspec.json.schema_components([Answer], ref_template=SCHEMA_REF)
    assert schemas["Answer"]["properties"]["records"] == {
        "type": "array", "items": {"$ref": SCHEMA_REF.format(name="Record")}}
    record = schemas["Record"]
    assert record["discriminator"]["propertyName"] == "type"
    assert set(record["discriminator"]["mapping"]) == set(INFORMATION_TYPES)
    assert record["anyOf"] == answer["Answer"]["properties"]["records"]["items"]["anyOf"]


@pytest.mark.parametrize(("path", "claims", "header"), [
    ("/v1/queries", "QueryClaims", "QueryJoseHeader"),
    ("/v1/access-log/extract", "ExtractClaims", "ExtractJoseHeader"),
])
def test_signed_bodies_document_their_claims_and_header(path: str, claims: str,
                                                        header: str) -> None:
    body = build_openapi()["paths"][path]["post"]["requestBody"]
    jwt = body["content"]["application/jwt"]
    assert jwt["schema"]["type"] == "string"
    assert jwt["x-jwt-claims"] == {"$ref": SCHEMA_REF.format(name=claims)}
    assert jwt["x-jwt-header"] == {"$ref": SCHEMA_REF.format(name=header)}
    assert SCHEMA_REF.format(name=claims) in body["description"]
    assert SCHEMA_REF.format(name=header) in body["description"]


def test_jose_headers_name_the_accepted_algorithms_and_typ() -> None:
    for header, typ in ((QueryJoseHeader, QUERY_TYP), (ExtractJoseHeader, EXTRACT_TYP)):
        hints = get_type_hints(header)
        assert set(get_args(hints["alg"])) == set(ALGORITHMS)
        assert get_args(hints["typ"]) == (typ,)


def test_query_answers_in_three_representations() -> None:
    ok = build_openapi()["paths"]["/v1/queries"]["post"]["responses"]["200"]
    assert set(ok["content"]) == {"application/json", "application/fhir+json",
                                  "application/x-ndjson"}
    assert ok["content"]["application/json"]["schema"] == {
        "$ref": SCHEMA_REF.format(name="Answer")}


@pytest.mark.parametrize(("path", "statuses"), [
    ("/v1/queries", {"400", "401", "403", "408", "413", "415", "429", "503"}),
    ("/v1/access-log/extract", {"400", "401", "408", "413", "415", "503"}),
    ("/v1/own/queries", {"400", "401", "403", "408", "413", "415", "429", "503"}),
])
def test_problems_are_documented_with_their_slugs(path: str, statuses: set[str]) -> None:
    responses = build_openapi()["paths"][path]["post"]["responses"]
    assert set(responses) - {"200"} == statuses
    endpoints: dict[str, errors.Endpoint] = {
        "/v1/queries": "query", "/v1/access-log/extract": "extract", "/v1/own/queries": "own"}
    endpoint = endpoints[path]
    for slug, problem in errors.PROBLEM_TYPES.items():
        description = responses.get(str(problem.status), {}).get("description", "")
        listed = f"`{errors.PROBLEM_BASE}{slug}`" in description
        assert listed is problem.raised_by(endpoint), (path, slug)
    for status in statuses:
        assert responses[status]["content"]["application/problem+json"]["schema"] == {
            "$ref": SCHEMA_REF.format(name="Problem")}
    if "429" in statuses:
        assert responses["429"]["headers"]["Retry-After"]["required"] is True


async def test_producer_listing_and_health_are_their_structs(
    app: tuple[web.Application, TestClient[Any, Any]],
) -> None:
    _, client = app
    listing = await client.get("/v1/producers")
    assert listing.headers["Cache-Control"] == "no-store"
    decoded = msgspec.json.decode(await listing.read(), type=ProducerListing, strict=True)
    assert [p.id for p in decoded.producers] == ["P1"]
    assert decoded.producers[0].online is False and decoded.producers[0].changed_at is None
    assert json.loads(await listing.read())["producers"][0]["changed_at"] is None
    health = await client.get("/healthz")
    assert msgspec.json.decode(await health.read(), type=Health) == Health(status="alive")
    ready = await client.get("/readyz")  # no MQTT and no access log behind this app
    assert ready.status == 503
    assert msgspec.json.decode(await ready.read(), type=Health).status == "not ready"


# -- PROBLEM_TYPES is every slug the code raises --------------------------------------------


def _rejection_classes() -> dict[str, type[errors.QueryRejected]]:
    found: dict[str, type[errors.QueryRejected]] = {}
    todo: list[type[errors.QueryRejected]] = [errors.QueryRejected]
    while todo:
        cls = todo.pop()
        found[cls.__name__] = cls
        todo.extend(cls.__subclasses__())
    return found


def _raised_in_code() -> tuple[dict[str, set[int]], set[str], set[str]]:
    """Literal slug → statuses, the source of every non-literal slug, and each ``role=``."""
    classes = _rejection_classes()
    literal: dict[str, set[int]] = {}
    dynamic: set[str] = set()
    roles: set[str] = set()
    for path in BROKER_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            for kw in node.keywords:
                if kw.arg == "role" and isinstance(kw.value, ast.Constant):
                    roles.add(str(kw.value.value))
            name = node.func.id if isinstance(node.func, ast.Name) else None
            if name not in classes or not node.args:
                continue
            slug = node.args[0]
            if isinstance(slug, ast.Constant) and isinstance(slug.value, str):
                literal.setdefault(slug.value, set()).add(classes[name].status)
            else:
                dynamic.add(f"{path.name}: {ast.unparse(slug)}")
    return literal, dynamic, roles


def test_every_literal_slug_raised_is_listed_with_its_status() -> None:
    literal, _, _ = _raised_in_code()
    assert literal, "found no QueryRejected raised in broker/"
    for slug, statuses in literal.items():
        assert slug in errors.PROBLEM_TYPES, f"{slug!r} is raised but not in PROBLEM_TYPES"
        assert statuses == {errors.PROBLEM_TYPES[slug].status}, slug


def test_computed_slugs_are_the_policy_rules() -> None:
    """A new computed slug must be added here, and its values to PROBLEM_TYPES. A missing
    role is no slug of its own: it is the same 401 ``unknown-key`` as an unknown issuer."""
    _, dynamic, _ = _raised_in_code()
    assert dynamic == {"service.py: decision.rule"}
    rules = _rules()
    assert rules
    for rule in rules:
        assert errors.PROBLEM_TYPES[rule].status == 403, rule


def _rules() -> set[str]:
    """The rules of the law for staff (broker.policy) and for the own view."""
    return {value for module in (policy, own_view) for name, value in vars(module).items()
            if name.startswith("RULE_")}


def test_problem_types_lists_nothing_the_code_never_raises() -> None:
    literal, _, _ = _raised_in_code()
    raised = set(literal) | _rules()
    assert set(errors.PROBLEM_TYPES) - raised == set()
