"""What the ``samsvar`` commands share, so none of them imports :mod:`samsvar.cli`.

:mod:`samsvar.cli` builds the parser from the other command modules (``adapter_cli``,
``log_cli``, ``mosquitto``, ``demo``); they import only this module, never ``cli`` back.
"""

from __future__ import annotations

import json
from pathlib import Path

from .secret_files import write_secret

__all__ = ["CliError", "write_private_jwk"]


class CliError(Exception):
    """A failure to report as one line and exit 1."""


def write_private_jwk(path: Path, jwk: dict[str, str]) -> None:
    """Write a private JWK readable by its owner only."""
    write_secret(path, (json.dumps(jwk, indent=2) + "\n").encode("utf-8"))
