"""The adapter's witness of the broker's checkpoints: kept only when signed by the broker
(a retired key only up to its last entry), newer ones replace older ones, and a smaller one
(the broker's log went back) or another root for the same size is refused, loudly."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from producer_adapter.witness import Witness, WitnessError, read_witness_file, read_witnessed
from schemas.accesslog import CHECKPOINT_TYP, Checkpoint, CheckpointMessage, ConsistencyProof
from schemas.jose import PrivateKey, generate_key, sign
from schemas.merkle import Leaves, consistency_proof, leaf_hash, tree_root
from schemas.registry import Registry, parse_registry


def inline(jwk: dict[str, str]) -> str:
    return "{ " + ", ".join(f'{k} = "{v}"' for k, v in jwk.items()) + " }"


def registry(current: PrivateKey, retired: PrivateKey | None = None, last_seq: int = 0) -> Registry:
    text = (f'[broker]\nid = "SE0000000000-TEST"\nkeys = [{inline(current.public.to_jwk())}]\n')
    if retired is not None:
        text += (f"retired_keys = [{{ key = {inline(retired.public.to_jwk())}, "
                 f"last_seq = {last_seq} }}]\n")
    return parse_registry(text)


TREE = Leaves(leaf_hash(b"entry %d" % i) for i in range(64))
REWRITTEN = Leaves(TREE[i] if i < 4 else leaf_hash(b"rewritten %d" % i) for i in range(64))


def token(key: PrivateKey, seq: int, *, root: str | None = None, instance: str = "b1",
          tree: Leaves = TREE) -> bytes:
    cp = Checkpoint(seq=seq, head_hash="ab" * 32, time=dt.datetime.now(dt.UTC),
                    instance=instance, root=root or tree_root(tree, seq).hex(), kid=key.kid)
    return sign(msgspec.json.encode(cp), key, typ=CHECKPOINT_TYP).encode()


def message(key: PrivateKey, seq: int, *, since: int, tree: Leaves = TREE) -> bytes:
    """As the broker publishes it: with a consistency proof from ``since``."""
    proof = consistency_proof(tree, since, seq)
    return msgspec.json.encode(CheckpointMessage(
        checkpoint=token(key, seq, tree=tree).decode(),
        consistency=[ConsistencyProof(from_size=since, path=[h.hex() for h in proof])]))


def test_keeps_the_newest_and_refuses_a_rollback(tmp_path: Path) -> None:
    key = generate_key()
    path = tmp_path / "witness.json"
    w = Witness(path, registry(key), producer="P1")
    assert w.offer("b1", token(key, 3))
    assert w.offer("b1", message(key, 7, since=3))
    assert w.evidence == []  # each step proven
    with capture_logs() as logs:
        assert not w.offer("b1", token(key, 5))
    assert [e["event"] for e in logs] == ["checkpoint_rollback"]
    assert logs[0]["log_level"] == "error" and (logs[0]["held"], logs[0]["offered"]) == (7, 5)
    with capture_logs() as logs:
        assert not w.offer("b1", token(key, 7, root="ff" * 32))
    assert [(e["event"], e["log_level"]) for e in logs] == [("checkpoint_fork", "error")]
    assert w.latest["b1"].seq == 7 and w.refused == 2
    # What was held when they were refused is kept for good, even once larger ones come.
    assert w.offer("b1", message(key, 12, since=7))
    assert [e["why"] for e in w.evidence] == ["checkpoint_rollback"]
    assert len(read_witnessed(path)) == 2
    # Persisted, and read back by a new witness (the adapter restarted).
    doc = json.loads(path.read_text())
    assert doc["checkpoints"]["b1"]["seq"] == 12
    assert [e["instance"] for e in doc["evidence"]] == ["b1"]
    again = Witness(path, registry(key), producer="P1")
    assert again.latest["b1"].seq == 12 and len(again.evidence) == 1
    assert not again.offer("b1", token(key, 6))
    assert set(read_witness_file(path)) == {"b1"}


def test_a_rewritten_history_is_refused_or_kept_against(tmp_path: Path) -> None:
    """The holder of the broker's key rewrites entries 5.. and signs larger heads: one that
    comes with a proof from the held head fails it; one without replaces it only with the
    held head kept for verify."""
    key = generate_key()
    w = Witness(tmp_path / "witness.json", registry(key), producer="P1")
    assert w.offer("b1", message(key, 8, since=2))  # the first one is taken as it is
    with capture_logs() as logs:
        assert not w.offer("b1", message(key, 20, since=8, tree=REWRITTEN))
    assert [(e["event"], e["log_level"]) for e in logs] == [("checkpoint_fork", "error")]
    assert w.latest["b1"].seq == 8
    assert [e["why"] for e in w.evidence] == ["checkpoint_inconsistent"]
    held = w.tokens()["b1"]
    assert w.offer("b1", token(key, 30, tree=REWRITTEN))  # no proof at all
    assert w.latest["b1"].seq == 30
    assert [e["token"] for e in w.evidence] == [held]  # the held head stays, once
    assert held in read_witnessed(tmp_path / "witness.json")


def test_refuses_what_the_broker_did_not_sign(tmp_path: Path) -> None:
    key, other = generate_key(), generate_key()
    w = Witness(tmp_path / "witness.json", registry(key), producer="P1")
    assert not w.offer("b1", token(other, 9))
    assert not w.offer("b1", b"not a token")
    assert not w.offer("b2", token(key, 9, instance="b1"))  # published on another's topic
    assert not w.offer("b1", b"")  # a cleared retained message
    assert w.latest == {} and not (tmp_path / "witness.json").exists()


def test_a_retired_key_counts_only_up_to_its_last_entry(tmp_path: Path) -> None:
    old, new = generate_key(), generate_key()
    w = Witness(tmp_path / "witness.json", registry(new, old, last_seq=4), producer="P1")
    assert w.offer("b1", token(old, 4))
    assert not w.offer("b1", token(old, 5))  # a leaked retired key signing more
    assert w.offer("b1", token(new, 6))


def test_a_tampered_witness_file_is_distrusted_and_kept(tmp_path: Path) -> None:
    key = generate_key()
    path = tmp_path / "witness.json"
    Witness(path, registry(key), producer="P1").offer("b1", token(key, 3))
    doc = json.loads(path.read_text())
    doc["checkpoints"]["b1"]["token"] = token(generate_key(), 3).decode()
    path.write_text(json.dumps(doc))
    with capture_logs() as logs:
        w = Witness(path, registry(key), producer="P1")
    assert ("witness_checkpoint_unverifiable", "error") in [
        (e["event"], e["log_level"]) for e in logs]
    assert w.latest == {}  # not trusted ...
    assert [e["why"] for e in w.evidence] == ["unverifiable"]  # ... but kept for verify
    assert w.offer("b1", token(key, 2))
    assert len(read_witnessed(path)) == 2
    path.write_text("{not json")
    with pytest.raises(WitnessError, match="cannot read"):
        Witness(path, registry(key), producer="P1")


_KEY = generate_key()
_REGISTRY = registry(_KEY)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(max_size=600) | st.builds(
    lambda doc: sign(doc, _KEY, typ=CHECKPOINT_TYP).encode(),
    st.binary(max_size=300) | st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                    max_size=4),
        max_leaves=12).map(lambda v: msgspec.json.encode({"seq": v, "root": v, "time": v}))))
def test_hostile_checkpoint_messages_are_refused_never_raise(tmp_path: Path,
                                                               payload: bytes) -> None:
    w = Witness(tmp_path / "hostile.json", _REGISTRY, producer="P1")
    assert w.offer("b1", payload) is False
    assert w.latest == {}


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(since=st.integers(-3, 70), path=st.lists(st.text(max_size=70), max_size=8),
       raw=st.binary(max_size=200))
def test_hostile_consistency_proofs_never_raise(tmp_path: Path, since: int, path: list[str],
                                                raw: bytes) -> None:
    w = Witness(tmp_path / f"{uuid.uuid4().hex}.json", _REGISTRY, producer="P1")
    token_8 = token(_KEY, 8)
    assert w.offer("b1", token_8)
    token_8_text = token_8.decode()
    bad = msgspec.json.encode(CheckpointMessage(
        checkpoint=token(_KEY, 20, tree=REWRITTEN).decode(),
        consistency=[ConsistencyProof(from_size=since, path=path)]))
    w.offer("b1", bad)
    w.offer("b1", b"{" + raw)
    assert w.latest["b1"].seq in (8, 20)  # refused, or taken with the held one kept:
    assert [e["token"] for e in w.evidence][:1] == [token_8_text]  # either way, 8 stays
