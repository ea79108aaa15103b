"""The one error of the Mosquitto setup."""

from __future__ import annotations

__all__ = ["MosquittoSetupError"]


class MosquittoSetupError(ValueError):
    """The inputs cannot make a working setup; the message says which and why."""
