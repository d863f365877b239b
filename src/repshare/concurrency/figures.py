"""The concurrency paper's figures from our rows (PNG + PDF, same style as analysis.figures)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402
import numpy as np  # noqa: E402

from repshare.utils.figures import save_figure as _save  # noqa: E402
from repshare.concurrency.metrics import overlap  # noqa: E402

GEN_COLORS = {"er": "#1f77b4", "ba": "#ff7f0e", "ws": "#2ca02c", "dp": "#d62728",
              "er_matched": "#aec7e8", "ba_matched": "#ffbb78", "ws_matched": "#98df8a"}
GEN_LABELS = {"er": "ER", "ba": "BA", "ws": "WS", "dp": "DP",
              "er_matched": "ER (DP's degree)", "ba_matched": "BA (DP's degree)", "ws_matched": "WS (DP's degree)"}


def label(g: str) -> str:
    """Display name of a generator or control."""
    return GEN_LABELS.get(g, g)


def _box_panels(rows: Sequence[dict], key: str, generators: Sequence[str], sizes: Sequence[int],
                units: Sequence[int], ylabel: str, title: str, out_stem: Path, scale: float = 1.0,
                log: bool = False) -> list[Path]:
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.2 * len(sizes), 3.4), squeeze=False, sharey=True)
    w = 0.8 / max(1, len(generators))
    for ax, n_vertices in zip(axes[0], sizes):
        for gi, g in enumerate(generators):
            data = [[r[key] * scale for r in rows if r["generator"] == g and r["n_vertices"] == n_vertices
                     and r["n_units"] == n and r["best"]] for n in units]
            pos = np.arange(len(units)) + (gi - (len(generators) - 1) / 2) * w
            bp = ax.boxplot(data, positions=pos, widths=w * 0.9, patch_artist=True, showfliers=False)
            for patch in bp["boxes"]:
                patch.set_facecolor(GEN_COLORS.get(g, "#999999"))
                patch.set_alpha(0.75)
            ax.plot([], [], color=GEN_COLORS.get(g, "#999999"), linewidth=6, label=label(g))
        ax.set_xticks(np.arange(len(units)), [str(n) for n in units])
        ax.set_xlabel("units n")
        ax.set_title(f"{n_vertices} vertices", fontsize=9)
        ax.grid(alpha=0.3)
        if log:
            ax.set_yscale("log")
    axes[0][0].set_ylabel(ylabel)
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _save(fig, out_stem)


def fig9_cs(rows, generators, sizes, units, out_stem) -> list[Path]:
    return _box_panels(rows, "CS", generators, sizes, units, "concurrency score CS (lower = better)",
                       "Fig. 9: CS of sampled graphs (best epsilon per graph)", out_stem)


def fig7_communication(rows, generators, sizes, units, out_stem) -> list[Path]:
    return _box_panels(rows, "Lambda", generators, sizes, units, "total communication Lambda (MB)",
                       "Fig. 7: total communication with distribution", out_stem, scale=1e-6)


def fig8_speedup(rows, generators, sizes, units, out_stem) -> list[Path]:
    return _box_panels(rows, "speedup", generators, sizes, units, "simulated speedup over one unit",
                       "Fig. 8 (simulated): speedup of the partitioned graph", out_stem)


def fig10_width_depth(rows: Sequence[dict], out_stem: Path) -> list[Path]:
    """Mean width at every depth, one line per generator / workload model, log width."""
    names = list(dict.fromkeys(r["model"] for r in rows))
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for name in names:
        sub = [r for r in rows if r["model"] == name]
        color = GEN_COLORS.get(name, None)
        ax.step([r["depth"] for r in sub], [r["width"] for r in sub], where="mid",
                label=label(name), color=color, linewidth=1.2, linestyle="-" if color else "--")
    ax.set_yscale("log")
    ax.set_xscale("symlog", linthresh=20)
    ax.set_xlabel("depth (longest path from the input)")
    ax.set_ylabel("width (vertices at that depth, log)")
    ax.set_title("Fig. 10: width vs depth (generators: mean over sampled graphs)", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, out_stem)


def table4_params(rows: Sequence[dict], generators: Sequence[str], out_stem: Path) -> list[Path]:
    fig, ax = plt.subplots(figsize=(6, 3.2))
    x = np.arange(len(generators))
    for k, (staging, hatch) in enumerate((("greedy", None), ("probabilistic", "//"))):
        means, stds = [], []
        for g in generators:
            p = np.array([r["params"] for r in rows if r["generator"] == g and r["staging"] == staging]) / 1e3
            means.append(p.mean())
            stds.append(p.std(ddof=1) if len(p) > 1 else 0.0)
        ax.bar(x + (k - 0.5) * 0.38, means, 0.38, yerr=stds, capsize=3, hatch=hatch, label=staging,
               color=[GEN_COLORS.get(g, "#999") for g in generators], edgecolor="black", linewidth=0.5, alpha=0.8)
    ax.set_xticks(x, [label(g) for g in generators])
    ax.set_ylabel("parameters (thousands), mean +- sd")
    ax.set_title("Table IV: parameter size, greedy vs probabilistic staging", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, out_stem)


def layered_positions(dag: nx.DiGraph) -> dict:
    """y = -depth; within a depth, vertices ordered by their predecessors' mean x (barycentre)."""
    depth: dict = {}
    for v in nx.topological_sort(dag):
        preds = list(dag.predecessors(v))
        depth[v] = 0 if not preds else 1 + max(depth[u] for u in preds)
    pos: dict = {}
    for d in range(max(depth.values()) + 1):
        layer = [v for v in depth if depth[v] == d]
        key = {v: (np.mean([pos[u][0] for u in dag.predecessors(v)]) if d else 0.0, str(v)) for v in layer}
        for i, v in enumerate(sorted(layer, key=lambda v: key[v])):
            pos[v] = (i - (len(layer) - 1) / 2, -d)
    return pos


