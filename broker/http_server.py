"""The HTTP server around the consumer API: every error is problem+json, and no connection
holds the server for long.

aiohttp answers some requests itself, without a handler: a path it has no route for
(404), a method the path does not take (405), and a request its parser refuses (a bad
request line, a header too long or too many, ``Transfer-Encoding`` with
``Content-Length``, an invalid chunk). Its own answers are ``text/plain``. SPEC section 3
asks for problem+json everywhere, with ``type``, ``title`` and ``status``:

* :func:`add_fallback_route`, added last, takes every request no other route does: a
  path without an endpoint (404) or a method the path does not take (405, with
  ``Allow``). A route, not a middleware: a middleware would add frames to each of the
  thousands of queries in flight, the fallback costs nothing until it answers;
* a parser error never reaches a middleware: aiohttp builds its answer in
  ``RequestHandler.handle_error``, which has no hook (aiohttp issue 3287), so
  :class:`ProblemAppRunner` serves each connection with a ``RequestHandler`` whose
  ``handle_error`` writes a problem. Nothing else of aiohttp's is changed.

Slow and idle connections (slowloris, or thousands of idle keep-alive connections holding
file descriptors) are aiohttp's ``keepalive_timeout``: from aiohttp 3.14 it runs from the
moment a connection opens and again after each response, and closes a connection still
waiting for a whole request head when it fires. A body that does not arrive in time is
:mod:`broker.http_api`'s (408).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, Final

import msgspec
import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from schemas.messages import PROBLEM_MEDIA_TYPE, Problem

from .errors import PROBLEM_BASE

__all__ = ["FALLBACK_ROUTE", "HTTP_PROBLEMS", "ProblemAppRunner", "add_fallback_route",
           "http_problem"]

log = structlog.get_logger("samsvar.broker")

HTTP_PROBLEMS: Final = {
    400: ("bad-http-request", ("the request is not well-formed HTTP/1.1 ({reason}); send one "
                               "request line, headers within the limits, and either "
                               "Content-Length or Transfer-Encoding: chunked, never both")),
    404: ("not-found", "there is no endpoint at this path; /openapi.json lists them"),
    405: ("method-not-allowed", "this path takes {allowed}; /openapi.json lists the API"),
    413: ("too-large", "the body is larger than this broker accepts; send a smaller body"),
    431: ("headers-too-large", ("the request's headers are too large or too many; send "
                                "fewer and shorter headers")),
    500: ("internal-error", ("the broker failed to handle the request; try again, and tell "
                             "the broker's operator if it persists")),
}
"""The problems of aiohttp's own answers, by status: slug and ``detail`` (what to do)."""


def http_problem(status: int, *, reason: str = "", allowed: str = "",
                 instance: str | None = None) -> web.Response:
    """The problem+json response for an error aiohttp itself gives."""
    slug, detail = HTTP_PROBLEMS.get(
        status, ("http-error", "the request cannot be served ({reason})"))
    title = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    detail = detail.format(reason=reason or title, allowed=allowed or "other methods")
    problem = Problem(type=PROBLEM_BASE + slug, title=title, status=status, detail=detail,
                      instance=instance)
    return web.Response(body=msgspec.json.encode(problem), status=status,
                        content_type=PROBLEM_MEDIA_TYPE, headers={"Cache-Control": "no-store"})


FALLBACK_ROUTE: Final = "samsvar-fallback"
"""The name of the fallback route (left out of the OpenAPI document)."""


async def _fallback(request: web.Request) -> web.Response:
    """404, or 405 with ``Allow`` when another route serves the path with other methods."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource.name == FALLBACK_ROUTE:
            continue
        _, methods = await resource.resolve(request)
        allowed |= methods
    if not allowed:
        return http_problem(404, instance=request.path)
    methods_text = ", ".join(sorted(allowed))
    response = http_problem(405, allowed=methods_text, instance=request.path)
    response.headers["Allow"] = methods_text
    return response


def add_fallback_route(app: web.Application) -> None:
    """Add, after every other route, the one that answers 404 and 405 as problems."""
    app.router.add_route("*", "/{path:.*}", _fallback, name=FALLBACK_ROUTE)


class _ProblemRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering its own errors with a problem."""

    __slots__ = ()

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        # aiohttp's own: it logs, and raises if a response has begun already
        super().handle_error(request, status, exc, message)
        reason = type(exc).__name__ if exc is not None else ""
        response = http_problem(status, reason=reason)
        response.force_close()
        return response


class _ProblemServer(web.Server):
    def __call__(self) -> RequestHandler:
        # web.Server.__call__, with the handler class above
        return _ProblemRequestHandler(self, loop=self._loop, **self._kwargs)


class ProblemAppRunner(web.AppRunner):
    """An ``AppRunner`` whose connections answer parse errors with problem+json."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return _ProblemServer(server.request_handler, request_factory=server.request_factory,
                              handler_cancellation=server.handler_cancellation,
                              loop=server._loop, **server._kwargs)
