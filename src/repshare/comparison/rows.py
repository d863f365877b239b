"""One row per (method, setting): what a memory-saving method costs and saves on the workload.

Every method's stage writes ``results/<method>/comparison_rows.json`` with :func:`write_rows`; the
comparison stage reads them all with :func:`read_rows`, which names the file and the field of a
malformed row. Accuracy is each model's own task metric (top-1 for classifiers, COCO
mAP@[.5:.95] for detectors, mAE for a multi-exit model), keyed by the workload's model name.

The reader rejects what would put a wrong point on the Pareto front: a non-finite number anywhere,
an accuracy outside [0, 1] (every metric above is a fraction), a relative accuracy below 0, and a
``bytes_saved_pct`` outside [-100, 100] (negative = the setting costs memory, e.g. an adapter larger
than the layers it removes; more than 100 % of the workload cannot be saved) or of the other sign
than ``bytes_saved``. Method keys and model names are identifiers: they name pages, never paths.

``retrain_seconds`` is *modelled* compute (a cost model: FLOPs / a configured rate), never a measured
wall time, so the file is the same on every machine; 0 where a method models none. Measured
durations live in the stages' ``*_run.json`` records.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from repshare.comparison.jsonfile import read_strict_json
from repshare.utils.io import write_json

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
    retrain_seconds: float  # modelled retraining/fitting compute (cost model), never a measured duration
    retrain_images: int  # images seen by retraining/fitting (0 if none)
    extra_flops_per_image: float  # inference FLOPs added per image (negative = saved)
    metric: dict[str, str] = field(default_factory=dict)  # model name -> "top1" | "mAP" | "mAE"
    extra: dict[str, Any] = field(default_factory=dict)  # method-specific fields (plain JSON)


_NUMERIC = ("bytes_saved", "bytes_saved_pct", "retrain_seconds", "retrain_images", "extra_flops_per_image")
METRICS = ("top1", "top5", "mAP", "mAP50", "mAE")  # every one a fraction in [0, 1]
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


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
    pct = row["bytes_saved_pct"]
    if not -100.0 <= pct <= 100.0:
        raise RowsError(f"{where}: field 'bytes_saved_pct' must be in [-100, 100] (% of the workload's weight bytes), "
                        f"got {pct!r}")
    if (row["bytes_saved"] > 0 > pct) or (row["bytes_saved"] < 0 < pct):
        raise RowsError(f"{where}: field 'bytes_saved_pct' {pct!r} has the other sign than bytes_saved "
                        f"{row['bytes_saved']!r}")
    for key in ("retrain_seconds", "retrain_images"):
        if row[key] < 0:
            raise RowsError(f"{where}: field {key!r} must be >= 0, got {row[key]!r}")
    if not isinstance(row["method"], str) or not IDENTIFIER.match(row["method"]):
        raise RowsError(f"{where}: field 'method' must be an identifier, got {row['method']!r}")
    if not isinstance(row["setting"], str):
        raise RowsError(f"{where}: field 'setting' must be text, got {row['setting']!r}")
    if not isinstance(row["labels_used"], bool):
        raise RowsError(f"{where}: field 'labels_used' must be true or false, got {row['labels_used']!r}")
    for key, lo, hi in (("accuracy", 0.0, 1.0), ("accuracy_rel", 0.0, math.inf)):
        acc = row[key]
        if not isinstance(acc, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                 for v in acc.values()):
            raise RowsError(f"{where}: field {key!r} must map model names to numbers, got {acc!r}"[:300])
        for model, v in acc.items():
            if not math.isfinite(v) or not lo <= v <= hi:
                raise RowsError(f"{where}: field '{key}.{model}' must be a finite number in [{lo:g}, {hi:g}], got {v!r}")
    models = row["models"]
    if not isinstance(models, list) or not models:
        raise RowsError(f"{where}: field 'models' must be a non-empty list, got {models!r}")
    names = set(models) | set(row["accuracy"]) | set(row["accuracy_rel"]) | set(row.get("metric", {}))
    bad = sorted((n for n in names if not isinstance(n, str) or not IDENTIFIER.match(n)), key=str)
    if bad:
        raise RowsError(f"{where}: model name {bad[0]!r} is not an identifier (letters, digits, _ and -)")
    metric = row.get("metric", {})
    if not isinstance(metric, dict) or any(m not in METRICS for m in metric.values()):
        raise RowsError(f"{where}: field 'metric' must map model names to one of {', '.join(METRICS)}, got {metric!r}"[:300])
    if not isinstance(row.get("extra", {}), dict):
        raise RowsError(f"{where}: field 'extra' must be an object")
    return ComparisonRow(**row)


def write_rows(path: str | Path, method: str, rows: list[ComparisonRow]) -> Path:
    """Validate and write ``rows`` atomically (an empty list is a valid result: nothing to share)."""
    plain = [asdict(r) for r in rows]
    for k, r in enumerate(plain):
        _check_row(r, f"{path} row {k}")
        if r["method"] != method:
            raise RowsError(f"{path} row {k}: field 'method' is {r['method']!r}, expected {method!r}")
    return write_json(path, {"schema_version": SCHEMA_VERSION, "method": method, "rows": plain})


def read_rows(path: str | Path, stage_hint: str = "") -> list[ComparisonRow]:
    """Read and validate one method's rows (verified against the folder's checksums.json when
    ``stage_hint`` names the stage to rerun); RowsError names the file and the bad field."""
    path = Path(path)
    if stage_hint:
        from repshare.utils.artifacts import verify_file

        verify_file(path, stage_hint)
    doc = read_strict_json(path, RowsError)
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
