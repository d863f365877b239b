"""DVC stage ``placement`` (MEEdge part 2): HPF branch placement, the memory-elastic loop, baselines.

Reads part 1's verified artifacts (:mod:`repshare.multiexit.store`): profiles.json (the candidates,
their cost-model latencies), the per-image correctness of the ``select`` and ``val`` splits, and, for
the baselines, the zoo and the cached exit features. The science is
:func:`repshare.multiexit.placement_study.run_study`; this module loads, calls it and writes
``results/placement/`` (with checksums), ``results/metrics/placement.json`` and two DVC plot
tables. Durations and provenance go to ``results/metrics/placement_run.json`` only.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from repshare.stage_scope import skip_reason, write_skipped
from repshare.multiexit import store
from repshare.multiexit.baselines import BaselineData, Baselines, baseline_profiles, zoo_baseline_rows
from repshare.multiexit.placement import VARIANT_LABELS, candidates_from_profiles
from repshare.multiexit.placement_scores import Scores
from repshare.multiexit.placement_section import (
    METHOD, build_section, comparison_rows, csv_cells, latency_note, trace_table,
)
from repshare.multiexit.placement_settings import PlacementSettings
from repshare.multiexit.placement_study import PlacementStudy, run_study

log = logging.getLogger("repshare")


def train_baselines(cfg: DictConfig, s: PlacementSettings, doc: dict, zoo: dict, exits: list[int]) -> Baselines:
    """The baselines' branches: part 1's zoo ones reused; the rest trained here on part 1's caches (read
    only then), timed by part 1's own latency source (cost model or measured)."""
    from repshare.multiexit.cost import CostModel, Latency

    results, source = Path(cfg.paths.results_dir), str(doc.get("latency_source", "measured"))
    bs = replace(s.baselines, exits=tuple(exits))
    if bs.train and "stage_flops" not in zoo.get("backbone", {}):
        raise ValueError(f"{store.Part1(results).zoo_dir / 'zoo.json'} lacks backbone.stage_flops: rerun the branches stage")
    mt = cfg.multiexit.train

    def load() -> BaselineData:
        tr, fit = store.open_split(results, "train", exits), store.fit_rows(zoo)
        splits = {split: store.open_split(results, split, exits) for split in ("select", "val")}
        return BaselineData(
            train_feats=tr.features, train_rows=fit, train_labels=tr.labels[fit],
            eval_feats={k: c.features for k, c in splits.items()}, eval_labels={k: c.labels for k, c in splits.items()},
            num_classes=int(doc.get("num_classes", zoo["num_classes"])), epochs=float(mt.epochs),
            batch_size=int(mt.batch_size), lr=float(mt.lr), weight_decay=float(mt.weight_decay),
            latency=Latency(source, CostModel(**doc["cost_model"]) if source == "flops" else CostModel(1.0),
                            int(cfg.multiexit.latency.repeats), int(cfg.multiexit.latency.warmup)))

    shapes = {int(e): v for e, v in zoo.get("exit_shapes", {}).items()}
    return baseline_profiles(bs, zoo.get("backbone", {}).get("stage_flops", []), shapes,
                             zoo_baseline_rows(zoo, float(mt.epochs)), load)


def write_outputs(results: Path, st: PlacementStudy, s: PlacementSettings, base: Baselines, crow: list,
                  latency_note: str) -> list[Path]:
    from repshare.comparison import write_rows, write_section
    from repshare.multiexit.placement_figures import fig7_time_accuracy, fig8_mae_vs_budget, fig9a_bars, fig9b_trace
    from repshare.utils.io import atomic_dir, write_csv, write_json

    with atomic_dir(results / "placement", stage="placement") as tmp:
        write_json(tmp / "candidates.json", {"rows": st.rows, "backbone": {
            "exit_time_s": st.problem.backbone.exit_time_s, "final_time_s": st.problem.backbone.final_time_s,
            "final_accuracy_select": st.problem.backbone.final_accuracy}, "horizon_s": st.horizon_s,
            "deadline_s": st.deadline_s, "m_full_bytes": st.sweep.m_full, "notes": st.notes})
        write_json(tmp / "placements.json", {"rows": st.sweep.rows, "curve": st.sweep.curve})
        write_csv(tmp / "placements.csv", csv_cells(st.sweep.rows))
        write_json(tmp / "baselines.json", {"rows": st.base_rows, "info": base.info, "bars": [
            {k: (v.to_dict() if hasattr(v, "to_dict") else v) for k, v in b.items()} for b in st.bars]})
        write_json(tmp / "horizons.json", {"rows": [{k: (v.to_dict() if hasattr(v, "to_dict") else v)
                                                     for k, v in r.items()} for r in st.horizon_rows]})
        write_json(tmp / "simulation.json", {"trace": st.trace, "end_s": st.end_s, "rate_bps": st.rate_bps,
                                             "best_static": st.static_best, "modes": {
            m: {k: dict(v.as_dict(), mean_value_val=st.sim_val[m][k].to_dict()) for k, v in r.items()}
            for m, r in st.sim.items()}})
        write_json(tmp / "deadlines.json", {"rows": st.deadline_rows})
        pngs = [p for paths in (
            fig7_time_accuracy(st.profiles_fig, tmp / "fig7_time_accuracy", st.problem.backbone.final_time_s),
            fig8_mae_vs_budget(st.sweep.curve, tmp / "fig8_mae_vs_budget", {v: VARIANT_LABELS[v] for v in s.variants}),
            fig9a_bars([dict(b, mae=b["mae"].value, ci_low=b["mae"].lo, ci_high=b["mae"].hi) for b in st.bars],
                       tmp / "fig9a_mae_bars"),
            fig9b_trace(st.trace_val_phases, st.trace, st.end_s, tmp / "fig9b_trace"),
        ) for p in paths if p.suffix == ".png"]
        write_rows(tmp / "comparison_rows.json", METHOD, crow)
        write_section(tmp / "section.json", build_section(st, s, latency_note))
    return [results / "placement" / p.name for p in pngs]