def fig5_examples(examples: Sequence[tuple[str, nx.DiGraph, int, float]], out_stem: Path) -> list[Path]:
    """The four eta examples of Fig. 5, each drawn by depth, with our eta beside the paper's."""
    fig, axes = plt.subplots(1, len(examples), figsize=(3.2 * len(examples), 3.2))
    for ax, (name, dag, n, paper_eta) in zip(np.atleast_1d(axes), examples):
        pos = layered_positions(dag)
        ends = [v for v in dag if dag.in_degree(v) == 0 or dag.out_degree(v) == 0]
        nx.draw_networkx(dag, pos, ax=ax, node_size=120, font_size=6, arrows=True, arrowsize=6,
                         node_color=["#bbbbbb" if v in ends else "#1f77b4" for v in dag])
        ax.set_title(f"{name}: eta = {overlap(dag, n):.2f} (paper {paper_eta:g}), n = {n}", fontsize=8)
        ax.axis("off")
    fig.suptitle("Fig. 5: overlap eta = longest path / (|V| / n); grey = input/output (excluded)", fontsize=9)
    return _save(fig, out_stem)


def fig12_grouping(rows: Sequence[dict], generators: Sequence[str], units: Sequence[int], out_stem: Path,
                   key: str = "entropy_vertices") -> list[Path]:
    """Median, 25-75 % and 1-99 % of the normalised entropy per number of work units."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for gi, g in enumerate(generators):
        off = (gi - (len(generators) - 1) / 2) * 0.15
        for n in units:
            v = np.array([r[key] for r in rows if r["generator"] == g and r["work_units"] == n])
            if v.size == 0:
                continue
            q1, q25, q50, q75, q99 = np.percentile(v, [1, 25, 50, 75, 99])
            c = GEN_COLORS.get(g, "#999")
            ax.vlines(n + off, q1, q99, color=c, linewidth=0.8)
            ax.vlines(n + off, q25, q75, color=c, linewidth=4, alpha=0.7)
            ax.plot(n + off, q50, "o", color="black", markersize=3)
        ax.plot([], [], color=GEN_COLORS.get(g, "#999"), linewidth=4, label=label(g))
    ax.set_xticks(list(units))
    ax.set_xlabel("work units of assign_workload")
    ax.set_ylabel("load-balance quality\n(normalised entropy)")
    ax.set_title("Fig. 12: the paper's grouping + assign_workload (dot = median, bars 25-75 %, 1-99 %)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, out_stem)


def fig_cs_vs_latency(rows: Sequence[dict], generators: Sequence[str], n_vertices: int, units: Sequence[int],
                      out_stem: Path) -> list[Path]:
    fig, axes = plt.subplots(1, len(units), figsize=(3.2 * len(units), 3.2), squeeze=False)
    for ax, n in zip(axes[0], units):
        for g in generators:
            sub = [r for r in rows if r["generator"] == g and r["n_vertices"] == n_vertices
                   and r["n_units"] == n and r["best"]]
            ax.scatter([r["CS"] for r in sub], [1e3 * r["latency_s"] for r in sub], s=12,
                       color=GEN_COLORS.get(g, "#999"), label=label(g), edgecolor="black", linewidth=0.3)
        ax.set_xlabel("CS")
        ax.set_title(f"n = {n}", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("simulated latency (ms)")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(f"CS vs simulated distributed latency ({n_vertices} vertices)", fontsize=10)
    return _save(fig, out_stem)


def fig_proxy(rows: Sequence[dict], out_stem: Path) -> list[Path]:
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    for g in dict.fromkeys(r["generator"] for r in rows):
        sub = [r for r in rows if r["generator"] == g]
        ax.scatter([r["CS"] for r in sub], [100 * r["top1"] for r in sub], s=24, color=GEN_COLORS.get(g, "#999"),
                   label=label(g), edgecolor="black", linewidth=0.4)
    ax.set_xlabel("concurrency score CS (lower = more concurrent)")
    ax.set_ylabel("proxy top-1 (%)")
    ax.set_title("Accuracy proxy vs CS (Fig. 2 in spirit; brief training)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, out_stem)


def fig9_controls(rows, controls, sizes, units, out_stem) -> list[Path]:
    return _box_panels(rows, "CS", ["dp", *controls], sizes, units, "concurrency score CS (lower = better)",
                       "Control: DP vs ER/BA/WS at DP's mean degree (best epsilon per graph)", out_stem)


def draw_all(result, generators: Sequence[str], controls: Sequence[str], sizes: Sequence[int], units: Sequence[int],
             grouping_units: Sequence[int], folder: Path) -> list:
    """Every figure of the section into ``folder``; returns their dashboard entries (path relative to
    the section file's folder, caption)."""
    from repshare.comparison import Figure
    from repshare.concurrency.study import fig5_rows

    rows, fd = result.rows, Path(folder)
    fig9_cs(rows, generators, sizes, units, fd / "fig9_cs")
    fig7_communication(rows, generators, sizes, units, fd / "fig7_communication")
    fig8_speedup(rows, generators, sizes, units, fd / "fig8_speedup")
    fig10_width_depth(result.wd_rows, fd / "fig10_width_depth")
    table4_params(result.stage_rows, generators, fd / "table4_params")
    fig5_examples(fig5_rows()[0], fd / "fig5_eta")
    fig12_grouping(result.group_rows, generators, list(grouping_units), fd / "fig12_grouping")
    fig_cs_vs_latency(rows, generators, sizes[0], units, fd / "cs_vs_latency")
    out = [
        Figure("figures/fig9_cs.png", "Fig. 9: CS per generator, vertex count and number of units (lower = more concurrent)."),
        Figure("figures/fig7_communication.png", "Fig. 7: total communication Lambda (km1 of output bytes) of the best partition."),
        Figure("figures/fig8_speedup.png", "Simulated speedup of the partitioned graph over one unit (our stand-in for Fig. 8)."),
        Figure("figures/cs_vs_latency.png", "CS against simulated distributed latency: does the score predict latency?"),
        Figure("figures/fig10_width_depth.png", "Fig. 10: width per depth; the workload's models are long single chains."),
        Figure("figures/table4_params.png", "Table IV: parameters with greedy vs probabilistic staging."),
        Figure("figures/fig5_eta.png", "Fig. 5: the overlap metric eta on the paper's four examples, computed by our code."),
        Figure("figures/fig12_grouping.png", "Fig. 12: load balance of the paper's grouping + assign_workload."),
    ]
    if controls and "dp" in generators:
        fig9_controls(rows, controls, sizes, units, fd / "fig9_controls")
        out.append(Figure("figures/fig9_controls.png", "Control: DP against ER/BA/WS whose constants give DP's mean "
                                                       "degree: is DP's low CS more than sparsity?"))
    if result.proxy_rows:
        fig_proxy(result.proxy_rows, fd / "proxy_accuracy")
        out.append(Figure("figures/proxy_accuracy.png", "Proxy accuracy beside CS (brief training; Fig. 2 in spirit)."))
    return out
