"""Which stages apply to the composed workload and data, and what a stage that does not apply writes.

The workload decides which models exist (``workload.models``) and the data decides which splits
exist (the prepared manifest). A stage whose inputs cannot exist under that choice, such as the
colour classifier's training in real mode (no colour labels on ImageNet) or MEEdge's branches
without a training split, is *skipped by definition*: it exits 0 before loading any model or
input, and writes every output ``dvc.yaml`` declares for it, each saying why (a
``skipped.json`` in each folder, ``{"skipped": 1, "reason": ...}`` as its metrics, a one-line plot
table). A method folder the compare stage reads also gets an empty section and no comparison
rows, so the dashboard says "not run" with the reason and every claim of that paper reads "not
tested". ``tests/test_stage_scope.py`` checks each entry's ``outputs`` against ``dvc.yaml``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

log = logging.getLogger("repshare")


@dataclass(frozen=True)
class Needs:
    models: tuple[str, ...] = ()  # workload models the stage trains or reads
    split: str | None = None  # a prepared split the stage trains on
    why: str = ""  # what the split is for (the skip message)
    split_needed: Callable[[DictConfig], bool] | None = None  # None: always; else only when this says so
    outputs: tuple[str, ...] = ()  # dvc.yaml's outs, metrics and plots of the stage, relative to results/


def _outs(stage: str, dirs: tuple[str, ...], plots: tuple[str, ...]) -> tuple[str, ...]:
    return (*dirs, f"metrics/{stage}_run.json", f"metrics/{stage}.json", *(f"plots/{p}.csv" for p in plots))


# Stages that can be skipped. Every other stage always applies (prepare, the first classifier and the
# detector, cka, evaluate_merged, analyze, compare, report).
NEEDS: dict[str, Needs] = {
    "train_classifier_color": Needs(
        models=("classifier_color",),
        outputs=("models/classifier_color", "train_state/classifier_color", "metrics/classifier_color_run.json",
                 "metrics/classifier_color.json")),
    # the score itself needs no data: only the accuracy proxy trains (concurrency.proxy.archs_per_generator)
    "concurrency": Needs(split="train", why="proxy training of the generated networks (set "
                                            "concurrency.proxy.archs_per_generator=0 to score without it)",
                         split_needed=lambda cfg: int(cfg.concurrency.proxy.archs_per_generator) > 0,
                         outputs=_outs("concurrency", ("concurrency",), ("concurrency_cs", "concurrency_cs_latency"))),
    "gemel": Needs(split="train", why="joint retraining of the merged models",
                   outputs=_outs("gemel", ("gemel",), ("gemel_iterations", "gemel_frames"))),
    "branches": Needs(split="train", why="training the exit branches",
                      outputs=_outs("branches", ("branches/features", "branches/zoo"), ("multiexit_zoo",))),
    "self_merge": Needs(split="train", why="the branches stage's training features",
                        outputs=_outs("self_merge", ("self_merge",), ("multiexit_self_vs_twin",))),
    "kd_recover": Needs(split="train", why="the branches stage's training features",
                        outputs=_outs("kd_recover", ("kd_recover",), ("multiexit_kd_curve",))),
    "placement": Needs(split="train", why="the branches stage's training features",
                       outputs=_outs("placement", ("placement",), ("placement_mae_vs_budget", "placement_trace"))),
}


def prepared_splits(cfg: DictConfig) -> list[str] | None:
    """The splits the prepare stage wrote (its manifest); None before prepare ran (the stage then names
    its missing input itself)."""
    from repshare.data.shards import prepared_dir, read_manifest

    try:
        return list(read_manifest(prepared_dir(cfg))["splits"])
    except FileNotFoundError:
        return None


def skip_reason(stage: str, cfg: DictConfig) -> str | None:
    """Why ``stage`` does not apply to this config (with the setting that would make it apply), or None."""
    needs = NEEDS.get(stage)
    if needs is None:
        return None
    names = [str(m.name) for m in cfg.workload.models]
    absent = [m for m in needs.models if m not in names]
    if absent:
        return (f"workload {cfg.workload.name!r} ({', '.join(names)}) has no model {absent[0]!r}; it is part of "
                f"workload=embedded (the generated shapes data)")
    wanted = needs.split is not None and (needs.split_needed is None or needs.split_needed(cfg))
    have = prepared_splits(cfg) if wanted else None
    if have is not None and needs.split not in have:
        return (f"it needs the prepared data's {needs.split!r} split ({needs.why}), and data={cfg.data.name} "
                f"has only {', '.join(have)}; it runs on data=shapes (the embedded default), or on ImageNet-layout "
                "data with data.train_root")
    return None


def compare_method(cfg: DictConfig, folder: str) -> str | None:
    """The compare stage's method key for results folder ``folder`` (None: not a method folder)."""
    groups = (cfg.compare.get("methods") or {}, cfg.compare.get("sections_only") or {})
    return next((str(m) for g in groups for m, f in g.items() if str(f) == folder), None)


def write_skipped(stage: str, cfg: DictConfig, reason: str) -> dict:
    """Write every output of ``stage`` as 'skipped: reason' and return its metrics."""
    from repshare.comparison.rows import write_rows
    from repshare.comparison.section import ReportSection, write_section
    from repshare.utils.io import atomic_dir, write_json, write_text
    from repshare.utils.runlog import RunLog

    log.warning("%s: skipped: %s", stage, reason)
    results = Path(cfg.paths.results_dir)
    metrics = {"skipped": 1, "reason": reason}
    for rel in NEEDS[stage].outputs:
        path = results / rel
        if rel.endswith("_run.json"):
            continue  # the run log, below
        if not path.suffix:
            with atomic_dir(path, stage=stage) as tmp:
                write_json(tmp / "skipped.json", {"stage": stage, "reason": reason})
                method = compare_method(cfg, rel)
                if method is not None:
                    summary = f"Not run in this configuration: the {stage} stage was skipped because {reason}."
                    # the dashboard names the page from the method key; the title only marks it
                    write_section(tmp / "section.json", ReportSection(method, f"{method} (not run)", summary))
                    write_rows(tmp / "comparison_rows.json", method, [])
        elif path.suffix == ".json":
            write_json(path, metrics)
        else:
            write_text(path, "skipped\n")
    run_file = next(Path(r).name for r in NEEDS[stage].outputs if r.endswith("_run.json"))
    with RunLog(cfg, run_file.removesuffix("_run.json"), results / "metrics") as runlog:
        runlog.summary(**metrics)
    return metrics
