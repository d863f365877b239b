"""The comparison figure: memory saved vs accuracy kept, one marker per method, the Pareto fronts.

Filled markers = label-free settings, hollow = settings that needed labels. Solid step line = the
front over every method; dashed = the front over label-free settings only. PNG + PDF at 150 dpi
through :func:`repshare.utils.figures.save_figure` (no dates: same figure, same bytes).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from repshare.comparison.compare import Comparison  # noqa: E402
from repshare.utils.figures import save_figure  # noqa: E402

CAPTION = (
    "Each marker is one setting of one method (filled: label-free; hollow: needed labels). Up and right "
    "is better: more of the workload's weight bytes saved while the worst-affected model keeps more of its "
    "unmerged accuracy. The solid staircase is the Pareto front over every method, the dashed one over "
    "label-free settings only; the red line is the accuracy target.")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def _steps(points: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """Staircase through front points sorted by x: what the best method keeps at each saving."""
    xs, ys = [], []
    for x, y in sorted(points, key=lambda p: (-p[0], p[1])):  # from the largest saving leftwards
        if xs:
            xs.append(x)
            ys.append(ys[-1])
        xs.append(x)
        ys.append(y)
    return xs, ys


def comparison_figure(comp: Comparison, out_stem: str | Path, names: Mapping[str, str] | None = None,
                      keep_target: float | None = None) -> list[Path]:
    """Scatter of every setting; returns [png, pdf]. An empty comparison draws an explanatory note."""
    names = names or {}
    fig, ax = plt.subplots(figsize=(7.2, 4.4))
    methods = list(dict.fromkeys(r["method"] for r in comp.rows))
    handles = []
    for k, m in enumerate(methods):
        mk, col = MARKERS[k % len(MARKERS)], COLORS[k % len(COLORS)]
        for labelled in (False, True):
            pts = [(r["bytes_saved_pct"], r["accuracy_kept"]) for r in comp.rows
                   if r["method"] == m and r["labels_used"] == labelled and math.isfinite(r["accuracy_kept"])]
            if pts:
                ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=mk, s=34, linewidths=0.9,
                           facecolors="none" if labelled else col, edgecolors=col if labelled else "black",
                           alpha=0.9, zorder=3)
        handles.append(Line2D([], [], marker=mk, linestyle="", color=col, markeredgecolor="black",
                              label=names.get(m, m)))
    for idx, style, label in ((comp.front, "-", "Pareto front (all)"),
                              (comp.front_label_free, "--", "Pareto front (label-free only)")):
        pts = [(comp.rows[k]["bytes_saved_pct"], comp.rows[k]["accuracy_kept"]) for k in idx]
        if pts:
            xs, ys = _steps(pts)
            ax.plot(xs, ys, style, color="black", linewidth=1, zorder=2)
            handles.append(Line2D([], [], linestyle=style, color="black", label=label))
    handles.append(Line2D([], [], marker="o", linestyle="", markerfacecolor="grey", markeredgecolor="black",
                          label="filled: label-free"))
    handles.append(Line2D([], [], marker="o", linestyle="", markerfacecolor="none", markeredgecolor="grey",
                          label="hollow: needs labels"))
    if keep_target is not None:
        ax.axhline(keep_target, color="red", linestyle=":", linewidth=1)
        handles.append(Line2D([], [], linestyle=":", color="red", label=f"accuracy kept = {keep_target:g}"))
    if not comp.rows:
        ax.text(0.5, 0.5, "no comparison rows (see the problems listed on the overview page)",
                ha="center", va="center", transform=ax.transAxes, fontsize=9)
    ax.set_xlabel("memory saved (% of the workload's weight bytes)")
    ax.set_ylabel("accuracy kept (worst model, vs unmerged)")
    ax.set_title("Memory saved vs accuracy kept, every method on one workload", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return save_figure(fig, out_stem)  # no dates in the files: the same figure gives the same bytes
