"""Which replica answers when the MQTT server has no shared subscriptions.

Without ``$share`` every replica of a producer receives every question. Each replica
publishes a heartbeat, retained, on ``{prefix}/presence/{producer}/replica/{replica}``
(a :class:`~schemas.messages.Presence` whose ``since`` is when the replica's current
session began) and reads everyone's. The replica that answers is the **oldest live
one**: the smallest ``(since, replica)`` among those heard from within three heartbeat
intervals, itself included. Every replica sees the same heartbeats, so all agree on one
answerer; a replica that joins, or comes back after losing its server, is younger and
changes nothing (so no two answer while one returns); when the answerer dies its
heartbeats stop and, three intervals later, every survivor picks the next oldest
(takeover within ~3 intervals, measured in docs/operations.md). A replica that stops
cleanly clears its heartbeat first, so the next takes over at once.

A replica fences itself: it answers only while its own heartbeat has come back to it
through the server within :data:`FENCE` intervals. When its messages stop getting out
(measured on NATS: a retained publish blocks a connection's reading for 4 s while the
cluster re-elects after a node loss), it stops answering before the others, who wait
:data:`MISSED` intervals, take over: a gap of one interval, never two answerers. Only a
split cluster in which a replica hears itself but another does not hear it could make
two answer (docs/operations.md).

A replica (re)connecting announces itself and listens for ``SETTLE_S`` before it takes
questions, so it has heard the others' retained heartbeats (and they its own) before it
decides. A retained heartbeat is aged by its ``at`` (the sender's clock); one long dead
is cleared from the server.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

import msgspec

from schemas.errors import HOSTILE_DECODE_ERRORS
from schemas.messages import Presence

__all__ = ["FENCE", "MISSED", "SETTLE_S", "Replicas"]

MISSED: Final = 3
"""Heartbeat intervals without a heartbeat after which a replica counts as gone."""
FENCE: Final = 2
"""Intervals without its own heartbeat coming back after which a replica stops answering."""
SETTLE_S: Final = 0.5
"""Seconds a (re)connected replica listens to the others before answering."""
CLOCK_SKEW_S: Final = 30.0
"""A retained heartbeat is stale by its own timestamp only when older than this too."""
FORGET_S: Final = 600.0
"""A retained heartbeat this old is cleared from the server (a replica killed long ago)."""

_decoder: Final = msgspec.json.Decoder(Presence)


@dataclass(slots=True)
class _Peer:
    since: int
    seen: float
    """Monotonic seconds when its latest heartbeat counted."""
    interval: float


class Replicas:
    """The heartbeats of one producer's replicas, as this replica hears them."""

    def __init__(self, *, producer: str, me: str, since: int, interval: float) -> None:
        self.producer = producer
        self.me = me
        self.since = since
        self.interval = interval
        self._peers: dict[str, _Peer] = {}
        self._echo = time.monotonic()
        """When this replica's own heartbeat last came back to it (monotonic seconds)."""

    def new_session(self, since: int) -> None:
        """A new connection: this replica is as old as it, and has just announced itself."""
        self.since = since
        self._echo = time.monotonic()

    def heard(self, replica: str, payload: bytes, *, retained: bool) -> bool:
        """Take a message from ``replica``'s topic; True if it is a long-dead replica's
        retained heartbeat that should be cleared."""
        if replica == self.me:
            if payload and not retained:
                self._echo = time.monotonic()
            return False
        if not payload:
            self._peers.pop(replica, None)  # cleared: it stopped
            return False
        try:
            beat = _decoder.decode(payload)
        except HOSTILE_DECODE_ERRORS:
            return False
        if beat.producer != self.producer or beat.replica != replica or not beat.online:
            self._peers.pop(replica, None)
            return False
        interval = beat.heartbeat_ms / 1000 if beat.heartbeat_ms > 0 else self.interval
        seen = time.monotonic()
        if retained and beat.at:
            age = time.time() - beat.at / 1000
            if age > FORGET_S:
                self._peers.pop(replica, None)
                return True
            if age > MISSED * interval + CLOCK_SKEW_S:
                self._peers.pop(replica, None)
                return False
        self._peers[replica] = _Peer(beat.since, seen, interval)
        return False

    def live(self) -> list[str]:
        """The replicas alive in this replica's view, oldest first (itself included)."""
        now = time.monotonic()
        alive = [(self.since, self.me)]
        alive += [(peer.since, name) for name, peer in self._peers.items()
                  if now - peer.seen <= MISSED * peer.interval]
        return [name for _, name in sorted(alive)]

    def answerer(self) -> str:
        """The replica that answers questions now."""
        return self.live()[0]

    def fenced(self) -> bool:
        """Whether this replica's own heartbeats stopped coming back (it must not answer)."""
        return time.monotonic() - self._echo > FENCE * self.interval

    def answers(self) -> bool:
        """Whether this replica answers questions now."""
        return not self.fenced() and self.answerer() == self.me
