"""DVC stage ``placement`` (MEEdge part 2): HPF branch placement under memory and search-time
budgets, the memory-elastic device-server loop, and the paper's baselines.

Reads part 1's ``results/multiexit/profiles.json`` (survivors = candidates; self-merged survivors
also as ``<id>+merged`` with merged params and recovered accuracy) and, for the baselines, part 1's
exit-feature cache (``results/multiexit/features``), on which part 1's ``train_branches`` trains the
baselines' branches. Writes ``results/placement/`` (tables, figures, comparison_rows.json,
section.json), ``results/metrics/placement.json`` and two DVC plot tables.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from repshare.multiexit.baselines import BASELINE_LABELS, BaselineConfig, baseline_specs, spinn_exits
from repshare.multiexit.mae import step_profile
from repshare.multiexit.placement import (
    MONTE_CARLO,
    VARIANT_LABELS,
    Placement,
    Problem,
    bootstrap_values,
    candidates_from_profiles,
    convex_hull_ids,
    exact_optimum,
    greedy_order,
    hull_refine,
    make_problem,
    place,
    priority_order,
)
from repshare.multiexit.simulate import simulate_elastic, simulate_static

log = logging.getLogger("repshare")
METHOD = "meedge_placement"


def out_dir(cfg: DictConfig) -> Path:
    return Path(cfg.paths.results_dir) / "placement"


def profiles_path(cfg: DictConfig) -> Path:
    return Path(cfg.paths.results_dir) / "multiexit" / "profiles.json"


# --------------------------------------------------------------------------- small helpers
def t_ci(values: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) with a Student-t interval (NaN bounds for fewer than 2 values)."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    m = float(v.mean())
    if len(v) < 2 or float(v.std(ddof=1)) == 0.0:
        return m, (m if len(v) >= 2 else math.nan), (m if len(v) >= 2 else math.nan)
    lo, hi = stats.t.interval(level, len(v) - 1, loc=m, scale=stats.sem(v))
    return m, float(lo), float(hi)


def pct_ci(samples: np.ndarray) -> tuple[float, float]:
    s = samples[np.isfinite(samples)]
    if s.size == 0:
        return math.nan, math.nan
    return float(np.percentile(s, 2.5)), float(np.percentile(s, 97.5))


def gain_pct(a: float, b: float) -> float:
    return 100.0 * (a / b - 1.0) if b > 0 else math.inf


class Placer:
    """The server's placement for a budget, memoised (the trace revisits budgets)."""

    def __init__(self, problem: Problem, variant: str, order: list[int], pc: DictConfig):
        self.problem, self.variant, self.order, self.pc = problem, variant, order, pc
        self.cache: dict[float, Placement] = {}

    def __call__(self, budget: float) -> Placement:
        if budget not in self.cache:
            self.cache[budget] = place(self.problem, self.variant, budget, search_time_s=self.pc.search_time_s,
                                       node_budget=self.pc.node_budget, order=self.order,
                                       prune_nonimproving=bool(self.pc.prune_nonimproving))
        return self.cache[budget]


def variant_orders(problem: Problem, pc: DictConfig) -> dict[tuple[str, int], list[int]]:
    """Each variant's priority order (budget-free), per seed for the Monte-Carlo ones."""
    greedy, _ = greedy_order(problem)
    orders: dict[tuple[str, int], list[int]] = {}
    for v in pc.variants:
        if v in MONTE_CARLO:
            for s in pc.mc_seeds:
                orders[(v, int(s))] = priority_order(problem, v, mc_samples=int(pc.mc_samples), seed=int(s))
        elif v == "m0":
            orders[(v, 0)] = priority_order(problem, "m0")
        elif v in ("m5", "m6"):
            orders[(v, 0)] = list(greedy)
        else:
            orders[(v, 0)] = hull_refine(greedy, convex_hull_ids(problem))
    return orders


def placement_row(problem: Problem, res: Placement, fraction: float, seed: int, rows: list[dict]) -> dict[str, Any]:
    by_id = {r["id"]: r for r in rows}
    sel = [by_id[i] for i in res.selected]
    merged = [r for r in sel if r.get("merged")]
    return {
        "budget_fraction": fraction, "budget_bytes": res.memory_budget, "budget_kib": res.memory_budget / 1024,
        "variant": res.variant, "seed": seed, "mae": res.value, "memory_bytes": res.memory_bytes,
        "n_branches": len(sel), "selected": " ".join(res.selected), "nodes": res.nodes,
        "search_s": res.search_s, "stopped_by": res.stopped_by or "",
        "n_merged": len(merged),
        "bytes_saved_by_merging": int(sum((r["params_unmerged"] - r["params"]) for r in merged) * problem_bpp(problem, sel)),
        "flops": int(sum(r.get("flops", 0) for r in sel)), "message": res.message,
    }


def problem_bpp(problem: Problem, sel: list[dict]) -> int:
    """Bytes per parameter the problem used (bytes / params of any selected row)."""
    for r in sel:
        k = problem.ids.index(r["id"])
        return int(round(problem.bytes[k] / r["params"]))
    return 4


