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
from typing import Final

import aiohttp
import msgspec

from schemas.jose import PrivateKey
from schemas.messages import (
    ActingAs,
    Actor,
    Answer,
    Mandate,
    Period,
)

from .client import (
    DEFAULT_LIFETIME,
    MAX_LIFETIME,
    OWN_QUERIES_PATH,
    _BrokerSession,
    make_own_claims,
    sign_own_query,
)

__all__ = ["OWN_QUERY_PATH", "OwnClient"]

OWN_QUERY_PATH: Final = OWN_QUERIES_PATH
_answer_decoder: Final = msgspec.json.Decoder(Answer)


class OwnClient(_BrokerSession):
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
        return await self._answer(token, deadline_ms, OWN_QUERY_PATH)
