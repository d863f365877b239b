"""The paper's figures: Fig. 3 (|r| per metric, ours vs paper) and Fig. 4 (accuracy vs CKA S).

Every figure is saved as ``<out_stem>.png`` and ``<out_stem>.pdf``; the paths are returned.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from repshare.analysis.correlation import find_row  # noqa: E402

METRIC_LABELS = {"S": "CKA S", "params": "#Params", "size": "Size", "flops": "FLOPs"}


def paper_value(paper_r: Mapping[str, float], metric: str, kind: str) -> float | None:
    """The paper's |r| for (metric, kind): S has a same- and a cross-stage value; the other
    metrics have one value, reported for the cross-stage sweep (used for kind cross and all)."""
    if metric == "S":
        key = {"same": "same_stage_S", "cross": "cross_stage_S"}.get(kind)
    else:
        key = metric if kind in ("cross", "all") else None
    v = paper_r.get(key) if key else None
    return None if v is None else abs(float(v))


def abs_r_rows(rows: Sequence[dict], paper_r: Mapping[str, float],
               metrics: Sequence[str] = ("S", "params", "size", "flops"),
               kinds: Sequence[str] = ("same", "cross")) -> list[dict[str, Any]]:
    """Long table of |r| (ours and paper) for the Fig. 3 bars and the DVC bar plot."""
    out = []
    for m in metrics:
        for k in kinds:
            row = find_row(rows, m, k)
            ours = row["abs_r"] if row is not None else math.nan
            label = METRIC_LABELS.get(m, m)
            out.append({"metric": f"{label} ({k}, ours)", "abs_r": ours, "kind": k, "source": "ours", "key": m})
            pv = paper_value(paper_r, m, k)
            if pv is not None:
                out.append({"metric": f"{label} ({k}, paper)", "abs_r": pv, "kind": k, "source": "paper", "key": m})
    return out


def _save(fig: plt.Figure, out_stem: str | Path) -> list[Path]:
    out_stem = Path(out_stem)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        p = out_stem.with_name(out_stem.name + "." + ext)
        fig.savefig(p, dpi=150, bbox_inches="tight")
        paths.append(p)
    plt.close(fig)
    return paths


def fig3_abs_r(rows: Sequence[dict], paper_r: Mapping[str, float], out_stem: str | Path,
               metrics: Sequence[str] = ("S", "params", "size", "flops")) -> list[Path]:
    """Grouped bars: per metric, |r| ours same-stage, ours cross-stage, paper same, paper cross."""
    series = [("ours", "same", "ours, same-stage", "#1f77b4", None),
              ("ours", "cross", "ours, cross-stage", "#ff7f0e", None),
              ("paper", "same", "paper, same-stage", "#1f77b4", "//"),
              ("paper", "cross", "paper, cross-stage", "#ff7f0e", "//")]
    x = np.arange(len(metrics))
    w = 0.2
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for k, (src, kind, label, color, hatch) in enumerate(series):
        vals = []
        for m in metrics:
            if src == "ours":
                row = find_row(rows, m, kind)
                vals.append(row["abs_r"] if row is not None else math.nan)
            else:
                pv = paper_value(paper_r, m, kind)
                vals.append(math.nan if pv is None else pv)
        vals = np.asarray(vals, dtype=float)
        pos = x + (k - 1.5) * w
        ax.bar(pos, np.nan_to_num(vals), w, label=label, color=color, hatch=hatch,
               alpha=0.55 if src == "paper" else 0.95, edgecolor="black", linewidth=0.5)
        for px, v in zip(pos, vals):
            ax.text(px, (0 if math.isnan(v) else v) + 0.02, "n/a" if math.isnan(v) else f"{v:.2f}",
                    ha="center", va="bottom", fontsize=6, rotation=90)
    ax.set_xticks(x, [METRIC_LABELS.get(m, m) for m in metrics])
    ax.set_ylim(0, 1.25)
    ax.set_ylabel("|Pearson r| with merged accuracy")
    ax.set_title("Fig. 3: which metric predicts merged accuracy")
    ax.legend(fontsize=7, ncol=2, loc="upper right")
    return _save(fig, out_stem)


def fig4_acc_vs_s(df: pd.DataFrame, out_stem: str | Path, s_prime: float | None = None,
                  rows: Sequence[dict] | None = None) -> list[Path]:
    """Two panels (same-stage, cross-stage): merged accuracy vs S, least-squares line, r in title."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.4), sharey=True)
    for ax, kind, title in zip(axes, ("same", "cross"), ("same-stage", "cross-stage")):
        sub = df[df["kind"] == kind]
        s, a = sub["S"].to_numpy(float), sub["acc"].to_numpy(float)
        ok = np.isfinite(s) & np.isfinite(a)
        s, a = s[ok], a[ok]
        ax.scatter(s, a, s=18, color="#1f77b4" if kind == "same" else "#ff7f0e", edgecolor="black", linewidth=0.4)
        if kind == "same":
            for _, r in sub.iterrows():
                ax.annotate(str(int(r["i"])), (r["S"], r["acc"]), fontsize=6, xytext=(2, 2), textcoords="offset points")
        r_txt = "r = n/a"
        if s.size >= 2 and np.ptp(s) > 0:
            slope, icpt = np.polyfit(s, a, 1)
            xs = np.linspace(s.min(), s.max(), 50)
            ax.plot(xs, slope * xs + icpt, "k--", linewidth=1, label="least squares")
            row = find_row(rows, "S", kind) if rows is not None else None
            r = row["r"] if row is not None else (np.corrcoef(s, a)[0, 1] if np.ptp(a) > 0 else math.nan)
            r_txt = "r = n/a" if math.isnan(r) else f"r = {r:.2f}"
        if s_prime is not None and math.isfinite(s_prime):
            ax.axvline(s_prime, color="red", linestyle=":", linewidth=1, label=f"S' = {s_prime:.2f}")
        ax.set_title(f"{title} ({r_txt}, n = {s.size})", fontsize=9)
        ax.set_xlabel("CKA similarity S")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="lower right")
    axes[0].set_ylabel("merged-model accuracy")
    fig.suptitle("Fig. 4: accuracy of the merged model vs representation similarity", fontsize=10)
    return _save(fig, out_stem)
