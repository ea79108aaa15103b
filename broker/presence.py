"""Which producers are online, from the retained presence messages, their heartbeats and
last wills.

An adapter refreshes its presence every ``heartbeat_ms`` it announces; a producer whose
latest refresh is older than :data:`MISSED_HEARTBEATS` intervals counts as offline (no
MQTT cluster tested publishes the will of a client whose node died). A retained refresh
is also aged by its own timestamp, allowing :data:`CLOCK_SKEW_S` of skew, so a producer
dead long before the broker started is not taken for alive. An adapter that announces no
interval (an older one) is trusted until its will says otherwise, as before."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Final

import msgspec

from schemas.errors import HOSTILE_DECODE_ERRORS
from schemas.messages import Presence

__all__ = ["MISSED_HEARTBEATS", "OFFLINE_GRACE_S", "PresenceTable", "ProducerPresence"]

MISSED_HEARTBEATS: Final = 3
"""Heartbeat intervals without a refresh after which a producer counts as unavailable."""
CLOCK_SKEW_S: Final = 30.0

OFFLINE_GRACE_S: Final = 0.3
"""How long an offline message from a producer that was online is taken with a grain of
salt. With several replicas of one producer, one replica's last will says "offline" while
the others live; a survivor re-announces within tens of milliseconds (measured 10–70 ms in
tests/e2e/test_multi_instance.py), so questions it is answering are not given up."""

_decoder = msgspec.json.Decoder(Presence)


@dataclass(slots=True)
class ProducerPresence:
    online: bool
    changed_at: float
    """Wall-clock seconds when the broker learnt of the change."""
    grace_until: float = 0.0
    """Until then (monotonic seconds) an offline producer still counts as online."""
    not_ready: tuple[str, ...] = ()
    """What its adapter said at start-up it cannot do (online all the same)."""
    stale_at: float = math.inf
    """From then (monotonic seconds) an online producer counts as offline: its heartbeats
    stopped."""


class PresenceTable:
    """Producer id → online/offline. A producer never seen is offline: fail fast, don't wait."""

    def __init__(self, known: frozenset[str]) -> None:
        self._known = known
        self._state: dict[str, ProducerPresence] = {}

    def update(self, producer_id: str, payload: bytes) -> bool:
        """Apply a presence message; False if it is malformed or for an unknown producer."""
        if producer_id not in self._known:
            return False
        if not payload:  # a cleared retained message
            self._state[producer_id] = ProducerPresence(False, time.time())
            return True
        try:
            msg = _decoder.decode(payload)
        except HOSTILE_DECODE_ERRORS:
            return False
        if msg.producer != producer_id:
            return False
        before = self._state.get(producer_id)
        now = time.monotonic()
        grace, stale_at = 0.0, math.inf
        if not msg.online and before is not None and before.online:
            grace = now + OFFLINE_GRACE_S
        if msg.online and msg.heartbeat_ms > 0:
            window = MISSED_HEARTBEATS * msg.heartbeat_ms / 1000
            stale_at = now + window
            if msg.at and time.time() - msg.at / 1000 > window + CLOCK_SKEW_S:
                stale_at = now  # a retained refresh from long ago: its sender is gone
        changed = (before.changed_at if before is not None and before.online == msg.online
                   else time.time())
        self._state[producer_id] = ProducerPresence(
            msg.online, changed, grace, tuple(r[:300] for r in msg.not_ready[:8]), stale_at)
        return True

    def is_online(self, producer_id: str) -> bool:
        state = self._state.get(producer_id)
        if state is None:
            return False
        now = time.monotonic()
        return (state.online and now < state.stale_at) or now < state.grace_until

    def stale(self) -> list[str]:
        """Producers announced online whose heartbeats stopped: each is marked offline
        (reported once)."""
        now = time.monotonic()
        gone = [pid for pid, state in self._state.items()
                if state.online and now >= state.stale_at]
        for pid in gone:
            self._state[pid] = ProducerPresence(False, time.time())
        return gone

    def get(self, producer_id: str) -> ProducerPresence | None:
        return self._state.get(producer_id)

    def mark_all_offline(self) -> None:
        """When the broker loses MQTT it cannot know who is there."""
        now = time.time()
        for pid in list(self._state):
            self._state[pid] = ProducerPresence(False, now)
