"""The broker's errors. Every refusal of a query carries its problem type.

    BrokerError(Exception)
    ├── ConfigError(BrokerError, ValueError)
    └── QueryRejected(BrokerError)              → problem+json with ``status`` and ``type``
        ├── MalformedQuery(QueryRejected)        400
        ├── UnsupportedMediaType(QueryRejected)  415
        ├── Unauthenticated(QueryRejected)       401
        ├── PolicyRefused(QueryRejected)         403, ``rule`` names the rule of the law
        ├── PayloadTooLarge(QueryRejected)       413
        ├── Overloaded(QueryRejected)            429, with ``retry_after``
        └── NotReady(QueryRejected)              503
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

__all__ = [
    "PROBLEM_BASE",
    "BrokerError",
    "ConfigError",
    "MalformedQuery",
    "NotReady",
    "Overloaded",
    "PayloadTooLarge",
    "PolicyRefused",
    "QueryRejected",
    "Unauthenticated",
    "UnsupportedMediaType",
]

PROBLEM_BASE: Final = "urn:samsvar:problem:"
"""Every problem ``type`` is this prefix and a stable slug, e.g. ``urn:samsvar:problem:replayed``."""


class BrokerError(Exception):
    """Root of every error the broker raises."""


class ConfigError(BrokerError, ValueError):
    """The broker's configuration cannot be used."""


class QueryRejected(BrokerError):
    """A query the broker answers with a problem instead of an answer."""

    status: ClassVar[int] = 400
    title: ClassVar[str] = "Bad request"

    def __init__(self, slug: str, detail: str, *, rule: str | None = None) -> None:
        super().__init__(detail)
        self.slug = slug
        self.detail = detail
        self.rule = rule
        self.context: dict[str, Any] = {}
        """What was verified before the refusal (participant, claims, subject): for the log."""

    @property
    def type(self) -> str:
        return PROBLEM_BASE + self.slug


class MalformedQuery(QueryRejected):
    status = 400
    title = "Malformed query"


class UnsupportedMediaType(QueryRejected):
    status = 415
    title = "Unsupported media type"


class Unauthenticated(QueryRejected):
    status = 401
    title = "Not authenticated"


class PolicyRefused(QueryRejected):
    status = 403
    title = "Refused by the law's access rules"


class PayloadTooLarge(QueryRejected):
    status = 413
    title = "Request too large"


class Overloaded(QueryRejected):
    status = 429
    title = "Too many queries in flight"

    def __init__(self, slug: str, detail: str, *, retry_after: int = 1) -> None:
        super().__init__(slug, detail)
        self.retry_after = retry_after


class NotReady(QueryRejected):
    status = 503
    title = "Broker not ready"
