"""MEEdge part-1 figures (PNG + PDF, the style of repshare.analysis.figures): the zoo's accuracy
vs latency per exit with survivors marked, self- vs twin-merge, and the KD recovery curve (Fig. 9(c))."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from repshare.utils.figures import save_figure as _save  # noqa: E402


def fig_acc_vs_latency(profiles: Sequence[dict], full_latency_s: float, out_stem: str | Path) -> list[Path]:
    exits = sorted({p["exit"] for p in profiles})
    cols = min(3, len(exits))
    rows = math.ceil(len(exits) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.7 * rows), squeeze=False, sharey=True)
    for ax, e in zip(axes.flat, exits):
        mine = [p for p in profiles if p["exit"] == e]
        for survived, style in ((False, dict(facecolors="none", edgecolors="grey", label="dropped")),
                                (True, dict(color="#d62728", edgecolor="black", label="survived"))):
            pts = [p for p in mine if p["survived"] == survived]
            if pts:
                ax.scatter([p["latency_to_exit_s"] * 1e3 for p in pts], [p["accuracy"] for p in pts], s=18,
                           linewidth=0.5, **style)
        ax.axvline(full_latency_s * 1e3, color="black", linestyle="--", linewidth=0.8, label="single-exit end")
        ax.set_title(f"exit {e}", fontsize=9)
        ax.set_xlabel("latency to exit + branch (ms, batch 1)", fontsize=7)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(exits):]:
        ax.axis("off")
    axes.flat[0].set_ylabel("val top-1")
    axes.flat[0].legend(fontsize=6, loc="lower right")
    fig.suptitle("Branch zoo: accuracy vs latency (survivors in red)", fontsize=10)
    fig.tight_layout()
    return _save(fig, out_stem)


def fig_self_vs_twin(curves: Sequence[dict], out_stem: str | Path) -> list[Path]:
    """``curves``: per branch pair {"pair", "self": [(kB saved, mean acc)], "twin": [...], "self_rule", "twin_rule"}."""
    n = max(1, len(curves))
    fig, axes = plt.subplots(1, n, figsize=(3.4 * n, 2.9), squeeze=False)
    for ax, c in zip(axes.flat, curves):
        for key, color, label in (("self", "#1f77b4", "self-merge (both branches)"), ("twin", "#ff7f0e", "twin-merge")):
            pts = c[key]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=color, markersize=3, linewidth=1, label=label)
            r = c.get(f"{key}_rule")
            if r is not None:
                ax.scatter([r[0]], [r[1]], marker="*", s=90, color=color, edgecolor="black", linewidth=0.5, zorder=5)
        ax.set_title(c["pair"], fontsize=7)
        ax.set_xlabel("kB of FC weights saved", fontsize=7)
        ax.set_ylabel("mean val top-1 of the two branches", fontsize=7)
        ax.tick_params(labelsize=7)
    axes.flat[0].legend(fontsize=6)
    fig.suptitle("Self-merge vs twin-merge (stars: the 1/3-1/2 rule's choice)", fontsize=9)
    fig.tight_layout()
    return _save(fig, out_stem)


def fig_kd_curve(curves: Sequence[dict], window: Sequence[float], out_stem: str | Path) -> list[Path]:
    """``curves``: per branch {"id", "candidates", "original", "control" (optional), "points": [{"n_pairs",
    "fraction", "acc_merged", "acc_recovered"}]}."""
    n = max(1, len(curves))
    fig, axes = plt.subplots(1, n, figsize=(3.4 * n, 2.9), squeeze=False)
    for ax, c in zip(axes.flat, curves):
        pts = c["points"]
        xs = [p["n_pairs"] for p in pts]
        ax.plot(xs, [p["acc_merged"] for p in pts], "s--", color="grey", markersize=3, linewidth=0.8, label="merged")
        ax.plot(xs, [p["acc_recovered"] for p in pts], "o-", color="#1f77b4", markersize=3, linewidth=1,
                label="merged + KD")
        ax.axhline(c["original"], color="black", linewidth=0.8, linestyle=":", label="original")
        if c.get("control") is not None:
            ax.axhline(c["control"], color="#9467bd", linewidth=0.8, linestyle="--", label="KD without merging")
        stars = [p for p in pts if p["acc_recovered"] >= c["original"]]
        if stars:
            ax.scatter([p["n_pairs"] for p in stars], [p["acc_recovered"] for p in stars], marker="*", s=80,
                       color="#d62728", zorder=5, label="recovered >= original")
        total = c["candidates"]
        ax.axvspan(window[0] * total, window[1] * total, color="#2ca02c", alpha=0.12, label="1/3-1/2 window")
        ax.set_title(c["id"], fontsize=7)
        ax.set_xlabel("merged neuron pairs", fontsize=7)
        ax.set_ylabel("val top-1", fontsize=7)
        ax.tick_params(labelsize=7)
    axes.flat[0].legend(fontsize=6)
    fig.suptitle("Fig. 9(c): few-shot KD recovery vs merged pairs", fontsize=9)
    fig.tight_layout()
    return _save(fig, out_stem)
