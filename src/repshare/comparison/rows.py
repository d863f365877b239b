"""One row per (method, setting): what a memory-saving method costs and saves on the workload.

Every method's stage writes ``results/<method>/comparison_rows.json`` with :func:`write_rows`; the
comparison stage reads them all with :func:`read_rows`, which names the file and the field of a
malformed row. Accuracy is each model's own task metric (top-1 for classifiers, COCO
mAP@[.5:.95] for detectors, mAE for a multi-exit model), keyed by the workload's model name.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from repshare.utils.io import read_json, write_json

SCHEMA_VERSION = 1


@dataclass
class ComparisonRow:
    method: str  # e.g. "cka_sharing", "gemel", "meedge"
    setting: str  # human-readable, e.g. "pair (2, 3), adapter lstsq, shared input"
    models: list[str]  # workload model names this setting touches
    bytes_saved: int  # weight bytes no longer stored (adapter/branch bytes already subtracted)
    bytes_saved_pct: float  # 100 * bytes_saved / bytes of the whole workload's weights
    accuracy: dict[str, float]  # model name -> task metric after the method
    accuracy_rel: dict[str, float]  # model name -> accuracy / the model's unmerged accuracy
    labels_used: bool  # did any fitting or selection step read labels of the task?
    retrain_seconds: float  # wall-clock retraining/fitting compute on the machine that ran it
    retrain_images: int  # images seen by retraining/fitting (0 if none)
    extra_flops_per_image: float  # inference FLOPs added per image (negative = saved)
    metric: dict[str, str] = field(default_factory=dict)  # model name -> "top1" | "mAP" | "mAE"
    extra: dict[str, Any] = field(default_factory=dict)  # method-specific fields (plain JSON)


_NUMERIC = ("bytes_saved", "bytes_saved_pct", "retrain_seconds", "retrain_images", "extra_flops_per_image")


class RowsError(ValueError):
    """A comparison-rows file is missing, malformed, or a row lacks a field."""


def _check_row(row: dict, where: str) -> ComparisonRow:
    names = [f.name for f in fields(ComparisonRow)]
    missing = [n for n in names if n not in row and n not in ("metric", "extra")]
    if missing:
        raise RowsError(f"{where}: missing field {missing[0]!r}")
    unknown = [k for k in row if k not in names]
    if unknown:
        raise RowsError(f"{where}: unknown field {unknown[0]!r}")
    for key in _NUMERIC:
        v = row[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise RowsError(f"{where}: field {key!r} must be a finite number, got {v!r}")
    if not isinstance(row["labels_used"], bool):
        raise RowsError(f"{where}: field 'labels_used' must be true or false, got {row['labels_used']!r}")
    for key in ("accuracy", "accuracy_rel"):
        acc = row[key]
        if not isinstance(acc, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                 for v in acc.values()):
            raise RowsError(f"{where}: field {key!r} must map model names to numbers, got {acc!r}")
    if not isinstance(row["models"], list) or not row["models"]:
        raise RowsError(f"{where}: field 'models' must be a non-empty list, got {row['models']!r}")
    return ComparisonRow(**row)


def write_rows(path: str | Path, method: str, rows: list[ComparisonRow]) -> Path:
    """Validate and write ``rows`` atomically (an empty list is a valid result: nothing to share)."""
    plain = [asdict(r) for r in rows]
    for k, r in enumerate(plain):
        _check_row(r, f"{path} row {k}")
        if r["method"] != method:
            raise RowsError(f"{path} row {k}: field 'method' is {r['method']!r}, expected {method!r}")
    return write_json(path, {"schema_version": SCHEMA_VERSION, "method": method, "rows": plain})


def read_rows(path: str | Path) -> list[ComparisonRow]:
    """Read and validate one method's rows; RowsError names the file and the bad field."""
    path = Path(path)
    try:
        doc = read_json(path)
    except (FileNotFoundError, ValueError) as err:
        raise RowsError(str(err)) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list):
        raise RowsError(f"{path}: expected an object with a 'rows' list")
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise RowsError(f"{path}: field 'schema_version' is {doc.get('schema_version')!r}, expected {SCHEMA_VERSION}")
    out = []
    for k, row in enumerate(doc["rows"]):
        if not isinstance(row, dict):
            raise RowsError(f"{path} row {k}: not an object")
        out.append(_check_row(row, f"{path} row {k}"))
    return out
