"""The consumer API over HTTP (aiohttp): SPEC section 3.

Handlers translate between HTTP and :class:`~broker.service.QueryService`; every refusal
is an RFC 9457 problem with a stable ``type``.
"""

from __future__ import annotations

import time
from typing import Final

import msgspec
import structlog
from aiohttp import web

from schemas.messages import (
    ANSWER_MEDIA_TYPE,
    PROBLEM_MEDIA_TYPE,
    QUERY_MEDIA_TYPE,
    Problem,
)

from .errors import (
    MalformedQuery,
    Overloaded,
    PayloadTooLarge,
    PolicyRefused,
    QueryRejected,
    Unauthenticated,
    UnsupportedMediaType,
)
from .service import QueryService

__all__ = ["SERVICE", "create_app", "problem_response"]

log = structlog.get_logger("samsvar.broker")

SERVICE: Final = web.AppKey("service", QueryService)
_NO_STORE: Final = {"Cache-Control": "no-store"}


def problem_response(exc: QueryRejected, *, instance: str | None = None) -> web.Response:
    problem = Problem(type=exc.type, title=exc.title, status=exc.status, detail=exc.detail,
                      instance=instance, rule=exc.rule)
    headers = dict(_NO_STORE)
    if isinstance(exc, Overloaded):
        headers["Retry-After"] = str(exc.retry_after)
    return web.Response(body=msgspec.json.encode(problem), status=exc.status,
                        content_type=PROBLEM_MEDIA_TYPE, headers=headers)


async def _read_body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge("too-large", f"the body exceeds {limit} bytes")
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise PayloadTooLarge("too-large", f"the body exceeds {limit} bytes") from exc


async def post_query(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    started = time.perf_counter()
    try:
        body = await _read_body(request, service.config.max_body_bytes)
        if request.content_type != QUERY_MEDIA_TYPE:
            raise UnsupportedMediaType("unsupported-media-type",
                                       f"send the signed query as {QUERY_MEDIA_TYPE}")
        if not body:
            raise MalformedQuery("malformed-token", "the body is empty")
        try:
            query = service.authenticate(body)
        except (Unauthenticated, PolicyRefused) as exc:
            await service.log_refusal(exc)
            raise
        merged = await service.answer(query)
    except QueryRejected as exc:
        log.info("query_refused", status=exc.status, problem=exc.slug, rule=exc.rule)
        return problem_response(exc, instance=request.path)
    answer = merged.answer
    log.info("query_answered", query_id=answer.query_id, complete=answer.complete,
             records=len(answer.records), sources=len(answer.sources),
             ms=round((time.perf_counter() - started) * 1000, 1))
    return web.Response(body=msgspec.json.encode(answer), content_type=ANSWER_MEDIA_TYPE,
                        headers=_NO_STORE)


async def post_extract(request: web.Request) -> web.Response:
    """``POST /v1/access-log/extract``: who accessed the person's documentation."""
    service = request.app[SERVICE]
    try:
        body = await _read_body(request, service.config.max_body_bytes)
        if request.content_type != QUERY_MEDIA_TYPE:
            raise UnsupportedMediaType("unsupported-media-type",
                                       f"send the signed request as {QUERY_MEDIA_TYPE}")
        response = await service.extract(body)
    except QueryRejected as exc:
        log.info("extract_refused", status=exc.status, problem=exc.slug)
        return problem_response(exc, instance=request.path)
    log.info("extract_answered", accesses=len(response.accesses))
    return web.Response(body=msgspec.json.encode(response), content_type=ANSWER_MEDIA_TYPE,
                        headers=_NO_STORE)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    reasons = []
    if service.bus is None or not service.bus.connected.is_set():
        reasons.append("not connected to MQTT")
    if service.access_log is None or not await service.access_log.writable():
        reasons.append("the access log is not writable")
    if reasons:
        return web.json_response({"status": "not ready", "reasons": reasons}, status=503)
    return web.json_response({"status": "ready"})


async def list_producers(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    producers = []
    for p in service.registry.producers.values():
        state = service.presence.get(p.id)
        producers.append({
            "id": p.id,
            "name": p.name,
            "organisation": {"id": p.organisation.id, "name": p.organisation.name},
            "types": sorted(p.types),
            "online": bool(state and state.online),
            "changed_at": state.changed_at if state else None,
        })
    return web.json_response({"producers": producers}, headers=_NO_STORE)


def create_app(service: QueryService) -> web.Application:
    app = web.Application(client_max_size=service.config.max_body_bytes)
    app[SERVICE] = service
    app.router.add_post("/v1/queries", post_query)
    app.router.add_post("/v1/access-log/extract", post_extract)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/v1/producers", list_producers)
    return app