# --------------------------------------------------------------------------- baselines
def train_baselines(cfg: DictConfig, doc: dict, pc: DictConfig) -> tuple[dict[str, list[dict]], dict, list[str]]:
    """Each baseline's branch profiles (mean over seeds), timing info, notes."""
    b = pc.baselines
    exits = [int(e) for e in doc["backbone"]["exits"]]
    bcfg = BaselineConfig(pool=int(b.pool), exits=tuple(exits), spinn_fractions=tuple(b.spinn_fractions),
                          spinn_conv=str(b.spinn_conv), spinn_kernel=int(b.spinn_kernel),
                          branchynet_exits=tuple(int(e) for e in b.branchynet_exits),
                          branchynet_conv=str(b.branchynet_conv), branchynet_kernel=int(b.branchynet_kernel),
                          branchynet_n_conv=int(b.branchynet_n_conv), branchynet_fc=tuple(int(w) for w in b.branchynet_fc))
    out: dict[str, list[dict]] = {"single_exit": []}
    info: dict[str, Any] = {"train_seconds": 0.0, "images_seen": 0}
    if not b.train:
        return out, info, ["baselines.train is false: only the single-exit baseline (one-FC, SPINN-like and "
                           "BranchyNet-like were not run)"]
    import timm
    import torch

    from repshare.multiexit.baselines import fit_to_maps, stage_flops, train_baseline_branches
    from repshare.stages.branches import fit_rows, open_caches

    t0 = time.perf_counter()
    # FLOPs depend on the architecture and the input size only: a fresh timm model will do.
    c = cfg.model.classifier
    model = timm.create_model(str(c.arch), pretrained=False, num_classes=int(c.num_classes)).eval()
    size = int(c.input_size) if c.input_size is not None else int(model.pretrained_cfg["input_size"][-1])
    flops = stage_flops(model, torch.zeros(1, 3, size, size))  # stem, stage 1..7
    cum = np.cumsum(flops)
    at = spinn_exits({e: float(cum[e]) for e in exits}, float(cum[-1]), list(b.spinn_fractions))
    info["stage_flops"] = [int(f) for f in flops]
    info["spinn_exits"] = at
    tr, va = open_caches(cfg, exits)
    fit, _ = fit_rows(cfg, len(tr))
    shapes = {e: tuple(int(v) for v in tr.features[e].shape[1:]) for e in exits}
    train_feats = {e: np.ascontiguousarray(tr.features[e][fit]) for e in exits}
    val_feats = {e: va.features[e] for e in exits}
    mt = cfg.multiexit.train
    num_classes = int(doc.get("num_classes", cfg.model.classifier.num_classes))
    fit_notes: list[str] = []
    zoo_rows = _zoo_profiles(cfg) if b.reuse_zoo else {}
    reused = 0
    for name in ("one_fc", "spinn", "branchynet"):
        specs, why = fit_to_maps(baseline_specs(name, bcfg, at), shapes)
        fit_notes += [f"{BASELINE_LABELS[name]}: {w}" for w in why]
        # A spec part 1's zoo already trained (same structure, same exit, same data) is not trained twice.
        from_zoo = [dict(zoo_rows[s.id], reused_from_zoo=True) for s in specs if s.id in zoo_rows]
        reused += len(from_zoo)
        todo = [s for s in specs if s.id not in zoo_rows]
        per_seed = []
        for s in (b.seeds if todo else []):
            per_seed.append(train_baseline_branches(
                todo, train_feats, tr.labels[fit], val_feats, va.labels, shapes, num_classes,
                epochs=float(mt.epochs), batch_size=int(mt.batch_size), lr=float(mt.lr),
                weight_decay=float(mt.weight_decay), seed=int(s),
                latency_repeats=int(cfg.multiexit.latency.repeats), latency_warmup=int(cfg.multiexit.latency.warmup)))
        rows = list(from_zoo)
        for k, r in enumerate(per_seed[0] if per_seed else []):
            accs = [ps[k]["accuracy"] for ps in per_seed]
            row = dict(r)
            row["accuracy"] = float(np.mean(accs))
            row["accuracy_seeds"] = accs
            row["branch_latency_s"] = float(np.median([ps[k]["branch_latency_s"] for ps in per_seed]))
            row["train_seconds"] = float(sum(ps[k]["train_seconds"] for ps in per_seed))
            rows.append(row)
        out[name] = sorted(rows, key=lambda r: r["exit"])
        info["images_seen"] += int(sum(r["images_seen"] for ps in per_seed for r in ps))
    info["train_seconds"] = time.perf_counter() - t0
    info["n_fit"] = int(len(fit))
    notes = [f"baselines trained by part 1's train_branches on part 1's cached features ({len(fit)} images, "
             f"{mt.epochs} epochs, seeds {list(b.seeds)}); SPINN-like exits at FLOP fractions "
             f"{list(b.spinn_fractions)} snapped to stage boundaries -> exits {at}; {reused} baseline branches "
             f"are specs part 1's zoo had trained and were reused from its zoo.json"] + fit_notes
    info["reused_from_zoo"] = reused
    info["notes"] = fit_notes
    return out, info, notes


