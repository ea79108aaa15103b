"""Picks the :class:`LogStore` adapter a config names."""

from __future__ import annotations

from .config import AccessLogConfig
from .ports import LogStore

__all__ = ["store_for"]


def store_for(config: AccessLogConfig) -> LogStore:
    """The store for ``config``, not yet opened; raises :class:`ConfigError`."""
    config.check()
    if config.kind == "postgresql":
        from .postgres import PostgresStore  # asyncpg is needed only here

        assert config.dsn is not None
        return PostgresStore(dsn=config.dsn, schema=config.schema)
    from .sqlite import SqliteStore

    assert config.path is not None
    return SqliteStore(config.path)
