"""``verify_extract``: an extract is accepted only when every access shown is a stored entry
about the person, proven (RFC 9162 inclusion) under a tree head the broker signed."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from msgspec.structs import replace

from broker.accesslog import AccessLogConfig, open_access_log
from consumer_client import ExtractNotProven, verify_extract
from schemas.accesslog import EntryProof, ExtractResponse
from schemas.jose import PrivateKey, generate_key
from schemas.registry import RetiredKey
from tests.broker.accesslog.conftest import OTHER, PERSON, make_entry


@pytest.fixture
async def proven(tmp_path: Path) -> tuple[ExtractResponse, PrivateKey]:
    key = generate_key()
    log = open_access_log(AccessLogConfig(path=tmp_path / "log.db"), key=key, instance="b1")
    await log.open()
    try:
        for n in range(1, 10):
            await log.append(make_entry(n, subject=PERSON if n % 2 else OTHER))
        p = await log.extract_proven(PERSON, None)
    finally:
        await log.close()
    return ExtractResponse(subject=PERSON, accesses=p.entries, checkpoint=p.token,
                           proofs=p.proofs), key


def test_a_proven_extract_is_accepted(proven: tuple[ExtractResponse, PrivateKey]) -> None:
    response, key = proven
    head = verify_extract(response, broker_keys={key.kid: key.public})
    assert head.seq == 9 and len(response.accesses) == 5
    # Through JSON, as the client gets it.
    again = msgspec.json.decode(msgspec.json.encode(response), type=ExtractResponse)
    assert verify_extract(again, broker_keys={key.kid: key.public}).seq == 9


def test_anything_not_proven_is_refused(proven: tuple[ExtractResponse, PrivateKey]) -> None:
    response, key = proven
    keys = {key.kid: key.public}
    first = response.proofs[0]
    cases = {
        "unsigned": replace(response, checkpoint=None),
        "other key": response,  # checked with another broker key below
        "an access with no proof": replace(response, proofs=response.proofs[1:]),
        "an invented access": replace(response, accesses=[
            *response.accesses, make_entry(99, subject=PERSON)]),
        "a changed entry": replace(response, proofs=[
            replace(first, entry=first.entry.replace("Anna", "Anne")), *response.proofs[1:]]),
        "a bent path": replace(response, proofs=[
            replace(first, path=["00" * 32, *first.path[1:]]), *response.proofs[1:]]),
        "a moved entry": replace(response, proofs=[
            replace(first, seq=first.seq + 1), *response.proofs[1:]]),
    }
    for name, bad in cases.items():
        with pytest.raises(ExtractNotProven):
            verify_extract(bad, broker_keys=keys if name != "other key"
                           else {key.kid: generate_key().public})
    # A proven entry about someone else is refused too.
    other = EntryProof(seq=2, entry=msgspec.json.encode(make_entry(2, subject=OTHER)).decode(),
                       path=[])
    with pytest.raises(ExtractNotProven):
        verify_extract(replace(response, proofs=[*response.proofs, other]), broker_keys=keys)


def test_a_retired_key_vouches_only_up_to_its_last_entry(
        proven: tuple[ExtractResponse, PrivateKey]) -> None:
    response, key = proven
    current = generate_key()
    assert verify_extract(response, broker_keys={current.kid: current.public},
                          retired_keys={key.kid: RetiredKey(key=key.public, last_seq=9)})
    with pytest.raises(ExtractNotProven, match="retired key"):
        verify_extract(response, broker_keys={current.kid: current.public},
                       retired_keys={key.kid: RetiredKey(key=key.public, last_seq=8)})