# --------------------------------------------------------------------------- the stage
def run(cfg: DictConfig) -> dict:
    from repshare.comparison import write_rows, write_section
    from repshare.multiexit.placement_figures import fig7_time_accuracy, fig8_mae_vs_budget, fig9a_bars, fig9b_trace
    from repshare.multiexit.profile import read_profiles
    from repshare.utils.io import atomic_dir, write_json, write_text
    from repshare.utils.runlog import RunLog
    from repshare.workload import weight_bytes, workload_models

    t_start = time.perf_counter()
    pc = cfg.placement
    results = Path(cfg.paths.results_dir)
    # ---- inputs (every bad input fails here, before anything is written)
    models = {m.name: m for m in workload_models(cfg.workload)}
    if pc.model_name not in models:
        raise ValueError(f"placement.model_name={pc.model_name!r} is not a workload model ({', '.join(models)})")
    wl_bytes = 0
    for name in models:
        f = results / "models" / name / "model.safetensors"
        if not f.is_file():
            raise FileNotFoundError(f"missing {f}: the workload's weight bytes are needed for bytes_saved_pct")
        wl_bytes += weight_bytes(f)
    doc = read_profiles(profiles_path(cfg))
    rows, backbone, notes = candidates_from_profiles(doc, str(pc.candidates))
    bpp = int(pc.bytes_per_param)
    t_single = backbone.final_time_s
    T = float(pc.horizon_factor) * t_single
    kw = dict(max_per_exit=pc.max_per_exit, return_best=bool(pc.return_best), bytes_per_param=bpp)
    problem = make_problem(rows, backbone, T, **kw)
    deadline = float(pc.simulation.deadline_factor) * t_single
    problem_f = make_problem(rows, backbone, T, objective="finite", deadline=deadline, **kw)
    n_val = _n_val(cfg, doc)

    # ---- placement sweep: every variant at every budget, and the exact optimum
    t0 = time.perf_counter()
    orders = variant_orders(problem, pc)
    key = (str(pc.variant), int(pc.mc_seeds[0]) if pc.variant in MONTE_CARLO else 0)
    meedge_order = orders[key] if key in orders else \
        priority_order(problem, pc.variant, mc_samples=int(pc.mc_samples), seed=int(pc.mc_seeds[0]))
    placer = Placer(problem, str(pc.variant), meedge_order, pc)
    all_bytes = float(sum(problem.bytes)) if problem.n else 0.0
    if problem.n == 0:
        notes.append("no candidate branch survived: every placement is empty (single-exit)")
    full = placer(all_bytes) if problem.n else None
    m_full = float(full.memory_bytes) if full and full.memory_bytes > 0 else float(min(problem.bytes, default=1))
    do_exact = problem.n <= int(pc.exact_max_candidates)
    if not do_exact:
        notes.append(f"{problem.n} candidates > placement.exact_max_candidates={pc.exact_max_candidates}: no exact optimum")
    sweep: list[dict] = []
    optimum: dict[float, Placement] = {}
    for frac in pc.budget_fractions:
        M = float(frac) * m_full
        here = []
        for (v, seed), order in orders.items():
            res = place(problem, v, M, search_time_s=pc.search_time_s, node_budget=pc.node_budget, order=order,
                        prune_nonimproving=bool(pc.prune_nonimproving))
            here.append(res)
            sweep.append(placement_row(problem, res, float(frac), seed, rows))
        if do_exact:
            best = max(here, key=lambda r: r.value)
            optimum[float(frac)] = opt = exact_optimum(problem, M, incumbent=best.indices,
                                                       node_limit=int(pc.exact_node_limit))
            sweep.append(placement_row(problem, opt, float(frac), 0, rows))
    for r in sweep:
        opt = optimum.get(r["budget_fraction"])
        r["optimum"] = opt.value if opt else math.nan
        r["gap_pct"] = 100.0 * (1 - r["mae"] / opt.value) if opt and opt.value > 0 else math.nan
    curve = _curve(sweep)
    sweep_s = time.perf_counter() - t0

    # ---- baselines (training counted separately)
    base_rows, base_info, base_notes = train_baselines(cfg, doc, pc)
    notes += base_notes
    t1 = time.perf_counter()
    base_problems = {name: make_problem(br, backbone, T, max_per_exit=None, bytes_per_param=bpp)
                     for name, br in base_rows.items()}
    base_problems_f = {name: make_problem(br, backbone, T, objective="finite", deadline=deadline,
                                          max_per_exit=None, bytes_per_param=bpp) for name, br in base_rows.items()}
    base_all = {name: list(range(p.n)) for name, p in base_problems.items()}
    base_bytes = {name: p.memory(base_all[name]) for name, p in base_problems.items()}
    spinn_bytes = base_bytes.get("spinn")

    # ---- anytime comparison at the default horizon: bars with bootstrap CIs
    meedge_full = full if full is not None else place(problem, pc.variant, 1.0, order=meedge_order)
    meedge_spinn = placer(float(spinn_bytes)) if spinn_bytes else None
    items = [(base_problems[n], base_all[n]) for n in base_problems] + [(problem, meedge_full.indices)]
    names = [BASELINE_LABELS[n] for n in base_problems] + [f"MEEdge {pc.variant} (M_full)"]
    if meedge_spinn is not None:
        items.append((problem, meedge_spinn.indices))
        names.append(f"MEEdge {pc.variant} (SPINN's memory)")
    boot = bootstrap_values(items, n_val, int(pc.n_bootstrap), seed=int(cfg.seed)) if pc.n_bootstrap else None
    bars = []
    for k, (nm, (p, sel)) in enumerate(zip(names, items)):
        lo, hi = pct_ci(boot[:, k]) if boot is not None else (math.nan, math.nan)
        bars.append({"name": nm, "mae": p.value(sel), "ci_low": lo, "ci_high": hi,
                     "memory_kib": p.memory(sel) / 1024, "n_branches": len(sel)})

    # ---- the claims: gains over single-exit and SPINN across horizons (bootstrap CIs)
    horizon_rows = _horizon_sweep(rows, backbone, base_rows, pc, kw, n_val, int(cfg.seed), meedge_order, bpp)

    # ---- memory-elastic simulation (anytime and finite-time)
    W = float(pc.simulation.window_s)
    trace = [(k * W, float(f) * m_full) for k, f in enumerate(pc.simulation.trace_fractions)]
    end_s = len(trace) * W
    rate = float(pc.simulation.rate_mbps) * 1e6
    L_search = float(pc.simulation.search_s)
    sim: dict[str, dict] = {}
    placer_f = Placer(problem_f, str(pc.variant), meedge_order, pc)
    for mode, prob, plc, bprobs in (("anytime", problem, placer, base_problems), ("finite", problem_f, placer_f, base_problems_f)):
        res = {f"MEEdge elastic ({pc.variant})": simulate_elastic(prob, trace, end_s, lambda M, plc=plc: plc(M).indices,
                                                                   rate_bps=rate, request_bits=int(pc.simulation.request_bits),
                                                                   search_time_s=L_search)}
        res["MEEdge static (M_full)"] = simulate_static(prob, trace, end_s, meedge_full.indices)
        for n, bp in bprobs.items():
            res[BASELINE_LABELS[n]] = simulate_static(bp, trace, end_s, base_all[n])
        sim[mode] = res
    sim_s = time.perf_counter() - t1
    placement_s = sweep_s + sim_s

    # ---- finite-time profiles (Fig. 7(1)) and the "better at every deadline" check
    profiles_fig = {BASELINE_LABELS[n]: step_profile(*bp.profile(base_all[n]), T) for n, bp in base_problems.items()}
    profiles_fig[f"MEEdge {pc.variant} (M_full)"] = step_profile(*problem.profile(meedge_full.indices), T)
    grid = np.linspace(T / 200, T, 200)
    from repshare.multiexit.mae import accuracy_at
    me_t, me_a = problem.profile(meedge_full.indices)
    wins = [accuracy_at(me_t, me_a, d) >= max(accuracy_at(*bp.profile(base_all[n]), d) for n, bp in base_problems.items()) - 1e-12
            for d in grid]

    # ---- outputs
    claims = _claims(sweep, curve, bars, horizon_rows, sim, wins, pc, base_rows)
    crow = _comparison_rows(sweep, base_problems, base_all, base_rows, base_info, pc, wl_bytes, problem,
                            bars, doc, cfg, rows)
    metrics = {
        "n_candidates": problem.n, "t_single_s": t_single, "horizon_s": T, "m_full_bytes": m_full,
        "mae_meedge": meedge_full.value, "mae_single_exit": base_problems["single_exit"].value([]),
        "gain_vs_single_pct": gain_pct(meedge_full.value, base_problems["single_exit"].value([])),
        "trace_mae_elastic": sim["anytime"][f"MEEdge elastic ({pc.variant})"].mean_value,
        "trace_adaptation_s": sim["anytime"][f"MEEdge elastic ({pc.variant})"].adaptation_s_total,
        "trace_bytes_sent": sim["anytime"][f"MEEdge elastic ({pc.variant})"].bytes_sent_total,
        "placement_seconds": round(placement_s, 3), "baseline_train_seconds": round(base_info["train_seconds"], 3),
    }
    if "spinn" in base_problems:
        metrics["mae_spinn"] = base_problems["spinn"].value(base_all["spinn"])
        metrics["gain_vs_spinn_pct"] = gain_pct(meedge_full.value, metrics["mae_spinn"])
        if meedge_spinn is not None:
            metrics["gain_vs_spinn_same_memory_pct"] = gain_pct(meedge_spinn.value, metrics["mae_spinn"])
    vv = [r for r in sweep if r["variant"] == pc.variant]
    metrics["meedge_search_s_median"] = float(np.median([r["search_s"] for r in vv])) if vv else math.nan
    opt_rows = [r for r in sweep if r["variant"] == "optimum"]
    metrics["optimum_search_s_median"] = float(np.median([r["search_s"] for r in opt_rows])) if opt_rows else math.nan
    if optimum:
        metrics["meedge_gap_to_optimum_pct_mean"] = float(np.nanmean([r["gap_pct"] for r in vv]))
        metrics["meedge_gap_to_optimum_pct_max"] = float(np.nanmax([r["gap_pct"] for r in vv]))
    metrics = {k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v) for k, v in metrics.items()}

    # Durations are provenance: kept in metrics/placement_run.json, not in the hashed outputs.
    timings = [{"budget_fraction": r["budget_fraction"], "variant": r["variant"], "seed": r["seed"],
                "search_s": r.pop("search_s")} for r in sweep]
    with atomic_dir(out_dir(cfg)) as tmp:
        write_json(tmp / "candidates.json", {"rows": rows, "backbone": {
            "exit_time_s": backbone.exit_time_s, "final_time_s": t_single, "final_accuracy": backbone.final_accuracy},
            "horizon_s": T, "deadline_s": deadline, "m_full_bytes": m_full, "notes": notes})
        write_json(tmp / "placements.json", {"rows": sweep, "curve": curve})
        write_text(tmp / "placements.csv", _csv(sweep))
        write_json(tmp / "baselines.json", {"rows": base_rows, "bytes": base_bytes, "info": base_info, "bars": bars})
        write_json(tmp / "horizons.json", {"rows": horizon_rows})
        write_json(tmp / "simulation.json", {"trace": trace, "end_s": end_s, "rate_bps": rate,
                                             "modes": {m: {k: v.as_dict() for k, v in r.items()} for m, r in sim.items()}})
        figs = {
            "fig7": fig7_time_accuracy(profiles_fig, tmp / "fig7_time_accuracy", t_single),
            "fig8": fig8_mae_vs_budget(curve, tmp / "fig8_mae_vs_budget",
                                       {v: VARIANT_LABELS[v] for v in pc.variants}),
            "fig9a": fig9a_bars(bars, tmp / "fig9a_mae_bars"),
            "fig9b": fig9b_trace({k: [{"t0": p.t0, "t1": p.t1, "value": p.value} for p in v.phases]
                                  for k, v in sim["anytime"].items()}, trace, end_s, tmp / "fig9b_trace"),
        }
        write_rows(tmp / "comparison_rows.json", METHOD, crow)
        section = _section(cfg, pc, problem, notes, claims, curve, bars, horizon_rows, sim, base_info, metrics)
        write_section(tmp / "section.json", section)
        # provenance beside the metrics, outside the hashed outs
        with RunLog(cfg, "placement", results / "metrics") as runlog:
            runlog.summary(**{k: v for k, v in metrics.items() if isinstance(v, (int, float))},
                           seconds=round(time.perf_counter() - t_start, 2))
            runlog.log_table("placements", [{k: v for k, v in r.items()} for r in sweep])
            runlog.log_table("search_seconds", timings)
            runlog.log_table("mae_bars", bars)
            runlog.log_table("horizons", horizon_rows)
            for key, paths in figs.items():
                runlog.log_image(key, [p for p in paths if p.suffix == ".png"][0])
    write_json(results / "metrics" / "placement.json", metrics)
    write_text(results / "plots" / "placement_mae_vs_budget.csv",
               _csv([{"budget_kib": round(r["budget_kib"], 3), "variant": r["variant"], "mae": round(r["mae"], 6)}
                     for r in curve]))
    write_text(results / "plots" / "placement_trace.csv", _csv(_trace_table(sim["anytime"])))
    log.info("placement: %d candidates, MEEdge mAE %.4f (single-exit %.4f); sweep %.1fs, simulation %.1fs, "
             "baseline training %.1fs", problem.n, meedge_full.value, metrics["mae_single_exit"], sweep_s, sim_s,
             base_info["train_seconds"])
    return metrics


