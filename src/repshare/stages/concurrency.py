"""DVC stage `concurrency`: the concurrency score (Hadidi et al., EDGE 2023) of sampled random-graph
architectures, degree-matched controls and the workload's own models; figures, tables, metrics, section.

Wiring only: the experiments are :func:`repshare.concurrency.study.run_study`. The score saves no
memory, so the stage writes no comparison rows. See docs/methods/concurrency.md.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from omegaconf import DictConfig, OmegaConf

from repshare.stage_scope import skip_reason, write_skipped
from repshare.comparison import write_section
from repshare.concurrency import figures, measure, summary
from repshare.concurrency.graphs import GeneratorParams
from repshare.concurrency.latency import LinkModel
from repshare.concurrency.matched import control_name
from repshare.concurrency.network import NetSpec
from repshare.concurrency.proxy import ProxyData, ProxyTraining, proxy_data
from repshare.concurrency.section import build_section
from repshare.concurrency.study import DPSweep, StudySettings, WorkloadDag, run_study, torch_threads
from repshare.concurrency.trace import operator_dag
from repshare.config import ConfigError
from repshare.utils.io import atomic_dir, write_csv, write_json
from repshare.utils.runlog import RunLog

log = logging.getLogger("repshare.concurrency")
METHOD = "concurrency"


def settings(cfg: DictConfig) -> StudySettings:
    c = cfg.concurrency
    plain = OmegaConf.to_container(c, resolve=True)
    return StudySettings(
        generators=tuple(plain["generators"]), n_vertices=tuple(plain["n_vertices"]), n_units=tuple(plain["n_units"]),
        epsilons=tuple(float(e) for e in plain["epsilons"]), graphs_per_generator=int(c.graphs_per_generator),
        staging_samples=int(c.staging_samples), grouping_units=tuple(plain["grouping_units"]),
        exponents=tuple(float(e) for e in plain["exponents"]), seed=int(c.seed),
        generator=GeneratorParams(**plain["generator"]),
        network=NetSpec(**plain["network"], staging="probabilistic", num_classes=int(cfg.data.num_classes)),
        latency=LinkModel(**plain["latency"]), proxy=ProxyTraining(**plain["proxy"]),
        dp_sweep=DPSweep(**{k: tuple(v) if isinstance(v, list) else v for k, v in plain["dp_sweep"].items()}),
        controls=tuple(control_name(g) for g in plain.get("degree_matched", [])))


def workload_dags(cfg: DictConfig) -> list[WorkloadDag]:
    """Each distinct architecture of the workload and each ``concurrency.trace_archs`` timm model, traced
    into operator DAGs; the same architecture twice is traced once. Trained workload models are built with
    their weights (the one weight reader checks the file); published or checkpoint weights are not read
    (real mode: an operator DAG does not depend on the weights' values, and the score runs offline)."""
    from repshare.models.classifier import build_classifier
    from repshare.models.detector import build_detector
    from repshare.models.load import model_kwargs, weights_source
    from repshare.workload import workload_models

    seen: dict[str, dict] = {}
    for m in workload_models(cfg.workload) if cfg.concurrency.score_workload else []:
        trained = weights_source(cfg, m.name) == "trained"
        kw = model_kwargs(cfg, m.name, use_trained=trained)  # FileNotFoundError names missing trained weights
        if not trained:
            kw.update(weights="random", checkpoint_path=None, pretrained=False)
        mc = cfg.model[m.name]
        size = int(mc.image_size) if m.task == "detection" else int(mc.input_size or 224)
        key = f"{m.task}:{mc.arch}:{mc.num_classes}:{size}"
        seen.setdefault(key, {"names": [], "task": m.task, "arch": str(mc.arch), "size": size, "kw": kw,
                              "build": build_detector if m.task == "detection" else build_classifier})["names"].append(m.name)
    c = cfg.concurrency
    for name in c.trace_archs:  # named timm architectures (the paper's Fig. 10a: ResNet-50), random weights
        if not timm.is_model(name):
            raise ConfigError(f"concurrency.trace_archs: {name!r} is not a timm model name")
        seen[f"timm:{name}"] = {"names": [name], "task": "classification", "arch": name, "size": int(c.trace_input_size),
                                "kw": {"model_name": name, "pretrained": False}, "build": timm.create_model}
    out = []
    with torch_threads(1):
        for b in seen.values():
            dag = operator_dag(b["build"](**b["kw"]), torch.zeros(1, 3, b["size"], b["size"]))
            out.append(WorkloadDag(tuple(b["names"]), b["task"], b["arch"], b["size"], dag))
    return out


def load_proxy_data(cfg: DictConfig, s: StudySettings) -> ProxyData | None:
    """The first ``proxy.n_train`` training and ``proxy.n_eval`` evaluation images (shards checksummed)."""
    from repshare.data.shards import load_split, prepared_dir, read_manifest

    if not s.proxy.archs_per_generator:
        return None
    root = prepared_dir(cfg)
    missing = [sp for sp in ("train", "val") if sp not in read_manifest(root)["splits"]]
    if missing:
        raise ConfigError(f"concurrency.proxy.archs_per_generator={s.proxy.archs_per_generator}: the accuracy proxy "
                          f"trains on the prepared 'train' split, but {root} has no {missing[0]!r} split (real-mode "
                          "data has none): set concurrency.proxy.archs_per_generator=0")
    tr, va = load_split(root, "train", lazy=True), load_split(root, "val", lazy=True)
    nt, ne = min(s.proxy.n_train, len(tr)), min(s.proxy.n_eval, len(va))
    return proxy_data(np.asarray(tr.images[:nt]), tr.labels[:nt], np.asarray(va.images[:ne]), va.labels[:ne],
                      s.network.image_size, s.network.num_classes)


class PhaseTimer:
    """Wall and process-CPU seconds per named phase, for the run record only (never a cached output)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        t, c = time.perf_counter(), time.process_time()
        yield
        w, c = time.perf_counter() - t, time.process_time() - c
        self.seconds[name] = round(self.seconds.get(name, 0.0) + w, 2)
        self.cpu_seconds[name] = round(self.cpu_seconds.get(name, 0.0) + c, 2)
        log.info("concurrency phase %s: %.1f s wall, %.1f s CPU", name, w, c)


def run(cfg: DictConfig) -> dict[str, Any]:
    if (reason := skip_reason("concurrency", cfg)) is not None:  # repshare.stage_scope
        return write_skipped("concurrency", cfg, reason)
    c_start, timer = time.process_time(), PhaseTimer()
    s = settings(cfg)
    gens, sizes, units = list(s.generators), list(s.n_vertices), list(s.n_units)
    results = Path(cfg.paths.results_dir)
    with timer("load_inputs"):  # inputs that can be missing are checked before any long computation
        data = load_proxy_data(cfg, s)
        workload = workload_dags(cfg)
    result = run_study(s, workload, data, phase=timer)
    summary_rows = summary.summaries(result.rows, [*gens, *s.controls], sizes, units)
    corr_rows = summary.correlations(result.rows, gens)
    table4_rows = summary.table4(result.stage_rows, gens)
    metrics = summary.metrics(summary_rows, corr_rows, result.workload_rows, result.proxy_rows, gens, sizes, units,
                              result.graphs_scored)
    measurements = measure.measurements(result.rows, result.stage_rows, result.workload_rows, result.proxy_rows, gens,
                                        s.controls, sizes, units, s.network.num_classes, int(cfg.concurrency.n_boot),
                                        s.seed)
    sanity = measure.sanity_checks(result.fig5_rows, result.control_params)
    with timer("write_outputs"), atomic_dir(results / METHOD, stage=METHOD) as tmp:
        for name, rows in (("graphs", result.rows), ("summary", summary_rows), ("workload", result.workload_rows),
                           ("latency_correlation", corr_rows), ("grouping", result.group_rows),
                           ("staging_params", result.stage_rows), ("table4", table4_rows), ("width_depth", result.wd_rows),
                           ("proxy", result.proxy_rows), ("dp_sweep", result.sweep_rows), ("fig5_eta", result.fig5_rows),
                           ("controls", result.control_params)):
            write_csv(tmp / f"{name}.csv", rows)
        write_json(tmp / "unit_costs.json", {"per_generator_bytes": result.unit_costs,
                                             "common_bytes": min(v for k, v in result.unit_costs.items() if k in gens)})
        figs = figures.draw_all(result, gens, s.controls, sizes, units, s.grouping_units, tmp / "figures")
        write_section(tmp / "section.json", build_section(s, result, summary_rows, corr_rows, table4_rows, metrics, figs,
                                                          measurements, sanity))
    write_json(results / "metrics" / "concurrency.json", metrics)
    write_csv(results / "plots" / "concurrency_cs.csv",
              [{"setting": f"{r['generator']} V={r['n_vertices']} n={r['n_units']}", "generator": r["generator"],
                "CS": r["CS_mean"]} for r in summary_rows])
    write_csv(results / "plots" / "concurrency_cs_latency.csv",
              [{"CS": r["CS"], "latency_ms": 1e3 * r["latency_s"], "generator": r["generator"]}
               for r in result.rows if r["best"] and r["n_vertices"] == sizes[0] and r["generator"] in gens])
    with RunLog(cfg, METHOD, results / "metrics") as runlog:  # provenance and durations, outside the hashed outs
        runlog.summary(**metrics, phase_seconds=timer.seconds, phase_cpu_seconds=timer.cpu_seconds,
                       cpu_seconds_total=round(time.process_time() - c_start, 1),
                       graphs_per_cpu_second=round(result.graphs_scored / max(
                           1e-9, timer.cpu_seconds.get("sample_annotate", 0) + timer.cpu_seconds.get(
                               "partition_score_latency", 0)), 3))
        for name, rows in (("summary", summary_rows), ("latency_correlation", corr_rows), ("table4", table4_rows)):
            runlog.log_table(f"concurrency_{name}", rows)
    log.info("concurrency: %d graphs scored; phases %s", result.graphs_scored, timer.seconds)
    return {**metrics, "phase_seconds": dict(timer.seconds), "phase_cpu_seconds": dict(timer.cpu_seconds)}
