"""The web app of "Min översikt": sign in, look at oneself or a child, sign out.

Routes::

    GET  /            the sign-in page, or the overview of whom one looks at
    POST /logga-in    the demo sign-in (a test person is chosen; NOT an e-identification)
    POST /vaxla       look at oneself or a child under 13 one is guardian of
    POST /logga-ut    sign out
    GET  /healthz     the portal is up

Every overview is asked afresh from the broker (``POST /v1/own/queries``, signed with the
portal's key) and nothing of it is kept: the session holds only who signed in, when, and
whom they look at. Sessions live in this process's memory (a demo portal; a deployment
would keep them in its own session store) and end one hour after sign-in, when the
broker would refuse the sign-in time anyway.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Final

import aiohttp
from aiohttp import web

from schemas.identity import age_on
from schemas.jose import PrivateKey
from schemas.messages import LOA3, ActingAs, Actor, Mandate

from ..errors import BadResponse, QueryRefused, TransportError
from ..own import OwnClient
from .pages import CSP, THEMES, Outcome, Target, overview_page, sign_in_page
from .register import Person, PopulationRegister

__all__ = ["PORTAL", "PortalConfig", "make_app", "running_portal", "serve_portal"]

COOKIE: Final = "minoversikt"
SESSION_TTL: Final = 3600
"""Seconds a sign-in lasts: the broker refuses an ``auth_time`` older than one hour."""
TEEN_TYPES: Final = ("bookings", "fixed_contacts")
"""What a 13–15-year-old may see on their own (SPEC section 9)."""

_HEADERS: Final = {"Cache-Control": "no-store", "Content-Security-Policy": CSP,
                   "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                   "X-Frame-Options": "DENY"}


@dataclass(frozen=True, kw_only=True)
class PortalConfig:
    """What the portal needs: the broker, its own identity and key, and the register."""

    broker_url: str
    issuer: str
    """The portal's participant id (registry role ``citizen-portal``)."""
    key: PrivateKey
    audience: str
    """The broker's id (``aud``)."""
    register: PopulationRegister
    loa: str = LOA3
    """The assurance level the portal asserts for its sign-ins."""
    session_ttl: int = SESSION_TTL
    timeout: float = 30.0
    clock: Callable[[], float] = time.time


@dataclass(kw_only=True)
class _Session:
    actor: str
    auth_time: int
    csrf: str
    viewing: str


@dataclass(kw_only=True)
class _State:
    config: PortalConfig
    sessions: dict[str, _Session] = field(default_factory=dict)
    producer_names: dict[str, str] = field(default_factory=dict)
    client: OwnClient | None = None


PORTAL: Final = web.AppKey("portal", _State)


def _page(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8",
                        headers=_HEADERS)


def _see_other(location: str = "/") -> web.Response:
    return web.Response(status=303, headers={**_HEADERS, "Location": location})


def _session(request: web.Request) -> _Session | None:
    state = request.app[PORTAL]
    sid = request.cookies.get(COOKIE, "")
    session = state.sessions.get(sid)
    if session is None:
        return None
    if state.config.clock() - session.auth_time >= state.config.session_ttl:
        del state.sessions[sid]
        return None
    return session


def _today(config: PortalConfig) -> dt.date:
    return dt.datetime.fromtimestamp(config.clock(), dt.UTC).date()


def _targets(config: PortalConfig, actor: Person) -> list[Target]:
    """The signed-in person and the children they are guardian of (under 18)."""
    today = _today(config)
    targets = [Target(person=actor, relation="self")]
    for child in config.register.children(actor.id):
        age = child.age(today)
        if age >= 18:
            continue
        if age >= 13:
            targets.append(Target(person=child, relation="child", viewable=False,
                                  why_not="från 13 år kan vårdnadshavare inte se barnets "
                                          "uppgifter här"))
        else:
            targets.append(Target(person=child, relation="child"))
    return targets


async def _producer_names(state: _State) -> dict[str, str]:
    """Producer id → name from the broker's public ``GET /v1/producers`` (kept once read)."""
    if state.producer_names:
        return state.producer_names
    url = f"{state.config.broker_url.rstrip('/')}/v1/producers"
    try:
        async with aiohttp.ClientSession() as http, http.get(
                url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
            if resp.status == 200:
                listing = await resp.json()
                state.producer_names = {str(p["id"]): str(p["name"])
                                        for p in listing.get("producers", [])}
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError):
        pass  # the answer's organisation names stand in
    return state.producer_names


async def _ask(state: _State, session: _Session, actor: Person, target: Target) -> Outcome:
    config = state.config
    subject = target.person
    today = _today(config)
    limited = None
    types: tuple[str, ...] = tuple(t.type for t in THEMES)
    acting_as: ActingAs = "self"
    mandate = None
    if target.relation == "self":
        age = age_on(subject.id, today)
        if age < 13:
            return Outcome(not_asked="Du som är under 13 år kan inte se dina egna uppgifter "
                                     "här. Din vårdnadshavare kan se dem åt dig.")
        if age < 16:
            types = TEEN_TYPES
            limited = ("Du som är 13–15 år ser dina bokade tider och dina fasta kontakter här. "
                       "Från 16 år ser du också planer, egenvård, läkemedel, provsvar, "
                       "diagnoser och insatser.")
    else:
        acting_as = "guardian"
        mandate = Mandate(source="folkbokforing", checked_at=today.isoformat())
    assert state.client is not None
    try:
        answer = await state.client.query(
            subject=subject.id, types=types, acting_as=acting_as, mandate=mandate,
            actor=Actor(id=actor.id, loa=config.loa, auth_time=session.auth_time),
            protected_identity=actor.protected_identity or subject.protected_identity,
        )
    except QueryRefused as exc:
        return Outcome(types=types, refusal=exc.problem)
    except TransportError:
        return Outcome(types=types, failure="Tjänsten som hämtar uppgifterna svarar inte.")
    except BadResponse:
        return Outcome(types=types, failure="Tjänsten som hämtar uppgifterna svarade "
                                            "felaktigt.")
    return Outcome(types=types, answer=answer, limited=limited,
                   producer_names=await _producer_names(state))


