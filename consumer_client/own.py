"""A citizen portal's side of the person's own view (SPEC section 9).

The portal has signed the person in with an e-identification; it asks the broker for that
person's own information, or a child's as their guardian, with a token of ``typ``
``samsvar-own-query+jwt`` signed by the portal's key::

    async with OwnClient(broker_url="https://samsvar.example.se", issuer="SE5560000000-INV1",
                         key=key, audience="SE0000000000-BRK1") as portal:
        answer = await portal.query(
            subject="201503012385", types=["bookings", "care_plans"], acting_as="guardian",
            actor=Actor(id="198507099805", loa=LOA3, auth_time=signed_in_at),
            mandate=Mandate(source="folkbokforing", checked_at="2026-12-08"))

Refusals raise :class:`~consumer_client.QueryRefused` with the broker's problem details
(``rule`` e.g. ``self-under-age``), exactly as :class:`~consumer_client.Client` does. The
tokens are :func:`~consumer_client.make_own_claims` signed by
:func:`~consumer_client.sign_own_query`; unlike :meth:`Client.own_query
<consumer_client.Client.own_query>` this client needs no staff ``user``, which a portal
does not have.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import Final, Self

import aiohttp
import msgspec

from schemas.jose import PrivateKey
from schemas.messages import (
    ANSWER_MEDIA_TYPE,
    PROBLEM_MEDIA_TYPE,
    QUERY_MEDIA_TYPE,
    ActingAs,
    Actor,
    Answer,
    Mandate,
    Period,
)

from .client import (
    _KEEPALIVE_S,
    DEFAULT_LIFETIME,
    MAX_LIFETIME,
    _refused,
    _unexpected,
    make_own_claims,
    sign_own_query,
)
from .errors import BadResponse, QueryTimeout, TransportError

__all__ = ["OWN_QUERY_PATH", "OwnClient"]

OWN_QUERY_PATH: Final = "/v1/own/queries"
_answer_decoder: Final = msgspec.json.Decoder(Answer)


class OwnClient:
    """A citizen portal's connection to the broker; use it as ``async with``.

    ``key`` signs every query; its ``kid`` must be registered for ``issuer``, a participant
    with the ``citizen-portal`` role. ``timeout`` bounds each HTTP exchange in seconds.
    """

    def __init__(
        self,
        *,
        broker_url: str,
        issuer: str,
        key: PrivateKey,
        audience: str,
        timeout: float = 30.0,
        lifetime: int = DEFAULT_LIFETIME,
    ) -> None:
        if not 0 < lifetime <= MAX_LIFETIME:
            raise ValueError(f"lifetime must be 1..{MAX_LIFETIME} seconds, not {lifetime}")
        self.broker_url = broker_url.rstrip("/")
        self.issuer = issuer
        self.key = key
        self.audience = audience
        self.timeout = timeout
        self.lifetime = lifetime
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        if self._session is not None:
            raise RuntimeError("this OwnClient is already open")
        # idle connections closed well before the broker closes them, as Client does
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

    async def query(
        self,
        *,
        subject: str,
        actor: Actor,
        acting_as: ActingAs,
        types: Iterable[str],
        mandate: Mandate | None = None,
        protected_identity: bool = False,
        period: Period | None = None,
        deadline_ms: int | None = None,
    ) -> Answer:
        """Ask for ``subject``'s own view and return the broker's aggregated answer.

        Raises :class:`~consumer_client.QueryRefused` when the broker refuses,
        :class:`~consumer_client.TransportError` (:class:`~consumer_client.QueryTimeout`)
        when it cannot be reached in time, :class:`~consumer_client.BadResponse` for
        anything else, and ``ValueError`` for bad arguments.
        """
        claims = make_own_claims(
            issuer=self.issuer, audience=self.audience, subject=subject, actor=actor,
            acting_as=acting_as, types=types, mandate=mandate,
            protected_identity=protected_identity, period=period, deadline_ms=deadline_ms,
            lifetime=self.lifetime,
        )
        return await self.send(sign_own_query(claims, self.key), deadline_ms=deadline_ms)

    async def send(self, token: str, *, deadline_ms: int | None = None) -> Answer:
        """POST an already signed own-view JWT: :meth:`query` without building and signing."""
        if self._session is None:
            raise RuntimeError("use the OwnClient as `async with OwnClient(...) as portal`")
        total = self.timeout
        if deadline_ms is not None:
            total = max(total, deadline_ms / 1000 + 5.0)
        url = f"{self.broker_url}{OWN_QUERY_PATH}"
        headers = {"Content-Type": QUERY_MEDIA_TYPE,
                   "Accept": f"{ANSWER_MEDIA_TYPE}, {PROBLEM_MEDIA_TYPE}"}
        try:
            async with self._session.post(url, data=token.encode("ascii"), headers=headers,
                                          timeout=aiohttp.ClientTimeout(total=total)) as resp:
                body = await resp.read()
                status, reason = resp.status, resp.reason or ""
                content_type = resp.content_type
                retry_after = resp.headers.get("Retry-After")
        except TimeoutError as exc:
            raise QueryTimeout(f"no answer from {url} within {total:g} s") from exc
        except aiohttp.ClientError as exc:
            raise TransportError(f"cannot reach {url}: {exc}") from exc
        if content_type == PROBLEM_MEDIA_TYPE:
            raise _refused(body, status, reason, retry_after)
        if status == 200 and content_type == ANSWER_MEDIA_TYPE:
            try:
                return _answer_decoder.decode(body)
            except msgspec.DecodeError as exc:
                raise BadResponse(f"the answer does not match the schema: {exc}",
                                  status=status, content_type=content_type) from exc
        raise _unexpected(status, reason, content_type)
