"""Gemel figures (PNG + PDF, the style of ``repshare.analysis.figures``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from repshare.utils.figures import save_figure  # noqa: E402


def fig_iterations(rows: Sequence[dict], models: Sequence[str], out_stem: str | Path) -> list[Path]:
    """Left: cumulative % of workload bytes saved per iteration (accepted filled, rejected hollow).
    Right: each model's accuracy relative to unmerged, after retraining, on its select-split decision images."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
    it = [r["iteration"] for r in rows]
    a1.plot(it, [r["saved_pct"] for r in rows], color="#1f77b4", linewidth=1)
    for r in rows:
        a1.scatter(r["iteration"], r["trial_pct"] + r["saved_before_pct"], s=30, color="#1f77b4",
                   facecolors="#1f77b4" if r["accepted"] else "none")
    a1.set_xlabel("iteration")
    a1.set_ylabel("workload bytes saved (%)")
    a1.set_title("memory saved (hollow: trial rejected)", fontsize=9)
    for m in models:
        xs = [r["iteration"] for r in rows if r.get(f"rel_after/{m}") is not None]
        ys = [r[f"rel_after/{m}"] for r in rows if r.get(f"rel_after/{m}") is not None]
        if xs:
            a2.plot(xs, ys, marker="o", label=m)
    if rows:
        a2.axhline(rows[0]["target"], color="red", linestyle=":", linewidth=1, label="target")
    a2.set_xlabel("iteration")
    a2.set_ylabel("accuracy / unmerged (select split)")
    a2.set_title("per-model accuracy after retraining", fontsize=9)
    a2.legend(fontsize=7)
    for ax in (a1, a2):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, out_stem)


def fig_frames(sweep: Sequence[dict], out_stem: str | Path) -> list[Path]:
    """Frames processed (%) vs memory budget: unmerged vs every accepted merged workload."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for setting in dict.fromkeys(r["setting"] for r in sweep):
        pts = sorted((r["budget_mb"], r["processed_pct"]) for r in sweep if r["setting"] == setting)
        style = dict(color="black", linestyle="--") if setting == "unmerged" else {}
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=setting, **style)
    ax.set_xlabel("memory budget (MB of weights)")
    ax.set_ylabel("frames processed (%)")
    ax.set_title("GPU time-sharing simulation", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out_stem)
