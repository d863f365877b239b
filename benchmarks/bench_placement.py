"""Benchmark of MEEdge's priority DFS (m7: greedy + convex hull + DFS, Alg. 2) against the exact
branch-and-bound optimum as the number of candidate branches grows (10, 20, 40, 80).

For each size: ``--seeds`` random candidate tables (repshare.multiexit.placement.synthetic_candidates:
deeper exits slower and more accurate, bigger branches slower and a little more accurate) and
``--fractions`` memory budgets (fractions of the bytes of the unconstrained m7 placement). Reports
the median search time of DFS (ordering included) and of the exact optimum, and the quality ratio
mAE(DFS) / mAE(optimum) (mean and worst). All numbers come from one run of this script.

    python benchmarks/bench_placement.py [--sizes 10 20 40 80] [--seeds 5] [--nodes 2000]
                                         [--study 24] [--out results/benchmarks/placement.json]

``--study N`` also times the whole part-2 study (:func:`run_study`: every variant at every budget, the
baselines, the horizons, the trace, the bootstrap intervals over images) at the embedded default's
settings on N synthetic candidates with 1000 select and 1000 val images: the stage's science cost
without its file and figure writing.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path


def main() -> int:
    from repshare.multiexit.placement import exact_optimum, make_problem, place, synthetic_candidates

    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 20, 40, 80])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.3, 0.6])
    ap.add_argument("--nodes", type=int, default=2000, help="DFS node budget (placement.node_budget)")
    ap.add_argument("--horizon", type=float, default=1.5, help="T / single-exit time")
    ap.add_argument("--study", type=int, default=0, help="also time run_study on this many candidates (0: skip)")
    ap.add_argument("--out", type=Path, default=Path("results/benchmarks/placement.json"))
    args = ap.parse_args()

    rows = []
    for n in args.sizes:
        dfs_s, opt_s, ratios, nodes = [], [], [], []
        for seed in range(args.seeds):
            table, bb = synthetic_candidates(n, seed)
            pr = make_problem(table, bb, horizon=args.horizon * bb.final_time_s)
            full = place(pr, "m7", float(sum(pr.bytes)), node_budget=args.nodes)
            for f in args.fractions:
                M = max(1.0, f * full.memory_bytes)
                t0 = time.perf_counter()
                d = place(pr, "m7", M, node_budget=args.nodes)
                dfs_s.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                o = exact_optimum(pr, M, node_limit=None)  # no incumbent: the optimum's own cost
                opt_s.append(time.perf_counter() - t0)
                nodes.append(o.nodes)
                ratios.append(d.value / o.value if o.value > 0 else 1.0)
        row = {"n_candidates": n, "instances": len(ratios),
               "dfs_search_s_median": statistics.median(dfs_s), "exact_search_s_median": statistics.median(opt_s),
               "exact_search_s_max": max(opt_s), "exact_nodes_median": statistics.median(nodes),
               "quality_ratio_mean": statistics.fmean(ratios), "quality_ratio_min": min(ratios),
               "optimal_share": sum(r >= 1 - 1e-12 for r in ratios) / len(ratios)}
        rows.append(row)
        print(f"n={n:3d}: DFS {row['dfs_search_s_median'] * 1e3:8.1f} ms | exact {row['exact_search_s_median'] * 1e3:9.1f} ms "
              f"(max {row['exact_search_s_max']:.2f} s, {row['exact_nodes_median']:.0f} nodes) | "
              f"mAE ratio mean {row['quality_ratio_mean']:.5f}, worst {row['quality_ratio_min']:.5f}, "
              f"optimal in {100 * row['optimal_share']:.0f} %", flush=True)
    study = time_study(args.study) if args.study else None
    rec = {"benchmark": "placement: priority DFS (m7) vs exact optimum", "study": study, "args": {k: (str(v) if isinstance(v, Path) else v)
                                                                                    for k, v in vars(args).items()},
           "machine": {"platform": platform.platform(), "processor": platform.processor(), "python": platform.python_version()},
           "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rec, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


def time_study(n: int) -> dict:
    """Seconds of run_study at the embedded default's settings on synthetic inputs."""
    import numpy as np

    from repshare.multiexit.placement import synthetic_candidates
    from repshare.multiexit.placement_scores import FINAL, Scores
    from repshare.multiexit.placement_settings import PlacementSettings
    from repshare.multiexit.placement_study import run_study

    rows, bb = synthetic_candidates(n, 0)
    for r in rows:
        r["score_id"] = r["id"]
    base = {"single_exit": [],
            "one_fc": [{"id": f"f{e}", "exit": e, "branch_latency_s": 2e-5, "params": 500, "score_id": f"f{e}"}
                       for e in range(1, 7)],
            "spinn": [{"id": f"s{e}", "exit": e, "branch_latency_s": 1e-4, "params": 3000, "score_id": f"s{e}"}
                      for e in range(2, 7)],
            "branchynet": [{"id": f"b{e}", "exit": e, "branch_latency_s": 2e-4, "params": 20000, "score_id": f"b{e}"}
                           for e in (2, 4)]}
    acc = {FINAL: 0.9} | {r["id"]: r["accuracy"] for r in rows} | {
        b["id"]: 0.3 + 0.08 * b["exit"] for k in ("one_fc", "spinn", "branchynet") for b in base[k]}
    rng = np.random.default_rng(0)

    def split(name: str) -> Scores:
        p = np.array(list(acc.values()))[:, None]
        return Scores(name, tuple(acc), (rng.random((len(acc), 1000)) < p).astype(np.float32))

    sel, val = split("select"), split("val")
    t0 = time.perf_counter()
    st = run_study(rows, bb, base, sel, val, PlacementSettings(), seed=0, num_classes=8)
    out = {"n_candidates": n, "n_images": 1000, "seconds": time.perf_counter() - t0,
           "sweep_seconds": st.seconds["sweep"], "rest_seconds": st.seconds["simulation"]}
    print(f"run_study, {n} candidates, 1000 + 1000 images, default settings: {out['seconds']:.2f} s "
          f"(sweep {out['sweep_seconds']:.2f} s)", flush=True)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
