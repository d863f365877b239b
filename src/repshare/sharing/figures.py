"""The paper's figures on our models -- Fig. 2 (stage-wise CKA), Fig. 3 (|r| per metric, ours vs
the paper's), Fig. 4 (accuracy vs CKA S) -- and the figures of the comparisons beyond the paper.

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

from repshare.sharing.correlation import find_row  # noqa: E402
from repshare.utils.figures import save_figure  # noqa: E402

METRIC_LABELS = {"S": "CKA S", "params": "#Params", "size": "Size", "flops": "FLOPs"}


def fig2_cka(same_stage: Sequence[float], cross: np.ndarray, names_classifier: Sequence[str],
             names_detector: Sequence[str], n: int, out_stem: str | Path) -> list[Path]:
    """Paper Fig. 2 style: same-stage CKA per stage (left) and the cross-stage heatmap (right)."""
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [1, 1.3]})
    k = len(same_stage)
    xs = np.arange(k)
    ax0.bar(xs, same_stage, color="#4C72B0", alpha=0.6)
    ax0.plot(xs, same_stage, "o-", color="#C44E52")
    for x, v in zip(xs, same_stage):
        ax0.annotate(f"{v:.2f}", (x, v), textcoords="offset points", xytext=(0, 4), ha="center", fontsize=8)
    ax0.set_xticks(xs, list(names_classifier)[:k], rotation=45, ha="right")
    ax0.set_ylim(0, 1.1)
    ax0.set_ylabel("CKA")
    ax0.set_title("Same-stage CKA (classifier i vs detector i)")
    im = ax1.imshow(cross, vmin=0, vmax=1, cmap="viridis", origin="lower")
    for i in range(cross.shape[0]):
        for j in range(cross.shape[1]):
            v = cross[i, j]
            ax1.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v < 0.6 else "black")
    ax1.set_xticks(range(cross.shape[1]), names_classifier, rotation=45, ha="right")
    ax1.set_yticks(range(cross.shape[0]), names_detector)
    ax1.set_xlabel("classifier stage")
    ax1.set_ylabel("detector stage")
    ax1.set_title(f"Cross-stage CKA (n={n})")
    fig.colorbar(im, ax=ax1, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return save_figure(fig, out_stem, bbox_inches=None)


def paper_value(paper_r: Mapping[str, float], metric: str, kind: str) -> float | None:
    """The paper's |r| for (metric, kind): S has a same- and a cross-stage value; #Params, Size and
    FLOPs are stated in its same-stage paragraph (Sec. 3), so they have a same-stage value only."""
    if metric == "S":
        key = {"same": "same_stage_S", "cross": "cross_stage_S"}.get(kind)
    else:
        key = metric if kind == "same" else None
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
    return save_figure(fig, out_stem)


def fig4_acc_vs_s(df: pd.DataFrame, out_stem: str | Path, hinge: Mapping[str, float] | None = None,
                  rows: Sequence[dict] | None = None) -> list[Path]:
    """Two panels (same-stage, cross-stage): merged accuracy vs S, least-squares line, r in title; the
    same-stage panel also shows the hinge fit whose breakpoint is S'."""
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
            r_txt = "r = n/a" if not math.isfinite(r) else f"r = {r:.2f}"
        if kind == "same" and hinge and s.size and math.isfinite(hinge.get("s_prime", math.nan)):
            xs = np.linspace(s.min(), s.max(), 100)
            ax.plot(xs, hinge["floor"] + hinge["slope"] * np.maximum(0.0, xs - hinge["s_prime"]), color="red",
                    linewidth=1, label=f"hinge, S' = {hinge['s_prime']:.2f}")
            ax.axvline(hinge["s_prime"], color="red", linestyle=":", linewidth=1)
        ax.set_title(f"{title} ({r_txt}, n = {s.size})", fontsize=9)
        ax.set_xlabel("CKA similarity S")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="lower right")
    axes[0].set_ylabel("merged-model accuracy")
    fig.suptitle("Fig. 4: accuracy of the merged model vs representation similarity", fontsize=10)
    return save_figure(fig, out_stem)


