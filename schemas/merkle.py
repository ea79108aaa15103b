"""RFC 9162 Merkle trees (section 2.1): hashes, proofs, and checking proofs.

The access log (SPEC section 7) is such a tree over its entries' stored bytes::

    leaf  = SHA-256(0x00 || entry bytes)
    node  = SHA-256(0x01 || left || right)
    MTH({}) = SHA-256("")

A tree of ``n`` leaves splits at ``k``, the largest power of two below ``n``. Proof
generation follows the RFC's ``PATH`` and ``SUBPROOF`` definitions over a
:class:`Leaves` array; checking follows its verification algorithms (2.1.3.2, 2.1.4.2),
written as transparency-dev/merkle writes them, whose test vectors
(``../shared/reference/rfc6962-merkle-vectors``) the tests run. Checks raise
:class:`ProofError` (a :class:`~schemas.errors.SchemasError`).

:class:`Frontier` is a compact range: the roots of the perfect subtrees a tree of
``size`` leaves is made of, largest first, enough to append leaves and get the root
without the leaves themselves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from .errors import SchemasError

__all__ = [
    "EMPTY_ROOT",
    "Frontier",
    "Leaves",
    "ProofError",
    "consistency_proof",
    "consistency_proof_extending",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_from_inclusion",
    "tree_root",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE: Final = 32
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()


class ProofError(SchemasError, ValueError):
    """A Merkle proof does not prove what it claims (or is malformed)."""


def leaf_hash(data: bytes) -> bytes:
    """``SHA-256(0x00 || data)``."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (``n`` > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


class Leaves:
    """Leaf hashes in one ``bytearray`` (32 bytes each): a whole log fits in memory."""

    __slots__ = ("_data", "_memo")

    _MEMO_MIN: Final = 64
    """Subtrees of at least this many leaves are remembered: proofs for many leaves of one
    tree share them, so n leaves cost about n hashes, not n per proof."""

    def __init__(self, hashes: Iterable[bytes] = ()) -> None:
        self._data = bytearray()
        self._memo: dict[tuple[int, int], bytes] = {}
        for h in hashes:
            self.append(h)

    def append(self, h: bytes) -> None:
        if len(h) != HASH_SIZE:
            raise ValueError("a leaf hash is 32 bytes")
        self._data += h

    def __len__(self) -> int:
        return len(self._data) // HASH_SIZE

    def __getitem__(self, i: int) -> bytes:
        if not 0 <= i < len(self):
            raise IndexError(i)
        return bytes(self._data[i * HASH_SIZE:(i + 1) * HASH_SIZE])

    def mth(self, lo: int, hi: int) -> bytes:
        """The Merkle tree hash of leaves ``lo..hi-1``."""
        n = hi - lo
        if n == 0:
            return EMPTY_ROOT
        if n == 1:
            return self[lo]
        if hi > len(self):
            raise IndexError(hi)
        if n >= self._MEMO_MIN and (lo, hi) in self._memo:
            return self._memo[lo, hi]
        k = _split(n)
        h = node_hash(self.mth(lo, lo + k), self.mth(lo + k, hi))
        if n >= self._MEMO_MIN:
            self._memo[lo, hi] = h  # leaves are only appended: a range's hash never changes
        return h


def tree_root(leaves: Leaves, size: int | None = None) -> bytes:
    """The root of the tree of the first ``size`` leaves (all by default)."""
    return leaves.mth(0, len(leaves) if size is None else size)


def inclusion_proof(leaves: Leaves, index: int, size: int | None = None) -> list[bytes]:
    """RFC 9162 ``PATH(index, D[0:size])``."""
    size = len(leaves) if size is None else size
    if not 0 <= index < size <= len(leaves):
        raise ValueError(f"no leaf {index} in a tree of {size}")
    proof: list[bytes] = []

    def path(m: int, lo: int, hi: int) -> None:
        n = hi - lo
        if n == 1:
            return
        k = _split(n)
        if m < k:
            path(m, lo, lo + k)
            proof.append(leaves.mth(lo + k, hi))
        else:
            path(m - k, lo + k, hi)
            proof.append(leaves.mth(lo, lo + k))

    path(index, 0, size)
    return proof


class _Subtrees(Protocol):
    def mth(self, lo: int, hi: int) -> bytes: ...


class _Extension:
    """The subtrees a consistency proof from a tree of ``frontier.size`` leaves needs: the
    frontier's perfect subtrees on the left, the new leaves on the right."""

    def __init__(self, frontier: Frontier, new: Leaves) -> None:
        self._size = frontier.size
        self._new = new
        self._left: dict[tuple[int, int], bytes] = {}
        lo = 0
        for bit, h in zip(_bits_high_to_low(frontier.size), frontier.hashes, strict=True):
            self._left[lo, lo + bit] = h
            lo += bit

    def mth(self, lo: int, hi: int) -> bytes:
        if hi <= self._size:
            try:
                return self._left[lo, hi]
            except KeyError:
                raise ValueError(
                    f"leaves {lo}..{hi - 1} are not a subtree of the frontier") from None
        if lo < self._size:
            raise ValueError(f"leaves {lo}..{hi - 1} straddle the old tree's end")
        return self._new.mth(lo - self._size, hi - self._size)


def _bits_high_to_low(n: int) -> list[int]:
    return [1 << i for i in range(n.bit_length() - 1, -1, -1) if n >> i & 1]


