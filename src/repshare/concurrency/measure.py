"""The quantities the concurrency claims are judged on, each an :class:`repshare.stats.Estimate` with its
interval (rows in, estimates out), and the checks that hold by construction (:class:`SanityCheck`).

Graph quantities are percentile bootstraps over the sampled graphs: the rows are arranged as one array
``(graph index, generator, size, n)`` and a resample draws graph indices, so every generator, size and
unit count of a resampled index moves together (the rows of one graph at several n stay paired).
Below :data:`MIN_GRAPHS` graphs per generator and size a bootstrap cannot carry a verdict, and the
estimate says so (``interpretable=False``): the smoke preset's 2 graphs read inconclusive.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

from repshare import stats
from repshare.claims import SanityCheck
from repshare.concurrency.matched import is_control
from repshare.stats import Estimate

MIN_GRAPHS = 5  # fewer graphs per generator and size: the bootstrap interval is not trustworthy
DEGREE_TOLERANCE = 0.15  # the controls' expected mean degree within 15 % of DP's (integer m, k round it)


def graph_cube(rows: Sequence[dict], key: str, generators: Sequence[str], sizes: Sequence[int],
               units: Sequence[int]) -> np.ndarray:
    """``key`` of the best rows as an array (graph index, generator, size, n); ValueError if a cell lacks graphs."""
    cells = {}
    for r in rows:
        if r["best"]:
            cells.setdefault((r["generator"], r["n_vertices"], r["n_units"]), {})[r["graph"]] = float(r[key])
    counts = {len(cells.get((g, v, n), {})) for g in generators for v in sizes for n in units}
    if len(counts) != 1 or 0 in counts:
        raise ValueError(f"unequal or missing graphs per (generator, size, n): {sorted(counts)}")
    k = counts.pop()
    out = np.empty((k, len(generators), len(sizes), len(units)))
    for gi, g in enumerate(generators):
        for si, v in enumerate(sizes):
            for ui, n in enumerate(units):
                cell = cells[(g, v, n)]
                out[:, gi, si, ui] = [cell[i] for i in sorted(cell)]
    return out


def _guarded(est: Estimate, n_graphs: int, note: str) -> Estimate:
    if n_graphs < MIN_GRAPHS:
        return est.with_note(f"{note}; only {n_graphs} graphs per generator and size (< {MIN_GRAPHS}): "
                             "too few for a bootstrap interval to carry a verdict", interpretable=False)
    return est.with_note(note)


def _boot(statistic, cube: np.ndarray, n_boot: int, seed: int, note: str) -> Estimate:
    est = stats.bootstrap_interval(statistic, [cube], n_boot=n_boot, seed=seed, over="graphs")
    return _guarded(est, cube.shape[0], note)


def cs_gap(rows: Sequence[dict], others: Sequence[str], sizes: Sequence[int], units: Sequence[int],
           n_boot: int, seed: int) -> Estimate:
    """max over settings of (mean CS of DP - min over ``others`` of their mean CS)."""
    cube = graph_cube(rows, "CS", ["dp", *others], sizes, units)

    def stat(c: np.ndarray) -> np.ndarray:
        m = c.mean(axis=-4)  # (B, G, S, U)
        return (m[..., 0, :, :] - m[..., 1:, :, :].min(axis=-3)).max(axis=(-2, -1))

    return _boot(stat, cube, n_boot, seed, f"DP vs {', '.join(others)}; {cube.shape[2] * cube.shape[3]} settings")


def speedup_min(rows: Sequence[dict], sizes: Sequence[int], units: Sequence[int], n_boot: int, seed: int) -> Estimate:
    cube = graph_cube(rows, "speedup", ["dp"], sizes, units)
    return _boot(lambda c: c.mean(axis=-4)[..., 0, :, :].min(axis=(-2, -1)), cube, n_boot, seed,
                 "simulated speedup over one unit (deterministic cost model)")


def lambda_gap(rows: Sequence[dict], sizes: Sequence[int], units: Sequence[int], n_boot: int, seed: int) -> Estimate:
    cube = graph_cube(rows, "Lambda", ["dp", "er", "ba"], sizes, units) / 1e6

    def stat(c: np.ndarray) -> np.ndarray:
        m = c.mean(axis=-4)
        return (m[..., 1:, :, :].min(axis=-3) - m[..., 0, :, :]).min(axis=(-2, -1))

    return _boot(stat, cube, n_boot, seed, "Lambda in MB of the best-CS partition")


def chain_cube(rows: Sequence[dict], generators: Sequence[str], sizes: Sequence[int], first_n: int) -> np.ndarray:
    """Longest path / vertices per graph: (graph index, generator, size, 1)."""
    chain = [{**r, "chain": r["longest_path"] / r["n_vertices"]} for r in rows if r["n_units"] == first_n]
    return graph_cube(chain, "chain", generators, sizes, [first_n])


def chain_dp_er_minus_ba_ws(rows: Sequence[dict], sizes: Sequence[int], first_n: int, n_boot: int,
                            seed: int) -> Estimate:
    cube = chain_cube(rows, ["dp", "er", "ba", "ws"], sizes, first_n)

    def stat(c: np.ndarray) -> np.ndarray:
        m = c.mean(axis=-4)[..., 0]  # (B, G, S)
        return (m[..., :2, :].max(axis=-2) - m[..., 2:, :].min(axis=-2)).max(axis=-1)

    return _boot(stat, cube, n_boot, seed, "longest path / vertices (depth relative to size)")


def chain_dp_minus_workload(rows: Sequence[dict], workload_chain: float, sizes: Sequence[int], first_n: int,
                            n_boot: int, seed: int) -> Estimate:
    cube = chain_cube(rows, ["dp"], sizes, first_n)
    return _boot(lambda c: (c.mean(axis=-4)[..., 0, :, 0] - workload_chain).max(axis=-1), cube, n_boot, seed,
                 f"DP vs the workload's most parallel classifier ({workload_chain:.3f})")


def rho_cs_latency(rows: Sequence[dict], generators: Sequence[str], sizes: Sequence[int], units: Sequence[int],
                   n_boot: int, seed: int) -> Estimate:
    """Spearman rho over every best partition; a resample draws whole graphs (all their n)."""
    cs = graph_cube(rows, "CS", generators, sizes, units)
    lat = graph_cube(rows, "latency_s", generators, sizes, units)
    k = cs.shape[0]
    cs2, lat2 = cs.reshape(k, -1, len(units)), lat.reshape(k, -1, len(units))  # graph index, (gen, size), n
    cs_items = np.swapaxes(cs2, 0, 1).reshape(-1, len(units))  # one row per graph
    lat_items = np.swapaxes(lat2, 0, 1).reshape(-1, len(units))

    def stat(c: np.ndarray, lt: np.ndarray) -> np.ndarray:
        b = c.shape[0]
        return stats.pearson_r(rankdata(c.reshape(b, -1), axis=-1), rankdata(lt.reshape(b, -1), axis=-1))

    est = stats.bootstrap_interval(stat, [cs_items, lat_items], n_boot=n_boot, seed=seed, over="graphs")
    return _guarded(est, k, "Spearman rho, best partitions; latency from the cost model")


def table4_estimates(stage_rows: Sequence[dict], generators: Sequence[str], n_boot: int,
                     seed: int) -> dict[str, Estimate]:
    """Table IV quantities; a resample draws graph indices (each graph is sampled under both stagings)."""
    k = len({r["graph"] for r in stage_rows})
    cube = np.empty((k, len(generators), 2))
    for r in stage_rows:
        cube[r["graph"], generators.index(r["generator"]), 0 if r["staging"] == "greedy" else 1] = r["params"] / 1e3
    out = {
        "concurrency.table4_greedy_minus_prob_min": stats.bootstrap_interval(
            lambda c: (c[..., 0] - c[..., 1]).mean(axis=-2).min(axis=-1), [cube], n_boot=n_boot, seed=seed,
            over="graphs", note="paired: the same graphs under both stagings"),
        "concurrency.table4_sd_greedy_minus_prob_max": stats.bootstrap_interval(
            lambda c: (c[..., 0].std(axis=-2, ddof=1) - c[..., 1].std(axis=-2, ddof=1)).max(axis=-1), [cube],
            n_boot=n_boot, seed=seed, over="graphs", note="paired: the same graphs under both stagings"),
    }
    if "dp" in generators and len(generators) > 1:
        d = generators.index("dp")
        others = [i for i in range(len(generators)) if i != d]
        out["concurrency.table4_dp_minus_smallest_other"] = stats.bootstrap_interval(
            lambda c: c[..., d, 1].mean(axis=-1) - c[..., others, 1].mean(axis=-2).min(axis=-1), [cube],
            n_boot=n_boot, seed=seed, over="graphs", note="probabilistic staging")
    return {key: _guarded(e, k, e.note) for key, e in out.items()}


def proxy_accuracy(proxy_rows: Sequence[dict], generators: Sequence[str], num_classes: int) -> Estimate | None:
    """DP's proxy top-1 minus the other generators' mean at the same architecture index (points), t over
    architectures; not interpretable when any generator's pooled accuracy is indistinguishable from chance."""
    if "dp" not in generators or len(generators) < 2 or not proxy_rows:
        return None
    others = [g for g in generators if g != "dp"]
    by = {(r["generator"], r["arch"]): r for r in proxy_rows}
    archs = sorted({r["arch"] for r in proxy_rows})
    diffs = [100 * (by[("dp", k)]["top1"] - np.mean([by[(g, k)]["top1"] for g in others])) for k in archs]
    est = stats.t_interval(diffs, over="graphs", note=f"{len(archs)} architectures per generator")
    at_chance = [g for g in generators
                 if not stats.above_chance(sum(r["correct"] for r in proxy_rows if r["generator"] == g),
                                           sum(r["n_eval"] for r in proxy_rows if r["generator"] == g),
                                           1.0 / num_classes)]
    if at_chance:
        return est.with_note(f"proxy models at chance ({', '.join(at_chance)}: top-1 not above 1/{num_classes} by a "
                             "one-sided Wilson bound): the accuracy cannot be compared", interpretable=False)
    return est


