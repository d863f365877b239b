"""The ``analyze`` stage: correlations, figures, the HTML report and the DVC metrics/plots.

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
from omegaconf import DictConfig, OmegaConf

from repshare.analysis.correlation import (
    collapse_threshold,
    correlation_table,
    find_row,
    pair_table,
)
from repshare.analysis.figures import abs_r_rows, fig3_abs_r, fig4_acc_vs_s
from repshare.analysis.report import build_report
from repshare.utils.io import atomic_dir, atomic_path, read_json, write_json
from repshare.utils.record import package_versions, provenance
from repshare.utils.runlog import RunLog

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


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def run_analyze(cfg: DictConfig) -> dict[str, Any]:
    """Read cka.json, pairs.json and the model metrics; write figures/, report/, metrics.json, plots/."""
    a = cfg.analysis
    results = Path(cfg.paths.results_dir)
    inputs = read_inputs(results)
    df = pair_table(inputs["cka"], inputs["pairs"])
    rows = correlation_table(df, n_bootstrap=int(a.n_bootstrap), ci=float(a.ci), seed=int(cfg.seed))
    thr = collapse_threshold(df["S"], df["acc"], float(a.collapse_drop))
    paper_r = {k: float(v) for k, v in OmegaConf.to_container(a.paper_r).items()}
    metrics = headline_metrics(rows, thr, df, inputs)
    bars = abs_r_rows(rows, paper_r)

    with atomic_dir(results / "figures") as fig_dir:
        f3 = fig3_abs_r(rows, paper_r, fig_dir / "fig3_abs_r")
        f4 = fig4_acc_vs_s(df, fig_dir / "fig4_acc_vs_s", s_prime=thr["s_prime"], rows=rows)
        pd.DataFrame(rows).to_csv(fig_dir / "correlations.csv", index=False)
        df.to_csv(fig_dir / "pairs.csv", index=False)
        with atomic_dir(results / "report") as rep_dir:
            names = inputs["cka"].get("stage_names") or {}
            notes = [
                "S = linear CKA between detector stage i and classifier stage j; params = classifier "
                "parameters offloaded; size = elements of the shared representation; flops = FLOPs of "
                "the offloaded classifier layers. Kinds: same = i == j, cross = i != j, all = pooled.",
                f"Collapse: a pair is collapsed when acc < {a.collapse_drop} x best acc "
                f"({thr['acc_threshold']:.4g}); S' = smallest S with no collapsed pair at or above it "
                f"= {thr['s_prime']:.4g} ({thr['n_collapsed']} of {thr['n']} pairs collapsed; "
                f"{thr['reason'] or 'ok'}).",
                f"Stage names: {names}",
            ]
            ours_vs_paper = []
            for suffix, metric, kind in HEADLINE:
                row = find_row(rows, metric, kind) or {}
                key = {"same_S": "same_stage_S", "cross_S": "cross_stage_S"}.get(suffix, metric if kind == "all" else None)
                ours_vs_paper.append({"metric": metric, "kind": kind, "ours r": row.get("r"),
                                      "ours |r|": row.get("abs_r"), "CI low": row.get("ci_low"),
                                      "CI high": row.get("ci_high"), "spearman": row.get("rho"),
                                      "n": row.get("n"), "paper |r|": paper_r.get(key) if key else None,
                                      "note": row.get("reason", "")})
            heatmap = results / "cka" / "cka_heatmap.png"  # Fig. 2, from the cka stage
            build_report(
                rep_dir, [heatmap, f3[0], f4[0]] if heatmap.is_file() else [f3[0], f4[0]],
                {"Correlation: ours vs paper": ours_vs_paper,
                 "All correlations": rows,
                 "Collapse threshold": [thr],
                 "Headline metrics (metrics.json)": [{"key": k, "value": v} for k, v in metrics.items()],
                 "Per-pair results": df.to_dict("records")},
                paper_r, cfg, package_versions(),
                {"classifier": inputs["classifier"], "detector": inputs["detector"],
                 "baseline (unmerged classifier)": inputs["pairs"].get("baseline") or {}},
                notes=notes,
            )

    write_json(results / "metrics.json", {**metrics, "provenance": {k: v for k, v in provenance(cfg, "analyze").items() if k != "config"}})
    _write_csv(df[["i", "j", "kind", "S", "acc"]], results / "plots" / "acc_vs_cka.csv")
    _write_csv(pd.DataFrame(bars)[["metric", "abs_r", "kind", "source"]], results / "plots" / "abs_r.csv")

    runlog = RunLog(cfg, "analyze", results / "report")
    try:
        runlog.summary(**{k: v for k, v in metrics.items() if v is not None})
        runlog.log_table("pairs", df.to_dict("records"))
        runlog.log_table("correlations", [{k: v for k, v in r.items()} for r in rows])
        if runlog.wandb is not None:
            import wandb

            table = wandb.Table(dataframe=df[["i", "j", "kind", "S", "acc"]])
            runlog.wandb.log({"acc_vs_S": wandb.plot.scatter(table, "S", "acc", title="Merged accuracy vs CKA S")})
        for p in (results / "figures" / "fig3_abs_r.png", results / "figures" / "fig4_acc_vs_s.png"):
            runlog.log_image(p.stem, p)
    finally:
        runlog.close()
    log.info("analyze: r_same_S=%s r_cross_S=%s S'=%s", metrics["r_same_S"], metrics["r_cross_S"], metrics["collapse_threshold"])
    return metrics