def run(cfg: DictConfig) -> dict:
    if (reason := skip_reason("placement", cfg)) is not None:  # repshare.stage_scope
        return write_skipped("placement", cfg, reason)
    from repshare.utils.io import write_csv, write_json
    from repshare.utils.runlog import RunLog
    from repshare.workload import workload_bytes, workload_models

    from repshare.comparison.registry import check_registry

    t_start = time.perf_counter()
    check_registry()  # a bad claim entry stops here, with one line naming it
    s = PlacementSettings.from_mapping(OmegaConf.to_container(cfg.placement, resolve=True))
    results = Path(cfg.paths.results_dir)
    # ---- inputs (every bad input fails here, before anything is written)
    models = workload_models(cfg.workload)
    if s.model_name not in {m.name for m in models}:
        raise ValueError(f"placement.model_name={s.model_name!r} is not a workload model "
                         f"({', '.join(m.name for m in models)})")
    wl_bytes = sum(workload_bytes(results, models).values())
    doc = store.read_profiles(results)
    rows, backbone, notes = candidates_from_profiles(doc, s.candidates)
    exits = [int(e) for e in doc["backbone"]["exits"]]
    select, val = (Scores(split, tuple(ids), c) for split, (ids, c) in
                   (("select", store.read_correct(results, "select")), ("val", store.read_correct(results, "val"))))
    zoo = store.read_zoo(results)
    base = train_baselines(cfg, s, doc, zoo, exits)
    if base.correct:
        select = select.with_rows(*base.correct["select"])
        val = val.with_rows(*base.correct["val"])
    notes += base.notes + [f"select split: {doc.get('select_source', 'select split')}"]

    st = run_study(rows, backbone, base.rows, select, val, s, seed=int(cfg.seed),
                   num_classes=int(doc.get("num_classes", cfg.model.classifier.num_classes)), notes=notes)
    crow = comparison_rows(st, s, wl_bytes, len(store.fit_rows(zoo)), float(cfg.multiexit.train.epochs))
    metrics = {k: (round(v, 6) if isinstance(v, float) and np.isfinite(v) else v) for k, v in st.metrics.items()}
    timings = [{"budget_fraction": r["budget_fraction"], "variant": r["variant"], "seed": r["seed"],
                "search_s": r.pop("search_s")} for r in st.sweep.rows]  # durations are provenance: run log only
    pngs = write_outputs(results, st, s, base, crow, latency_note(doc))
    with RunLog(cfg, "placement", results / "metrics") as runlog:
        runlog.summary(**{k: v for k, v in metrics.items() if isinstance(v, (int, float))},
                       **{f"{k}_seconds": round(v, 3) for k, v in st.seconds.items()},
                       baseline_train_seconds=round(base.train_seconds, 3),
                       seconds=round(time.perf_counter() - t_start, 2))
        runlog.log_table("search_seconds", timings)
        for p in pngs:
            runlog.log_image(p.stem, p)
    write_json(results / "metrics" / "placement.json", metrics)
    write_csv(results / "plots" / "placement_mae_vs_budget.csv", csv_cells(
        [{"budget_kib": round(r["budget_kib"], 3), "variant": r["variant"], "mae": round(r["mae"], 6)}
         for r in st.sweep.curve]))
    write_csv(results / "plots" / "placement_trace.csv", csv_cells(trace_table(st)))
    log.info("placement: %d candidates, MEEdge mAE %.4f (single-exit %.4f) on val; sweep %.1fs, simulation %.1fs, "
             "baselines %.1fs", st.problem.n, metrics["mae_meedge"], metrics["mae_single_exit"],
             st.seconds["sweep"], st.seconds["simulation"], base.train_seconds)
    return metrics
