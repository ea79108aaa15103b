"""Hypothesis strategies and helpers for the hostile-input tests of the broker and adapter."""

from __future__ import annotations

import json
from typing import Any, Final

from hypothesis import strategies as st

from schemas.jose import b64url_encode

__all__ = ["DELETE", "apply", "byte_edits", "json_values", "jws", "mutate_bytes", "nested"]

DELETE: Final = object()
"""Put in place of a value: remove the member instead."""

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(min_value=2**63 - 2)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
"""Any JSON value, integers beyond 64 bits included."""

byte_edits = st.lists(
    st.tuples(st.integers(min_value=0, max_value=4096), st.integers(min_value=0, max_value=3),
              st.binary(max_size=3) | st.sampled_from([b".", b"=", b" ", b"A", b"_", b"-"])),
    min_size=1, max_size=4)
"""Edits for :func:`mutate_bytes`: insertions, deletions and replacements."""


def mutate_bytes(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    """Each edit ``(i, n, new)`` replaces ``data[i:i+n]`` with ``new``."""
    for i, n, new in edits:
        i %= len(data) + 1
        data = data[:i] + new + data[i + n:]
    return data


def apply(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``doc`` with the dotted ``path`` set to ``value`` (or removed: ``DELETE``).

    A number in the path indexes a list (``records.0.scope``); a missing step is created.
    """
    out: Any = json.loads(json.dumps(doc))
    *parents, last = path.split(".")
    node = out
    for name in parents:
        if isinstance(node, list) and name.isdigit() and int(name) < len(node):
            node = node[int(name)]
            continue
        if not isinstance(node, dict):
            return out  # type: ignore[no-any-return]
        child = node.get(name)
        if not isinstance(child, dict | list):
            child = node[name] = {}
        node = child
    if isinstance(node, list):
        if last.isdigit() and int(last) < len(node):
            if value is DELETE:
                del node[int(last)]
            else:
                node[int(last)] = value
    elif value is DELETE:
        node.pop(last, None)
    else:
        node[last] = value
    return out  # type: ignore[no-any-return]


def jws(header: Any, payload: bytes, signature: bytes = b"") -> bytes:
    """A JWS-shaped token with any header (JSON-encoded) and signature: a forgery."""
    head = b64url_encode(json.dumps(header).encode())
    return f"{head}.{b64url_encode(payload)}.{b64url_encode(signature)}".encode()


def nested(depth: int) -> bytes:
    """A JSON object holding arrays nested ``depth`` deep: deeper than a decoder follows."""
    return b'{"iss":"x","n":' + b"[" * depth + b"]" * depth + b"}"
