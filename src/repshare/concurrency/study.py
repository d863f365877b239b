"""The stage's experiments as plain functions (no config, no paths): sample and score generated
graphs, parameter sizes per staging, grouping quality, workload models, the DP sweep."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence

import networkx as nx
import numpy as np
import torch
from scipy import stats

from repshare.concurrency.graphs import GeneratorParams, random_dag, width_depth
from repshare.concurrency.grouping import balance_quality
from repshare.concurrency.latency import LinkModel, serial_latency, simulate_latency
from repshare.concurrency.metrics import longest_inner_path, score_partitions, unit_cost
from repshare.concurrency.network import NetSpec, annotate


def graph_seed(*parts: int) -> int:
    """A seed for one sampled graph from (stage seed, generator index, vertices, sample index)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def mean_ci(values: Sequence[float], ci: float = 0.95) -> dict[str, float]:
    """Mean and a Student-t confidence interval (scipy.stats.t) of the values."""
    x = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    if len(x) == 0:
        return {"mean": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": 0}
    m = float(x.mean())
    if len(x) < 2 or float(x.std(ddof=1)) == 0.0:
        return {"mean": m, "lo": m, "hi": m, "n": int(len(x))}
    lo, hi = stats.t.interval(ci, len(x) - 1, loc=m, scale=stats.sem(x))
    return {"mean": m, "lo": float(lo), "hi": float(hi), "n": int(len(x))}


def sample_graphs(generators: Sequence[str], sizes: Sequence[int], count: int, params: GeneratorParams,
                  spec: NetSpec, seed: int) -> list[dict]:
    """``count`` annotated DAGs per (generator, size); each with its own seed (graph and staging)."""
    out = []
    for gi, g in enumerate(generators):
        for n_vertices in sizes:
            for k in range(count):
                s = graph_seed(seed, gi, n_vertices, k)
                dag = annotate(random_dag(g, n_vertices, s, params), spec, s)
                out.append({"generator": g, "n_vertices": n_vertices, "graph": k, "seed": s, "dag": dag})
    return out


def graph_summary(dag: nx.DiGraph) -> dict:
    wd = width_depth(dag)
    return {"edges": dag.number_of_edges(), "longest_path": longest_inner_path(dag),
            "max_width": max(wd.values()), "depth": len(wd),
            "flops": int(sum(dag.nodes[v]["flops"] for v in dag)),
            "params": int(sum(dag.nodes[v].get("params", 0) for v in dag))}


def score_graph(dag: nx.DiGraph, n_units: Sequence[int], epsilons: Sequence[float], u_c: float,
                exponents: tuple[float, float, float], link: LinkModel, seed: int) -> list[dict]:
    """Every (n, epsilon) row of one graph, with its simulated latency and ``best`` marking the
    lowest-CS epsilon per n."""
    rows = []
    serial = serial_latency(dag, link)
    for n in n_units:
        opts = score_partitions(dag, n, epsilons, seed=seed, u_c=u_c, exponents=exponents)
        best = min(range(len(opts)), key=lambda i: opts[i]["CS"])
        for i, r in enumerate(opts):
            lat = simulate_latency(dag, r.pop("parts"), link)
            rows.append({"n_units": n, **r, "unit_cost": u_c, "latency_s": lat["latency_s"],
                         "compute_s": lat["compute_s"], "comm_s": lat["comm_s"], "serial_s": serial,
                         "speedup": serial / lat["latency_s"], "best": i == best})
    return rows


def score_sampled(graphs: list[dict], n_units: Sequence[int], epsilons: Sequence[float],
                  exponents: tuple[float, float, float], link: LinkModel, seed: int) -> tuple[list[dict], dict]:
    """Rows for every sampled graph; U_c = the smallest net cost over each generator's graphs."""
    u_c: dict[str, float] = {}
    for item in graphs:
        g = item["generator"]
        u_c[g] = min(u_c.get(g, float("inf")), unit_cost(item["dag"]))
    rows = []
    for item in graphs:
        info = {k: item[k] for k in ("generator", "n_vertices", "graph", "seed")}
        summary = graph_summary(item["dag"])
        for r in score_graph(item["dag"], n_units, epsilons, u_c[item["generator"]], exponents, link, seed):
            rows.append({**info, **summary, **r})
    return rows, u_c


def staging_params(generators: Sequence[str], n_vertices: int, count: int, params: GeneratorParams,
                   spec: NetSpec, seed: int) -> list[dict]:
    """Table IV: parameter count of the same sampled graphs under greedy and probabilistic staging."""
    from dataclasses import replace

    rows = []
    for gi, g in enumerate(generators):
        for k in range(count):
            s = graph_seed(seed, gi, n_vertices, 10_000 + k)
            dag = random_dag(g, n_vertices, s, params)
            for staging in ("greedy", "probabilistic"):
                a = annotate(dag, replace(spec, staging=staging), s)
                rows.append({"generator": g, "graph": k, "staging": staging,
                             "params": int(sum(a.nodes[v]["params"] for v in a))})
    return rows


def grouping_quality(graphs: list[dict], units: Sequence[int]) -> list[dict]:
    """Fig. 12: the paper's grouping + assign_workload per graph and number of work units."""
    rows = []
    for item in graphs:
        for n in units:
            rows.append({"generator": item["generator"], "n_vertices": item["n_vertices"], "graph": item["graph"],
                         "work_units": n, "entropy_vertices": balance_quality(item["dag"], n),
                         "entropy_flops": balance_quality(item["dag"], n, weight="flops")})
    return rows


def width_depth_rows(name: str, dags: list[nx.DiGraph]) -> list[dict]:
    """Fig. 10: mean width at every depth over ``dags``."""
    acc: dict[int, list[int]] = {}
    for dag in dags:
        for d, w in width_depth(dag).items():
            acc.setdefault(d, []).append(w)
    return [{"model": name, "depth": d, "width": float(np.sum(ws)) / len(dags)} for d, ws in sorted(acc.items())]


def dp_sweep(alphas: Sequence[float], betas: Sequence[float], p: float, n_vertices: int, n_units: int,
             count: int, epsilons: Sequence[float], exponents: tuple[float, float, float], spec: NetSpec,
             link: LinkModel, seed: int) -> list[dict]:
    """CS of DP graphs across (alpha, beta): the constants Eq. 1 leaves open."""
    rows = []
    for a in alphas:
        for b in betas:
            params = GeneratorParams(dp_alpha=a, dp_beta=b, dp_p=p)
            for k in range(count):
                s = graph_seed(seed, 99, n_vertices, k)
                dag = annotate(random_dag("dp", n_vertices, s, params), spec, s)
                scored = score_graph(dag, [n_units], epsilons, unit_cost(dag), exponents, link, seed)
                best = next(r for r in scored if r["best"])
                rows.append({"alpha": a, "beta": b, "graph": k, "edges": dag.number_of_edges(),
                             "CS": best["CS"], "eta": best["eta"], "speedup": best["speedup"]})
    return rows


@contextlib.contextmanager
def torch_threads(n: int):
    """Run a block with ``n`` torch threads: the per-block FLOP counts and the tracing run tiny ops,
    where extra threads only spin (measured: 2 threads cost ~10x the CPU of 1 on a busy machine)."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class Timer:
    """Wall-clock and process-CPU seconds per named phase (for the benchmark and the run record).

    On a shared machine the CPU seconds estimate what an idle machine's wall clock would show."""

    def __init__(self, log=None) -> None:
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}
        self.log = log

    def __call__(self, name: str):
        timer = self

        class _Phase:
            def __enter__(self):
                self.t, self.c = time.perf_counter(), time.process_time()

            def __exit__(self, *exc):
                w, c = time.perf_counter() - self.t, time.process_time() - self.c
                timer.seconds[name] = timer.seconds.get(name, 0.0) + w
                timer.cpu_seconds[name] = timer.cpu_seconds.get(name, 0.0) + c
                if timer.log is not None:
                    timer.log.info("concurrency phase %s: %.1f s wall, %.1f s CPU", name, w, c)

        return _Phase()
