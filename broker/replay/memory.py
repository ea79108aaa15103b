"""The replay store in memory, per instance: for tests and tools that run no access log."""

from __future__ import annotations

import heapq

__all__ = ["ReplayGuard"]


class ReplayGuard:
    """In memory, per instance; memory is bounded by the rate × the token lifetime."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, str]] = set()
        self._expiry: list[tuple[int, str, str]] = []

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def first_use(self, issuer: str, jti: str, exp: int, *, now: int) -> bool:
        """True the first time a token is presented, False on a replay."""
        while self._expiry and self._expiry[0][0] < now:
            _, iss, old = heapq.heappop(self._expiry)
            self._seen.discard((iss, old))
        key = (issuer, jti)
        if key in self._seen:
            return False
        self._seen.add(key)
        heapq.heappush(self._expiry, (exp, issuer, jti))
        return True

    async def writable(self) -> bool:
        return True

    async def release(self, issuer: str, jti: str) -> None:
        # its heap entry stays; popping it later discards nothing that matters (a token
        # presented again carries the same exp)
        self._seen.discard((issuer, jti))

    def __len__(self) -> int:
        return len(self._seen)