# --------------------------------------------------------------------------- pieces of run()
def _n_val(cfg: DictConfig, doc: dict) -> int:
    for key in ("n_val",):
        if isinstance(doc.get(key), int) and doc[key] > 0:
            return int(doc[key])
    lab = Path(cfg.paths.results_dir) / "multiexit" / "features" / "val" / "labels.npy"
    if lab.is_file():
        return int(len(np.load(lab)))
    n = cfg.multiexit.features.n_val
    return int(n if n is not None else cfg.data.get("n_val", 1000))


def _curve(sweep: list[dict]) -> list[dict]:
    """Fig. 8 points: per (budget, variant) the mAE (Monte-Carlo variants: mean and 95 % t-CI over seeds)."""
    out = []
    keys = sorted({(r["budget_fraction"], r["variant"]) for r in sweep})
    for frac, v in keys:
        rs = [r for r in sweep if r["budget_fraction"] == frac and r["variant"] == v]
        m, lo, hi = t_ci([r["mae"] for r in rs])
        out.append({"budget_fraction": frac, "budget_kib": rs[0]["budget_kib"], "variant": v, "mae": m,
                    "ci_low": None if math.isnan(lo) else lo, "ci_high": None if math.isnan(hi) else hi,
                    "n_seeds": len(rs), "gap_pct": float(np.mean([r["gap_pct"] for r in rs]))})
    return out


