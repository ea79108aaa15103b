"""The one way samsvar writes a secret (a private key, a CA key) to disk."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

__all__ = ["SECRET_MODE", "write_secret"]

SECRET_MODE: Final = 0o600
"""Read and write for the owner only."""


def write_secret(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by its owner only.

    The mode of ``os.open`` applies only when the file is created: an existing file (say
    0644, overwritten with ``--force``) keeps its mode. So the mode is set with ``fchmod``
    on the open descriptor, before a byte is written, whether the file is new or not. A
    symlink at ``path`` is refused (``O_NOFOLLOW``): the secret goes where it was asked to.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, SECRET_MODE)
    try:
        os.fchmod(fd, SECRET_MODE)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
