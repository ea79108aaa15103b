"""Errors a consumer sees when asking the broker.

    ClientError(Exception)
    ├── QueryRefused(ClientError)                  the broker answered with problem details
    ├── BadResponse(ClientError, ValueError)       neither an answer nor problem details
    │   └── ExtractNotProven(BadResponse)          an extract not proven by the signed log
    └── TransportError(ClientError, ConnectionError)   the broker could not be reached
        └── QueryTimeout(TransportError, TimeoutError) no response within the client timeout

aiohttp's own exceptions never leave this package: they are translated at the edge,
with the original as ``__cause__``.
"""

from __future__ import annotations

from schemas.messages import Problem

__all__ = ["BadResponse", "ClientError", "ExtractNotProven", "QueryRefused", "QueryTimeout",
           "TransportError"]


class ClientError(Exception):
    """Root of every error this package raises."""


class QueryRefused(ClientError):
    """The broker refused the query with RFC 9457 problem details.

    ``problem`` holds what the broker said; ``status``, ``type``, ``title``, ``detail`` and
    ``rule`` are shortcuts to it. ``retry_after`` is the delay in seconds a ``429`` or
    ``503`` asked for, when it gave one.
    """

    def __init__(self, problem: Problem, *, retry_after: float | None = None) -> None:
        self.problem = problem
        self.retry_after = retry_after
        super().__init__(problem)

    @property
    def status(self) -> int:
        return self.problem.status

    @property
    def type(self) -> str:
        return self.problem.type

    @property
    def title(self) -> str:
        return self.problem.title

    @property
    def detail(self) -> str | None:
        return self.problem.detail

    @property
    def rule(self) -> str | None:
        return self.problem.rule

    def __str__(self) -> str:
        p = self.problem
        text = f"{p.status} {p.title}" if p.title else str(p.status)
        if p.detail:
            text += f": {p.detail}"
        extra = [f"rule={p.rule}"] if p.rule else []
        extra.append(f"type={p.type}")
        if self.retry_after is not None:
            extra.append(f"retry after {self.retry_after:g} s")
        return " ".join(f"{text} ({', '.join(extra)})".split())

    def __repr__(self) -> str:
        return f"QueryRefused(status={self.status}, type={self.type!r}, rule={self.rule!r})"


class BadResponse(ClientError, ValueError):
    """The broker (or something in front of it) sent what is neither an answer nor a problem."""

    def __init__(self, message: str, *, status: int, content_type: str = "") -> None:
        self.status = status
        self.content_type = content_type
        super().__init__(message)


class TransportError(ClientError, ConnectionError):
    """The broker could not be reached, or the connection broke."""


class QueryTimeout(TransportError, TimeoutError):
    """No complete response within the client's timeout."""


class ExtractNotProven(BadResponse):
    """A log extract whose entries are not all proven (RFC 9162 inclusion proofs) to be in
    the log under a checkpoint the broker signed."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=200, content_type="application/json")
