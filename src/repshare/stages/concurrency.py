"""DVC stage `concurrency`: the concurrency score (Hadidi et al., EDGE 2023) of sampled random-graph
architectures and of the workload's own models; figures, tables, metrics, report section.

The score saves no memory, so the stage writes no comparison rows. See docs/methods/concurrency.md.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from scipy import stats

from repshare.comparison import Figure, PaperClaim, ReportSection, Table, write_section
from repshare.concurrency import figures as figs
from repshare.concurrency.graphs import FIG5_EXAMPLES, GeneratorParams, parallel_chains, random_dag
from repshare.concurrency.latency import LinkModel
from repshare.concurrency.metrics import overlap, unit_cost
from repshare.concurrency.network import NetSpec, annotate
from repshare.concurrency.proxy import ProxyTraining, to_tensor_images, train_proxy
from repshare.concurrency.study import (Timer, dp_sweep, graph_seed, graph_summary, grouping_quality, mean_ci,
                                        sample_graphs, score_graph, score_sampled, staging_params, torch_threads,
                                        width_depth_rows)
from repshare.utils.io import atomic_dir, csv_text, write_json, write_text
from repshare.utils.runlog import RunLog

log = logging.getLogger("repshare.concurrency")
METHOD = "concurrency"
# Paper numbers quoted beside ours (camera-ready, IEEE EDGE 2023).
PAPER_TABLE4 = {"greedy": {"er": (48.63, 1.11), "ba": (48.33, 0.91), "ws": (42.03, 1.28), "dp": (35.03, 2.25)},
                "probabilistic": {"er": (46.03, 2.70), "ba": (45.63, 4.41), "ws": (36.44, 3.52), "dp": (26.69, 3.05)}}
PAPER_CIFAR_TOP1 = {"er": 81.33, "ba": 80.29, "ws": 79.89, "dp": 80.87}


def _science_objects(cfg: DictConfig) -> tuple[GeneratorParams, NetSpec, LinkModel, tuple[float, float, float]]:
    c = cfg.concurrency
    params = GeneratorParams(**OmegaConf.to_container(c.generator))
    spec = NetSpec(**OmegaConf.to_container(c.network), staging="probabilistic",
                   num_classes=int(cfg.data.num_classes))
    link = LinkModel(**OmegaConf.to_container(c.latency))
    return params, spec, link, tuple(float(e) for e in c.exponents)


def _workload_builders(cfg: DictConfig) -> list[dict]:
    """One entry per distinct architecture in the workload (the same config twice is traced once)."""
    from repshare.models.classifier import build_classifier
    from repshare.models.detector import build_detector
    from repshare.models.load import model_kwargs
    from repshare.workload import workload_models

    seen: dict[str, dict] = {}
    for m in workload_models(cfg.workload):
        kw = model_kwargs(cfg, m.name)  # FileNotFoundError names the missing trained weights
        mc = cfg.model[m.name]
        size = int(mc.image_size) if m.task == "detection" else int(mc.input_size or 224)
        arch_key = f"{m.task}:{mc.arch}:{mc.num_classes}:{size}"
        if arch_key in seen:
            seen[arch_key]["names"].append(m.name)
            continue
        builder = build_detector if m.task == "detection" else build_classifier
        seen[arch_key] = {"names": [m.name], "task": m.task, "arch": str(mc.arch), "size": size,
                          "build": (lambda b=builder, k=kw: b(**k))}
    return list(seen.values())


def _first_images(root: Path, split: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` images and labels of a prepared split, reading (and checksumming) only the
    shards needed: the proxy uses a few thousand images, not the whole split."""
    from repshare.data.shards import read_manifest
    from repshare.utils.io import sha256_file

    manifest = read_manifest(root)
    if split not in manifest["splits"]:
        raise KeyError(f"split {split!r} not in the manifest of {root}")
    images, labels, have = [], [], 0
    for shard in manifest["splits"][split]["shards"]:
        if have >= n:
            break
        path = root / shard["file"]
        if not path.is_file():
            raise FileNotFoundError(f"missing shard {path}")
        if sha256_file(path) != shard["sha256"]:
            raise ValueError(f"corrupted shard {path}: checksum differs from the manifest; rerun the prepare stage")
        with np.load(path, allow_pickle=False) as z:
            images.append(z["images"][: n - have])
            labels.append(z["labels"][: n - have].astype(np.int64))
        have += len(labels[-1])
    if have == 0:
        raise ValueError(f"prepared data in {root} has no {split} images; the proxy needs some")
    return np.concatenate(images), np.concatenate(labels)


