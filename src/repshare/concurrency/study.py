"""The concurrency study as plain functions (no config, no paths): sample and score generated graphs,
the degree-matched controls, parameter sizes per staging (Table IV), grouping quality (Fig. 12),
the workload's traced models, the accuracy proxy and the DP constants sweep.

:func:`run_study` runs all of it from :class:`StudySettings` and returns a :class:`StudyResult`
(rows only); :mod:`repshare.concurrency.summary` condenses the rows, :mod:`.measure` turns them into
the estimates the claims are judged on, :mod:`.section` into the dashboard section.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import ContextManager

import networkx as nx
import numpy as np
import torch

from repshare.concurrency.graphs import (FIG5_EXAMPLES, GeneratorParams, parallel_chains, random_dag,
                                         source_and_sink, width_depth)
from repshare.concurrency.grouping import balance_quality
from repshare.concurrency.latency import LinkModel, serial_latency, simulate_latency
from repshare.concurrency.matched import CONTROL_SUFFIX, base_generator, degree_matched_params, is_control
from repshare.concurrency.metrics import (concurrency_score, longest_inner_path, normalised_communication, overlap,
                                          score_partitions, unit_cost)
from repshare.concurrency.network import NetSpec, annotate
from repshare.concurrency.proxy import ProxyData, ProxyTraining, proxy_spec, train_proxy
from repshare.concurrency.settings import DPSweep  # noqa: F401 (re-exported)

Phase = Callable[[str], ContextManager]




@dataclass(frozen=True)
class StudySettings:
    generators: tuple[str, ...]
    n_vertices: tuple[int, ...]
    n_units: tuple[int, ...]
    epsilons: tuple[float, ...]
    graphs_per_generator: int
    staging_samples: int
    grouping_units: tuple[int, ...]
    exponents: tuple[float, float, float]
    seed: int
    generator: GeneratorParams = field(default_factory=GeneratorParams)
    network: NetSpec = field(default_factory=NetSpec)
    latency: LinkModel = field(default_factory=LinkModel)
    proxy: ProxyTraining = field(default_factory=ProxyTraining)
    dp_sweep: DPSweep = field(default_factory=DPSweep)
    controls: tuple[str, ...] = ()  # generators whose constants are matched to DP's mean degree (issue 23 item 4)


@dataclass(frozen=True)
class WorkloadDag:
    """One traced architecture of the workload (models with the same architecture share one)."""

    names: tuple[str, ...]
    task: str
    arch: str
    input_size: int
    dag: nx.DiGraph

    @property
    def label(self) -> str:
        return "+".join(self.names)


@dataclass
class StudyResult:
    rows: list[dict]  # every (graph, n, epsilon) of the sampled graphs, methods and controls
    unit_costs: dict[str, float]  # U_c per generator (and control)
    control_params: list[dict]  # the constants each control used per size, with its mean degree
    group_rows: list[dict]
    stage_rows: list[dict]
    wd_rows: list[dict]
    workload_rows: list[dict]
    proxy_rows: list[dict]
    sweep_rows: list[dict]
    fig5_rows: list[dict]
    graphs_scored: int


def graph_seed(*parts: int) -> int:
    """A seed for one sampled graph from (stage seed, generator index, vertices, sample index)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


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


def sample_controls(controls: Sequence[str], sizes: Sequence[int], count: int, params: GeneratorParams,
                    spec: NetSpec, seed: int) -> tuple[list[dict], list[dict]]:
    """``count`` DAGs per (control, size) from ER/BA/WS with constants matched to DP's expected mean
    degree at that size; the graph seeds are the ones the plain generator of the same index would use
    shifted by a fixed offset, so a control never reuses a method's graph."""
    graphs, used = [], []
    for ci, name in enumerate(controls):
        g = base_generator(name)
        for n_vertices in sizes:
            p, info = degree_matched_params(g, n_vertices, params)
            used.append({"generator": name, "n_vertices": n_vertices, **info})
            for k in range(count):
                s = graph_seed(seed, 50 + ci, n_vertices, k)
                dag = annotate(random_dag(g, n_vertices, s, p), spec, s)
                graphs.append({"generator": name, "n_vertices": n_vertices, "graph": k, "seed": s, "dag": dag})
    return graphs, used