def _horizon_sweep(rows, backbone, base_rows, pc, kw, n_val, seed, order, bpp) -> list[dict]:
    """Gains of MEEdge over single-exit and SPINN-like at each horizon factor (bootstrap 95 % CIs)."""
    out = []
    for h in pc.horizon_factors:
        T = float(h) * backbone.final_time_s
        prob = make_problem(rows, backbone, T, **kw)
        bases = {n: make_problem(br, backbone, T, max_per_exit=None, bytes_per_param=bpp) for n, br in base_rows.items()}
        me = place(prob, pc.variant, float(sum(prob.bytes)) or 1.0, search_time_s=pc.search_time_s,
                   node_budget=pc.node_budget, order=order, prune_nonimproving=bool(pc.prune_nonimproving))
        items = [(prob, me.indices), (bases["single_exit"], [])]
        spinn = "spinn" in bases
        if spinn:
            sb = bases["spinn"]
            me_s = place(prob, pc.variant, float(sb.memory(list(range(sb.n)))), search_time_s=pc.search_time_s,
                         node_budget=pc.node_budget, order=order, prune_nonimproving=bool(pc.prune_nonimproving))
            items += [(sb, list(range(sb.n))), (prob, me_s.indices)]
        vals = [p.value(s) for p, s in items]
        row = {"horizon_factor": float(h), "horizon_ms": T * 1e3, "mae_meedge": vals[0], "mae_single_exit": vals[1],
               "gain_vs_single_pct": gain_pct(vals[0], vals[1])}
        boot = bootstrap_values(items, n_val, int(pc.n_bootstrap), seed=seed) if pc.n_bootstrap else None
        if boot is not None:
            row["gain_vs_single_ci"] = list(pct_ci(100 * (boot[:, 0] / boot[:, 1] - 1)))
        if spinn:
            row.update({"mae_spinn": vals[2], "mae_meedge_spinn_memory": vals[3],
                        "gain_vs_spinn_pct": gain_pct(vals[0], vals[2]),
                        "gain_vs_spinn_same_memory_pct": gain_pct(vals[3], vals[2])})
            if boot is not None:
                row["gain_vs_spinn_ci"] = list(pct_ci(100 * (boot[:, 0] / boot[:, 2] - 1)))
                row["gain_vs_spinn_same_memory_ci"] = list(pct_ci(100 * (boot[:, 3] / boot[:, 2] - 1)))
        out.append(row)
    return out


