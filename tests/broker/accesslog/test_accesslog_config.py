"""The ``[access_log]`` table: defaults, both kinds, and errors naming the key."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from broker.accesslog import AccessLogConfig, access_log_config_from_table, open_access_log
from broker.errors import ConfigError
from schemas.jose import generate_key


def table(text: str) -> dict[str, Any]:
    found: dict[str, Any] = tomllib.loads(text).get("access_log", {})
    return found


def test_an_empty_table_is_a_sqlite_file_beside_the_config(tmp_path: Path) -> None:
    config = access_log_config_from_table({}, base=tmp_path)
    assert config == AccessLogConfig(kind="sqlite", path=tmp_path / "access-log.db")
    assert (config.checkpoint_interval_s, config.max_batch, config.schema) == (1, 512, "public")


def test_sqlite_path_is_relative_to_the_config(tmp_path: Path) -> None:
    config = access_log_config_from_table(table("""
        [access_log]
        path = "logs/access.db"
        checkpoint_interval_s = 5
        max_batch = 64
    """), base=tmp_path)
    assert (config.path, config.checkpoint_interval_s, config.max_batch) == (
        tmp_path / "logs/access.db", 5.0, 64)


def test_postgresql_table(tmp_path: Path) -> None:
    config = access_log_config_from_table(table("""
        [access_log]
        kind = "postgresql"
        dsn = "postgresql://samsvar:secret@db.example/samsvar"
        schema = "accesslog"
        checkpoint_interval_s = 30.5
    """), base=tmp_path)
    assert (config.kind, config.schema, config.checkpoint_interval_s) == (
        "postgresql", "accesslog", 30.5)
    assert config.dsn == "postgresql://samsvar:secret@db.example/samsvar"
    assert "secret" not in repr(config)
    assert "secret" not in config.where


@pytest.mark.parametrize(("text", "names"), [
    ('colour = "blue"', "unknown keys: colour"),
    ('kind = "mysql"', "kind"),
    ('kind = "postgresql"', "dsn"),
    ('kind = "postgresql"\ndsn = "mysql://x"', "dsn"),
    ('kind = "postgresql"\ndsn = "postgresql://x"\npath = "a.db"', "path"),
    ('dsn = "postgresql://x"', "dsn"),
    ("path = 3", "path"),
    ('path = ""', "path"),
    ('schema = "public; drop table x"', "schema"),
    ('checkpoint_interval_s = "often"', "checkpoint_interval_s"),
    ("checkpoint_interval_s = 0", "checkpoint_interval_s"),
    ("max_batch = 0", "max_batch"),
    ("max_batch = 1.5", "max_batch"),
    ("max_batch = true", "max_batch"),
])
def test_errors_name_the_key(tmp_path: Path, text: str, names: str) -> None:
    with pytest.raises(ConfigError, match=r"\[access_log\]") as info:
        access_log_config_from_table(table(f"[access_log]\n{text}\n"), base=tmp_path)
    assert names in str(info.value)


def test_a_store_needs_its_location() -> None:
    with pytest.raises(ConfigError, match="path"):
        open_access_log(AccessLogConfig(), key=generate_key(), instance="x")
    with pytest.raises(ConfigError, match="dsn"):
        open_access_log(AccessLogConfig(kind="postgresql"), key=generate_key(), instance="x")
