"""Refuses a JWT whose ``jti`` was seen before within its lifetime."""

from __future__ import annotations

import heapq

__all__ = ["ReplayGuard"]


class ReplayGuard:
    """Remembers (issuer, jti) until the token expires; memory is bounded by the rate × 300 s."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, str]] = set()
        self._expiry: list[tuple[int, str, str]] = []

    def first_use(self, issuer: str, jti: str, exp: int, *, now: int) -> bool:
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

    def __len__(self) -> int:
        return len(self._seen)
