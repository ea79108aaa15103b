"""MQTT topic names (SPEC section 4). The prefix is configurable; this is its default."""

from __future__ import annotations

from typing import Final

__all__ = ["DEFAULT_PREFIX", "checkpoint_topic", "presence_topic", "question_topic",
           "replica_topic", "reply_topic", "shared"]

DEFAULT_PREFIX: Final = "samsvar/v1"


def question_topic(prefix: str, producer_id: str) -> str:
    return f"{prefix}/q/{producer_id}"


def reply_topic(prefix: str, broker_instance: str) -> str:
    return f"{prefix}/r/{broker_instance}"


def presence_topic(prefix: str, producer_id: str) -> str:
    return f"{prefix}/presence/{producer_id}"


def checkpoint_topic(prefix: str, broker_instance: str) -> str:
    """Where a broker instance publishes its access log's signed checkpoints, retained."""
    return f"{prefix}/checkpoint/{broker_instance}"


def replica_topic(prefix: str, producer_id: str, replica: str) -> str:
    """One replica's heartbeat (``+`` for every replica's): deciding who answers when the
    server has no shared subscriptions."""
    return f"{prefix}/presence/{producer_id}/replica/{replica}"


def shared(group: str, topic: str) -> str:
    """A shared subscription: replicas in ``group`` each get a share of ``topic``."""
    return f"$share/{group}/{topic}"
