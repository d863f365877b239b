"""DVC stage ``compare``: every method's comparison rows side by side, and a verdict per paper.

Reads ``results/<folder>/comparison_rows.json`` and ``section.json`` for each method in
``compare.methods`` (plus ``compare.sections_only``) and each workload model's unmerged accuracy
from ``results/metrics/<model>.json``. A missing or malformed method file does not stop the stage:
it is recorded (file and field named) in ``comparison.json``'s ``problems`` and shown on the
dashboard, and the other methods are compared as usual. Writes ``results/comparison/`` (json, csv,
figure), ``results/metrics/comparison.json`` (DVC metrics) and ``results/plots/comparison.csv``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from repshare.comparison.compare import (
    Comparison,
    MethodProblem,
    compare,
    comparison_table,
    highlights,
    load_method_rows,
    load_sections,
    unmerged_accuracy,
)
from repshare.comparison.figure import comparison_figure
from repshare.comparison.verdict import PAPERS, paper_verdicts
from repshare.report.names import METHOD_NAMES
from repshare.utils.io import atomic_dir, atomic_path, read_json, write_json
from repshare.workload import workload_models

log = logging.getLogger("repshare.compare")

FIGURE_CAPTION = (
    "Each marker is one setting of one method (filled: label-free; hollow: needed labels). Up and right "
    "is better: more of the workload's weight bytes saved while the worst-affected model keeps more of its "
    "unmerged accuracy. The solid staircase is the Pareto front over every method, the dashed one over "
    "label-free settings only; the red line is the accuracy target.")


def method_folders(cfg: DictConfig) -> tuple[dict[str, str], dict[str, str]]:
    """(methods with rows, every method with a section) -> folder under results/."""
    rows = {str(k): str(v) for k, v in OmegaConf.to_container(cfg.compare.methods).items()}
    only = {str(k): str(v) for k, v in OmegaConf.to_container(cfg.compare.sections_only).items()}
    return rows, {**rows, **only}


def read_unmerged(results: Path, models) -> tuple[dict[str, float], list[MethodProblem]]:
    docs, files = {}, {}
    for m in models:
        path = results / "metrics" / f"{m.name}.json"
        files[m.name] = str(path)
        try:
            docs[m.name] = read_json(path)
        except FileNotFoundError:
            pass  # reported by unmerged_accuracy, naming the file
        except ValueError as err:
            docs[m.name] = {}
            log.warning("%s", err)
    return unmerged_accuracy(docs, {m.name: m.metric for m in models}, files)


def headline(comp: Comparison, keep_target: float, verdicts) -> dict[str, Any]:
    """DVC metrics: counts and the best saving at the accuracy target, all methods and label-free."""
    def best(label_free: bool) -> float | None:
        ok = [r["bytes_saved_pct"] for r in comp.rows if math.isfinite(r["accuracy_kept"])
              and r["accuracy_kept"] >= keep_target and (not label_free or not r["labels_used"])]
        return round(max(ok), 4) if ok else None

    out: dict[str, Any] = {
        "n_settings": len(comp.rows),
        "n_methods": len(comp.per_method),
        "n_on_front": len(comp.front),
        "n_problems": len(comp.problems),
        "best_saved_pct_at_target": best(False),
        "best_label_free_saved_pct_at_target": best(True),
    }
    for s in comp.per_method:
        out[f"{s['method']}_best_saved_pct_at_target"] = s["best_saved_pct_at_target"]
    for v in verdicts:
        out[f"verdict_{v.paper}"] = v.verdict
    return out


def run(cfg: DictConfig) -> dict[str, Any]:
    from repshare.utils.runlog import RunLog

    results = Path(cfg.paths.results_dir)
    # Provenance beside the metrics (a cache: false out), not inside results/comparison/ which the
    # report stage hashes: an unchanged comparison keeps its hash.
    with RunLog(cfg, "compare", results / "metrics", group="comparison") as runlog:
        c = cfg.compare
        row_folders, section_folders = method_folders(cfg)
        models = workload_models(cfg.workload)
        names = [m.name for m in models]
        unmerged, problems = read_unmerged(results, models)
        rows, row_problems = load_method_rows(results, row_folders)
        sections, sec_problems = load_sections(results, section_folders)
        problems += row_problems + sec_problems
        comp = compare(rows, names, unmerged, {m.name: m.metric for m in models}, kept_mode=str(c.accuracy_kept),
                       keep_target=float(c.keep_target), problems=problems, method_order=list(row_folders))
        missing = {p.method: p.message for p in sec_problems}
        verdicts = paper_verdicts(sections, missing, PAPERS)
        for p in problems:
            log.warning("compare: %s: %s", p.file, p.message)

        cols, table = comparison_table(comp, METHOD_NAMES)
        _, shortlist = comparison_table(comp, METHOD_NAMES, only=highlights(comp))
        metrics = headline(comp, float(c.keep_target), verdicts)
        with atomic_dir(results / "comparison") as out:
            write_json(out / "comparison.json", {
                "models": comp.models, "unmerged": comp.unmerged, "metric": {m.name: m.metric for m in models},
                "accuracy_kept": str(c.accuracy_kept), "keep_target": float(c.keep_target),
                "rows": comp.rows, "front": comp.front, "front_label_free": comp.front_label_free,
                "per_method": comp.per_method, "problems": [asdict(p) for p in comp.problems],
                "columns": cols, "table": table, "shortlist": shortlist,
            })
            write_json(out / "verdicts.json", {"papers": [asdict(v) for v in verdicts]})
            pd.DataFrame(table, columns=cols).to_csv(out / "comparison.csv", index=False)
            comparison_figure(comp, out / "comparison", METHOD_NAMES, keep_target=float(c.keep_target))
        write_json(results / "metrics" / "comparison.json", metrics)
        with atomic_path(results / "plots" / "comparison.csv") as tmp:
            pd.DataFrame([{"method": r["method"], "setting": r["setting"], "bytes_saved_pct": r["bytes_saved_pct"],
                           "accuracy_kept": r["accuracy_kept"], "labels_used": r["labels_used"],
                           "on_front": r["on_front"]} for r in comp.rows],
                         columns=["method", "setting", "bytes_saved_pct", "accuracy_kept", "labels_used",
                                  "on_front"]).to_csv(tmp, index=False)

        runlog.summary(**{k: v for k, v in metrics.items() if not isinstance(v, str)})
        runlog.log_table("comparison", [{k: ("" if v is None else v) for k, v in r.items()} for r in table])
        log.info("compare: %d settings from %d methods, %d on the front, %d problems", len(comp.rows),
                 len(comp.per_method), len(comp.front), len(comp.problems))
    return {"comparison": comp, "verdicts": verdicts, "metrics": metrics}
