"""``GET /openapi.json``: the HTTP API as OpenAPI 3.1, generated from the wire types.

Every body is a msgspec Struct of :mod:`schemas` turned into JSON Schema by
``msgspec.json.schema_components``; nothing here restates a type by hand. The problem
types come from :data:`broker.errors.PROBLEM_TYPES`. The two signed request bodies are
plain strings on the wire; their claims and JOSE header are components too, referenced
from the body's description and from the ``x-jwt-claims`` / ``x-jwt-header`` extensions.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable
from typing import Annotated, Any, Final, Literal

import msgspec

from schemas.accesslog import EXTRACT_TYP, ExtractClaims, ExtractResponse
from schemas.jose import Alg
from schemas.messages import (
    ANSWER_MEDIA_TYPE,
    FHIR_MEDIA_TYPE,
    NDJSON_MEDIA_TYPE,
    OWN_QUERY_TYP,
    PROBLEM_MEDIA_TYPE,
    QUERY_MEDIA_TYPE,
    QUERY_TYP,
    Answer,
    Health,
    OwnQueryClaims,
    Problem,
    ProducerListing,
    QueryClaims,
    StreamLine,
)
from schemas.records import Record

from .errors import PROBLEM_BASE, PROBLEM_TYPES, Endpoint, QueryRejected

__all__ = [
    "ExtractJoseHeader",
    "OwnQueryJoseHeader",
    "QueryJoseHeader",
    "build_openapi",
    "package_version",
]

_REF: Final = "#/components/schemas/{name}"
_COMPACT_JWS: Final = r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$"


_Alg = Annotated[Alg, msgspec.Meta(description="EdDSA (Ed25519) or ES256; never none or HMAC")]
_Kid = Annotated[str, msgspec.Meta(
    description="A key id registered for the issuer in the federation registry")]


class QueryJoseHeader(msgspec.Struct, frozen=True, kw_only=True):
    """The protected JOSE header of a query JWT."""

    alg: _Alg
    kid: _Kid
    typ: Literal["samsvar-query+jwt"]


class OwnQueryJoseHeader(msgspec.Struct, frozen=True, kw_only=True):
    """The protected JOSE header of an own-view query JWT (a citizen portal's)."""

    alg: _Alg
    kid: _Kid
    typ: Literal["samsvar-own-query+jwt"]


class ExtractJoseHeader(msgspec.Struct, frozen=True, kw_only=True):
    """The protected JOSE header of a log-extract JWT."""

    alg: _Alg
    kid: _Kid
    typ: Literal["samsvar-extract+jwt"]


def package_version() -> str:
    """samsvar's installed version, or ``0+unknown`` when run from a bare source tree."""
    try:
        return importlib.metadata.version("samsvar")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(name=name)}


_UNIONS: Final[dict[str, tuple[Any, str]]] = {
    "Record": (Record, ("One record of any information type; `type` says which (SPEC "
                        "section 5). Each carries its `source` and its `scope` (marking).")),
    "StreamLine": (StreamLine, ("One line of a streamed answer (`application/x-ndjson`); "
                                "`kind` says which: one `source` line per source as it "
                                "settles, then one `summary` line, or an `error` line that "
                                "ends a stream which cannot be completed.")),
}
"""Tagged unions: msgspec inlines them where used; they get a component of their own."""


def _components() -> dict[str, Any]:
    unions = [union for union, _ in _UNIONS.values()]
    types: list[Any] = [*unions, Answer, Problem, QueryClaims, QueryJoseHeader, ExtractClaims,
                        ExtractJoseHeader, ExtractResponse, ProducerListing, Health,
                        OwnQueryClaims, OwnQueryJoseHeader]
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)
    for (name, (_, description)), schema in zip(_UNIONS.items(), schemas[:len(_UNIONS)],
                                                strict=True):
        for other in components:  # point every inlined copy at the one component
            components[other] = _replace(components[other], schema, _ref(name))
        components[name] = {"title": name, "description": description, **schema}
    return dict(sorted(components.items()))


def _replace(node: Any, old: dict[str, Any], new: dict[str, str]) -> Any:
    if node == old:
        return new
    if isinstance(node, dict):
        return {k: _replace(v, old, new) for k, v in node.items()}
    if isinstance(node, list):
        return [_replace(v, old, new) for v in node]
    return node


_NO_STORE: Final = {"Cache-Control": {"description": "Always `no-store`: never cached.",
                                      "required": True,
                                      "schema": {"type": "string", "const": "no-store"}}}


