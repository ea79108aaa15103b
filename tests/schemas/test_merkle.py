"""RFC 9162 Merkle proofs: transparency-dev's vectors, and generated proofs checked by the
verifier (and refused when anything about them is changed)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.merkle import (
    EMPTY_ROOT,
    Frontier,
    Leaves,
    ProofError,
    consistency_proof,
    consistency_proof_extending,
    inclusion_proof,
    leaf_hash,
    node_hash,
    tree_root,
    verify_consistency,
    verify_inclusion,
)


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value or "")


def _vectors(reference: Path, kind: str) -> list[tuple[str, dict[str, object]]]:
    root = reference / "rfc6962-merkle-vectors" / kind
    found = [(str(p.relative_to(root)), json.loads(p.read_text()))
             for p in sorted(root.rglob("*.json"))]
    assert len(found) > 40, f"too few {kind} vectors under {root}"
    return found


def test_inclusion_vectors(reference: Path) -> None:
    for name, v in _vectors(reference, "inclusion"):
        proof = [_b64(h) for h in v["proof"] or []]  # type: ignore[attr-defined]
        args = (v["leafIdx"], v["treeSize"], _b64(v["leafHash"]),  # type: ignore[arg-type]
                proof, _b64(v["root"]))  # type: ignore[arg-type]
        if v["wantErr"]:
            with pytest.raises(ProofError):
                verify_inclusion(*args)  # type: ignore[arg-type]
        else:
            verify_inclusion(*args)  # type: ignore[arg-type]
            assert name  # the happy paths pass


def test_consistency_vectors(reference: Path) -> None:
    for _name, v in _vectors(reference, "consistency"):
        proof = [_b64(h) for h in v["proof"] or []]  # type: ignore[attr-defined]
        args = (v["size1"], v["size2"], _b64(v["root1"]), _b64(v["root2"]), proof)  # type: ignore[arg-type]
        if v["wantErr"]:
            with pytest.raises(ProofError):
                verify_consistency(*args)  # type: ignore[arg-type]
        else:
            verify_consistency(*args)  # type: ignore[arg-type]


def test_generated_proofs_reproduce_the_vectors(reference: Path) -> None:
    """The happy-path vectors were made over leaves ``0..n-1`` of RFC 6962's test data;
    our own proofs for the same tree are the vectors' proofs."""
    leaves_data = [b"", b"\x00", b"\x10", b"\x20\x21", b"\x30\x31", b"\x40\x41\x42\x43",
                   b"\x50\x51\x52\x53\x54\x55\x56\x57",
                   b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f"]
    leaves = Leaves(leaf_hash(d) for d in leaves_data)
    matched = 0
    for _name, v in _vectors(reference, "consistency"):
        if v["wantErr"] or v["desc"] != "happy path" or v["size1"] == v["size2"]:
            continue
        size1, size2 = v["size1"], v["size2"]
        assert isinstance(size1, int) and isinstance(size2, int)
        if size2 > len(leaves) or tree_root(leaves, size2) != _b64(v["root2"]):  # type: ignore[arg-type]
            continue
        assert tree_root(leaves, size1) == _b64(v["root1"])  # type: ignore[arg-type]
        assert consistency_proof(leaves, size1, size2) == [_b64(h) for h in v["proof"]]  # type: ignore[attr-defined]
        matched += 1
    for _name, v in _vectors(reference, "inclusion"):
        if v["wantErr"] or v["desc"] != "happy path":
            continue
        index, size = v["leafIdx"], v["treeSize"]
        assert isinstance(index, int) and isinstance(size, int)
        if size > len(leaves) or tree_root(leaves, size) != _b64(v["root"]):  # type: ignore[arg-type]
            continue
        assert leaves[index] == _b64(v["leafHash"])  # type: ignore[arg-type]
        assert inclusion_proof(leaves, index, size) == [_b64(h) for h in v["proof"] or []]  # type: ignore[attr-defined]
        matched += 1
    assert matched >= 4


def test_known_roots() -> None:
    """RFC 6962's reference roots for its eight test leaves (as in certificate-transparency)."""
    assert tree_root(Leaves()) == EMPTY_ROOT
    assert tree_root(Leaves([leaf_hash(b"")])).hex() == (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")


@settings(max_examples=60, deadline=None)
@given(n=st.integers(min_value=1, max_value=70), data=st.data())
def test_proofs_round_trip_and_break(n: int, data: st.DataObject) -> None:
    leaves = Leaves(leaf_hash(i.to_bytes(4, "big")) for i in range(n))
    frontier = Frontier()
    for size in range(1, n + 1):
        frontier.append(leaves[size - 1])
        assert frontier.root() == tree_root(leaves, size)
    root = tree_root(leaves)
    index = data.draw(st.integers(min_value=0, max_value=n - 1))
    proof = inclusion_proof(leaves, index)
    verify_inclusion(index, n, leaves[index], proof, root)
    with pytest.raises(ProofError):
        verify_inclusion(index, n, leaf_hash(b"other"), proof, root)
    if proof:
        bad = list(proof)
        bad[data.draw(st.integers(0, len(bad) - 1))] = b"\x00" * 32
        with pytest.raises(ProofError):
            verify_inclusion(index, n, leaves[index], bad, root)
    size1 = data.draw(st.integers(min_value=1, max_value=n))
    c_proof = consistency_proof(leaves, size1)
    verify_consistency(size1, n, tree_root(leaves, size1), root, c_proof)
    old = Frontier()
    old.extend(leaves[i] for i in range(size1))
    assert consistency_proof_extending(old, Leaves(leaves[i] for i in range(size1, n))) == c_proof
    if size1 < n:
        # the same first size1 leaves, one later leaf changed: not an extension of the old tree
        changed = Leaves(leaves[i] if i != size1 - 1 else leaf_hash(b"x") for i in range(n))
        with pytest.raises(ProofError):
            verify_consistency(size1, n, tree_root(leaves, size1), tree_root(changed),
                               consistency_proof(changed, size1))
        with pytest.raises(ProofError):
            verify_consistency(n, size1, root, tree_root(leaves, size1), c_proof)


def test_frontier_is_the_sum_of_perfect_subtrees() -> None:
    leaves = Leaves(leaf_hash(bytes([i])) for i in range(6))
    f = Frontier()
    f.extend(leaves[i] for i in range(6))
    assert f.size == 6 and len(f.hashes) == 2
    assert f.hashes[1] == node_hash(leaves[4], leaves[5])
    assert Frontier(f.size, list(f.hashes)).root() == tree_root(leaves)
    with pytest.raises(ValueError, match="hashes"):
        Frontier(5, [b"x" * 32])