async def index(request: web.Request) -> web.Response:
    state = request.app[PORTAL]
    config = state.config
    session = _session(request)
    if session is None:
        message = ("Du har blivit utloggad. Logga in igen."
                   if request.cookies.get(COOKIE) else "")
        return _page(sign_in_page(config.register.sign_in_choices(), message=message,
                                  today=_today(config)))
    actor = config.register.person(session.actor)
    if actor is None:  # gone from the register since the sign-in: sign out
        state.sessions.pop(request.cookies.get(COOKIE, ""), None)
        return _see_other()
    targets = _targets(config, actor)
    target = next((t for t in targets if t.person.id == session.viewing and t.viewable),
                  targets[0])
    outcome = await _ask(state, session, actor, target)
    now = dt.datetime.fromtimestamp(config.clock(), dt.UTC)
    return _page(overview_page(actor=actor, target=target, targets=targets, outcome=outcome,
                               csrf=session.csrf, now=now))


async def sign_in(request: web.Request) -> web.Response:
    state = request.app[PORTAL]
    form = await request.post()
    person = state.config.register.person(str(form.get("person", "")))
    if person is None:
        return _page(sign_in_page(state.config.register.sign_in_choices(),
                                  message="Välj en av testpersonerna för att logga in.",
                                  today=_today(state.config)), status=400)
    old = request.cookies.get(COOKIE)
    if old:
        state.sessions.pop(old, None)
    now = state.config.clock()
    for sid, s in list(state.sessions.items()):  # forget every sign-in that has ended
        if now - s.auth_time >= state.config.session_ttl:
            del state.sessions[sid]
    sid = secrets.token_urlsafe(32)
    state.sessions[sid] = _Session(actor=person.id, auth_time=int(state.config.clock()),
                                   csrf=secrets.token_urlsafe(24), viewing=person.id)
    resp = _see_other()
    resp.set_cookie(COOKIE, sid, httponly=True, samesite="Strict", path="/",
                    max_age=state.config.session_ttl)
    return resp


async def _checked(request: web.Request) -> tuple[_Session | None, dict[str, str]]:
    """The session of a form post, if its CSRF token matches."""
    session = _session(request)
    form = {k: str(v) for k, v in (await request.post()).items()}
    if session is None or not secrets.compare_digest(form.get("csrf", ""), session.csrf):
        return None, form
    return session, form


async def switch(request: web.Request) -> web.Response:
    state = request.app[PORTAL]
    session, form = await _checked(request)
    if session is None:
        return _see_other()
    actor = state.config.register.person(session.actor)
    wanted = form.get("subject", "")
    if actor is not None:
        for t in _targets(state.config, actor):
            if t.viewable and t.person.id == wanted:
                session.viewing = t.person.id
    return _see_other()


async def sign_out(request: web.Request) -> web.Response:
    state = request.app[PORTAL]
    session, _ = await _checked(request)
    if session is not None:
        state.sessions.pop(request.cookies.get(COOKIE, ""), None)
    resp = _see_other()
    resp.del_cookie(COOKIE, path="/")
    return resp


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"}, headers={"Cache-Control": "no-store"})


async def _client_ctx(app: web.Application) -> AsyncIterator[None]:
    state = app[PORTAL]
    c = state.config
    async with OwnClient(broker_url=c.broker_url, issuer=c.issuer, key=c.key,
                         audience=c.audience, timeout=c.timeout) as client:
        state.client = client
        yield
        state.client = None


def make_app(config: PortalConfig) -> web.Application:
    """The portal as an aiohttp application."""
    app = web.Application()
    app[PORTAL] = _State(config=config)
    app.cleanup_ctx.append(_client_ctx)
    app.router.add_get("/", index)
    app.router.add_post("/logga-in", sign_in)
    app.router.add_post("/vaxla", switch)
    app.router.add_post("/logga-ut", sign_out)
    app.router.add_get("/healthz", healthz)
    return app


@asynccontextmanager
async def running_portal(config: PortalConfig, *, host: str, port: int,
                         ) -> AsyncIterator[web.AppRunner]:
    """The portal listening on ``host:port`` for as long as the ``async with`` lasts."""
    runner = web.AppRunner(make_app(config), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        yield runner
    finally:
        await runner.cleanup()


async def serve_portal(config: PortalConfig, *, host: str, port: int,
                       shutdown: asyncio.Event) -> None:
    """Serve the portal on ``host:port`` until ``shutdown`` is set."""
    async with running_portal(config, host=host, port=port):
        await shutdown.wait()