def _fmt_range(vals: list[float]) -> str:
    v = [x for x in vals if math.isfinite(x)]
    return f"{min(v):.2f} to {max(v):.2f} %" if v else "n/a"


def _fmt_ci(ci: list[float] | None) -> str:
    return f" [95 % CI {ci[0]:.1f}, {ci[1]:.1f}]" if ci and all(math.isfinite(c) for c in ci) else ""


def _claims(sweep, curve, bars, horizon_rows, sim, wins, pc, base_rows) -> list:
    from repshare.comparison import PaperClaim

    claims = []
    g1 = [r["gain_vs_single_pct"] for r in horizon_rows]
    lows = [r.get("gain_vs_single_ci", [math.nan])[0] for r in horizon_rows]
    detail = "; ".join(f"T={r['horizon_factor']:g}x: {r['gain_vs_single_pct']:.1f} %{_fmt_ci(r.get('gain_vs_single_ci'))}"
                       for r in horizon_rows)
    ok = all(math.isfinite(x) and x > 0 for x in lows) if all(math.isfinite(x) for x in lows) else all(x > 0 for x in g1)
    claims.append(PaperClaim(
        "MEEdge's mAE beats single-exit inference (Fig. 9(a))", "7.23-329.79 % better",
        f"{_fmt_range(g1)} over horizons T = {', '.join(f'{h:g}' for h in pc.horizon_factors)} x single-exit time ({detail})",
        "holds" if ok else "does not",
        "the gain depends on the horizon T (the paper leaves it open): the closer T is to the single-exit time, the larger"))
    if "spinn" in base_rows:
        g2 = [r["gain_vs_spinn_pct"] for r in horizon_rows]
        g3 = [r["gain_vs_spinn_same_memory_pct"] for r in horizon_rows]
        lo2 = [r.get("gain_vs_spinn_same_memory_ci", [math.nan])[0] for r in horizon_rows]
        pos = sum(1 for x in g3 if x > 0)
        sig = sum(1 for x in lo2 if math.isfinite(x) and x > 0)
        claims.append(PaperClaim(
            "MEEdge's mAE beats the homogeneous, static SPINN (Fig. 9(a))", "0.57-27.31 % better",
            f"at SPINN's own branch memory: {_fmt_range(g3)} ({pos}/{len(g3)} horizons better, {sig} with the 95 % CI "
            f"above 0); with MEEdge's unconstrained placement: {_fmt_range(g2)}",
            "holds" if pos == len(g3) else ("partly" if pos else "does not")))
    else:
        claims.append(PaperClaim("MEEdge's mAE beats SPINN (Fig. 9(a))", "0.57-27.31 % better",
                                 "SPINN-like baseline not trained (placement.baselines.train=false)", "not tested"))
    # Fig. 8: m7 best in almost all budgets
    fracs = sorted({c["budget_fraction"] for c in curve})
    variants = [v for v in pc.variants]
    if pc.variant in variants and len(variants) > 1:
        best = 0
        for f in fracs:
            here = {c["variant"]: c["mae"] for c in curve if c["budget_fraction"] == f and c["variant"] in variants}
            best += here[pc.variant] >= max(here.values()) - 1e-12
        gaps = [c["gap_pct"] for c in curve if c["variant"] == pc.variant and math.isfinite(c["gap_pct"])]
        gap_txt = f"; gap to the exact optimum: mean {np.mean(gaps):.3f} %, max {np.max(gaps):.3f} %" if gaps else ""
        claims.append(PaperClaim(
            "The MEEdge priority (m7: greedy + convex hull + DFS) is best in almost all memory budgets (Fig. 8)",
            "m7 best in almost all budgets",
            f"m7 at least as good as every other variant in {best}/{len(fracs)} budgets{gap_txt}",
            "holds" if best >= 0.8 * len(fracs) else ("partly" if best else "does not")))
    if "m5" in variants and "m6" in variants:
        better = same = 0
        for f in fracs:
            here = {c["variant"]: c["mae"] for c in curve if c["budget_fraction"] == f}
            better += here["m6"] > here["m5"] + 1e-12
            same += abs(here["m6"] - here["m5"]) <= 1e-12
        claims.append(PaperClaim("DFS improves on the greedy search (m6 vs m5)", "m6 >= m5",
                                 f"m6 better in {better}, equal in {same} of {len(fracs)} budgets (never worse by construction)",
                                 "holds" if better else "partly"))
    any_ = sim["anytime"]
    el = [k for k in any_ if k.startswith("MEEdge elastic")][0]
    statics = {k: v.mean_value for k, v in any_.items() if k != el}
    beat = sum(1 for v in statics.values() if any_[el].mean_value >= v - 1e-12)
    claims.append(PaperClaim(
        "MEEdge adapts to memory changes (Fig. 9(b))", "flexible adaptation to 7 budget changes",
        f"trace mAE {any_[el].mean_value:.4f} vs static models " + ", ".join(f"{k} {v:.4f}" for k, v in statics.items())
        + f"; {any_[el].adaptation_s_total * 1e3:.1f} ms adapting in total ({any_[el].bytes_sent_total / 1024:.0f} KiB sent at "
          f"{pc.simulation.rate_mbps:g} Mbit/s)",
        "holds" if beat == len(statics) else "partly"))
    claims.append(PaperClaim(
        "Finite-time: MEEdge always gives better results within the same time (Fig. 7(1))", "always better",
        f"MEEdge (M_full) at least as accurate as every baseline at {sum(wins)}/{len(wins)} deadlines in (0, T]",
        "holds" if all(wins) else ("partly" if sum(wins) >= 0.5 * len(wins) else "does not"),
        "compared at each model's own memory: baselines use theirs, MEEdge its unconstrained placement"))
    return claims