def _proxy_data(cfg: DictConfig, image_size: int, n_train: int, n_eval: int):
    from repshare.data.shards import prepared_dir

    root = prepared_dir(cfg)
    tx, ty = _first_images(root, "train", n_train)
    vx, vy = _first_images(root, "val", n_eval)
    return (to_tensor_images(tx, image_size), torch.from_numpy(ty), to_tensor_images(vx, image_size), torch.from_numpy(vy))


def _summaries(rows: list[dict], generators, sizes, units) -> list[dict]:
    out = []
    for n_vertices in sizes:
        for n in units:
            for g in generators:
                best = [r for r in rows if r["generator"] == g and r["n_vertices"] == n_vertices
                        and r["n_units"] == n and r["best"]]
                if not best:
                    continue
                cs, lam = mean_ci([r["CS"] for r in best]), mean_ci([r["Lambda"] / 1e6 for r in best])
                sp, dw = mean_ci([r["speedup"] for r in best]), mean_ci([r["delta_w"] for r in best])
                eta = mean_ci([r["eta"] for r in best])
                out.append({"generator": g, "n_vertices": n_vertices, "n_units": n, "graphs": cs["n"],
                            "CS_mean": cs["mean"], "CS_lo": cs["lo"], "CS_hi": cs["hi"],
                            "Lambda_MB_mean": lam["mean"], "Lambda_MB_lo": lam["lo"], "Lambda_MB_hi": lam["hi"],
                            "delta_w_mean": dw["mean"], "eta_mean": eta["mean"],
                            "speedup_mean": sp["mean"], "speedup_lo": sp["lo"], "speedup_hi": sp["hi"]})
    return out


def _correlations(rows: list[dict], generators) -> list[dict]:
    """Spearman rho of CS with simulated latency (and with latency / serial latency), best rows."""
    out = []
    for g in [*generators, "all"]:
        best = [r for r in rows if r["best"] and (g == "all" or r["generator"] == g)]
        cs = [r["CS"] for r in best]
        lat = [r["latency_s"] for r in best]
        rel = [r["latency_s"] / r["serial_s"] for r in best]
        ok = len(best) >= 3 and np.ptp(cs) > 0
        rho = stats.spearmanr(cs, lat) if ok else None
        rho_rel = stats.spearmanr(cs, rel) if ok else None
        out.append({"generator": g, "points": len(best),
                    "rho_latency": float(rho.statistic) if rho else float("nan"),
                    "p_latency": float(rho.pvalue) if rho else float("nan"),
                    "rho_rel_latency": float(rho_rel.statistic) if rho_rel else float("nan"),
                    "p_rel_latency": float(rho_rel.pvalue) if rho_rel else float("nan")})
    return out