def workload_chain(workload_rows: Sequence[dict]) -> float | None:
    """Smallest longest-path / operators over the workload's classifiers (None: none traced)."""
    cls = [r for r in workload_rows if r["task"] == "classification"]
    return min((r["longest_path"] / (r["vertices"] - 2) for r in cls), default=None)


def measurements(rows: Sequence[dict], stage_rows: Sequence[dict], workload_rows: Sequence[dict],
                 proxy_rows: Sequence[dict], generators: Sequence[str], controls: Sequence[str], sizes: Sequence[int],
                 units: Sequence[int], num_classes: int, n_boot: int, seed: int) -> dict[str, Estimate]:
    """Every quantity of :mod:`repshare.concurrency.claims` that this run can measure."""
    out: dict[str, Estimate] = {}
    gens = [g for g in generators if not is_control(g)]
    others = [g for g in gens if g != "dp"]
    if "dp" in gens and others:
        out["concurrency.cs_dp_minus_best_other"] = cs_gap(rows, others, sizes, units, n_boot, seed)
    if "dp" in gens and controls:
        out["concurrency.cs_dp_minus_best_matched"] = cs_gap(rows, list(controls), sizes, units, n_boot, seed)
    if "dp" in gens:
        out["concurrency.dp_speedup_min"] = speedup_min(rows, sizes, units, n_boot, seed)
    if {"dp", "er", "ba"} <= set(gens):
        out["concurrency.lambda_er_ba_minus_dp_min"] = lambda_gap(rows, sizes, units, n_boot, seed)
    if {"dp", "er", "ba", "ws"} <= set(gens):
        out["concurrency.chain_dp_er_minus_ba_ws"] = chain_dp_er_minus_ba_ws(rows, sizes, units[0], n_boot, seed)
    if len(gens) > 1:
        out["concurrency.rho_cs_latency"] = rho_cs_latency(rows, gens, sizes, units, n_boot, seed)
    chain = workload_chain(workload_rows)
    if chain is not None:
        out["concurrency.workload_chain_fraction"] = stats.exact(chain, note="torch.fx operator DAG")
        if "dp" in gens:
            out["concurrency.chain_dp_minus_workload"] = chain_dp_minus_workload(rows, chain, sizes, units[0],
                                                                                 n_boot, seed)
    if stage_rows:
        out.update(table4_estimates(stage_rows, gens, n_boot, seed))
    acc = proxy_accuracy(proxy_rows, gens, num_classes)
    if acc is not None:
        out["concurrency.proxy_top1_dp_minus_others"] = acc
    return out