def graph_summary(dag: nx.DiGraph) -> dict:
    wd = width_depth(dag)
    src, snk = source_and_sink(dag)
    inner = dag.subgraph([v for v in dag if v not in (src, snk)])
    return {"edges": dag.number_of_edges(), "longest_path": longest_inner_path(dag),
            "mean_degree": 2.0 * inner.number_of_edges() / max(1, inner.number_of_nodes()),
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


def score_workload(w: WorkloadDag, n_units: Sequence[int], epsilons: Sequence[float], common_uc: float,
                   exponents: tuple[float, float, float], link: LinkModel, seed: int) -> list[dict]:
    """A traced model scored like a generated graph: U_c = its own smallest tensor (``CS``) and the
    generators' smallest (``CS_generator_uc``, comparable with theirs)."""
    summary = graph_summary(w.dag)
    rows = []
    for r in score_graph(w.dag, [n for n in n_units if n <= w.dag.number_of_nodes()], epsilons, unit_cost(w.dag),
                         exponents, link, seed):
        lam_common = normalised_communication(r["Lambda"], common_uc, r["n_units"])
        rows.append({"model": w.label, "task": w.task, "arch": w.arch, "input_size": w.input_size,
                     "vertices": w.dag.number_of_nodes(), **summary, **r,
                     "CS_generator_uc": concurrency_score(r["delta_w"], lam_common, r["eta"], exponents),
                     "generator_unit_cost": common_uc})
    return rows


def staging_params(generators: Sequence[str], n_vertices: int, count: int, params: GeneratorParams,
                   spec: NetSpec, seed: int) -> list[dict]:
    """Table IV: parameter count of the same sampled graphs under greedy and probabilistic staging."""
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


def dp_sweep(sweep: DPSweep, p: float, epsilons: Sequence[float], exponents: tuple[float, float, float],
             spec: NetSpec, link: LinkModel, seed: int) -> list[dict]:
    """CS of DP graphs across (alpha, beta): the constants Eq. 1 leaves open."""
    rows = []
    for a in sweep.alphas:
        for b in sweep.betas:
            params = GeneratorParams(dp_alpha=a, dp_beta=b, dp_p=p)
            for k in range(sweep.graphs):
                s = graph_seed(seed, 99, sweep.n_vertices, k)
                dag = annotate(random_dag("dp", sweep.n_vertices, s, params), spec, s)
                scored = score_graph(dag, [sweep.n_units], epsilons, unit_cost(dag), exponents, link, seed)
                best = next(r for r in scored if r["best"])
                rows.append({"alpha": a, "beta": b, "graph": k, "edges": dag.number_of_edges(),
                             "CS": best["CS"], "eta": best["eta"], "speedup": best["speedup"]})
    return rows


def proxy_study(generators: Sequence[str], params: GeneratorParams, spec: NetSpec, cfg: ProxyTraining,
                data: ProxyData, epsilons: Sequence[float], first_units: int, exponents: tuple[float, float, float],
                link: LinkModel, seed: int) -> list[dict]:
    """``cfg.archs_per_generator`` small architectures per generator, scored and briefly trained."""
    pspec = proxy_spec(spec, cfg)
    n_score = min(first_units, cfg.n_vertices)
    rows = []
    for gi, g in enumerate(generators):
        for k in range(cfg.archs_per_generator):
            s = graph_seed(seed, gi, cfg.n_vertices, 20_000 + k)
            dag = annotate(random_dag(g, cfg.n_vertices, s, params), pspec, s)
            scored = score_graph(dag, [n_score], epsilons, unit_cost(dag), exponents, link, seed)
            best = next(r for r in scored if r["best"])
            res = train_proxy(dag, pspec, data, cfg, seed=s)
            rows.append({"generator": g, "arch": k, "n_vertices": cfg.n_vertices, "n_units": n_score,
                         "CS": best["CS"], "eta": best["eta"], "top1": res["top1"], "correct": res["correct"],
                         "n_eval": res["n_eval"], "params": res["params"], "final_loss": res["final_loss"],
                         "steps": cfg.steps})
    return rows


def fig5_rows() -> tuple[list[tuple[str, nx.DiGraph, int, float]], list[dict]]:
    """The paper's four Fig. 5 chains (n = 3) and eta on each: a fixed-input sanity check."""
    examples = [(name, parallel_chains(lengths), 3, paper_eta) for name, lengths, paper_eta in FIG5_EXAMPLES]
    return examples, [{"example": name, "n_units": n, "eta": overlap(dag, n), "paper_eta": pe}
                      for name, dag, n, pe in examples]


def realised_degrees(control_params: list[dict], rows: Sequence[dict]) -> list[dict]:
    """The controls' constants with the mean degree their sampled graphs reached, beside DP's."""
    def mean(g: str, v: int) -> float:
        d = [r["mean_degree"] for r in rows if r["generator"] == g and r["n_vertices"] == v]
        return float(np.mean(d)) if d else float("nan")

    return [{**c, "realised_mean_degree": mean(c["generator"], c["n_vertices"]),
             "dp_realised_mean_degree": mean("dp", c["n_vertices"])} for c in control_params]


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


def run_study(s: StudySettings, workload: Sequence[WorkloadDag] = (), proxy_data: ProxyData | None = None,
              phase: Phase = lambda name: contextlib.nullcontext()) -> StudyResult:
    """Every experiment of the stage; ``phase(name)`` wraps each part (the stage times them)."""
    gens, sizes, units, eps, exps = list(s.generators), list(s.n_vertices), list(s.n_units), list(s.epsilons), s.exponents
    with phase("sample_annotate"), torch_threads(1):
        graphs = sample_graphs(gens, sizes, s.graphs_per_generator, s.generator, s.network, s.seed)
        control_graphs, control_params = sample_controls(s.controls, sizes, s.graphs_per_generator, s.generator,
                                                         s.network, s.seed)
    with phase("partition_score_latency"):
        rows, u_c = score_sampled(graphs + control_graphs, units, eps, exps, s.latency, s.seed)
    with phase("grouping"):
        group_rows = grouping_quality([g for g in graphs if g["n_vertices"] == sizes[0]], list(s.grouping_units))
    with phase("staging_params"), torch_threads(1):
        stage_rows = staging_params(gens, sizes[0], s.staging_samples, s.generator, s.network, s.seed)
    wd_rows = []
    for g in gens:
        wd_rows += width_depth_rows(g, [x["dag"] for x in graphs if x["generator"] == g and x["n_vertices"] == sizes[0]])
    workload_rows: list[dict] = []
    common_uc = min(v for k, v in u_c.items() if not is_control(k))
    with phase("workload_score"):
        for w in workload:
            wd_rows += width_depth_rows(w.label, [w.dag])
            workload_rows += score_workload(w, units, eps, common_uc, exps, s.latency, s.seed)
    proxy_rows: list[dict] = []
    if proxy_data is not None and s.proxy.archs_per_generator:
        with phase("proxy_training"), torch_threads(1):  # small convs: a second thread only spins
            proxy_rows = proxy_study(gens, s.generator, s.network, s.proxy, proxy_data, eps, units[0], exps,
                                     s.latency, s.seed)
    sweep_rows: list[dict] = []
    if s.dp_sweep.graphs:
        with phase("dp_sweep"), torch_threads(1):
            sweep_rows = dp_sweep(s.dp_sweep, s.generator.dp_p, eps, exps, s.network, s.latency, s.seed)
    _, fig5 = fig5_rows()
    return StudyResult(rows=rows, unit_costs=u_c, control_params=realised_degrees(control_params, rows), group_rows=group_rows,
                       stage_rows=stage_rows, wd_rows=wd_rows, workload_rows=workload_rows, proxy_rows=proxy_rows,
                       sweep_rows=sweep_rows, fig5_rows=fig5, graphs_scored=len(graphs) + len(control_graphs))


__all__ = ["CONTROL_SUFFIX", "DPSweep", "StudyResult", "StudySettings", "WorkloadDag", "run_study"]
