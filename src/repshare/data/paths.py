"""Paths read from data files (label lists, annotation jsons) stay under the folder they are relative to.

A line such as ``../outside/a.JPEG 1`` or ``/etc/passwd 0`` in a downloaded label list would otherwise make
the prepare stage read (and copy into the prepared shards) a file anywhere on the machine. The check is on
the normalised path (``..`` and absolute paths), not on symlinks: links the user placed inside the root
are the user's own layout and are followed.
"""

from __future__ import annotations

import os
from pathlib import Path


def escapes_root(root: str | Path, name: str) -> bool:
    """Whether ``root / name`` leaves ``root`` once ``..`` and absolute parts are applied."""
    base = Path(os.path.abspath(root))
    target = Path(os.path.normpath(base / name))
    return not (target == base or target.is_relative_to(base))
