"""The consumer API over HTTP (aiohttp): SPEC section 3.

Handlers translate between HTTP and :class:`~broker.service.QueryService`; every refusal
is an RFC 9457 problem with a stable ``type``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

import msgspec
import structlog
from aiohttp import web
from prometheus_client.registry import CollectorRegistry

from schemas.messages import (
    ANSWER_MEDIA_TYPE,
    FHIR_MEDIA_TYPE,
    NDJSON_MEDIA_TYPE,
    PROBLEM_MEDIA_TYPE,
    QUERY_MEDIA_TYPE,
    Health,
    ListedProducer,
    Problem,
    ProducerListing,
    StreamLine,
)

from .dashboard import CSP, render_page, snapshot
from .errors import (
    MalformedQuery,
    Overloaded,
    PayloadTooLarge,
    PolicyRefused,
    QueryRejected,
    RequestTimeout,
    Unauthenticated,
    UnsupportedMediaType,
)
from .fhir import FHIR_ENCODER, answer_bundle
from .http_server import FALLBACK_ROUTE, add_fallback_route
from .metrics import BrokerMetrics
from .negotiation import choose_format
from .openapi import build_openapi
from .service import AuthenticatedQuery, QueryService
from .streaming import stream_answer

__all__ = ["METRICS", "OPENAPI", "SERVICE", "create_app", "problem_response"]

log = structlog.get_logger("samsvar.broker")

SERVICE: Final = web.AppKey("service", QueryService)
METRICS: Final = web.AppKey("metrics", BrokerMetrics)
"""This app's Prometheus metrics, in a registry of their own."""
OPENAPI: Final = web.AppKey("openapi", bytes)
"""The encoded OpenAPI document, built once at start-up from the routes the app serves."""
_NO_STORE: Final = {"Cache-Control": "no-store"}
_ANSWER_HEADERS: Final = {**_NO_STORE, "Vary": "Accept"}
_line_encoder: Final = msgspec.json.Encoder()


def problem_response(exc: QueryRejected, *, instance: str | None = None) -> web.Response:
    problem = Problem(type=exc.type, title=exc.title, status=exc.status, detail=exc.detail,
                      instance=instance, rule=exc.rule)
    headers = dict(_NO_STORE)
    if isinstance(exc, Overloaded):
        headers["Retry-After"] = str(exc.retry_after)
    response = web.Response(body=msgspec.json.encode(problem), status=exc.status,
                            content_type=PROBLEM_MEDIA_TYPE, headers=headers)
    if isinstance(exc, RequestTimeout):
        response.force_close()  # the rest of a slow body is not waited for
    return response


def _media_type(request: web.Request) -> str:
    """The body's media type, parameters dropped: aiohttp's ``content_type`` parses the
    header with the email package and keeps the result on the request (800 bytes for each
    query in flight)."""
    return request.headers.get("Content-Type", "").partition(";")[0].strip().lower()


