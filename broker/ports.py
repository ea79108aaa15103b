"""The ports through which the broker's core talks to the outside.

The core (policy, gathering, merging) never imports aiohttp or aiomqtt; adapters behind
these protocols do.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

__all__ = ["QuestionBus"]


class QuestionBus(Protocol):
    """Carries signed questions to producers. Replies and presence come back as callbacks."""

    connected: asyncio.Event
    reply_topic: str
    """Where producers send replies for this broker instance."""

    async def publish_question(self, producer_id: str, token: bytes, *, expiry_s: int) -> None:
        """Publish one signed question to one producer's topic; raises when not connected."""
        ...
