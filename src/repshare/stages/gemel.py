"""DVC stage ``gemel``: merge identical layers across the workload's models (Gemel, NSDI'23), decide on the
``select`` split, retrain a no-merging control, report on the val split, simulate GPU time-sharing.

Wiring only (science in :mod:`repshare.gemel`). Writes ``results/gemel/`` (with ``checksums.json``),
``results/metrics/gemel.json``, the DVC plot csvs, and the run record ``results/metrics/gemel_run.json``
(durations and provenance: the only place that depends on the clock).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from repshare.stage_scope import skip_reason, write_skipped
from repshare.config import ConfigError
from repshare.gemel import section as sec
from repshare.gemel.layers import group_layers, identical_layers
from repshare.gemel.models import Member
from repshare.gemel.retrain import RetrainSettings
from repshare.gemel.simulate import SimSettings, budgets
from repshare.gemel.study import DecisionSettings, Settings, Splits, run as run_study
from repshare.gemel.teacher import with_unmerged_targets
from repshare.gemel.timing import CostModel
from repshare.utils.io import atomic_dir, write_json
from repshare.workload import workload_bytes, workload_models

log = logging.getLogger("repshare")
STAGE = "gemel"


def settings(cfg: DictConfig) -> Settings:
    g, d = cfg.gemel, cfg.gemel.decision
    hp = RetrainSettings(g.steps, g.batch_size, g.lr, g.momentum, g.weight_decay, g.freeze_bn, g.fast_depthwise_grad,
                         cfg.trainer.accelerator, cfg.trainer.deterministic)
    dec = DecisionSettings(d.n_classification, d.n_detection, d.n_weights, d.alpha, d.n_boot)
    return Settings(g.target, g.max_iterations, g.init, g.alpha, g.max_weight, g.eval_batch_size, hp, dec, g.control,
                    int(cfg.seed))


def load_workload(cfg: DictConfig, specs) -> tuple[dict[str, Any], dict[str, Member]]:
    """The trained models (through the one weight reader, checksums verified where their stage records them)."""
    from repshare.models.classifier import build_classifier
    from repshare.models.detector import build_detector
    from repshare.models.load import classifier_preprocess, detector_preprocess, model_kwargs
    from repshare.training.fit import classifier_spec
    from repshare.utils.artifacts import find_checksums, verify_file

    models, members = {}, {}
    for spec in specs:
        kw = model_kwargs(cfg, spec.name)
        if kw.get("checkpoint_path") and find_checksums(Path(kw["checkpoint_path"])) is not None:
            verify_file(kw["checkpoint_path"], f"train_{spec.name}")
        if spec.task == "classification":
            m = build_classifier(**kw)
            members[spec.name] = Member(spec, classifier_spec(cfg, spec.name)[0],
                                        classifier_preprocess(cfg, m, spec.name), int(cfg.model[spec.name].num_classes))
        else:
            m = build_detector(**kw)
            members[spec.name] = Member(spec, "boxes", detector_preprocess(cfg), 0)
        models[spec.name] = m.eval()
    return models, members


def load_splits(cfg: DictConfig) -> Splits:
    """train (retraining), select (decisions; else the train tail, held out), val (report); checksums verified."""
    from repshare.data.shards import load_split, prepared_dir, read_manifest
    from repshare.gemel.splits import head, holdout_split

    root = prepared_dir(cfg)
    train, report = load_split(root, "train"), head(load_split(root, "val"), cfg.gemel.n_report)
    if "select" in read_manifest(root)["splits"]:
        return Splits(train, load_split(root, "select"), report, "the select split")
    log.warning("gemel: the prepared data has no select split (data.n_select = 0): deciding on the last "
                "%d train images instead, held out of the retraining", cfg.gemel.n_holdout)
    part, hold = holdout_split(train, cfg.gemel.n_holdout)
    return Splits(part, hold, report, f"the last {len(hold)} train images (no select split: set data.n_select)")


def run(cfg: DictConfig) -> dict[str, Any]:
    if (reason := skip_reason("gemel", cfg)) is not None:  # repshare.stage_scope
        return write_skipped("gemel", cfg, reason)
    from repshare.gemel import files
    from repshare.gemel.timing import measure_times, tensor_map
    from repshare.models.load import model_dir, resolve_device
    from repshare.utils.runlog import RunLog

    g, results = cfg.gemel, Path(cfg.paths.results_dir)
    specs = workload_models(cfg.workload)
    unknown = [s.name for s in specs if s.name not in cfg.model]
    if unknown:
        raise ConfigError(f"workload.models: model {unknown[0]!r} is unknown (no model.{unknown[0]} config; "
                          f"have: {', '.join(cfg.model)})")
    total = sum(workload_bytes(results, specs).values())  # every model's file must exist (one line if not)
    if len(specs) < 2:
        return _write_empty(cfg, f"workload {cfg.workload.name!r} has {len(specs)} model(s): nothing to share "
                                 "(Gemel needs two or more models)")
    models, members = load_workload(cfg, specs)
    instances = identical_layers(models)
    groups = group_layers(instances)
    if not groups:
        return _write_empty(cfg, f"the models of workload {cfg.workload.name!r} ({', '.join(models)}) have no "
                                 "identical conv/linear layer: nothing to share")
    log.info("gemel: %d shareable layer instances in %d groups; all merged would save %.2f of %.2f MB",
             len(instances), len(groups), sum(i.saving for i in instances) / 2**20, total / 2**20)
    sizes = {n: sum(t.values()) for n, t in tensor_map(models).items()}
    try:  # every simulation setting is checked before the (long) search
        budget_list = budgets(sizes, g.sim.budgets_mb, g.sim.budget_fractions)
        claim = budgets(sizes, None, [g.sim.claim_budget_fraction])[0]
        cost = CostModel(g.sim.cost.load_gb_per_s, g.sim.cost.tflops, g.sim.cost.run_overhead_ms)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    device = resolve_device({"gpu": "cuda", "auto": "auto"}.get(cfg.trainer.accelerator, "cpu"))
    data = load_splits(cfg)
    if g.detector_targets == "unmerged":  # images without boxes: the original detector's detections are the targets
        data = with_unmerged_targets(data, models, members, g.teacher_score, g.teacher_max_boxes, g.eval_batch_size,
                                     device)
    measured = None
    if g.sim.timing == "measured":
        weights = {n: model_dir(cfg, n) / "model.safetensors" for n in models}
        measured = measure_times(models, members, weights, g.sim.n_timing, resolve_device(g.sim.device),
                                 data.report.images.shape[1])
    sim = SimSettings(g.sim.fps, g.sim.sla_ms, g.sim.duration_s, g.sim.batch_size)
    st = run_study(models, members, instances, groups, data, settings(cfg), sim, budget_list, claim,
                   None if measured else cost, measured, device)

    its, sweep = sec.iteration_rows(st, g.target), sec.sweep_rows(st)
    rows = sec.comparison_rows(st, {n: m.spec.metric for n, m in members.items()})
    quoted = {**{k: g[k] for k in ("lr", "momentum", "weight_decay", "steps", "batch_size", "init")},
              "n_weights": g.decision.n_weights, "decision_alpha": g.decision.alpha, "n_boot": g.decision.n_boot,
              "timing": ("measured on this machine (median of repeats; spread in the table)" if measured else
                         f"cost model: {g.sim.cost.load_gb_per_s} GB/s loading, {g.sim.cost.tflops} TFLOP/s, "
                         f"{g.sim.cost.run_overhead_ms} ms per frame overhead (docs/methods/gemel.md)"),
              **({"detector_targets": data.select.meta["box_source"]} if "box_source" in data.select.meta else {})}
    section = sec.section(st, cfg.workload.name, quoted, data.select_name,
                          sec.sanity(st, st.found.bytes_total, st.found.bytes_distinct, g.target), g.target)
    metrics = files.metrics(st, its, rows)
    with atomic_dir(results / "gemel", stage=STAGE) as tmp, RunLog(cfg, STAGE, results / "metrics") as runlog:
        files.write_results(tmp, st, its, sweep, rows, section, g.target, g.sim.timing, cfg.workload.name)
        runlog.summary(**metrics, retrain_seconds=[round(t.retrain_seconds, 2) for t in st.found.trials],
                       control_seconds=round(st.control_seconds, 2))
        runlog.log_table("gemel_iterations", its)
    write_json(results / "metrics" / "gemel.json", metrics)
    files.write_plots(results, its, sweep)
    log.info("gemel: %s", metrics)
    return metrics


def _write_empty(cfg: DictConfig, reason: str) -> dict[str, Any]:
    """Nothing to share: a clear message and a valid empty result."""
    from repshare.gemel import files

    log.warning("gemel: %s", reason)
    results = Path(cfg.paths.results_dir)
    metrics = {"accepted": 0, "tried": 0, "robust": 0, "bytes_saved": 0, "stop_reason": reason}
    with atomic_dir(results / "gemel", stage=STAGE) as tmp:
        files.write_empty(tmp, reason)
    write_json(results / "metrics" / "gemel.json", metrics)
    files.write_plots(results, [], [])
    return metrics