def run(cfg: DictConfig) -> dict[str, Any]:
    t_start, c_start = time.time(), time.process_time()
    c = cfg.concurrency
    results = Path(cfg.paths.results_dir)
    params, spec, link, exps = _science_objects(cfg)
    generators, sizes, units = list(c.generators), [int(v) for v in c.n_vertices], [int(n) for n in c.n_units]
    epsilons = [float(e) for e in c.epsilons]
    timer = Timer(log)
    # Inputs that can be missing are checked before any long computation.
    p = c.proxy
    proxy_cfg = ProxyTraining(steps=int(p.steps), batch_size=int(p.batch_size), lr=float(p.lr), n_eval=int(p.n_eval))
    with timer("load_inputs"):
        builders = _workload_builders(cfg) if c.score_workload else []
        proxy_data = _proxy_data(cfg, spec.image_size, int(p.n_train), int(p.n_eval)) if p.archs_per_generator else None

    with timer("sample_annotate"), torch_threads(1):
        graphs = sample_graphs(generators, sizes, int(c.graphs_per_generator), params, spec, int(c.seed))
    with timer("partition_score_latency"):
        rows, u_c = score_sampled(graphs, units, epsilons, exps, link, int(c.seed))
    with timer("grouping"):
        group_rows = grouping_quality([g for g in graphs if g["n_vertices"] == sizes[0]], list(c.grouping_units))
    with timer("staging_params"), torch_threads(1):
        stage_rows = staging_params(generators, sizes[0], int(c.staging_samples), params, spec, int(c.seed))
    wd_rows = []
    for g in generators:
        wd_rows += width_depth_rows(g, [x["dag"] for x in graphs if x["generator"] == g and x["n_vertices"] == sizes[0]])

    workload_rows: list[dict] = []
    common_uc = min(u_c.values())
    with timer("workload_trace_score"), torch_threads(1):
        from repshare.concurrency.trace import operator_dag

        for b in builders:
            model = b["build"]()
            dag = operator_dag(model, torch.zeros(1, 3, b["size"], b["size"]))
            del model
            label = "+".join(b["names"])
            wd_rows += width_depth_rows(label, [dag])
            own_uc = unit_cost(dag)
            summary = graph_summary(dag)
            for r in score_graph(dag, [n for n in units if n <= dag.number_of_nodes()], epsilons, own_uc, exps,
                                 link, int(c.seed)):
                lam_common = r["Lambda"] / (common_uc * r["n_units"])
                cs_common = (r["delta_w"] ** exps[0] * lam_common ** exps[1] * r["eta"] ** exps[2]) ** (1 / 3)
                workload_rows.append({"model": label, "task": b["task"], "arch": b["arch"], "input_size": b["size"],
                                      "vertices": dag.number_of_nodes(), **summary, **r,
                                      "CS_generator_uc": cs_common, "generator_unit_cost": common_uc})

    proxy_rows: list[dict] = []
    with timer("proxy_training"), torch_threads(1):  # small convs: a second thread only spins
        n_proxy = int(p.n_vertices)
        proxy_spec = NetSpec(base_channels=int(p.base_channels), max_channels=int(p.max_channels),
                             image_size=spec.image_size, min_resolution=spec.min_resolution, staging="probabilistic",
                             stage_prob=spec.stage_prob, num_classes=spec.num_classes)
        n_score = min(units[0], n_proxy)
        for gi, g in enumerate(generators):
            for k in range(int(p.archs_per_generator)):
                s = graph_seed(int(c.seed), gi, n_proxy, 20_000 + k)
                dag = annotate(random_dag(g, n_proxy, s, params), proxy_spec, s)
                scored = score_graph(dag, [n_score], epsilons, unit_cost(dag), exps, link, int(c.seed))
                best = next(r for r in scored if r["best"])
                res = train_proxy(dag, proxy_spec, *proxy_data, proxy_cfg, seed=s)
                proxy_rows.append({"generator": g, "arch": k, "n_vertices": n_proxy, "n_units": n_score,
                                   "CS": best["CS"], "eta": best["eta"], "top1": res["top1"], "params": res["params"],
                                   "train_seconds": res["train_seconds"], "final_loss": res["final_loss"],
                                   "steps": proxy_cfg.steps})
    with timer("dp_sweep"), torch_threads(1):
        s = c.dp_sweep
        sweep_rows = dp_sweep(list(s.alphas), list(s.betas), params.dp_p, int(s.n_vertices), int(s.n_units),
                              int(s.graphs), epsilons, exps, spec, link, int(c.seed)) if s.graphs else []

    summary_rows = _summaries(rows, generators, sizes, units)
    corr_rows = _correlations(rows, generators)
    table4 = _table4(stage_rows, generators)
    examples = [(name, parallel_chains(lengths), 3, paper_eta) for name, lengths, paper_eta in FIG5_EXAMPLES]
    fig5_rows = [{"example": name, "n_units": n, "eta": overlap(dag, n), "paper_eta": pe} for name, dag, n, pe in examples]
    n_graph_scored = len(graphs)
    score_seconds = timer.seconds["sample_annotate"] + timer.seconds["partition_score_latency"]
    metrics = _metrics(summary_rows, corr_rows, workload_rows, proxy_rows, group_rows, generators, sizes, units,
                       n_graph_scored, score_seconds)

    out = results / METHOD
    with timer("write_outputs"), atomic_dir(out) as tmp:
        write_text(tmp / "graphs.csv", csv_text(rows))
        write_text(tmp / "summary.csv", csv_text(summary_rows))
        write_text(tmp / "workload.csv", csv_text(workload_rows))
        write_text(tmp / "latency_correlation.csv", csv_text(corr_rows))
        write_text(tmp / "grouping.csv", csv_text(group_rows))
        write_text(tmp / "staging_params.csv", csv_text(stage_rows))
        write_text(tmp / "table4.csv", csv_text(table4))
        write_text(tmp / "width_depth.csv", csv_text(wd_rows))
        write_text(tmp / "proxy.csv", csv_text(proxy_rows))
        write_text(tmp / "dp_sweep.csv", csv_text(sweep_rows))
        write_text(tmp / "fig5_eta.csv", csv_text(fig5_rows))
        write_json(tmp / "unit_costs.json", {"per_generator_bytes": u_c, "common_bytes": common_uc})
        fd = tmp / "figures"
        figs.fig9_cs(rows, generators, sizes, units, fd / "fig9_cs")
        figs.fig7_communication(rows, generators, sizes, units, fd / "fig7_communication")
        figs.fig8_speedup(rows, generators, sizes, units, fd / "fig8_speedup")
        figs.fig10_width_depth(wd_rows, fd / "fig10_width_depth")
        figs.table4_params(stage_rows, generators, fd / "table4_params")
        figs.fig5_examples(examples, fd / "fig5_eta")
        figs.fig12_grouping(group_rows, generators, list(c.grouping_units), fd / "fig12_grouping")
        figs.fig_cs_vs_latency(rows, generators, sizes[0], units, fd / "cs_vs_latency")
        if proxy_rows:
            figs.fig_proxy(proxy_rows, fd / "proxy_accuracy")
        write_section(tmp / "section.json", _section(cfg, summary_rows, corr_rows, workload_rows, proxy_rows,
                                                     group_rows, table4, fig5_rows, sweep_rows, metrics,
                                                     generators, sizes, units))
    metrics_dir = results / "metrics"
    write_json(metrics_dir / "concurrency.json", metrics)
    write_text(results / "plots" / "concurrency_cs.csv",
               csv_text([{"setting": f"{r['generator']} V={r['n_vertices']} n={r['n_units']}",
                          "generator": r["generator"], "CS": r["CS_mean"]} for r in summary_rows]))
    write_text(results / "plots" / "concurrency_cs_latency.csv",
               csv_text([{"CS": r["CS"], "latency_ms": 1e3 * r["latency_s"], "generator": r["generator"]}
                         for r in rows if r["best"] and r["n_vertices"] == sizes[0]]))
    with RunLog(cfg, METHOD, metrics_dir) as runlog:  # provenance beside the metrics, outside the hashed outs
        runlog.summary(**metrics, phase_seconds={k: round(v, 2) for k, v in timer.seconds.items()},
                       phase_cpu_seconds={k: round(v, 2) for k, v in timer.cpu_seconds.items()},
                       seconds_total=round(time.time() - t_start, 1), cpu_seconds_total=round(time.process_time() - c_start, 1))
        runlog.log_table("concurrency_summary", summary_rows)
        runlog.log_table("concurrency_workload", [{k: v for k, v in r.items()} for r in workload_rows])
        runlog.log_table("concurrency_latency_correlation", corr_rows)
        runlog.log_table("concurrency_proxy", proxy_rows)
        runlog.log_table("concurrency_table4", table4)
    log.info("concurrency: %d graphs scored in %.1f s; phases %s", n_graph_scored, time.time() - t_start,
             {k: round(v, 1) for k, v in timer.seconds.items()})
    return {**metrics, "phase_seconds": dict(timer.seconds), "phase_cpu_seconds": dict(timer.cpu_seconds)}


