"""The package rules of the wire contract and the transport (README "Layout"): schemas is the
contract only and never imports transport; transport is shared infrastructure that may
import schemas but never a role; the consumer client speaks HTTP and imports neither."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROLES = ("broker", "producer_adapter", "consumer_client", "samsvar")


def _imported(package: str) -> set[str]:
    """The top-level package of every absolute import in ``package``'s modules."""
    found: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found


def test_the_wire_contract_holds_no_transport() -> None:
    imported = _imported("schemas")
    assert "transport" not in imported
    assert not {"gmqtt", "aiomqtt", "paho", "socket", "ssl"} & imported
    assert not list((ROOT / "schemas").glob("*link*.py"))


@pytest.mark.parametrize("role", ROLES)
def test_transport_never_imports_a_role(role: str) -> None:
    assert role not in _imported("transport")


def test_the_consumer_client_imports_no_transport() -> None:
    assert not {"transport", "gmqtt", "aiomqtt"} & _imported("consumer_client")