def sanity_checks(fig5_rows: Sequence[dict], control_rows: Sequence[dict]) -> list[SanityCheck]:
    """Checks on fixed inputs or of our own construction: shown apart, never claims."""
    ok = all(abs(r["eta"] - r["paper_eta"]) < 1e-9 for r in fig5_rows)
    checks = [SanityCheck(
        "concurrency.fig5_eta", "eta of the paper's four hand-built Fig. 5 chains equals the printed values",
        ok, ", ".join(f"{r['example']} {r['eta']:.2f} (paper {r['paper_eta']:g})" for r in fig5_rows))]
    if control_rows:
        worst = max(abs(r["mean_degree"] / r["dp_mean_degree"] - 1) for r in control_rows)
        checks.append(SanityCheck(
            "concurrency.controls_degree_matched",
            f"each degree-matched control's expected mean degree is within {DEGREE_TOLERANCE:.0%} of DP's at each size "
            "(BA's m and WS's even k are integers)", worst <= DEGREE_TOLERANCE,
            "; ".join(f"{r['generator']} V={r['n_vertices']}: {r['param']}={r['value']:.4g}, expected degree "
                      f"{r['mean_degree']:.2f} vs DP {r['dp_mean_degree']:.2f} (realised in the sample "
                      f"{r['realised_mean_degree']:.2f} vs {r['dp_realised_mean_degree']:.2f})" for r in control_rows)))
    return checks
