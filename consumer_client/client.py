"""Ask the broker one question: sign a query JWT, POST it, read the answer (SPEC section 3).

::

    async with Client(broker_url="https://samsvar.example.se", issuer="SE2321000016-0001",
                      key=key, audience="SE0000000000-BRK1", user=user) as client:
        answer = await client.query(subject="19380303-9142", types=["medication"],
                                    basis="consent")
        # or line by line, as each producer answers:
        async for line in client.stream(subject="19380303-9142", types=["medication"],
                                        basis="consent"):
            ...  # SourceLine per source, then one SummaryLine (assemble_answer joins them)
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Final, Self, cast, get_args

import aiohttp
import msgspec

from schemas import jose
from schemas.accesslog import EXTRACT_TYP, ExtractClaims, ExtractResponse
from schemas.identity import normalise
from schemas.jose import PrivateKey, PublicKey
from schemas.messages import (
    ANSWER_MEDIA_TYPE,
    NDJSON_MEDIA_TYPE,
    OWN_QUERY_TYP,
    PROBLEM_MEDIA_TYPE,
    QUERY_MEDIA_TYPE,
    QUERY_TYP,
    ActingAs,
    Actor,
    Answer,
    Basis,
    ErrorLine,
    Mandate,
    OwnQueryClaims,
    Period,
    Problem,
    QueryClaims,
    SourceLine,
    StreamLine,
    SummaryLine,
    Unblock,
    User,
)
from schemas.records import INFORMATION_TYPES, InfoType
from schemas.registry import RetiredKey

from .errors import BadResponse, QueryRefused, QueryTimeout, TransportError
from .extract import verify_extract
from .streaming import split_lines

__all__ = [
    "DEFAULT_LIFETIME",
    "MAX_LIFETIME",
    "Client",
    "make_claims",
    "make_own_claims",
    "sign_own_query",
    "sign_query",
]

OWN_QUERIES_PATH: Final = "/v1/own/queries"
DEFAULT_LIFETIME: Final = 60
"""Seconds a query JWT is valid (``exp - iat``)."""
MAX_LIFETIME: Final = 300
"""The broker refuses longer lifetimes."""
_BASES: Final[frozenset[str]] = frozenset(get_args(Basis))
_DEADLINE_MARGIN: Final = 5.0
"""Seconds the HTTP timeout leaves beyond a query's own deadline."""

_answer_decoder: Final = msgspec.json.Decoder(Answer)
_problem_decoder: Final = msgspec.json.Decoder(Problem)
_line_decoder: Final = msgspec.json.Decoder(StreamLine)


def make_claims(
    *,
    issuer: str,
    audience: str,
    user: User,
    subject: str,
    types: Iterable[str],
    basis: Basis,
    relation: bool = True,
    period: Period | None = None,
    unblock: Unblock | None = None,
    deadline_ms: int | None = None,
    lifetime: int = DEFAULT_LIFETIME,
    now: int | None = None,
    jti: str | None = None,
) -> QueryClaims:
    """The claims of one query: fresh ``jti``, ``iat`` now, ``sub`` normalised to 12 digits.

    Raises ``ValueError`` (:class:`schemas.InvalidPersonId` for the person) for what the
    broker would refuse as malformed anyway, so the mistake is found before signing.
    """
    sub = normalise(subject)
    wanted = list(dict.fromkeys(types))
    if not wanted:
        raise ValueError("types must name at least one information type")
    unknown = [t for t in wanted if t not in INFORMATION_TYPES]
    if unknown:
        raise ValueError(
            f"unknown information type(s) {', '.join(map(repr, unknown))}; "
            f"use {', '.join(INFORMATION_TYPES)}"
        )
    if basis not in _BASES:
        raise ValueError(f"basis must be one of {', '.join(sorted(_BASES))}, not {basis!r}")
    if not 0 < lifetime <= MAX_LIFETIME:
        raise ValueError(f"lifetime must be 1..{MAX_LIFETIME} seconds, not {lifetime}")
    if deadline_ms is not None and deadline_ms <= 0:
        raise ValueError("deadline_ms must be positive")
    iat = int(time.time()) if now is None else now
    return QueryClaims(
        iss=issuer,
        aud=audience,
        iat=iat,
        exp=iat + lifetime,
        jti=jti or str(uuid.uuid4()),
        sub=sub,
        user=user,
        relation=relation,
        basis=basis,
        types=cast("list[InfoType]", wanted),
        period=period,
        unblock=unblock,
        deadline_ms=deadline_ms,
    )


