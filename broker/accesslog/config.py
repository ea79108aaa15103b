"""Where the access log lives: the broker config's ``[access_log]`` table.

::

    [access_log]
    kind = "sqlite"                  # or "postgresql"
    path = "access-log.db"           # sqlite: the file, relative to the config file
    dsn = "postgresql://samsvar@db.example/samsvar"   # postgresql
    schema = "public"                # postgresql: the schema holding the log's tables
    checkpoint_interval_s = 1        # sign a checkpoint this often (seconds) when the log grew
    max_batch = 512                  # at most this many entries in one commit

One SQLite file serves one broker instance; several instances share a PostgreSQL log.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from ..errors import ConfigError

__all__ = ["DEFAULT_SQLITE_FILE", "AccessLogConfig", "access_log_config_from_table"]

DEFAULT_SQLITE_FILE: Final = "access-log.db"
"""The SQLite file's name beside the broker's config when ``[access_log]`` names none."""

_IDENTIFIER: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_KNOWN: Final = frozenset({"kind", "path", "dsn", "schema", "checkpoint_interval_s", "max_batch"})


@dataclass(frozen=True, kw_only=True)
class AccessLogConfig:
    """The access log's store. ``path`` is needed for sqlite, ``dsn`` for postgresql."""

    kind: Literal["sqlite", "postgresql"] = "sqlite"
    path: Path | None = None
    dsn: str | None = field(default=None, repr=False)  # may hold a password
    schema: str = "public"
    checkpoint_interval_s: float = 1
    max_batch: int = 512

    def __post_init__(self) -> None:
        if self.kind not in ("sqlite", "postgresql"):
            raise ConfigError(f"[access_log] kind must be \"sqlite\" or \"postgresql\", "
                              f"not {self.kind!r}")
        if not _IDENTIFIER.match(self.schema):
            raise ConfigError(f"[access_log] schema {self.schema!r} must be a plain identifier "
                              "(letters, digits, '_')")
        if not self.checkpoint_interval_s > 0:
            raise ConfigError("[access_log] checkpoint_interval_s must be above 0")
        if self.max_batch < 1:
            raise ConfigError("[access_log] max_batch must be at least 1")

    def check(self) -> None:
        """Raise :class:`ConfigError` unless the store can be located."""
        if self.kind == "sqlite" and self.path is None:
            raise ConfigError("[access_log] path is needed when kind is \"sqlite\"")
        if self.kind == "postgresql" and not self.dsn:
            raise ConfigError("[access_log] dsn is needed when kind is \"postgresql\"")

    @property
    def where(self) -> str:
        """The store, for messages: the SQLite file, or the PostgreSQL schema (never the DSN)."""
        if self.kind == "sqlite":
            return str(self.path)
        return f"postgresql schema {self.schema!r}"


def _typed(table: Mapping[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = table[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ConfigError(f"[access_log] {key} must be {what}, not {value!r}")
    return value


def access_log_config_from_table(table: Mapping[str, Any], *, base: Path) -> AccessLogConfig:
    """Read ``[access_log]``; paths are relative to ``base`` (the config file's folder).

    An empty table means a SQLite file ``access-log.db`` in ``base``. Errors are
    :class:`ConfigError` naming the key.
    """
    unknown = set(table) - _KNOWN
    if unknown:
        raise ConfigError(f"[access_log] has unknown keys: {', '.join(sorted(unknown))}")
    kind = table.get("kind", "sqlite")
    if kind not in ("sqlite", "postgresql"):
        raise ConfigError(f"[access_log] kind must be \"sqlite\" or \"postgresql\", not {kind!r}")
    values: dict[str, Any] = {"kind": kind}
    if kind == "sqlite":
        if "dsn" in table:
            raise ConfigError("[access_log] dsn is for kind \"postgresql\"; sqlite takes path")
        path = _typed(table, "path", str, "a file path") if "path" in table else DEFAULT_SQLITE_FILE
        if not path:
            raise ConfigError("[access_log] path must not be empty")
        values["path"] = base / path
    else:
        if "path" in table:
            raise ConfigError("[access_log] path is for kind \"sqlite\"; postgresql takes dsn")
        if "dsn" not in table:
            raise ConfigError("[access_log] dsn is needed when kind is \"postgresql\"")
        dsn = _typed(table, "dsn", str, "a postgresql:// URL")
        if not dsn.startswith(("postgresql://", "postgres://")):
            raise ConfigError("[access_log] dsn must be a postgresql:// URL")
        values["dsn"] = dsn
    if "schema" in table:
        values["schema"] = _typed(table, "schema", str, "a schema name")
    if "checkpoint_interval_s" in table:
        values["checkpoint_interval_s"] = float(
            _typed(table, "checkpoint_interval_s", (int, float), "a number of seconds"))
    if "max_batch" in table:
        values["max_batch"] = _typed(table, "max_batch", int, "an integer")
    return AccessLogConfig(**values)
