"""The concurrency stage's dashboard section (rows and estimates in, :class:`ReportSection` out).

The section does not judge: the compare stage applies :mod:`repshare.concurrency.claims` to the
``measurements``. The score saves no memory, so there are no comparison rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from repshare.claims import SanityCheck
from repshare.comparison import Figure, ReportSection, Table
from repshare.concurrency.figures import label
from repshare.concurrency.study import StudyResult, StudySettings
from repshare.stats import Estimate, t_interval

METHOD = "concurrency"
TITLE = "Concurrency score (Hadidi et al., EDGE 2023)"


def _ci(values: Sequence[float], digits: int = 2) -> str:
    e = t_interval(values, over="graphs")
    if not e.has_interval:
        return f"{e.value:.{digits}f}"
    return f"{e.value:.{digits}f} [{e.lo:.{digits}f}, {e.hi:.{digits}f}]"


def tables(result: StudyResult, summary_rows: list[dict], corr_rows: list[dict], table4_rows: list[dict]) -> list[Table]:
    out = [Table(
        title="CS, communication and simulated speedup per generator and control (best epsilon per graph; "
              "mean [95 % t-CI over graphs])",
        columns=["generator", "vertices", "n", "graphs", "mean degree", "CS", "Lambda (MB)", "delta_w", "eta", "speedup"],
        rows=[{"generator": label(r["generator"]), "vertices": r["n_vertices"], "n": r["n_units"], "graphs": r["graphs"],
               "mean degree": round(r["mean_degree"], 2), "CS": f"{r['CS_mean']:.2f} [{r['CS_lo']:.2f}, {r['CS_hi']:.2f}]",
               "Lambda (MB)": f"{r['Lambda_MB_mean']:.2f} [{r['Lambda_MB_lo']:.2f}, {r['Lambda_MB_hi']:.2f}]",
               "delta_w": round(r["delta_w_mean"], 3), "eta": round(r["eta_mean"], 2),
               "speedup": f"{r['speedup_mean']:.2f} [{r['speedup_lo']:.2f}, {r['speedup_hi']:.2f}]"}
              for r in summary_rows])]
    if result.control_params:
        out.append(Table(
            title="Degree-matched controls: the constant set so the expected mean degree equals DP's",
            columns=["control", "vertices", "constant", "value", "expected degree", "DP expected degree",
                     "realised degree", "DP realised degree"],
            rows=[{"control": label(r["generator"]), "vertices": r["n_vertices"], "constant": r["param"],
                   "value": round(float(r["value"]), 4), "expected degree": round(r["mean_degree"], 2),
                   "DP expected degree": round(r["dp_mean_degree"], 2),
                   "realised degree": round(r["realised_mean_degree"], 2),
                   "DP realised degree": round(r["dp_realised_mean_degree"], 2)} for r in result.control_params]))
    out.append(Table(
        title="The workload's models and concurrency.trace_archs (operator DAGs by torch.fx; best epsilon per n)",
        columns=["model", "operators", "n", "delta_w", "Lambda (MB)", "eta", "CS (own U_c)", "CS (generator U_c)",
                 "speedup"],
        rows=[{"model": r["model"], "operators": r["vertices"] - 2, "n": r["n_units"], "delta_w": round(r["delta_w"], 3),
               "Lambda (MB)": round(r["Lambda"] / 1e6, 3), "eta": round(r["eta"], 2), "CS (own U_c)": round(r["CS"], 2),
               "CS (generator U_c)": round(r["CS_generator_uc"], 2), "speedup": round(r["speedup"], 2)}
              for r in result.workload_rows if r["best"]],
        caption="The workload's models are the ones the memory-sharing methods merge; trace_archs (random weights) "
                "are named timm models such as the paper's ResNet-50; eta near n = single chain."))
    out.append(Table(
        title="Spearman correlation of CS with simulated latency (best partitions, all sizes and n)",
        columns=["generator", "points", "rho (latency)", "p", "rho (latency / one-unit latency)"],
        rows=[{"generator": label(r["generator"]), "points": r["points"], "rho (latency)": round(r["rho_latency"], 3),
               "p": f"{r['p_latency']:.2g}", "rho (latency / one-unit latency)": round(r["rho_rel_latency"], 3)}
              for r in corr_rows]))
    out.append(Table(
        title="Table IV: parameters of sampled networks (thousands), greedy vs probabilistic staging",
        columns=["staging", "generator", "samples", "mean (k)", "sd (k)", "paper mean", "paper sd"],
        rows=[{"staging": r["staging"], "generator": label(r["generator"]), "samples": r["samples"],
               "mean (k)": round(r["params_k_mean"], 1), "sd (k)": round(r["params_k_sd"], 1),
               "paper mean": r["paper_mean"], "paper sd": r["paper_sd"]} for r in table4_rows]))
    if result.proxy_rows:
        out.append(Table(
            title="Accuracy proxy (brief training at 32 px on the embedded images)",
            columns=["generator", "arch", "CS", "top-1 (%)", "params"],
            rows=[{"generator": label(r["generator"]), "arch": r["arch"], "CS": round(r["CS"], 2),
                   "top-1 (%)": round(100 * r["top1"], 1), "params": r["params"]} for r in result.proxy_rows]))
    sweep = result.sweep_rows
    if sweep:
        out.append(Table(
            title="DP generator constants (Eq. 1; not given in the paper): CS at one size",
            columns=["alpha", "beta", "graphs", "DAG edges", "CS", "eta"],
            rows=[{"alpha": a, "beta": b, "graphs": len(sub), "DAG edges": round(float(np.mean([r["edges"] for r in sub])), 1),
                   "CS": _ci([r["CS"] for r in sub]), "eta": round(float(np.mean([r["eta"] for r in sub])), 2)}
                  for a, b in dict.fromkeys((r["alpha"], r["beta"]) for r in sweep)
                  for sub in [[r for r in sweep if r["alpha"] == a and r["beta"] == b]]]))
    return out


def notes(s: StudySettings) -> list[str]:
    return [
        f"Sampled graphs: {s.graphs_per_generator} per generator and vertex count (the paper: 1000; "
        "concurrency.graphs_per_generator).",
        "Partitioner: Mt-KaHyPar, deterministic preset, km1 objective, one thread; each graph is partitioned at every "
        f"epsilon in {list(s.epsilons)} (concurrency.epsilons); every row is kept in graphs.csv and the lowest CS is "
        "reported (the paper does not say how it combines the options).",
        "U_c (Lambda' = Lambda / (U_c n)) is the smallest net cost (output bytes) over each generator's graphs; the "
        "workload models use their own smallest tensor, and also the generators' smallest (column 'generator U_c').",
        "DP Eq. 1 is implemented as printed, P_new = alpha * P^(beta d); at beta = 0 it is independent of distance "
        "with probability alpha (so alpha = P, beta = 0 is ER(P)). Constants alpha, beta, P are ours "
        "(concurrency.generator.dp_*), swept in the DP table.",
        "Degree-matched controls (concurrency.degree_matched): ER p, BA m and WS k chosen so the expected mean degree equals "
        "DP's at each vertex count (BA's m and WS's even k to the nearest value they can take).",
        "Latency is a deterministic cost model (per-unit FLOP rate, link bandwidth, per-message latency; "
        "concurrency.latency), not measured on devices; the paper's 6-7x against FB on AWS t2.micro is not tested.",
        "Vertex weights are torch.utils.flop_counter FLOPs (one image); the sigmoid-weighted sums and pooling add "
        "no counted FLOPs.",
    ]


def build_section(s: StudySettings, result: StudyResult, summary_rows: list[dict], corr_rows: list[dict],
                  table4_rows: list[dict], metrics: dict, figures: list[Figure], measurements: dict[str, Estimate],
                  sanity: list[SanityCheck]) -> ReportSection:
    gens, sizes, units = s.generators, s.n_vertices, s.n_units
    allc = next(r for r in corr_rows if r["generator"] == "all")
    summary = (f"Sampled {metrics['graphs_scored']} random-graph architectures ({', '.join(label(g) for g in gens)}"
               + (f"; controls {', '.join(label(c) for c in s.controls)}" if s.controls else "")
               + f"; {', '.join(map(str, sizes))} vertices), partitioned each with Mt-KaHyPar onto n = "
               f"{', '.join(map(str, units))} units and scored with the concurrency score; traced the workload's "
               f"models into operator DAGs and scored them the same way. DP lowest mean CS in "
               f"{metrics['dp_lowest_cs_settings']}/{metrics['settings']} settings; CS vs simulated latency Spearman "
               f"rho = {allc['rho_latency']:.2f}.")
    return ReportSection(method=METHOD, title=TITLE, summary=summary,
                         tables=tables(result, summary_rows, corr_rows, table4_rows), figures=figures, notes=notes(s),
                         measurements=measurements, sanity=sanity)