def _table4(stage_rows: list[dict], generators) -> list[dict]:
    out = []
    for staging in ("greedy", "probabilistic"):
        for g in generators:
            pk = np.array([r["params"] for r in stage_rows if r["generator"] == g and r["staging"] == staging]) / 1e3
            ci = mean_ci(pk.tolist())
            paper = PAPER_TABLE4[staging].get(g)
            out.append({"staging": staging, "generator": g, "samples": int(pk.size),
                        "params_k_mean": float(pk.mean()), "params_k_sd": float(pk.std(ddof=1)) if pk.size > 1 else 0.0,
                        "params_k_lo": ci["lo"], "params_k_hi": ci["hi"],
                        "paper_mean": paper[0] if paper else None, "paper_sd": paper[1] if paper else None})
    return out


def _metrics(summary_rows, corr_rows, workload_rows, proxy_rows, group_rows, generators, sizes, units,
             n_graphs: int, score_seconds: float) -> dict:
    m: dict[str, Any] = {"graphs_scored": n_graphs, "graphs_per_second": round(n_graphs / max(score_seconds, 1e-9), 3)}
    for g in generators:
        cs = [r["CS_mean"] for r in summary_rows if r["generator"] == g]
        m[f"cs_mean_{g}"] = round(float(np.mean(cs)), 4) if cs else None
        sp = [r["speedup_mean"] for r in summary_rows if r["generator"] == g]
        m[f"speedup_mean_{g}"] = round(float(np.mean(sp)), 4) if sp else None
    wins = 0
    for n_vertices in sizes:
        for n in units:
            sub = [r for r in summary_rows if r["n_vertices"] == n_vertices and r["n_units"] == n]
            if sub and min(sub, key=lambda r: r["CS_mean"])["generator"] == "dp":
                wins += 1
    m["dp_lowest_cs_settings"] = wins
    m["settings"] = len(sizes) * len(units)
    for r in corr_rows:
        m[f"rho_cs_latency_{r['generator']}"] = None if np.isnan(r["rho_latency"]) else round(r["rho_latency"], 4)
    for r in workload_rows:
        if r["best"]:
            key = r["model"].replace("+", "_")
            m[f"workload_{key}_cs_n{r['n_units']}"] = round(r["CS"], 4)
            m[f"workload_{key}_eta_n{r['n_units']}"] = round(r["eta"], 4)
    for g in generators:
        acc = [r["top1"] for r in proxy_rows if r["generator"] == g]
        if acc:
            m[f"proxy_top1_{g}"] = round(float(np.mean(acc)), 4)
    return m