# --------------------------------------------------------------------------- adapters, protocols, search (issue 12)
ADAPTER_COLORS = {"resample": "#7f7f7f", "moments": "#1f77b4", "lstsq": "#2ca02c", "distill": "#9467bd",
                  "supervised": "#d62728"}
PREDICTOR_MARKERS = {"cka": "o", "agreement": "s", "cka_x_agreement": "D", "params": "v", "size": "^", "flops": "x"}


def fig_adapter_r(rows: Sequence[dict], out_stem: str | Path, metrics: Sequence[str] = ("S", "agree"),
                  kinds: Sequence[str] = ("same", "cross")) -> list[Path]:
    """Pearson r (with bootstrap CI) of each label-free predictor with accuracy, per adapter and protocol."""
    cells = list(dict.fromkeys((r["protocol"], r["adapter"]) for r in rows))
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 0.35 * len(cells) * len(metrics) + 1.5),
                             sharex=True, squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        labels, ys = [], 0
        for p, a in cells:
            for m in metrics:
                row = next((r for r in rows if (r["protocol"], r["adapter"], r["metric"], r["kind"]) == (p, a, m, kind)), None)
                if row is not None and math.isfinite(row["r"]):
                    lo, hi = row["ci_low"], row["ci_high"]
                    err = None if not (math.isfinite(lo) and math.isfinite(hi)) else [[max(0.0, row["r"] - lo)], [max(0.0, hi - row["r"])]]
                    ax.errorbar(row["r"], ys, xerr=err, fmt=PREDICTOR_MARKERS.get({"S": "cka", "agree": "agreement"}.get(m, m), "o"),
                                color=ADAPTER_COLORS.get(a, "black"), capsize=2, markersize=4)
                labels.append(f"{a} / {p} / {METRIC_LABELS.get(m, m)}")
                ys += 1
        ax.set_yticks(range(len(labels)), labels, fontsize=6)
        ax.axvline(0, color="black", linewidth=0.5)
        ax.set_xlim(-1.05, 1.05)
        ax.set_xlabel("Pearson r with merged accuracy (95 % CI)")
        ax.set_title(f"{kind}-stage pairs", fontsize=9)
        ax.grid(alpha=0.3, axis="x")
        ax.invert_yaxis()
    fig.suptitle("Label-free predictors of merged accuracy, per adapter and input protocol", fontsize=10)
    return save_figure(fig, out_stem)


