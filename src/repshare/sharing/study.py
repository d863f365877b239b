"""The CKA-sharing study on the merges the ``evaluate_merged`` stage scored: plain values in, tables out.

- The paper's setting (``resample`` adapter, ``per_model`` input): r of merged accuracy with CKA S
  and with #Params / Size / FLOPs per kind of pair (Figs. 3, 4), the hinge S', and the quantities of
  the paper's claims (:mod:`repshare.sharing.measure`), every interval over pairs and report images.
- Every (protocol, adapter) cell: the same correlations plus the label-free predictors (agreement,
  CKA x agreement), and the sharing-point search under memory budgets with each predictor's regret
  (beyond the paper; adapters compared on the report images every merge was scored on).

No config object and no paths: the stage reads the files and the settings and hands them here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from repshare.sharing.adapter import LABEL_FREE
from repshare.sharing.correlation import (METRICS, cell_resample, correlation_table, find_merge_row, hinge_fit,
                                          hinge_grid, merge_correlations, merge_table)
from repshare.sharing.claims import REFERENCE
from repshare.sharing.measure import Chance, measurements
from repshare.sharing.search import PREDICTORS, budget_sweep, pareto_front, regret_table
from repshare.stats import Estimate


@dataclass(frozen=True)
class Settings:
    """Config ``analysis`` as plain values."""

    n_bootstrap: int
    ci: float
    seed: int
    paper_r: dict[str, float]
    budget_fracs: tuple[float, ...]
    accuracy_floor: float | None

    def __post_init__(self) -> None:
        for f in self.budget_fracs:
            if not 0.0 <= f <= 1.0:
                raise ValueError(f"analysis.budget_fracs: budget {f!r} x classifier bytes is negative or larger "
                                 "than the classifier")


@dataclass
class Study:
    pairs: pd.DataFrame  # the paper's setting, one row per (i, j) (empty when it did not run)
    rows: list[dict[str, Any]]  # its correlations per (metric, kind)
    hinge: dict[str, float]  # S', floor and slope of the hinge fit to its same-stage pairs (point values)
    measured: dict[str, Estimate]  # the claims' quantities
    merges: pd.DataFrame  # every (protocol, adapter, i, j)
    corr: list[dict[str, Any]]  # correlations per cell
    sweeps: dict[str, list[dict]]  # protocol -> budget sweep rows
    regrets: list[dict[str, Any]]
    fronts: dict[str, list[tuple[float, float]]]
    head: dict[str, Any]  # per protocol: resample vs the best label-free adapter
    classifier_bytes: float
    chance_note: str  # '' or why the models' numbers cannot carry a verdict


def candidates(df: pd.DataFrame) -> list[dict]:
    """Label-free merges as search candidates (predictor columns renamed to the search's names); accuracy on
    the report images every merge was scored on, so the choices compare on the same images."""
    sub = df[df["adapter"].isin(LABEL_FREE) & ~df["labels_used"]]
    return [{"adapter": r["adapter"], "i": r["i"], "j": r["j"], "bytes_saved": r["bytes_saved"], "acc": r["acc_common"],
             "cka": r["S"], "agreement": r["agree"], "params": r["params"], "size": r["size"], "flops": r["flops"]}
            for r in sub.to_dict("records")]


def chosen_points(sweeps: dict[str, list[dict]]) -> dict[tuple, list[str]]:
    """(protocol, adapter, i, j) -> ["predictor@budget_frac", ...] for the search's untied choices."""
    out: dict[tuple, list[str]] = {}
    for p, sweep in sweeps.items():
        for r in sweep:
            if r["feasible"] and r["n_tied"] == 1:
                out.setdefault((p, r["adapter"], r["i"], r["j"]), []).append(f"{r['predictor']}@{r['budget_frac']:g}")
    return out


def headline(df: pd.DataFrame, corr: list[dict]) -> dict[str, Any]:
    """r(CKA, acc) for resample vs the best label-free adapter; best label-free recovery vs supervised.

    Adapter means (the best adapter, the recovered fraction) are on the images all merges share."""
    out: dict[str, Any] = {}
    for p in df["protocol"].unique():
        cell = df[df["protocol"] == p]
        counts = cell.groupby("adapter").size()
        full = [a for a in counts.index if a in LABEL_FREE and counts[a] == counts.max()]
        means = cell[cell["adapter"].isin(full)].groupby("adapter")["acc_common"].mean()
        best = str(means.idxmax()) if len(means) else None
        out[p] = {"best_label_free_all_pairs": best, "mean_acc": {a: float(v) for a, v in means.items()}}
        for a in dict.fromkeys(["resample", best]):
            if a is None:
                continue
            for kind in ("same", "cross", "all"):
                out[p][f"{a}/r_S_{kind}"] = find_merge_row(corr, p, a, "S", kind)
                out[p][f"{a}/r_agree_{kind}"] = find_merge_row(corr, p, a, "agree", kind)
        sup = cell[cell["adapter"] == "supervised"]
        if len(sup):
            keys = set(zip(sup["i"], sup["j"]))
            sub = cell[[(i, j) in keys for i, j in zip(cell["i"], cell["j"])]]
            per = sub.groupby("adapter")["acc_common"].mean()
            lf = [a for a in per.index if a in LABEL_FREE]
            best_lf = max(lf, key=lambda a: per[a]) if lf else None
            res = per.get("resample", math.nan)
            gain = per["supervised"] - res
            out[p]["trained_subset"] = {
                "pairs": sorted([list(map(int, k)) for k in keys]),
                "mean_acc": {a: float(v) for a, v in per.items()},
                "best_label_free": best_lf,
                "recovered_frac": float((per[best_lf] - res) / gain) if best_lf and gain and math.isfinite(gain) else None,
            }
    return out


def run_study(merges: dict, hits: np.ndarray, cka_by_protocol: dict[str, dict], chance: Chance,
              s: Settings) -> Study:
    """Correlations, the claims' quantities, the budget search (module docstring).

    ``hits``: per-image top-1 hits of every merge (rows in ``merges['merges']`` order, -1 = not scored).
    Pairs are resampled with ``seed``, images with ``seed + 1``.
    """
    mdf = merge_table(merges, cka_by_protocol)
    ref = mdf[(mdf["protocol"] == REFERENCE[0]) & (mdf["adapter"] == REFERENCE[1])]
    rows, hinge, measured = [], {}, {}
    if len(ref):
        ref, res = cell_resample(ref, hits, s.n_bootstrap, s.seed + 1)
        rows = correlation_table(ref, res, METRICS, level=s.ci, seed=s.seed)
        same = ref[ref["kind"] == "same"]
        if len(same) >= 3:
            tau, floor, slope = hinge_fit(same["acc"].to_numpy(float), same["S"].to_numpy(float),
                                          hinge_grid(same["S"].to_numpy(float)))
            hinge = {"s_prime": float(tau[0]), "floor": float(floor[0]), "slope": float(slope[0])}
        measured = measurements(ref, res, chance, s.ci, s.seed, s.n_bootstrap)
    corr = merge_correlations(mdf, hits, n_boot=s.n_bootstrap, level=s.ci, seed=s.seed)
    cls_bytes = float(merges["classifier_bytes"])
    budgets = [f * cls_bytes for f in s.budget_fracs]
    sweeps, regrets, fronts = {}, [], {}
    for p in merges["protocols"]:
        cands = candidates(mdf[mdf["protocol"] == p])
        if not cands:
            continue
        sweeps[p] = budget_sweep(cands, budgets, cls_bytes, tuple(PREDICTORS), s.accuracy_floor)
        regrets += [{"protocol": p, **r} for r in regret_table(sweeps[p])]
        fronts[p] = pareto_front([(c["bytes_saved"], c["acc"]) for c in cands])
    return Study(ref.drop(columns=["pos"], errors="ignore"), rows, hinge, measured, mdf, corr, sweeps, regrets,
                 fronts, headline(mdf, corr), cls_bytes, chance.models_note())
