"""A refusal carries what was verified before it, typed (:class:`RefusalContext`): what the
access log states as fact about a refused request, and nothing it was not shown."""

from __future__ import annotations

from broker.errors import NotReady, RefusalContext, Unauthenticated
from tests.broker.test_hostile_input import PERSON, REGISTRY


def test_a_refusal_starts_with_nothing_verified() -> None:
    refusal = Unauthenticated("bad-signature", "the signature does not verify")
    assert refusal.context == RefusalContext()
    assert (refusal.context.participant, refusal.context.claims,
            refusal.context.subject) == (None, None, None)


def test_what_was_verified_first_stays_and_the_rest_is_added() -> None:
    first, other = list(REGISTRY.participants.values())[:2]
    refusal = NotReady("replay-store-unavailable", "the replay store cannot be reached")
    refusal.verified(participant=first)
    refusal.verified(participant=other, subject=PERSON)
    assert refusal.context == RefusalContext(participant=first, subject=PERSON)
    other_refusal = NotReady("replay-store-unavailable", "the replay store cannot be reached")
    assert other_refusal.context.participant is None  # not shared between refusals