def _problem_responses(endpoint: Endpoint) -> dict[str, Any]:
    """One response per status the endpoint can refuse with, listing its problem types."""
    titles = {cls.status: cls.title for cls in QueryRejected.__subclasses__()}
    by_status: dict[int, list[str]] = {}
    for slug, problem in PROBLEM_TYPES.items():
        if problem.raised_by(endpoint):
            by_status.setdefault(problem.status, []).append(
                f"- `{PROBLEM_BASE}{slug}`: {problem.summary}")
    responses: dict[str, Any] = {}
    for status in sorted(by_status):
        headers: dict[str, Any] = dict(_NO_STORE)
        if status == 429:
            headers["Retry-After"] = {"description": "Seconds to wait before retrying.",
                                      "required": True,
                                      "schema": {"type": "integer", "minimum": 0}}
        text = f"{titles[status]}. `type` is one of:\n\n" + "\n".join(by_status[status])
        if status == 403:
            text += "\n\n`rule` repeats the slug: the rule of the law that refused the query."
        responses[str(status)] = {
            "description": text,
            "headers": headers,
            "content": {PROBLEM_MEDIA_TYPE: {"schema": _ref("Problem")}},
        }
    return responses


def _jwt_body(*, what: str, claims: str, header: str, typ: str) -> dict[str, Any]:
    return {
        "required": True,
        "description": (
            f"{what} The body is a compact JWS (RFC 7515): `header.payload.signature`, each "
            f"part base64url without padding. The protected header is "
            f"[`{header}`]({_REF.format(name=header)}): `alg` `EdDSA` (Ed25519) or `ES256`, "
            f"`kid` a key id registered for the issuer, `typ` `{typ}`. The payload is the "
            f"claims, [`{claims}`]({_REF.format(name=claims)}), as JSON."
        ),
        "content": {QUERY_MEDIA_TYPE: {
            "schema": {"type": "string", "pattern": _COMPACT_JWS,
                       "description": f"A compact JWS; claims: `{claims}`."},
            "x-jwt-header": _ref(header),
            "x-jwt-claims": _ref(claims),
        }},
    }


def _json(schema: dict[str, Any], description: str, *, no_store: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description,
                                "content": {ANSWER_MEDIA_TYPE: {"schema": schema}}}
    if no_store:
        response["headers"] = dict(_NO_STORE)
    return response


def _text(media_type: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {media_type: {"schema": {"type": "string"}}}}


_FHIR_BUNDLE: Final = {
    "type": "object",
    "description": "A FHIR R4 `Bundle` of type `searchset`: one entry per record, as the "
                   "resource of its type (DocumentReference, Condition, MedicationRequest, "
                   "AllergyIntolerance or Flag, Observation, Encounter, CarePlan, "
                   "ServiceRequest, Appointment, PractitionerRole), with the answer's "
                   "completeness and sources alongside.",
    "required": ["resourceType"],
    "properties": {"resourceType": {"const": "Bundle"},
                   "type": {"const": "searchset"},
                   "entry": {"type": "array", "items": {"type": "object"}}},
}


