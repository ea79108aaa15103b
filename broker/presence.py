"""Which producers are online, from the retained presence messages and last wills."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

import msgspec

from schemas.errors import HOSTILE_DECODE_ERRORS
from schemas.messages import Presence

__all__ = ["OFFLINE_GRACE_S", "PresenceTable", "ProducerPresence"]

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
        grace = 0.0
        if not msg.online and before is not None and before.online:
            grace = time.monotonic() + OFFLINE_GRACE_S
        self._state[producer_id] = ProducerPresence(msg.online, time.time(), grace,
                                                    tuple(r[:300] for r in msg.not_ready[:8]))
        return True

    def is_online(self, producer_id: str) -> bool:
        state = self._state.get(producer_id)
        return state is not None and (state.online or time.monotonic() < state.grace_until)

    def get(self, producer_id: str) -> ProducerPresence | None:
        return self._state.get(producer_id)

    def mark_all_offline(self) -> None:
        """When the broker loses MQTT it cannot know who is there."""
        now = time.time()
        for pid in list(self._state):
            self._state[pid] = ProducerPresence(False, now)
