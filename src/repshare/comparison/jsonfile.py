"""Strict JSON reading for the comparison's inputs: NaN / Infinity tokens are refused, not parsed."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def _refuse(name: str) -> float:
    raise ValueError(f"{name} is not a number in strict JSON")


def read_strict_json(path: str | Path, error: type[ValueError] = ValueError) -> Any:
    """The parsed file; ``error`` (a ValueError subclass) names the file when it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise error(f"missing file: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"), parse_constant=_refuse)
    except (ValueError, UnicodeDecodeError) as err:
        raise error(f"malformed json in {path}: {err}") from None


def strict(obj: Any) -> Any:
    """A copy of ``obj`` with every non-finite float as None, so the written file is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    return obj