def make_own_claims(
    *,
    issuer: str,
    audience: str,
    subject: str,
    types: Iterable[str],
    actor: Actor,
    acting_as: ActingAs,
    mandate: Mandate | None = None,
    protected_identity: bool = False,
    period: Period | None = None,
    deadline_ms: int | None = None,
    lifetime: int = DEFAULT_LIFETIME,
    now: int | None = None,
    jti: str | None = None,
) -> OwnQueryClaims:
    """The claims of one own-view query (SPEC section 9), as a citizen portal signs them
    for the person it signed in (``actor``)."""
    sub = normalise(subject)
    wanted = list(dict.fromkeys(types))
    if not wanted:
        raise ValueError("types must name at least one information type")
    unknown = [t for t in wanted if t not in INFORMATION_TYPES]
    if unknown:
        raise ValueError(f"unknown information type(s) {', '.join(map(repr, unknown))}")
    if not 0 < lifetime <= MAX_LIFETIME:
        raise ValueError(f"lifetime must be 1..{MAX_LIFETIME} seconds, not {lifetime}")
    iat = int(time.time()) if now is None else now
    return OwnQueryClaims(
        iss=issuer, aud=audience, iat=iat, exp=iat + lifetime, jti=jti or str(uuid.uuid4()),
        sub=sub, actor=actor, acting_as=acting_as, mandate=mandate,
        protected_identity=protected_identity, types=cast("list[InfoType]", wanted),
        period=period, deadline_ms=deadline_ms,
    )


def sign_own_query(claims: OwnQueryClaims, key: PrivateKey) -> str:
    """The compact JWS (``typ`` ``samsvar-own-query+jwt``) to POST to ``/v1/own/queries``."""
    return jose.sign(msgspec.json.encode(claims), key, typ=OWN_QUERY_TYP)


def sign_query(claims: QueryClaims, key: PrivateKey) -> str:
    """The compact JWS (``typ`` ``samsvar-query+jwt``) to POST to ``/v1/queries``."""
    return jose.sign(msgspec.json.encode(claims), key, typ=QUERY_TYP)


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def _problem(body: bytes, status: int, reason: str) -> Problem:
    """Problem details, tolerating members the broker left out (RFC 9457 makes all optional)."""
    try:
        return _problem_decoder.decode(body)
    except msgspec.DecodeError:
        pass
    try:
        raw = json.loads(body)
    except ValueError:
        raw = None
    if not isinstance(raw, dict):
        raw = {}

    def text(name: str) -> str | None:
        value = raw.get(name)
        return value if isinstance(value, str) else None

    code = raw.get("status")
    return Problem(
        type=text("type") or "about:blank",
        title=text("title") or reason,
        status=code if isinstance(code, int) and not isinstance(code, bool) else status,
        detail=text("detail"),
        instance=text("instance"),
        rule=text("rule"),
    )


def _refused(body: bytes, status: int, reason: str, retry_after: str | None) -> QueryRefused:
    """The refusal a problem-details response (with its ``Retry-After``, if any) means."""
    return QueryRefused(_problem(body, status, reason), retry_after=_retry_after(retry_after))


def _unexpected(status: int, reason: str, content_type: str) -> BadResponse:
    """A response that is neither the answer asked for nor problem details."""
    return BadResponse(
        f"unexpected response {status} {reason} ({content_type or 'no content type'})",
        status=status, content_type=content_type,
    )


_KEEPALIVE_S: Final = 5.0


