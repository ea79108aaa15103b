"""``Accept`` picks JSON, a FHIR Bundle or a stream; anything else gets JSON."""

from __future__ import annotations

import pytest

from broker.negotiation import choose_format

JSON = "application/json"
FHIR = "application/fhir+json"
NDJSON = "application/x-ndjson"


@pytest.mark.parametrize(("accept", "chosen"), [
    (None, JSON),
    ("", JSON),
    ("*/*", JSON),
    ("application/*", JSON),
    ("application/json, application/problem+json", JSON),
    ("application/fhir+json", FHIR),
    ("Application/FHIR+JSON; fhirVersion=4.0", FHIR),
    ("application/x-ndjson, application/problem+json", NDJSON),
    ("application/json;q=0.5, application/x-ndjson", NDJSON),
    ("application/fhir+json;q=0.9, application/json;q=0.9", FHIR),  # equal q: first named
    ("*/*;q=0.1, application/fhir+json", FHIR),
    ("application/json;q=0, */*", FHIR),  # json refused; the wildcard takes the next
    ("text/html", JSON),  # nothing we have: JSON rather than 406
    ("application/x-ndjson;q=bogus, application/json", JSON),
])
def test_choose_format(accept: str | None, chosen: str) -> None:
    assert choose_format(accept) == chosen
