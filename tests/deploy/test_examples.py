"""The example configs in deploy/ are configs the broker accepts."""

from __future__ import annotations

from pathlib import Path

from broker.config import load_broker_config
from tests.deploy.conftest import DEPLOY


def test_broker_example_loads_and_its_postgresql_variant_too(tmp_path: Path) -> None:
    example = DEPLOY / "broker.example.toml"
    config = load_broker_config(example)
    assert config.instance == "broker-1" and config.access_log.kind == "sqlite"
    text = example.read_text(encoding="utf-8")
    text = text.replace('kind = "sqlite"', "").replace('path = "access-log.db"', "")
    text = text.replace("# kind =", "kind =").replace("# dsn =", "dsn =")
    text = text.replace("# schema =", "schema =")
    (tmp_path / "broker.toml").write_text(text, encoding="utf-8")
    shared = load_broker_config(tmp_path / "broker.toml")
    assert shared.access_log.kind == "postgresql" and shared.access_log.schema == "samsvar"