def consistency_proof(leaves: Leaves, size1: int, size2: int | None = None) -> list[bytes]:
    """RFC 9162 ``PROOF(size1, D[0:size2])``; empty when the sizes are equal."""
    size2 = len(leaves) if size2 is None else size2
    if not 0 < size1 <= size2 <= len(leaves):
        raise ValueError(f"no consistency proof from {size1} to {size2}")
    return _consistency(leaves, size1, size2)


def consistency_proof_extending(frontier: Frontier, new: Leaves) -> list[bytes]:
    """The consistency proof from the tree ``frontier`` describes to that tree with the
    ``new`` leaves appended, without the old leaves themselves."""
    if frontier.size == 0:
        raise ValueError("no consistency proof from an empty tree")
    return _consistency(_Extension(frontier, new), frontier.size, frontier.size + len(new))


def _consistency(leaves: _Subtrees, size1: int, size2: int) -> list[bytes]:
    proof: list[bytes] = []

    def subproof(m: int, lo: int, hi: int, whole: bool) -> None:
        n = hi - lo
        if m == n:
            if not whole:
                proof.append(leaves.mth(lo, hi))
            return
        k = _split(n)
        if m <= k:
            subproof(m, lo, lo + k, whole)
            proof.append(leaves.mth(lo + k, hi))
        else:
            subproof(m - k, lo + k, hi, False)
            proof.append(leaves.mth(lo, lo + k))

    if size1 < size2:
        subproof(size1, 0, size2, True)
    return proof


# -- checking ------------------------------------------------------------------------------


def _decompose(index: int, size: int) -> tuple[int, int]:
    inner = (index ^ (size - 1)).bit_length()
    border = (index >> inner).bit_count()
    return inner, border


def _chain_inner(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    for i, h in enumerate(proof):
        seed = node_hash(seed, h) if (index >> i) & 1 == 0 else node_hash(h, seed)
    return seed


def _chain_inner_right(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    for i, h in enumerate(proof):
        if (index >> i) & 1 == 1:
            seed = node_hash(h, seed)
    return seed


def _chain_border_right(seed: bytes, proof: Sequence[bytes]) -> bytes:
    for h in proof:
        seed = node_hash(h, seed)
    return seed


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root that ``proof`` puts leaf ``index`` of a ``size``-leaf tree under."""
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of {size}")
    if len(leaf) != HASH_SIZE:
        raise ProofError("a leaf hash is 32 bytes")
    inner, border = _decompose(index, size)
    if len(proof) != inner + border:
        raise ProofError(f"the proof has {len(proof)} hashes, {inner + border} expected")
    return _chain_border_right(_chain_inner(leaf, proof[:inner], index), proof[inner:])


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes],
                     root: bytes) -> None:
    """Raise :class:`ProofError` unless ``proof`` puts ``leaf`` at ``index`` under ``root``."""
    if root_from_inclusion(index, size, leaf, proof) != root:
        raise ProofError(f"leaf {index} is not in the tree of {size} with this root")


def verify_consistency(size1: int, size2: int, root1: bytes, root2: bytes,
                       proof: Sequence[bytes]) -> None:
    """Raise :class:`ProofError` unless the tree of ``size2`` leaves with ``root2`` extends
    the tree of ``size1`` leaves with ``root1`` (the first ``size1`` leaves are the same)."""
    if size2 < size1:
        raise ProofError(f"the tree shrank from {size1} to {size2} leaves")
    if size1 == 0:
        raise ProofError("a consistency proof from an empty tree proves nothing")
    if size1 == size2:
        if proof:
            raise ProofError("equal sizes need an empty proof")
        if root1 != root2:
            raise ProofError(f"two different roots for one tree of {size1} leaves")
        return
    if not proof:
        raise ProofError("empty consistency proof")
    inner, border = _decompose(size1 - 1, size2)
    shift = ((size1 & -size1).bit_length() - 1)
    inner -= shift
    seed, start = proof[0], 1
    if size1 == 1 << shift:
        seed, start = root1, 0
    if len(proof) != start + inner + border:
        raise ProofError(f"the proof has {len(proof)} hashes, {start + inner + border} expected")
    rest = proof[start:]
    mask = (size1 - 1) >> shift
    hash1 = _chain_border_right(_chain_inner_right(seed, rest[:inner], mask), rest[inner:])
    if hash1 != root1:
        raise ProofError(f"the proof does not lead to the root of the first {size1} leaves")
    hash2 = _chain_border_right(_chain_inner(seed, rest[:inner], mask), rest[inner:])
    if hash2 != root2:
        raise ProofError(f"the proof does not lead to the root of {size2} leaves")


# -- the compact range ------------------------------------------------------------------


@dataclass(slots=True)
class Frontier:
    """The roots of the perfect subtrees of a ``size``-leaf tree, largest (leftmost) first."""

    size: int = 0
    hashes: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.hashes) != self.size.bit_count():
            raise ValueError(f"a frontier of {self.size} leaves has {self.size.bit_count()} "
                             f"hashes, not {len(self.hashes)}")

    def append(self, leaf: bytes) -> None:
        self.hashes.append(leaf)
        self.size += 1
        merges = (self.size & -self.size).bit_length() - 1  # trailing zeros of the new size
        for _ in range(merges):
            right = self.hashes.pop()
            left = self.hashes.pop()
            self.hashes.append(node_hash(left, right))

    def extend(self, leaves: Iterable[bytes]) -> None:
        for leaf in leaves:
            self.append(leaf)

    def root(self) -> bytes:
        if not self.hashes:
            return EMPTY_ROOT
        result = self.hashes[-1]
        for h in reversed(self.hashes[:-1]):
            result = node_hash(h, result)
        return result

    def copy(self) -> Frontier:
        return Frontier(self.size, list(self.hashes))
