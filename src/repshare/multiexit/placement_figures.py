"""MEEdge part 2 figures: Fig. 7(1) time-accuracy profiles, Fig. 8 mAE vs memory budget per
priority variant, Fig. 9(a) mAE bars, Fig. 9(b) mAE over the memory trace. PNG + PDF each
(:func:`repshare.utils.figures.save_figure`, which also selects the Agg backend)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from repshare.utils.figures import save_figure

COLORS = {"m0": "#7f7f7f", "m1": "#bcbd22", "m2": "#17becf", "m3": "#9467bd", "m4": "#8c564b",
          "m5": "#ff7f0e", "m6": "#2ca02c", "m7": "#d62728", "optimum": "black"}


def fig7_time_accuracy(profiles: Mapping[str, tuple[np.ndarray, np.ndarray]], out_stem: str | Path,
                       t_single: float) -> list[Path]:
    """Finite-time accuracy (last exit finished by the deadline) vs deadline, one step curve per model."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for k, (name, (t, y)) in enumerate(profiles.items()):
        ax.plot(t * 1e3, y, drawstyle="default", linewidth=2.2 if "MEEdge" in name else 1.3,
                color="#d62728" if "MEEdge" in name else f"C{k}", label=name)
    ax.axvline(t_single * 1e3, color="black", linestyle=":", linewidth=1, label="single-exit finishes")
    ax.set_xlabel("deadline (ms, batch-1 latency of part 1's latency model)")
    ax.set_ylabel("accuracy of the last exit finished")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("Fig. 7(1): finite-time inference, MEEdge vs baselines", fontsize=10)
    return save_figure(fig, out_stem)


def fig8_mae_vs_budget(rows: Sequence[Mapping[str, Any]], out_stem: str | Path,
                       labels: Mapping[str, str]) -> list[Path]:
    """mAE vs memory budget (KiB): one line per variant (Monte-Carlo ones: mean and 95 % CI over seeds)
    and the exact optimum."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for v in [*labels.keys(), "optimum"]:
        pts = sorted((r["budget_kib"], r["mae"], r.get("ci_low"), r.get("ci_high")) for r in rows if r["variant"] == v)
        if not pts:
            continue
        x = np.array([p[0] for p in pts])
        y = np.array([p[1] for p in pts])
        style = dict(color=COLORS.get(v), label=labels.get(v, "exact optimum"), marker="o", markersize=3,
                     linewidth=2 if v in ("m7", "optimum") else 1, linestyle="--" if v == "optimum" else "-")
        ax.plot(x, y, **style)
        lo = np.array([np.nan if p[2] is None else p[2] for p in pts], dtype=float)
        hi = np.array([np.nan if p[3] is None else p[3] for p in pts], dtype=float)
        if np.isfinite(lo).any():
            ax.fill_between(x, lo, hi, color=COLORS.get(v), alpha=0.15, linewidth=0)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels collide on short ranges
    ax.set_xlabel("memory budget for branches (KiB)")
    ax.set_ylabel("mAE (anytime, uniform pre-emption)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6.5, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title("Fig. 8: priority variants m0..m7 vs the exact optimum", fontsize=10)
    return save_figure(fig, out_stem)


def fig9a_bars(bars: Sequence[Mapping[str, Any]], out_stem: str | Path) -> list[Path]:
    """mAE of each model, with 95 % bootstrap CI whiskers where given."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    names = [b["name"] for b in bars]
    vals = np.array([b["mae"] for b in bars], dtype=float)
    lo = np.array([b.get("ci_low", np.nan) for b in bars], dtype=float)
    hi = np.array([b.get("ci_high", np.nan) for b in bars], dtype=float)
    err = np.vstack([np.where(np.isfinite(lo), vals - lo, 0), np.where(np.isfinite(hi), hi - vals, 0)])
    colors = ["#d62728" if "MEEdge" in n else "#1f77b4" for n in names]
    x = np.arange(len(bars))
    ax.bar(x, vals, color=colors, edgecolor="black", linewidth=0.5, yerr=err, capsize=3)
    for px, v in zip(x, vals):
        ax.text(px, v + 0.01, f"{v:.3f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, names, rotation=20, ha="right", fontsize=7)
    ax.set_ylabel("mAE")
    ax.set_ylim(0, max(1.0, float(np.nanmax(vals)) * 1.15) if len(vals) else 1.0)
    ax.grid(alpha=0.3, axis="y")
    ax.set_title("Fig. 9(a): anytime inference (mAE), MEEdge vs baselines", fontsize=10)
    return save_figure(fig, out_stem)


def fig9b_trace(series: Mapping[str, Sequence[Mapping[str, float]]], budget: Sequence[tuple[float, float]],
                end_s: float, out_stem: str | Path) -> list[Path]:
    """mAE of the loaded model over the trace's time (phases), and the memory budget (right axis)."""
    fig, ax = plt.subplots(figsize=(8, 3.8))
    for k, (name, phases) in enumerate(series.items()):
        xs, ys = [], []
        for p in phases:
            xs += [p["t0"], p["t1"]]
            ys += [p["value"], p["value"]]
        ax.plot(xs, ys, linewidth=2.2 if "MEEdge" in name else 1.2,
                color="#d62728" if name.startswith("MEEdge elastic") else f"C{k}", label=name)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("mAE of the loaded model")
    ax.set_ylim(0, 1.0)
    ax.grid(alpha=0.3)
    ax2 = ax.twinx()
    bx = [t for t, _ in budget] + [end_s]
    by = [m / 1024 for _, m in budget]
    ax2.step(bx, by + [by[-1]], where="post", color="black", linestyle=":", linewidth=1)
    ax2.set_ylabel("memory budget (KiB, dotted)")
    ax2.set_yscale("log")
    ax.legend(fontsize=7, loc="lower left", ncol=2)
    ax.set_title("Fig. 9(b): memory-elastic inference over a trace of budget changes", fontsize=10)
    return save_figure(fig, out_stem)