def _operations() -> dict[str, dict[str, Any]]:
    """Every operation the broker can serve, by path and method."""
    return {
        "/v1/queries": {"post": {
            "operationId": "postQuery",
            "tags": ["consumer"],
            "summary": "Ask one question about one person",
            "description": (
                "Authenticates the signed query, applies the law's access rules, fans it out "
                "to every producer serving the asked types, waits until all have answered or "
                "the deadline passes, logs the access durably and returns one merged answer. "
                "`Accept` picks the representation: `application/json` (default), "
                f"`{FHIR_MEDIA_TYPE}` or `{NDJSON_MEDIA_TYPE}`."
            ),
            "requestBody": _jwt_body(what="The signed query.", claims="QueryClaims",
                                     header="QueryJoseHeader", typ=QUERY_TYP),
            "responses": {
                "200": {
                    "description": "The merged answer. `complete` is true when every asked "
                                   "source answered; a source holding only blocked "
                                   "information looks exactly like `no_data`.",
                    "headers": dict(_NO_STORE),
                    "content": {
                        ANSWER_MEDIA_TYPE: {"schema": _ref("Answer")},
                        FHIR_MEDIA_TYPE: {"schema": _FHIR_BUNDLE},
                        NDJSON_MEDIA_TYPE: {
                            "schema": {
                                "type": "string",
                                "description": "Newline-delimited JSON, streamed: each line "
                                               "is one [`StreamLine`]("
                                               + _REF.format(name="StreamLine") + ").",
                            },
                            "x-ndjson-line": _ref("StreamLine"),
                        },
                    },
                },
                **_problem_responses("query"),
            },
        }},
        "/v1/own/queries": {"post": {
            "operationId": "postOwnQuery",
            "tags": ["own view"],
            "summary": "The person's own view: their plans, bookings, contacts and more",
            "description": (
                "A participant with the `citizen-portal` role, having signed the person in "
                "with an e-identification, asks for the person (`acting_as` `self`) or a "
                "child (`guardian`). The broker applies the own view's rules (SPEC "
                "section 9), asks only the producers that offer the types in the own view, "
                "logs the access with the actor, and returns one merged answer with "
                "`acting_as` and without `blocked_at`. Records not approved for the "
                "patient, inside a release delay, or blocked are never shown; "
                "`blocked_information_exists` is said only to the person themself. "
                "`Accept` as for `/v1/queries`."
            ),
            "requestBody": _jwt_body(what="The signed own-view query.", claims="OwnQueryClaims",
                                     header="OwnQueryJoseHeader", typ=OWN_QUERY_TYP),
            "responses": {
                "200": {
                    "description": "The merged own-view answer.",
                    "headers": dict(_NO_STORE),
                    "content": {
                        ANSWER_MEDIA_TYPE: {"schema": _ref("Answer")},
                        FHIR_MEDIA_TYPE: {"schema": _FHIR_BUNDLE},
                        NDJSON_MEDIA_TYPE: {"schema": {"type": "string"},
                                            "x-ndjson-line": _ref("StreamLine")},
                    },
                },
                **_problem_responses("own"),
            },
        }},
        "/v1/access-log/extract": {"post": {
            "operationId": "postAccessLogExtract",
            "tags": ["access log"],
            "summary": "Who accessed the person's documentation",
            "description": "A participant with the `log-extract` role (e.g. a citizen "
                           "portal), on the person's behalf, gets every access to the "
                           "person in the period, oldest first. Never any content.",
            "requestBody": _jwt_body(what="The signed extract request.",
                                     claims="ExtractClaims", header="ExtractJoseHeader",
                                     typ=EXTRACT_TYP),
            "responses": {
                "200": _json(_ref("ExtractResponse"), "The person's accesses.", no_store=True),
                **_problem_responses("extract"),
            },
        }},
        "/healthz": {"get": {
            "operationId": "getHealthz",
            "tags": ["operator"],
            "summary": "Liveness",
            "responses": {"200": _json(_ref("Health"), "The process is alive.")},
        }},
        "/readyz": {"get": {
            "operationId": "getReadyz",
            "tags": ["operator"],
            "summary": "Readiness: connected to MQTT and the access log writable",
            "responses": {
                "200": _json(_ref("Health"), "Ready to answer queries."),
                "503": _json(_ref("Health"), "Not ready; `reasons` says why."),
            },
        }},
        "/metrics": {"get": {
            "operationId": "getMetrics",
            "tags": ["operator"],
            "summary": "Prometheus metrics",
            "responses": {"200": _text("text/plain", "The Prometheus text exposition format.")},
        }},
        "/v1/producers": {"get": {
            "operationId": "listProducers",
            "tags": ["operator"],
            "summary": "The registered producers and their live presence",
            "responses": {"200": _json(_ref("ProducerListing"),
                                       "Every registered producer, in registry order.",
                                       no_store=True)},
        }},
        "/": {"get": {
            "operationId": "getDashboard",
            "tags": ["operator"],
            "summary": "The operator dashboard (HTML)",
            "responses": {"200": _text("text/html", "The dashboard page.")},
        }},
        "/v1/dashboard": {"get": {
            "operationId": "getDashboardData",
            "tags": ["operator"],
            "summary": "The dashboard's data",
            "responses": {"200": _json({"type": "object"},
                                       "What the dashboard page shows: load, producers, "
                                       "recent outcomes. Never clinical content.")},
        }},
        "/openapi.json": {"get": {
            "operationId": "getOpenApi",
            "tags": ["operator"],
            "summary": "This document",
            "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1, generated from "
                                                           "the wire types.")},
        }},
    }


def build_openapi(
    *, version: str | None = None, routes: Iterable[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document.

    ``routes`` (method, path) limits it to what an app actually serves, so the document
    never promises an endpoint that answers 404; ``None`` documents every operation.
    """
    served = None if routes is None else {(m.lower(), p) for m, p in routes}
    paths: dict[str, dict[str, Any]] = {}
    for path, methods in _operations().items():
        kept = {m: op for m, op in methods.items() if served is None or (m, path) in served}
        if kept:
            paths[path] = kept
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "samsvar",
            "version": version or package_version(),
            "summary": "Federated query-response broker for Swedish health and social care",
            "description": (
                "One signed question about one person, fanned out to every producer "
                "(regions, municipalities, private providers) over MQTT, answered with "
                "one merged answer, under Lag (2022:913) om sammanhållen vård- och "
                "omsorgsdokumentation. Errors are RFC 9457 problem details whose `type` is "
                f"`{PROBLEM_BASE}<slug>`."
            ),
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "/"}],
        "tags": [
            {"name": "consumer", "description": "Care givers and social care givers asking."},
            {"name": "own view", "description": "The person's own view, through a portal."},
            {"name": "access log", "description": "The person's right to see who accessed."},
            {"name": "operator", "description": "Health, load and the registry."},
        ],
        "paths": paths,
        "components": {"schemas": _components()},
    }