def _comparison_rows(sweep, base_problems, base_all, base_rows, base_info, pc, wl_bytes, problem, bars, doc, cfg, rows):
    from repshare.comparison import ComparisonRow

    name = str(pc.model_name)
    single = base_problems["single_exit"].value([])
    zoo_train, n_fit = _zoo_train_seconds(cfg)
    n_fit = int(doc.get("n_fit", n_fit))
    out = []
    for r in sweep:
        if r["variant"] in MONTE_CARLO and r["seed"] != int(pc.mc_seeds[0]):
            continue  # one concrete placement per (budget, variant); the seed spread is in extra
        loaded = int(r["memory_bytes"])
        saved = int(r["bytes_saved_by_merging"])
        srcs = [x.replace("+merged", "") for x in r["selected"].split()]
        out.append(ComparisonRow(
            method=METHOD, setting=f"budget {r['budget_kib']:.1f} KiB ({r['budget_fraction']:g} x M_full), "
                                   f"{'exact optimum' if r['variant'] == 'optimum' else VARIANT_LABELS[r['variant']]}",
            models=[name], bytes_saved=-loaded, bytes_saved_pct=-100.0 * loaded / wl_bytes,
            accuracy={name: r["mae"]}, accuracy_rel={name: r["mae"] / single if single > 0 else 0.0},
            labels_used=True, retrain_seconds=float(sum(zoo_train.get(s, 0.0) for s in srcs)),
            retrain_images=int(n_fit * float(cfg.multiexit.train.epochs)) if srcs else 0,
            extra_flops_per_image=float(r["flops"]), metric={name: "mAE"},
            extra={"variant": r["variant"], "budget_bytes": r["budget_bytes"], "branch_bytes_loaded": loaded,
                   "bytes_saved_by_merging": saved, "n_branches": r["n_branches"], "selected": r["selected"],
                   "mae_single_exit": single, "gap_to_optimum_pct": r["gap_pct"], "dfs_nodes": r["nodes"],
                   "note": "bytes_saved = -(branch bytes loaded): branches cost memory on top of the single-exit model; "
                           "merging's saving is already in the loaded bytes"}))
    for n, bp in base_problems.items():
        sel = base_all[n]
        loaded = bp.memory(sel)
        br = base_rows[n]
        out.append(ComparisonRow(
            method=METHOD, setting=f"baseline: {BASELINE_LABELS[n]}", models=[name], bytes_saved=-loaded,
            bytes_saved_pct=-100.0 * loaded / wl_bytes, accuracy={name: bp.value(sel)},
            accuracy_rel={name: bp.value(sel) / single if single > 0 else 0.0}, labels_used=bool(sel),
            retrain_seconds=float(sum(r.get("train_seconds", 0.0) for r in br)),
            retrain_images=int(sum(r.get("images_seen", 0) for r in br)),
            extra_flops_per_image=float(sum(r.get("flops", 0) for r in br)), metric={name: "mAE"},
            extra={"baseline": n, "branch_bytes_loaded": loaded, "bytes_saved_by_merging": 0, "n_branches": len(sel),
                   "exits": [r["exit"] for r in br]}))
    return out


def _zoo_profiles(cfg: DictConfig) -> dict[str, dict]:
    """Every branch part 1's zoo trained (survivor or not), by spec id, as baseline rows."""
    from repshare.utils.io import read_json

    p = Path(cfg.paths.results_dir) / "multiexit" / "zoo" / "zoo.json"
    if not p.is_file():
        return {}
    doc = read_json(p)
    train = doc.get("train", {})
    n_fit = int(doc.get("n_fit", 0))
    epochs = float(cfg.multiexit.train.epochs)
    out = {}
    for b in doc.get("branches", []):
        out[b["id"]] = {"id": b["id"], "exit": int(b["exit"]), "structure": b.get("structure", ""),
                        "params": int(b["params"]), "flops": int(b.get("flops", 0)),
                        "branch_latency_s": float(b["branch_latency_s"]), "accuracy": float(b["accuracy"]),
                        "train_seconds": float(train.get(b["id"], {}).get("seconds", 0.0)),
                        "images_seen": int(n_fit * epochs)}
    return out


def _zoo_train_seconds(cfg: DictConfig) -> tuple[dict[str, float], int]:
    """Part 1's per-branch training seconds and branch-training images, from its zoo.json if present
    (it is not part of the profiles.json contract: without it retraining cost reads 0)."""
    from repshare.utils.io import read_json

    p = Path(cfg.paths.results_dir) / "multiexit" / "zoo" / "zoo.json"
    if not p.is_file():
        return {}, 0
    try:
        doc = read_json(p)
        return {k: float(v.get("seconds", 0.0)) for k, v in doc.get("train", {}).items()}, int(doc.get("n_fit", 0))
    except (ValueError, AttributeError, TypeError):
        return {}, 0