class _BrokerSession:
    """The HTTP session both clients share: opening and closing it, one POST with aiohttp's
    errors translated, and an aggregated answer read from the response."""

    broker_url: str
    timeout: float
    _session: aiohttp.ClientSession | None

    async def __aenter__(self) -> Self:
        if self._session is not None:
            raise RuntimeError(f"this {type(self).__name__} is already open")
        # The broker closes a connection idle for 10 s (http_idle_timeout_s): let go of
        # ours well before, so a query is never sent on a connection being closed.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(keepalive_timeout=_KEEPALIVE_S))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    @asynccontextmanager
    async def _post(
        self, token: str, accept: str, deadline_ms: int | None, *, on_timeout: str, on_error: str,
        path: str | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """POST ``token`` to ``/v1/queries`` accepting ``accept`` or problem details, and
        translate aiohttp's errors (in the request or the caller's reading of the response)
        into :class:`QueryTimeout` and :class:`TransportError`.

        ``on_timeout`` and ``on_error`` are the messages, formatted with ``url``, ``total``
        (the timeout in seconds) and ``exc``. ``deadline_ms`` only lengthens the timeout.
        """
        if self._session is None:
            name = type(self).__name__
            raise RuntimeError(f"use the {name} as `async with {name}(...)`")
        total = self.timeout
        if deadline_ms is not None:
            total = max(total, deadline_ms / 1000 + _DEADLINE_MARGIN)
        url = self._url if path is None else f"{self.broker_url}{path}"
        headers = {"Content-Type": QUERY_MEDIA_TYPE, "Accept": f"{accept}, {PROBLEM_MEDIA_TYPE}"}
        try:
            async with self._session.post(
                url, data=token.encode("ascii"), headers=headers,
                timeout=aiohttp.ClientTimeout(total=total),
            ) as resp:
                yield resp
        except TimeoutError as exc:
            raise QueryTimeout(on_timeout.format(url=url, total=total, exc=exc)) from exc
        except aiohttp.ClientError as exc:
            raise TransportError(on_error.format(url=url, total=total, exc=exc)) from exc

    @property
    def _url(self) -> str:
        return f"{self.broker_url}/v1/queries"

    async def _answer(self, token: str, deadline_ms: int | None, path: str | None) -> Answer:
        """POST ``token`` to ``path`` (``/v1/queries`` if None) and read the answer."""
        async with self._post(
            token, ANSWER_MEDIA_TYPE, deadline_ms, path=path,
            on_timeout="no answer from {url} within {total:g} s",
            on_error="cannot reach {url}: {exc}",
        ) as resp:
            body = await resp.read()
            status, reason = resp.status, resp.reason or ""
            content_type = resp.content_type
            retry_after = resp.headers.get("Retry-After")

        if content_type == PROBLEM_MEDIA_TYPE:
            raise _refused(body, status, reason, retry_after)
        if status == 200 and content_type == ANSWER_MEDIA_TYPE:
            try:
                return _answer_decoder.decode(body)
            except msgspec.DecodeError as exc:
                raise BadResponse(f"the answer does not match the schema: {exc}",
                                  status=status, content_type=content_type) from exc
        raise _unexpected(status, reason, content_type)


class Client(_BrokerSession):
    """A consumer system's connection to the broker; use it as ``async with``.

    ``key`` signs every query; its ``kid`` must be registered for ``issuer``. ``timeout``
    bounds each HTTP exchange in seconds; a query with a longer ``deadline_ms`` gets that
    deadline plus a margin instead.
    """

    def __init__(
        self,
        *,
        broker_url: str,
        issuer: str,
        key: PrivateKey,
        audience: str,
        user: User,
        timeout: float = 30.0,
        lifetime: int = DEFAULT_LIFETIME,
    ) -> None:
        if not 0 < lifetime <= MAX_LIFETIME:
            raise ValueError(f"lifetime must be 1..{MAX_LIFETIME} seconds, not {lifetime}")
        self.broker_url = broker_url.rstrip("/")
        self.issuer = issuer
        self.key = key
        self.audience = audience
        self.user = user
        self.timeout = timeout
        self.lifetime = lifetime
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_files(
        cls,
        broker_url: str,
        key_file: str | Path,
        issuer: str,
        audience: str,
        user: User,
        *,
        timeout: float = 30.0,
        lifetime: int = DEFAULT_LIFETIME,
    ) -> Client:
        """A client whose key is read from a private JWK file (as ``samsvar demo`` writes)."""
        path = Path(key_file)
        try:
            jwk = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ValueError(f"{path}: cannot read key file: {exc.strerror}") from exc
        except ValueError as exc:
            raise ValueError(f"{path}: not a JSON JWK: {exc}") from exc
        if not isinstance(jwk, dict):
            # A bad file, not a bad argument: ValueError like the other file errors.
            raise ValueError(f"{path}: not a JSON JWK object")
        try:
            key = jose.private_key_from_jwk(jwk)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc
        return cls(broker_url=broker_url, issuer=issuer, key=key, audience=audience,
                   user=user, timeout=timeout, lifetime=lifetime)

    def claims(
        self,
        *,
        subject: str,
        types: Iterable[str],
        basis: Basis,
        relation: bool = True,
        period: Period | None = None,
        unblock: Unblock | None = None,
        deadline_ms: int | None = None,
    ) -> QueryClaims:
        """The claims :meth:`query` would sign, with this client's issuer, audience and user."""
        return make_claims(
            issuer=self.issuer, audience=self.audience, user=self.user, subject=subject,
            types=types, basis=basis, relation=relation, period=period, unblock=unblock,
            deadline_ms=deadline_ms, lifetime=self.lifetime,
        )

    async def query(
        self,
        *,
        subject: str,
        types: Iterable[str],
        basis: Basis,
        relation: bool = True,
        period: Period | None = None,
        unblock: Unblock | None = None,
        deadline_ms: int | None = None,
    ) -> Answer:
        """Ask one question about ``subject`` and return the broker's aggregated answer.

        Raises :class:`QueryRefused` when the broker refuses (400/401/403/413/429/503),
        :class:`TransportError` (:class:`QueryTimeout`) when it cannot be reached in time,
        :class:`BadResponse` for anything else, and ``ValueError`` for bad arguments.
        """
        claims = self.claims(subject=subject, types=types, basis=basis, relation=relation,
                             period=period, unblock=unblock, deadline_ms=deadline_ms)
        return await self.send(sign_query(claims, self.key), deadline_ms=deadline_ms)

    async def own_query(
        self,
        *,
        subject: str,
        types: Iterable[str],
        actor: Actor,
        acting_as: ActingAs,
        mandate: Mandate | None = None,
        protected_identity: bool = False,
        period: Period | None = None,
        deadline_ms: int | None = None,
    ) -> Answer:
        """Ask for the person's own view (``POST /v1/own/queries``), as a citizen portal
        (this client's issuer must hold the ``citizen-portal`` role). Raises as
        :meth:`query`."""
        claims = make_own_claims(
            issuer=self.issuer, audience=self.audience, subject=subject, types=types,
            actor=actor, acting_as=acting_as, mandate=mandate,
            protected_identity=protected_identity, period=period, deadline_ms=deadline_ms,
            lifetime=self.lifetime)
        return await self.send(sign_own_query(claims, self.key), deadline_ms=deadline_ms,
                               path=OWN_QUERIES_PATH)

    async def send(self, token: str, *, deadline_ms: int | None = None,
                   path: str | None = None) -> Answer:
        """POST an already signed query JWT: :meth:`query` without building and signing.

        ``deadline_ms`` (the token's own claim) only lengthens the HTTP timeout to fit it;
        ``path`` is ``/v1/queries`` unless given (``/v1/own/queries`` for the own view).
        """
        return await self._answer(token, deadline_ms, path)

    async def stream(
        self,
        *,
        subject: str,
        types: Iterable[str],
        basis: Basis,
        relation: bool = True,
        period: Period | None = None,
        unblock: Unblock | None = None,
        deadline_ms: int | None = None,
    ) -> AsyncGenerator[SourceLine | SummaryLine, None]:
        """Ask like :meth:`query`, and yield the answer as it comes: one
        :class:`~schemas.messages.SourceLine` per source as it answers, then the
        :class:`~schemas.messages.SummaryLine`. :func:`~consumer_client.assemble_answer`
        makes the lines the :class:`Answer` that :meth:`query` would return.

        Raises like :meth:`query`; besides, :class:`QueryRefused` when the broker ends the
        stream with an error line (e.g. 503: its access log could not complete the entry),
        and :class:`TransportError` when the stream ends before its summary.
        """
        claims = self.claims(subject=subject, types=types, basis=basis, relation=relation,
                             period=period, unblock=unblock, deadline_ms=deadline_ms)
        token = sign_query(claims, self.key)
        async with aclosing(self.send_stream(token, deadline_ms=deadline_ms)) as lines:
            async for line in lines:
                yield line

    async def send_stream(
        self, token: str, *, deadline_ms: int | None = None,
    ) -> AsyncGenerator[SourceLine | SummaryLine, None]:
        """POST an already signed query JWT asking for a stream: :meth:`stream` without
        building and signing."""
        async with self._post(
            token, NDJSON_MEDIA_TYPE, deadline_ms,
            on_timeout="no whole answer from {url} within {total:g} s",
            on_error="the answer stream from {url} broke: {exc}",
        ) as resp:
            status, reason = resp.status, resp.reason or ""
            content_type = resp.content_type
            if content_type == PROBLEM_MEDIA_TYPE:
                body = await resp.read()
                raise _refused(body, status, reason, resp.headers.get("Retry-After"))
            if status != 200 or content_type != NDJSON_MEDIA_TYPE:
                raise _unexpected(status, reason, content_type)
            async for raw in split_lines(resp.content.iter_any()):
                try:
                    line = _line_decoder.decode(raw)
                except msgspec.DecodeError as exc:
                    raise BadResponse(f"a line of the answer does not match the schema: "
                                      f"{exc}", status=status,
                                      content_type=content_type) from exc
                match line:
                    case ErrorLine():
                        raise QueryRefused(line.problem)
                    case SummaryLine():
                        yield line
                        return
                    case SourceLine():
                        yield line
        raise TransportError(f"the answer stream from {self._url} ended before its summary line")

    async def extract(self, *, subject: str, period: Period | None = None,
                      broker_keys: Mapping[str, PublicKey],
                      retired_keys: Mapping[str, RetiredKey] | None = None) -> ExtractResponse:
        """The person's access-log extract (``POST /v1/access-log/extract``; the issuer needs
        the ``log-extract`` role), every access proven to be in the broker's signed log
        (:func:`~consumer_client.verify_extract` with ``broker_keys``, the registry's).

        Raises like :meth:`query`, and :class:`ExtractNotProven` when the proofs do not hold.
        """
        now = int(time.time())
        claims = ExtractClaims(iss=self.issuer, aud=self.audience, iat=now,
                               exp=now + self.lifetime, jti=str(uuid.uuid4()),
                               sub=normalise(subject), period=period)
        token = jose.sign(msgspec.json.encode(claims), self.key, typ=EXTRACT_TYP)
        async with self._post(
            token, ANSWER_MEDIA_TYPE, None, path="/v1/access-log/extract",
            on_timeout="no extract from {url} within {total:g} s",
            on_error="cannot reach {url}: {exc}",
        ) as resp:
            body = await resp.read()
            status, reason = resp.status, resp.reason or ""
            content_type = resp.content_type
            retry_after = resp.headers.get("Retry-After")
        if content_type == PROBLEM_MEDIA_TYPE:
            raise _refused(body, status, reason, retry_after)
        if status != 200 or content_type != ANSWER_MEDIA_TYPE:
            raise _unexpected(status, reason, content_type)
        try:
            response = msgspec.json.decode(body, type=ExtractResponse)
        except msgspec.DecodeError as exc:
            raise BadResponse(f"the extract does not match the schema: {exc}",
                              status=status, content_type=content_type) from exc
        verify_extract(response, broker_keys=broker_keys, retired_keys=retired_keys)
        return response

