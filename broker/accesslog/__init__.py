"""The broker's access log (SPEC section 7): durable, hash-chained, signed checkpoints.

Every question is appended before its answer leaves; an entry holds who asked what about
whom and how many records each producer disclosed, never content. :class:`AccessLog` is
the port the broker uses; :func:`open_access_log` builds it over the SQLite (default,
one broker instance per file) or PostgreSQL (shared by instances) store.
:func:`verify_log` proves the log intact or names the first broken entry; :func:`prune`
removes old entries and keeps the proof; :func:`extract_log` reads a person's extract
offline (the running broker uses :meth:`AccessLog.extract`).

Errors (under :class:`broker.errors.BrokerError`)::

    AccessLogError            the log cannot be written or read: the broker answers 503
    └── AccessLogClosed       appended after close, or the writer stopped
    ConfigError               a bad [access_log] table
"""

from __future__ import annotations

from schemas.jose import PrivateKey

from .chain import GENESIS, CheckpointReason
from .config import AccessLogConfig, access_log_config_from_table
from .errors import AccessLogClosed, AccessLogError
from .extract import collapse_streams, extract_log
from .log import ChainedAccessLog
from .ports import AccessLog, LogStore, ProvenExtract
from .prune import prune
from .stores import store_for
from .verify import VerifyReport, Witnessed, verify_log

__all__ = [
    "GENESIS",
    "AccessLog",
    "AccessLogClosed",
    "AccessLogConfig",
    "AccessLogError",
    "ChainedAccessLog",
    "CheckpointReason",
    "LogStore",
    "ProvenExtract",
    "VerifyReport",
    "Witnessed",
    "access_log_config_from_table",
    "collapse_streams",
    "extract_log",
    "open_access_log",
    "prune",
    "store_for",
    "verify_log",
]


def open_access_log(config: AccessLogConfig, *, key: PrivateKey, instance: str) -> AccessLog:
    """The access log ``config`` names, signing checkpoints with ``key``; call ``open()``.

    Raises :class:`ConfigError` when the config names no file or DSN.
    """
    return ChainedAccessLog(store_for(config), key=key, instance=instance,
                            checkpoint_interval_s=config.checkpoint_interval_s,
                            max_batch=config.max_batch)