def fig3_grid(rows: Sequence[dict], paper_r: Mapping[str, float], out_stem: str | Path,
              metrics: Sequence[str] = ("S", "agree", "params", "size", "flops"),
              kinds: Sequence[str] = ("same", "cross")) -> list[Path]:
    """Fig. 3 for every (protocol, adapter) at once: |r| per predictor, one bar per setting, the paper's as a tick."""
    cells = list(dict.fromkeys((r["protocol"], r["adapter"]) for r in rows))
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.5 * len(kinds), 3.6), sharey=True, squeeze=False)
    x = np.arange(len(metrics))
    w = 0.8 / max(1, len(cells))
    for ax, kind in zip(axes[0], kinds):
        for k, (p, a) in enumerate(cells):
            vals = []
            for m in metrics:
                row = next((r for r in rows if (r["protocol"], r["adapter"], r["metric"], r["kind"]) == (p, a, m, kind)), None)
                vals.append(row["abs_r"] if row is not None else math.nan)
            ax.bar(x - 0.4 + (k + 0.5) * w, np.nan_to_num(np.asarray(vals, float)), w, color=ADAPTER_COLORS.get(a, "black"),
                   hatch="//" if p == "shared" else None, edgecolor="black", linewidth=0.3, label=f"{a} / {p}")
        for xi, m in enumerate(metrics):
            pv = paper_value(paper_r, m, kind)
            if pv is not None:
                ax.plot([xi - 0.45, xi + 0.45], [pv, pv], "k--", linewidth=1)
        ax.set_xticks(x, [METRIC_LABELS.get(m, "agreement" if m == "agree" else m) for m in metrics], fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{kind}-stage pairs (dashed: paper)", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    axes[0][0].set_ylabel("|Pearson r| with merged accuracy")
    axes[0][-1].legend(fontsize=6, ncol=2, loc="upper right")
    fig.suptitle("Fig. 3 per adapter and input protocol (hatched: shared input)", fontsize=10)
    return save_figure(fig, out_stem)


def fig4_grid(df: pd.DataFrame, out_stem: str | Path, rows: Sequence[dict] | None = None) -> list[Path]:
    """Fig. 4 for every (protocol, adapter): accuracy vs CKA, same-stage and cross-stage pairs in one panel."""
    cells = list(dict.fromkeys(zip(df["protocol"], df["adapter"])))
    protocols = list(dict.fromkeys(p for p, _ in cells))
    adapters = list(dict.fromkeys(a for _, a in cells))
    fig, axes = plt.subplots(len(protocols), len(adapters), figsize=(2.6 * len(adapters), 2.4 * len(protocols)),
                             sharex=True, sharey=True, squeeze=False)
    for r_, p in enumerate(protocols):
        for c_, a in enumerate(adapters):
            ax = axes[r_][c_]
            sub = df[(df["protocol"] == p) & (df["adapter"] == a)]
            for kind, color in (("cross", "#ff7f0e"), ("same", "#1f77b4")):
                k = sub[sub["kind"] == kind]
                ax.scatter(k["S"], k["acc"], s=10, color=color, edgecolor="black", linewidth=0.3, label=kind)
            txt = []
            for kind in ("same", "cross"):
                row = next((r for r in rows or [] if (r["protocol"], r["adapter"], r["metric"], r["kind"]) == (p, a, "S", kind)), None)
                txt.append(f"{kind[0]}: " + ("n/a" if row is None or not math.isfinite(row["r"]) else f"{row['r']:.2f}"))
            ax.set_title(f"{a} / {p}\nr {', '.join(txt)}", fontsize=7)
            ax.grid(alpha=0.3)
            if r_ == len(protocols) - 1:
                ax.set_xlabel("CKA S", fontsize=7)
            if c_ == 0:
                ax.set_ylabel("merged accuracy", fontsize=7)
            ax.tick_params(labelsize=6)
    axes[0][0].legend(fontsize=6, loc="lower right")
    fig.suptitle("Fig. 4 per adapter (columns) and input protocol (rows)", fontsize=10)
    return save_figure(fig, out_stem)


def fig_budget_search(panels: Mapping[str, tuple[pd.DataFrame, Sequence[dict], Sequence[tuple[float, float]]]],
                      classifier_bytes: float, out_stem: str | Path) -> list[Path]:
    """Per protocol: every label-free merge (accuracy vs bytes freed), the Pareto front, each predictor's choices."""
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.2), sharey=True, squeeze=False)
    for ax, (protocol, (df, sweep, front)) in zip(axes[0], panels.items()):
        for a, sub in df.groupby("adapter", sort=False):
            ax.scatter(sub["bytes_saved"] / classifier_bytes, sub["acc"], s=10, alpha=0.45,
                       color=ADAPTER_COLORS.get(a, "black"), label=f"{a}")
        if front:
            fx, fy = zip(*front)
            ax.step(np.asarray(fx) / classifier_bytes, fy, where="post", color="black", linewidth=1, label="Pareto front")
        for p in dict.fromkeys(r["predictor"] for r in sweep):
            pts = [(r["chosen_bytes"] / classifier_bytes, r["chosen_acc"]) for r in sweep if r["predictor"] == p and r["feasible"]]
            if pts:
                x, y = zip(*pts)
                marker = PREDICTOR_MARKERS.get(p, "o")
                kw = {"color": "black"} if marker == "x" else {"facecolors": "none", "edgecolors": "black"}
                ax.scatter(x, y, marker=marker, s=36, linewidths=0.9, label=f"chosen by {p}", **kw)
        ax.set_xlabel("classifier bytes freed (fraction; adapter bytes subtracted)")
        ax.set_title(f"{protocol} input", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="best", ncol=2)
    axes[0][0].set_ylabel("merged top-1 accuracy")
    fig.suptitle("Sharing point under a memory budget (label-free choices vs the Pareto front)", fontsize=10)
    return save_figure(fig, out_stem)
