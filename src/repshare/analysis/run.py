"""Helpers of the ``analyze`` stage (wiring: ``repshare.stages.analyze``): inputs and headline metrics.

Pooled metrics: ``r_params``, ``r_size`` and ``r_flops`` in ``metrics.json`` are computed over all
pairs (kind ``all``: same- and cross-stage pooled), ``r_same_S`` / ``r_cross_S`` over i == j and
i != j pairs; every kind is in ``figures/correlations.csv``. Signed r is stored; the paper reports |r|.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig

from repshare.analysis.correlation import find_row
from repshare.utils.io import read_json

log = logging.getLogger("repshare.analysis")

# (metrics.json key suffix, metric, kind)
HEADLINE: tuple[tuple[str, str, str], ...] = (
    ("same_S", "S", "same"),
    ("cross_S", "S", "cross"),
    ("all_S", "S", "all"),
    ("params", "params", "all"),
    ("size", "size", "all"),
    ("flops", "flops", "all"),
)


def input_paths(results_dir: str | Path) -> dict[str, Path]:
    r = Path(results_dir)
    return {
        "cka": r / "cka" / "cka.json",
        "pairs": r / "sharing" / "pairs.json",
        "classifier": r / "metrics" / "classifier.json",
        "detector": r / "metrics" / "detector.json",
    }


def read_inputs(results_dir: str | Path) -> dict[str, Any]:
    """Read the four input files; FileNotFoundError names the missing one and the stage making it."""
    makers = {"cka": "cka", "pairs": "evaluate_merged", "classifier": "train_classifier", "detector": "train_detector"}
    out = {}
    for key, path in input_paths(results_dir).items():
        if not path.is_file():
            raise FileNotFoundError(f"analyze needs {path} (written by the {makers[key]} stage); run it first")
        out[key] = read_json(path)
    return out


def _clean(v: Any) -> Any:
    """nan/inf -> None so metrics.json is strict JSON."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def headline_metrics(rows: list[dict], thr: dict, df: pd.DataFrame, inputs: dict) -> dict[str, Any]:
    m: dict[str, Any] = {}
    for suffix, metric, kind in HEADLINE:
        row = find_row(rows, metric, kind) or {}
        m[f"r_{suffix}"] = row.get("r")
        m[f"abs_r_{suffix}"] = row.get("abs_r")
        m[f"r_{suffix}_ci_low"] = row.get("ci_low")
        m[f"r_{suffix}_ci_high"] = row.get("ci_high")
        m[f"rho_{suffix}"] = row.get("rho")
        m[f"p_{suffix}"] = row.get("p")
    m["collapse_threshold"] = thr["s_prime"]
    m["collapse_acc_threshold"] = thr["acc_threshold"]
    m["collapse_frac_collapsed"] = thr["frac_collapsed"]
    m["collapse_frac_collapsed_below"] = thr["frac_collapsed_below"]
    cls, det, base = inputs["classifier"], inputs["detector"], inputs["pairs"].get("baseline") or {}
    m["classifier_top1"] = cls.get("top1")
    m["classifier_top5"] = cls.get("top5")
    m["detector_map"] = det.get("map")
    m["detector_map_50"] = det.get("map_50")
    m["baseline_acc"] = base.get("acc")
    best = df.loc[df["acc"].idxmax()]
    m["best_merged_acc"] = float(best["acc"])
    m["best_merged_i"] = int(best["i"])
    m["best_merged_j"] = int(best["j"])
    m["best_merged_memory_saved_frac"] = float(best["memory_saved_frac"])
    m["n_pairs"] = int(len(df))
    return {k: _clean(float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in
                      ("best_merged_i", "best_merged_j", "n_pairs") else v) for k, v in m.items()}


def run_analyze(cfg: DictConfig) -> dict[str, Any]:
    """The ``analyze`` stage (wiring in ``repshare.stages.analyze``)."""
    from repshare.stages.analyze import run

    return run(cfg)
