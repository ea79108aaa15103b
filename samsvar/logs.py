"""Logging set-up for the ``samsvar`` command: JSON lines in production, console in the demo."""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

__all__ = ["configure_logging"]


def configure_logging(fmt: Literal["json", "console"] = "json", *, level: str = "info",
                      final: bool = False) -> None:
    """Send structlog's and the standard library's log lines to stderr.

    ``final``: this process never configures logging again (``samsvar broker`` and
    ``samsvar adapter``), so each module's logger binds once, on first use, and keeps it:
    a call below the level then costs ~1 µs instead of ~3.5. The demo and the tests
    configure logging again and again (each for its own stderr), so they leave it off."""
    numeric = logging.getLevelName(level.upper())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=final,
    )
    logging.basicConfig(stream=sys.stderr, level=max(numeric, logging.WARNING), force=True,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
