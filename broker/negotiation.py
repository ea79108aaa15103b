"""Which form of the answer a consumer asked for with ``Accept`` (RFC 9110, section 12.5.1).

Three forms: ``application/json`` (the :class:`~schemas.messages.Answer`),
``application/fhir+json`` (a FHIR R4 Bundle) and ``application/x-ndjson`` (streamed).
The highest ``q`` wins; at equal ``q`` an exact media type beats a wildcard, then the
one named first. No ``Accept``, or one that names none of them, gets JSON: refusing
with 406 would help nobody, and problems are ``application/problem+json`` whatever
was asked.
"""

from __future__ import annotations

from typing import Final

from schemas.messages import ANSWER_MEDIA_TYPE, FHIR_MEDIA_TYPE, NDJSON_MEDIA_TYPE

__all__ = ["ANSWER_FORMATS", "choose_format"]

ANSWER_FORMATS: Final = (ANSWER_MEDIA_TYPE, FHIR_MEDIA_TYPE, NDJSON_MEDIA_TYPE)
"""The forms of an answer, the default first."""


def _ranges(accept: str) -> list[tuple[str, float]]:
    """``(media range, q)`` for each element of an ``Accept`` value, in order."""
    ranges = []
    for element in accept.split(","):
        media, *params = (part.strip() for part in element.split(";"))
        if not media:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = min(max(float(value.strip()), 0.0), 1.0)
                except ValueError:
                    q = 0.0
        ranges.append((media.lower(), q))
    return ranges


def _specificity(media_range: str, offer: str) -> int:
    """2 exact, 1 ``type/*``, 0 ``*/*``, -1 no match."""
    if media_range == offer:
        return 2
    kind = offer.split("/", 1)[0]
    if media_range == f"{kind}/*":
        return 1
    if media_range == "*/*":
        return 0
    return -1


def choose_format(accept: str | None) -> str:
    """The media type to answer with: one of :data:`ANSWER_FORMATS`."""
    if not accept:
        return ANSWER_MEDIA_TYPE
    ranges = _ranges(accept)
    best: tuple[float, int, int] | None = None
    chosen = ANSWER_MEDIA_TYPE
    for offer in ANSWER_FORMATS:
        # The most specific range that matches the offer sets its q (RFC 9110).
        match: tuple[int, float, int] | None = None
        for position, (media_range, q) in enumerate(ranges):
            specificity = _specificity(media_range, offer)
            if specificity >= 0 and (match is None or specificity > match[0]):
                match = (specificity, q, position)
        if match is None or match[1] <= 0:
            continue
        score = (match[1], match[0], -match[2])
        if best is None or score > best:
            best, chosen = score, offer
    return chosen
