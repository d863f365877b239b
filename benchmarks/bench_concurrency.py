"""Benchmark of the concurrency score: scoring rate (graphs/s) and where the time goes.

One "graph" = generate + DAG conversion + FLOP/byte annotation (torch's counter, memoised per
block shape) + Mt-KaHyPar at every (n, epsilon) + metrics + simulated latency, exactly what the
stage does per sampled graph. Both wall-clock and process CPU seconds are recorded: on a shared
machine the CPU seconds are the better estimate of an idle machine's wall time (one thread).

Usage: python benchmarks/bench_concurrency.py [--graphs 4] [--out results/benchmarks/concurrency.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch


class Clock:
    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def add(self, name: str, w: float, c: float) -> None:
        self.wall[name] = self.wall.get(name, 0.0) + w
        self.cpu[name] = self.cpu.get(name, 0.0) + c

    def phase(self, name: str):
        clock = self

        class _P:
            def __enter__(self):
                self.w, self.c = time.perf_counter(), time.process_time()

            def __exit__(self, *exc):
                clock.add(name, time.perf_counter() - self.w, time.process_time() - self.c)

        return _P()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--graphs", type=int, default=4, help="graphs per generator and vertex count")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="results/benchmarks/concurrency.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from repshare.concurrency.graphs import GENERATORS, GeneratorParams, random_dag
    from repshare.concurrency.matched import MATCHABLE, control_name, degree_matched_params
    from repshare.concurrency.hypergraph import build_hypergraph, partition
    from repshare.concurrency.latency import LinkModel, simulate_latency
    from repshare.concurrency.metrics import (communication, concurrency_score, load_balance,
                                              normalised_communication, overlap, unit_cost)
    from repshare.concurrency.network import NetSpec, annotate

    spec, link = NetSpec(), LinkModel()
    units, epsilons, sizes = [4, 6, 8, 10], [0.03, 0.1, 0.3], [40, 80]
    annotate(random_dag("er", 12, 0), spec, 0)  # torch's first-use warm-up, not a per-graph cost
    clock = Clock()
    per_size: dict[int, dict[str, float]] = {}
    n_graphs = 0
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    for n_vertices in sizes:
        w0, c0 = time.perf_counter(), time.process_time()
        # the four generators, then ER/BA/WS at DP's mean degree (the stage's controls)
        kinds = [(g, GeneratorParams()) for g in GENERATORS] + [
            (g, degree_matched_params(control_name(g), n_vertices, GeneratorParams())[0]) for g in MATCHABLE]
        for g, params in kinds:
            for k in range(args.graphs):
                with clock.phase("generate_dag"):
                    dag = random_dag(g, n_vertices, 1000 + k, params)
                with clock.phase("annotate_flops_bytes"):
                    dag = annotate(dag, spec, k)
                with clock.phase("hypergraph_build"):
                    hg = build_hypergraph(dag)
                    u_c = unit_cost(dag)
                for n in units:
                    with clock.phase("metrics_eta"):
                        eta = overlap(dag, n)
                    for eps in epsilons:
                        with clock.phase("partition_mtkahypar"):
                            parts = partition(hg, n, eps, seed=0)
                        with clock.phase("metrics_delta_lambda_cs"):
                            dw = load_balance(dag, parts, n)
                            lam = normalised_communication(communication(dag, parts), u_c, n)
                            concurrency_score(dw, lam, eta)
                        with clock.phase("latency_simulation"):
                            simulate_latency(dag, parts, link)
                n_graphs += 1
        per_size[n_vertices] = {"wall_s_per_graph": (time.perf_counter() - w0) / (len(kinds) * args.graphs),
                                "cpu_s_per_graph": (time.process_time() - c0) / (len(kinds) * args.graphs)}
    wall, cpu = time.perf_counter() - t_wall, time.process_time() - t_cpu
    share = {k: round(100 * v / cpu, 1) for k, v in sorted(clock.cpu.items(), key=lambda kv: -kv[1])}
    record = {
        "graphs": n_graphs, "partitions_per_graph": len(units) * len(epsilons),
        "graphs_per_s_wall": n_graphs / wall, "graphs_per_s_cpu": n_graphs / cpu,
        "partitions_per_s_cpu": n_graphs * len(units) * len(epsilons) / clock.cpu["partition_mtkahypar"],
        "per_size": per_size, "cpu_share_pct": share,
        "wall_s": {k: round(v, 3) for k, v in clock.wall.items()}, "cpu_s": {k: round(v, 3) for k, v in clock.cpu.items()},
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "load_avg_1min": os.getloadavg()[0]},
    }
    print(json.dumps(record, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