def _section(cfg, pc, problem, notes, claims, curve, bars, horizon_rows, sim, base_info, metrics):
    from repshare.comparison import Figure, ReportSection, Table

    fig8_rows = [{"budget (KiB)": round(c["budget_kib"], 1), "variant": c["variant"], "mAE": round(c["mae"], 4),
                  "95 % CI": "" if c["ci_low"] is None else f"[{c['ci_low']:.4f}, {c['ci_high']:.4f}]",
                  "gap to optimum (%)": None if not math.isfinite(c["gap_pct"]) else round(c["gap_pct"], 3)}
                 for c in curve]
    bar_rows = [{"model": b["name"], "mAE": round(b["mae"], 4),
                 "95 % CI": "" if not math.isfinite(b["ci_low"]) else f"[{b['ci_low']:.4f}, {b['ci_high']:.4f}]",
                 "branch memory (KiB)": round(b["memory_kib"], 1), "branches": b["n_branches"]} for b in bars]
    hz_rows = [{"T / single-exit time": r["horizon_factor"], "MEEdge mAE": round(r["mae_meedge"], 4),
                "single-exit mAE": round(r["mae_single_exit"], 4),
                "gain vs single-exit (%)": f"{r['gain_vs_single_pct']:.1f}{_fmt_ci(r.get('gain_vs_single_ci'))}",
                "gain vs SPINN, same memory (%)": (f"{r['gain_vs_spinn_same_memory_pct']:.1f}"
                                                   f"{_fmt_ci(r.get('gain_vs_spinn_same_memory_ci'))}")
                if "gain_vs_spinn_same_memory_pct" in r else "n/a"} for r in horizon_rows]
    sim_rows = []
    for mode, res in sim.items():
        for k, v in res.items():
            sim_rows.append({"mode": mode, "model": k, "trace mAE": round(v.mean_value, 4),
                             "adapting (ms)": round(v.adaptation_s_total * 1e3, 2),
                             "sent (KiB)": round(v.bytes_sent_total / 1024, 1)})
    machine = "2-core x86_64 CPU shared with other jobs (latencies and search times are pessimistic)"
    summary = (f"{problem.n} candidate branches (part 1's survivors, original and self-merged) on the "
               f"{pc.model_name}'s EfficientNet-B0 backbone. Single-exit inference takes "
               f"{metrics['t_single_s'] * 1e3:.2f} ms per image on this machine; mAE horizon T = {pc.horizon_factor:g} x that. "
               f"MEEdge ({pc.variant}) reaches mAE {metrics['mae_meedge']:.4f} vs single-exit {metrics['mae_single_exit']:.4f}"
               + (f" and SPINN-like {metrics['mae_spinn']:.4f}" if "mae_spinn" in metrics else "")
               + f". Latencies measured at batch 1 on a {machine}; stage and search times are in "
               f"results/metrics/placement.json.")
    return ReportSection(
        method=METHOD, title="MEEdge part 2: branch placement and memory-elastic inference", summary=summary,
        claims=claims,
        tables=[
            Table("mAE per model (Fig. 9(a))", list(bar_rows[0]) if bar_rows else [], bar_rows,
                  "95 % CI: parametric bootstrap of every exit's val accuracy (binomial), placements fixed"),
            Table("Gain over the baselines vs the horizon T", list(hz_rows[0]) if hz_rows else [], hz_rows),
            Table("mAE vs memory budget per priority variant (Fig. 8)", list(fig8_rows[0]) if fig8_rows else [], fig8_rows,
                  "Monte-Carlo variants m1..m4: mean and 95 % t-CI over placement.mc_seeds"),
            Table("Memory-elastic trace (Fig. 9(b))", list(sim_rows[0]) if sim_rows else [], sim_rows,
                  f"{len(pc.simulation.trace_fractions)} budgets ({len(pc.simulation.trace_fractions) - 1} changes), "
                  f"{pc.simulation.window_s:g} s apart, R = {pc.simulation.rate_mbps:g} Mbit/s"),
        ],
        figures=[
            Figure("fig7_time_accuracy.png", "Fig. 7(1): accuracy of the last exit finished vs the deadline; "
                   "MEEdge's step curve should sit above the baselines'"),
            Figure("fig8_mae_vs_budget.png", "Fig. 8: mAE vs branch memory budget for m0..m7 and the exact optimum"),
            Figure("fig9a_mae_bars.png", "Fig. 9(a): mAE of MEEdge vs single-exit, one-FC, SPINN-like, BranchyNet-like"),
            Figure("fig9b_trace.png", "Fig. 9(b): mAE of the loaded model over a trace of 7 memory-budget changes"),
        ],
        notes=notes + [
            "exit-time model: a branch blocks the backbone for its own latency, so it delays every later exit and the head",
            "mAE: pre-emption time uniform on [0, T]; the answer is the last exit finished (placement.return_best)",
            f"search budget: {pc.node_budget} DFS nodes (deterministic); wall-clock cap {pc.search_time_s} s; "
            f"the simulation charges L_search = {pc.simulation.search_s} s per placement",
            "budgets are bytes of branch weights on top of the single-exit model (float32 unless merged)",
            f"simulation: the server spends all of L_search, then sends the new branches at R; static models fall back "
            f"to single-exit when their branches do not fit",
        ],
    )


def _trace_table(sim_any: dict) -> list[dict]:
    out = []
    for name, res in sim_any.items():
        for w in res.windows:
            out.append({"t": round(w.t0, 3), "model": name, "mae": round(w.value, 6),
                        "budget_kib": round(w.memory_budget / 1024, 3)})
    return out


def _csv(rows: list[dict]) -> str:
    if not rows:
        return ""
    cols = list(rows[0])
    lines = [",".join(cols)]
    for r in rows:
        lines.append(",".join(_cell(r.get(c)) for c in cols))
    return "\n".join(lines) + "\n"


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    s = str(v)
    return f'"{s}"' if ("," in s or " " in s) else s
