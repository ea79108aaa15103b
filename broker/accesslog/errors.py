"""The access log's errors, part of the broker's tree.

    BrokerError                                   (broker.errors)
    └── AccessLogError(BrokerError)               the log cannot be written or read: answer 503
        └── AccessLogClosed(AccessLogError)       append after close, or the writer has stopped

Database errors (``sqlite3.Error``, asyncpg's) are translated at the adapter edge with
``raise AccessLogError(...) from exc``; messages never hold an entry's content.
"""

from __future__ import annotations

from ..errors import BrokerError

__all__ = ["AccessLogClosed", "AccessLogError"]


class AccessLogError(BrokerError):
    """An entry could not be made durable, or the log could not be read."""


class AccessLogClosed(AccessLogError):
    """The log is closed (or its writer stopped): nothing more can be appended."""