def _fmt_ci(ci: dict, digits: int = 2) -> str:
    return f"{ci['mean']:.{digits}f} [{ci['lo']:.{digits}f}, {ci['hi']:.{digits}f}]"


def _section(cfg, summary_rows, corr_rows, workload_rows, proxy_rows, group_rows, table4, fig5_rows, sweep_rows,
             metrics, generators, sizes, units) -> ReportSection:
    c = cfg.concurrency
    n_graphs = int(c.graphs_per_generator)
    claims: list[PaperClaim] = []
    # 1. DP has the best (lowest) CS.
    settings = metrics["settings"]
    wins = metrics["dp_lowest_cs_settings"]
    mean_cs = ", ".join(f"{figs._label(g)} {metrics[f'cs_mean_{g}']:.2f}" for g in generators)
    if "dp" in generators:
        claims.append(PaperClaim(
            claim="The DP generator consistently gets the best (lowest) concurrency score (Fig. 9).",
            paper="DP lowest CS in every setting (1000 graphs per generator, 40/80 vertices, n = 4-10)",
            ours=f"DP lowest mean CS in {wins}/{settings} (vertices, n) settings; mean CS over settings: {mean_cs} "
                 f"({n_graphs} graphs per generator and size)",
            verdict="holds" if wins == settings else ("partly" if wins > 0 else "does not"),
            note="Per-setting means with 95 % t-CIs in the table below; DP constants are ours (not in the paper)."))
    # 2. Workload models are single-chain.
    for r in [w for w in workload_rows if w["best"] and w["n_units"] == units[0]]:
        claims.append(PaperClaim(
            claim=f"Well-known architectures are single-chain, limiting concurrency ({r['model']}).",
            paper="ResNet-50 / RandWire: width 1 over most depths (Fig. 10), qualitative",
            ours=f"{r['arch']}: eta = {r['eta']:.2f} at n = {r['n_units']} (eta = n means one chain); longest path "
                 f"{r['longest_path']} of {r['vertices'] - 2} operators; max width {r['max_width']}; CS {r['CS']:.1f}",
            verdict="holds" if r["eta"] >= 0.8 * r["n_units"] else ("partly" if r["eta"] >= 0.5 * r["n_units"] else "does not"),
            note="Operator DAG by torch.fx; CS uses the model's own smallest tensor as U_c (see notes)."))
    # 3. ER/BA more communication.
    lam = {g: float(np.mean([r["Lambda_MB_mean"] for r in summary_rows if r["generator"] == g])) for g in generators}
    claims.append(PaperClaim(
        claim="ER and BA suffer more from data communication than DP (Fig. 7).",
        paper="ER/BA highest total communication (MB), DP lowest (40 vertices, n = 4-10)",
        ours="mean total communication (MB, best partition): " + ", ".join(f"{figs._label(g)} {lam[g]:.2f}" for g in generators),
        verdict=("holds" if {"er", "ba", "dp"} <= set(lam) and min(lam["er"], lam["ba"]) > lam["dp"] else "partly")
        if {"er", "ba", "dp"} <= set(lam) else "not tested"))
    # 4. Speedup of DP.
    if "dp" in generators:
        claims.append(PaperClaim(
            claim="DP architectures run 6-7x faster (Fig. 8).",
            paper="6-7x lower inference time, normalised to RandWire (FB), measured on cloud instances",
            ours=f"simulated speedup over one unit (mean over sizes and n): DP {metrics['speedup_mean_dp']:.2f}x; "
                 + ", ".join(f"{figs._label(g)} {metrics[f'speedup_mean_{g}']:.2f}x" for g in generators if g != "dp"),
            verdict="not tested",
            note="Ours is a simulation (per-unit FLOP rate, link bandwidth) against one unit, not RandWire on real "
                 "devices, so the numbers are not comparable; the ordering is what we can check."))
    # 5. CS tracks latency.
    allc = next(r for r in corr_rows if r["generator"] == "all")
    claims.append(PaperClaim(
        claim="The concurrency score relates closely to latency and communication.",
        paper="qualitative (Figs. 7-9)",
        ours=f"Spearman rho(CS, simulated latency) over all best partitions = {allc['rho_latency']:.2f} "
             f"(p = {allc['p_latency']:.2g}, {allc['points']} points); rho with latency / one-unit latency = "
             f"{allc['rho_rel_latency']:.2f}",
        verdict="holds" if allc["rho_latency"] >= 0.5 else ("partly" if allc["rho_latency"] > 0.2 else "does not"),
        note="Per-generator rho in the latency table."))
    # 6. Table IV.
    t4 = {(r["staging"], r["generator"]): r for r in table4}
    greedy_bigger = all(t4[("greedy", g)]["params_k_mean"] > t4[("probabilistic", g)]["params_k_mean"] for g in generators)
    greedy_stabler = all(t4[("greedy", g)]["params_k_sd"] < t4[("probabilistic", g)]["params_k_sd"] for g in generators)
    claims.append(PaperClaim(
        claim="Greedy staging gives larger but more stable architectures than probabilistic staging (Table IV).",
        paper="; ".join(f"{figs._label(g)} greedy {PAPER_TABLE4['greedy'][g][0]} +- {PAPER_TABLE4['greedy'][g][1]}, "
                        f"prob. {PAPER_TABLE4['probabilistic'][g][0]} +- {PAPER_TABLE4['probabilistic'][g][1]}"
                        for g in generators if g in PAPER_TABLE4["greedy"]) + " (units not stated)",
        ours="; ".join(f"{figs._label(g)} greedy {t4[('greedy', g)]['params_k_mean']:.0f}k +- {t4[('greedy', g)]['params_k_sd']:.0f}k, "
                       f"prob. {t4[('probabilistic', g)]['params_k_mean']:.0f}k +- {t4[('probabilistic', g)]['params_k_sd']:.0f}k"
                       for g in generators),
        verdict="holds" if greedy_bigger and greedy_stabler else ("partly" if greedy_bigger or greedy_stabler else "does not"),
        note="Our channel plan (base, cap, image size) is ours; absolute sizes differ, the comparison is the point."))
    # 7. Fig. 5 examples.
    ok = all(abs(r["eta"] - r["paper_eta"]) < 1e-9 for r in fig5_rows)
    claims.append(PaperClaim(
        claim="Overlap eta of the Fig. 5 examples.",
        paper=", ".join(f"{r['example']} {r['paper_eta']:g}" for r in fig5_rows),
        ours=", ".join(f"{r['example']} {r['eta']:.2f}" for r in fig5_rows),
        verdict="holds" if ok else "does not"))
    # 8. Grouping quality degrades with units (the paper's example graphs are DP-like: several pieces).
    gq_gen = "dp" if "dp" in generators else generators[0]
    med = {n: float(np.median([r["entropy_vertices"] for r in group_rows
                               if r["work_units"] == n and r["generator"] == gq_gen]))
           for n in sorted({r["work_units"] for r in group_rows})}
    single = {g: float(np.mean([r["entropy_vertices"] == 0.0 for r in group_rows
                                if r["generator"] == g and r["work_units"] == min(med)])) for g in generators}
    ns = sorted(med)
    claims.append(PaperClaim(
        claim="The greedy grouping's load-balance quality degrades as units increase (Fig. 12).",
        paper="median normalised entropy falls from ~1.0 (2 units) to ~0.8 (8 units)",
        ours=f"{figs._label(gq_gen)} graphs, median normalised entropy: " + ", ".join(f"{n} units {med[n]:.2f}" for n in ns)
             + "; share of graphs that are one piece (entropy 0): "
             + ", ".join(f"{figs._label(g)} {single[g]:.0%}" for g in generators),
        verdict="holds" if len(ns) > 1 and med[ns[-1]] < med[ns[0]] else "does not",
        note="grouping = connected pieces without input/output (the paper's code); a graph that stays one piece "
             "puts all work on one unit."))
    # 9. Accuracy.
    if proxy_rows:
        acc = {g: mean_ci([r["top1"] * 100 for r in proxy_rows if r["generator"] == g]) for g in generators}
        claims.append(PaperClaim(
            claim="Concurrent architectures keep competitive accuracy (Tables V-VI).",
            paper="CIFAR-10 mean top-1: " + ", ".join(f"{figs._label(g)} {PAPER_CIFAR_TOP1[g]}" for g in generators
                                                       if g in PAPER_CIFAR_TOP1) + " (100 epochs)",
            ours="shapes at 32 px, proxy top-1 %: " + ", ".join(f"{figs._label(g)} {_fmt_ci(acc[g], 1)}" for g in generators),
            verdict="not tested",
            note=f"{int(c.proxy.steps)} training steps of {int(c.proxy.archs_per_generator)} small "
                 f"{int(c.proxy.n_vertices)}-vertex architectures per generator: a proxy, not the paper's training."))

    sum_tbl = Table(
        title="CS, communication and simulated speedup per generator (best epsilon per graph; mean [95 % CI])",
        columns=["generator", "vertices", "n", "graphs", "CS", "Lambda (MB)", "delta_w", "eta", "speedup"],
        rows=[{"generator": figs._label(r["generator"]), "vertices": r["n_vertices"], "n": r["n_units"],
               "graphs": r["graphs"], "CS": f"{r['CS_mean']:.2f} [{r['CS_lo']:.2f}, {r['CS_hi']:.2f}]",
               "Lambda (MB)": f"{r['Lambda_MB_mean']:.2f} [{r['Lambda_MB_lo']:.2f}, {r['Lambda_MB_hi']:.2f}]",
               "delta_w": round(r["delta_w_mean"], 3), "eta": round(r["eta_mean"], 2),
               "speedup": f"{r['speedup_mean']:.2f} [{r['speedup_lo']:.2f}, {r['speedup_hi']:.2f}]"}
              for r in summary_rows])
    wl_tbl = Table(
        title="The workload's own models (operator DAGs by torch.fx; best epsilon per n)",
        columns=["model", "operators", "n", "delta_w", "Lambda (MB)", "eta", "CS (own U_c)", "CS (generator U_c)",
                 "speedup"],
        rows=[{"model": r["model"], "operators": r["vertices"] - 2, "n": r["n_units"], "delta_w": round(r["delta_w"], 3),
               "Lambda (MB)": round(r["Lambda"] / 1e6, 3), "eta": round(r["eta"], 2), "CS (own U_c)": round(r["CS"], 2),
               "CS (generator U_c)": round(r["CS_generator_uc"], 2), "speedup": round(r["speedup"], 2)}
              for r in workload_rows if r["best"]],
        caption="The workload's models are the ones the memory-sharing methods merge; eta near n = single chain.")
    corr_tbl = Table(
        title="Spearman correlation of CS with simulated latency (best partitions, all sizes and n)",
        columns=["generator", "points", "rho (latency)", "p", "rho (latency / one-unit latency)"],
        rows=[{"generator": figs._label(r["generator"]), "points": r["points"],
               "rho (latency)": round(r["rho_latency"], 3), "p": f"{r['p_latency']:.2g}",
               "rho (latency / one-unit latency)": round(r["rho_rel_latency"], 3)} for r in corr_rows])
    t4_tbl = Table(
        title="Table IV: parameters of sampled networks (thousands), greedy vs probabilistic staging",
        columns=["staging", "generator", "samples", "mean (k)", "sd (k)", "paper mean", "paper sd"],
        rows=[{"staging": r["staging"], "generator": figs._label(r["generator"]), "samples": r["samples"],
               "mean (k)": round(r["params_k_mean"], 1), "sd (k)": round(r["params_k_sd"], 1),
               "paper mean": r["paper_mean"], "paper sd": r["paper_sd"]} for r in table4])
    tables = [sum_tbl, wl_tbl, corr_tbl, t4_tbl]
    if proxy_rows:
        tables.append(Table(
            title="Accuracy proxy (brief training at 32 px on the shapes images)",
            columns=["generator", "arch", "CS", "top-1 (%)", "params", "train s"],
            rows=[{"generator": figs._label(r["generator"]), "arch": r["arch"], "CS": round(r["CS"], 2),
                   "top-1 (%)": round(100 * r["top1"], 1), "params": r["params"],
                   "train s": round(r["train_seconds"], 1)} for r in proxy_rows]))
    if sweep_rows:
        tables.append(Table(
            title="DP generator constants (Eq. 1; not given in the paper): CS at one size",
            columns=["alpha", "beta", "graphs", "DAG edges", "CS", "eta"],
            rows=[{"alpha": a, "beta": b, "graphs": len(sub), "DAG edges": round(float(np.mean([r["edges"] for r in sub])), 1),
                   "CS": _fmt_ci(mean_ci([r["CS"] for r in sub])), "eta": round(float(np.mean([r["eta"] for r in sub])), 2)}
                  for a, b in dict.fromkeys((r["alpha"], r["beta"]) for r in sweep_rows)
                  for sub in [[r for r in sweep_rows if r["alpha"] == a and r["beta"] == b]]]))
    figures = [
        Figure("figures/fig9_cs.png", "Fig. 9: CS per generator, vertex count and number of units (lower = more concurrent)."),
        Figure("figures/fig7_communication.png", "Fig. 7: total communication Lambda (km1 of output bytes) of the best partition."),
        Figure("figures/fig8_speedup.png", "Simulated speedup of the partitioned graph over one unit (our stand-in for Fig. 8)."),
        Figure("figures/cs_vs_latency.png", "CS against simulated distributed latency: does the score predict latency?"),
        Figure("figures/fig10_width_depth.png", "Fig. 10: width per depth; the workload's models are long single chains."),
        Figure("figures/table4_params.png", "Table IV: parameters with greedy vs probabilistic staging."),
        Figure("figures/fig5_eta.png", "Fig. 5: the overlap metric eta on the paper's four examples, computed by our code."),
        Figure("figures/fig12_grouping.png", "Fig. 12: load balance of the paper's grouping + assign_workload."),
    ]
    if proxy_rows:
        figures.append(Figure("figures/proxy_accuracy.png", "Proxy accuracy beside CS (brief training; Fig. 2 in spirit)."))
    notes = [
        f"Sampled graphs: {n_graphs} per generator and vertex count (the paper: 1000; concurrency.graphs_per_generator).",
        "Partitioner: Mt-KaHyPar, deterministic preset, km1 objective, one thread; each graph is partitioned at every "
        f"epsilon in {list(c.epsilons)} (concurrency.epsilons); every row is kept in graphs.csv and the lowest CS is "
        "reported (the paper does not say how it combines the options).",
        "U_c (Lambda' = Lambda / (U_c n)) is the smallest net cost (output bytes) over each generator's graphs; the "
        "workload models use their own smallest tensor, and also the generators' smallest (column 'generator U_c').",
        "DP Eq. 1 is implemented as printed, P_new = alpha * P^(beta d); at beta = 0 it is independent of distance "
        "with probability alpha (so alpha = P, beta = 0 is ER(P)). Constants alpha, beta, P are ours "
        "(concurrency.generator.dp_*), swept in the DP table.",
        "Latency is simulated (per-unit FLOP rate, link bandwidth, per-message latency; concurrency.latency), "
        "not measured on devices.",
        "Vertex weights are torch.utils.flop_counter FLOPs (one image); the sigmoid-weighted sums and pooling add "
        "no counted FLOPs.",
    ]
    summary = (f"Sampled {metrics['graphs_scored']} random-graph architectures ({', '.join(figs._label(g) for g in generators)}; "
               f"{', '.join(map(str, sizes))} vertices), partitioned each with Mt-KaHyPar onto n = "
               f"{', '.join(map(str, units))} units and scored with the concurrency score; traced the workload's "
               f"models into operator DAGs and scored them the same way. DP lowest CS in {wins}/{settings} settings; "
               f"CS vs simulated latency Spearman rho = {allc['rho_latency']:.2f}.")
    return ReportSection(method=METHOD, title="Concurrency score (Hadidi et al., EDGE 2023)", summary=summary,
                         claims=claims, tables=tables, figures=figures, notes=notes)