async def _signed_body(request: web.Request, limit: int, what: str) -> bytes:
    """The body, a signed JWT of at most ``limit`` bytes (``what`` names it in the error).
    Read from the stream, not with ``request.read()``, which keeps a copy on the request
    for as long as the query is in flight."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge("too-large", f"the body exceeds {limit} bytes")
    chunks, size = [], 0
    timeout_s = request.app[SERVICE].config.http_body_timeout_s
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.content.iter_any():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge("too-large", f"the body exceeds {limit} bytes")
                chunks.append(chunk)
    except TimeoutError as exc:
        raise RequestTimeout("body-timeout",
                             f"the body did not arrive within {timeout_s:g} s; send the whole "
                             "request at once") from exc
    if _media_type(request) != QUERY_MEDIA_TYPE:
        raise UnsupportedMediaType("unsupported-media-type",
                                   f"send the signed {what} as {QUERY_MEDIA_TYPE}")
    return b"".join(chunks)


async def post_query(request: web.Request, *, own: bool = False) -> web.StreamResponse:
    """``POST /v1/queries``: JSON, a FHIR Bundle or a stream of lines, as ``Accept`` asks."""
    service = request.app[SERVICE]
    started = time.perf_counter()
    query: AuthenticatedQuery | None = None
    try:
        query = await _authenticate(request, service, own=own)
        # Every line logged for this query from here on names its id itself. Not bound
        # with structlog.contextvars as a refused query's is (below): setting a context
        # variable copies the request task's context, ~120 B for as long as the query
        # is in flight, and 10,000 may be.
        form = choose_format(request.headers.get("Accept"))
        if form == NDJSON_MEDIA_TYPE:
            return await _stream_query(request, service, query, started)
        merged = await service.answer(query)
    except QueryRejected as exc:
        service.observers.query_rejected(status=exc.status, reason=exc.rule or exc.slug)
        if query is None:  # refused while authenticated: the id, if any, is bound
            log.info("query_refused", status=exc.status, problem=exc.slug, rule=exc.rule)
        else:
            log.info("query_refused", query_id=query.query_id, status=exc.status,
                     problem=exc.slug, rule=exc.rule)
        return problem_response(exc, instance=request.path)
    answer = merged.answer
    log.info("query_answered", query_id=answer.query_id, complete=answer.complete,
             records=len(answer.records), sources=len(answer.sources),
             ms=round((time.perf_counter() - started) * 1000, 1))
    if form == FHIR_MEDIA_TYPE:
        return web.Response(body=FHIR_ENCODER.encode(answer_bundle(answer)),
                            content_type=FHIR_MEDIA_TYPE, headers=_ANSWER_HEADERS)
    return web.Response(body=msgspec.json.encode(answer), content_type=ANSWER_MEDIA_TYPE,
                        headers=_ANSWER_HEADERS)


async def post_own_query(request: web.Request) -> web.StreamResponse:
    """``POST /v1/own/queries``: the person's own view, through a citizen portal (SPEC 9).
    Answered exactly as a staff query is, in JSON, FHIR or a stream of lines."""
    return await post_query(request, own=True)


async def _authenticate(request: web.Request, service: QueryService, *,
                        own: bool = False) -> AuthenticatedQuery:
    """The query the body carries, checked (a refusal logged). The body is not kept
    while the query is in flight."""
    body = await _signed_body(request, service.config.max_body_bytes, "query")
    if not body:
        raise MalformedQuery("malformed-token", "the body is empty")
    try:
        if own:
            return await service.authenticate_own(body)
        return await service.authenticate(body)
    except QueryRejected as exc:
        if _loggable(exc):
            structlog.contextvars.bind_contextvars(query_id=await service.log_refusal(exc))
        raise


def _loggable(exc: QueryRejected) -> bool:
    """Whether a refusal goes into the access log: every 401 and 403, and any other
    refusal of a token whose signature was verified (400, and 503 but for the log's own).
    A body nobody is known to have signed is not logged as anyone's question."""
    if exc.slug == "access-log-unavailable":
        return False
    return isinstance(exc, (Unauthenticated, PolicyRefused)) or exc.context.participant is not None


async def _stream_query(request: web.Request, service: QueryService, query: AuthenticatedQuery,
                        started: float) -> web.StreamResponse:
    """The answer as ``application/x-ndjson``. Raises :class:`QueryRejected` only before
    the first byte; the logging guarantee is :mod:`broker.streaming`'s."""
    response = web.StreamResponse(headers={**_ANSWER_HEADERS, "X-Accel-Buffering": "no"})
    response.content_type = NDJSON_MEDIA_TYPE

    async def start() -> None:
        try:
            await response.prepare(request)
        except ConnectionError as exc:  # aiohttp's reset errors are ConnectionErrors too
            raise ConnectionError(f"the consumer went away: {exc}") from exc

    async def send(line: StreamLine) -> None:
        try:
            await response.write(_line_encoder.encode(line) + b"\n")
        except ConnectionError as exc:
            raise ConnectionError(f"the consumer went away: {exc}") from exc

    merged = await stream_answer(service, query, start=start, send=send)
    if merged is not None:
        answer = merged.answer
        log.info("query_answered", query_id=answer.query_id, complete=answer.complete,
                 records=len(answer.records), sources=len(answer.sources), streamed=True,
                 ms=round((time.perf_counter() - started) * 1000, 1))
    if response.prepared:
        try:
            await response.write_eof()
        except ConnectionError:
            pass  # gone already; stream_answer has logged it
    return response


async def post_extract(request: web.Request) -> web.Response:
    """``POST /v1/access-log/extract``: who accessed the person's documentation."""
    service = request.app[SERVICE]
    try:
        body = await _signed_body(request, service.config.max_body_bytes, "request")
        try:
            response = await service.extract(body)
        except QueryRejected as exc:
            if _loggable(exc):
                await service.log_refusal(exc, action="extract")
            raise
    except QueryRejected as exc:
        log.info("extract_refused", status=exc.status, problem=exc.slug)
        return problem_response(exc, instance=request.path)
    log.info("extract_answered", accesses=len(response.accesses))
    return web.Response(body=msgspec.json.encode(response), content_type=ANSWER_MEDIA_TYPE,
                        headers=_NO_STORE)


def _json(body: msgspec.Struct, *, status: int = 200,
          headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=msgspec.json.encode(body), status=status,
                        content_type=ANSWER_MEDIA_TYPE, headers=headers)


async def healthz(request: web.Request) -> web.Response:
    return _json(Health(status="alive"))


async def readyz(request: web.Request) -> web.Response:
    """``GET /readyz``: 503 with the reasons whenever a query would get 503."""
    reasons = await request.app[SERVICE].not_ready()
    if reasons:
        return _json(Health(status="not ready", reasons=reasons), status=503)
    return _json(Health(status="ready"))


async def list_producers(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    producers = []
    for p in service.registry.producers.values():
        state = service.presence.get(p.id)
        producers.append(ListedProducer(
            id=p.id, name=p.name, organisation=p.organisation.ref,
            types=sorted(p.types),  # type: ignore[arg-type]  # the registry checks the types
            own_view_types=sorted(p.own_view_types),  # type: ignore[arg-type]  # likewise
            online=bool(state and state.online),
            changed_at=state.changed_at if state else None,
            not_ready=list(state.not_ready) if state and state.online else [],
        ))
    return _json(ProducerListing(producers=producers), headers=_NO_STORE)


async def get_openapi(request: web.Request) -> web.Response:
    """``GET /openapi.json``: OpenAPI 3.1, generated from the wire types."""
    return web.Response(body=request.app[OPENAPI], content_type=ANSWER_MEDIA_TYPE)


async def _build_openapi(app: web.Application) -> None:
    routes = [(route.method, route.resource.canonical) for route in app.router.routes()
              if route.resource is not None and route.resource.name != FALLBACK_ROUTE]
    app[OPENAPI] = msgspec.json.encode(build_openapi(routes=routes))


async def get_metrics(request: web.Request) -> web.Response:
    """``GET /metrics``: Prometheus text format."""
    body, content_type = request.app[METRICS].exposition()
    return web.Response(body=body, headers={"Content-Type": content_type, **_NO_STORE})


async def get_dashboard(request: web.Request) -> web.Response:
    """``GET /``: the operator dashboard, which polls ``/v1/dashboard``."""
    page = render_page(snapshot(request.app[SERVICE]))
    return web.Response(text=page, content_type="text/html", headers={
        **_NO_STORE, "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"})


async def get_dashboard_data(request: web.Request) -> web.Response:
    """``GET /v1/dashboard``: what the dashboard shows, as JSON."""
    return web.Response(body=msgspec.json.encode(snapshot(request.app[SERVICE])),
                        content_type="application/json", headers=_NO_STORE)


def create_app(service: QueryService) -> web.Application:
    # No middleware clears structlog's context after a request: aiohttp runs each request's
    # handler in a task of its own, with a copy of the context, so what a handler binds
    # ends with its request (tests/broker/test_broker_logging.py). A middleware would also
    # hold two more frames for each query in flight.
    app = web.Application(client_max_size=service.config.max_body_bytes)
    app[SERVICE] = service
    app[METRICS] = metrics = BrokerMetrics(CollectorRegistry(), service)
    service.observers.add(metrics)
    app.router.add_post("/v1/queries", post_query)
    app.router.add_post("/v1/own/queries", post_own_query)
    app.router.add_post("/v1/access-log/extract", post_extract)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/v1/producers", list_producers)
    app.router.add_get("/openapi.json", get_openapi)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/", get_dashboard)
    app.router.add_get("/v1/dashboard", get_dashboard_data)
    add_fallback_route(app)  # last: 404 and 405 as problems
    app.on_startup.append(_build_openapi)  # once every route is added
    return app
