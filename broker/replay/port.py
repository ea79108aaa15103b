"""The replay store's port: what :class:`~broker.service.QueryService` asks of a store,
and the one error a store raises."""

from __future__ import annotations

from typing import Protocol

from ..errors import BrokerError

__all__ = ["ReplayStore", "ReplayStoreError"]


class ReplayStoreError(BrokerError):
    """The replay store cannot say whether a token is new: refuse the token."""


class ReplayStore(Protocol):
    """Remembers ``(issuer, jti)`` until ``exp`` (Unix seconds)."""

    async def first_use(self, issuer: str, jti: str, exp: int, *, now: int) -> bool:
        """True the first time a token is presented, False on a replay; raises
        :class:`ReplayStoreError` when it cannot tell."""
        ...

    async def release(self, issuer: str, jti: str) -> None:
        """Forget a token accepted by :meth:`first_use` whose query was refused before
        anything was asked (429): the same token may then be sent again."""
        ...

    async def writable(self) -> bool:
        """Whether a token could be recorded now (for ``/readyz``)."""
        ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...
