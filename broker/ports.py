"""The ports through which the broker's core talks to the outside.

The core (policy, gathering, merging) never imports aiohttp or an MQTT client; adapters behind
these protocols do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from schemas.messages import SourceStatus

__all__ = ["QueryObserver", "QuestionBus"]


class QuestionBus(Protocol):
    """Carries signed questions to producers. Replies and presence come back as callbacks."""

    connected: asyncio.Event
    reply_topic: str
    """Where producers send replies for this broker instance."""

    async def publish_question(self, producer_id: str, token: bytes, *, expiry_s: int) -> None:
        """Publish one signed question to one producer's topic; raises when not connected."""
        ...

    async def publish_questions(self, producer_ids: Sequence[str], token: bytes, *,
                                expiry_s: int, timeout_s: float) -> dict[str, Exception]:
        """Publish one signed question to each producer's topic, none waiting past
        ``timeout_s``; returns the producers it did not reach, each with the reason."""
        ...


class QueryObserver(Protocol):
    """Told what became of each query: the Prometheus metrics and the dashboard listen.

    Called synchronously on the event loop; an observer must be quick and must not raise.
    Events carry no content and no person: ids, statuses, slugs and durations only.
    """

    def query_answered(self, seconds: float) -> None:
        """A query was answered (logged durably); ``seconds`` from fan-out to commit."""
        ...

    def query_rejected(self, *, status: int, reason: str) -> None:
        """A query got a problem instead of an answer; ``reason`` is its rule or slug."""
        ...

    def source_finished(self, producer: str, status: SourceStatus,
                        latency_s: float | None, unreadable: int = 0) -> None:
        """One producer's final status for one query; ``latency_s`` only when it replied;
        ``unreadable`` the records it said it could not read."""
        ...

    def access_log_committed(self, seconds: float) -> None:
        """An access-log entry is durable, ``seconds`` after it was handed to the log."""
        ...
