"""Refuses a JWT whose ``jti`` was seen before within its lifetime.

:class:`ReplayStore` (:mod:`.port`) is the port :class:`~broker.service.QueryService`
asks. Three stores:

* :class:`SqliteReplayStore` (:mod:`.sqlite`): table ``used_jti`` in the SQLite access
  log's file, so a token stays used across a restart of the (one) broker instance writing
  that log.
* :class:`PostgresReplayStore` (:mod:`.postgres`): table ``used_jti`` in the PostgreSQL
  access log's schema, shared by every instance writing that log, so a token is accepted
  once by all of them.
* :class:`ReplayGuard` (:mod:`.memory`): in memory, for tests and tools that run no
  access log.

:func:`replay_store_for` picks the store beside an access log's config. A store that
cannot answer raises :class:`ReplayStoreError` (a :class:`~broker.errors.BrokerError`);
the broker then fails closed (503 ``replay-store-unavailable``).
"""

from __future__ import annotations

from ..accesslog import AccessLogConfig
from .memory import ReplayGuard
from .port import ReplayStore, ReplayStoreError
from .postgres import PostgresReplayStore
from .sqlite import SqliteReplayStore

__all__ = [
    "PostgresReplayStore",
    "ReplayGuard",
    "ReplayStore",
    "ReplayStoreError",
    "SqliteReplayStore",
    "replay_store_for",
]


def replay_store_for(config: AccessLogConfig) -> ReplayStore:
    """The store beside the access log ``config`` names, not yet opened: the seen ``jti``s
    outlive a restart, and with PostgreSQL the instances sharing the log share them too."""
    if config.kind == "postgresql":
        assert config.dsn is not None
        return PostgresReplayStore(dsn=config.dsn, schema=config.schema)
    assert config.path is not None
    return SqliteReplayStore(config.path)
