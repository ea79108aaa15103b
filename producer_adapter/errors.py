"""Errors of the producer adapter.

    AdapterError(Exception)
    ├── AdapterConfigError(AdapterError, ValueError)  bad config, key, data dir or block file;
    │                                                 the message names the file and key
    ├── BackendError(AdapterError)                    the record system failed to answer
    ├── BlockSourceError(AdapterError)                the block register could not be read
    │                                                 (or written): the adapter fails closed
    ├── BlockRefused(AdapterError, ValueError)        the register refuses a registration
    │   │                                             (guardian, foreign target, duplicate)
    │   └── BlockNotFound(BlockRefused, LookupError)  no such block to remove
    ├── DisclosureLogError(AdapterError)              the disclosure log cannot be written
    │                                                 or read: the reply says ``error``
    ├── QuestionRefused(AdapterError)                 a question is dropped unanswered;
    │                                                 ``reason`` is a stable short word
    └── TransportError(AdapterError, ConnectionError) the MQTT link cannot publish now

Third-party errors (msgspec, gmqtt, sqlite3, OSError) are translated at the edge with
``raise ... from exc``.
"""

from __future__ import annotations

__all__ = [
    "AdapterConfigError",
    "AdapterError",
    "BackendError",
    "BlockNotFound",
    "BlockRefused",
    "BlockSourceError",
    "DisclosureLogError",
    "QuestionRefused",
    "TransportError",
]


class AdapterError(Exception):
    """Root of every error the producer adapter raises."""


class AdapterConfigError(AdapterError, ValueError):
    """The adapter cannot start: its message names the file (and key) at fault."""


class BackendError(AdapterError):
    """The local record system failed; the reply says ``error``, never a crash."""


class BlockSourceError(AdapterError):
    """The block register is unreadable; the reply says ``error`` and discloses nothing."""


class BlockRefused(AdapterError, ValueError):
    """A block the register will not take (or remove); the message says which rule."""


class BlockNotFound(BlockRefused, LookupError):
    """The block to remove is not in the register."""


class DisclosureLogError(AdapterError):
    """The disclosure log cannot be written or read; nothing is disclosed without it."""


class QuestionRefused(AdapterError):
    """A question that is not answered at all (unsigned, foreign, expired, malformed)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class TransportError(AdapterError, ConnectionError):
    """The MQTT link is down or the publish failed."""
