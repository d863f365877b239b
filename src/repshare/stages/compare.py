"""DVC stage ``compare``: every method's comparison rows side by side, and every paper's claims judged.

Reads (each verified against its writer's checksums.json) ``results/<folder>/comparison_rows.json``
and ``section.json`` for each method in ``compare.methods`` (plus ``compare.sections_only``), each
workload model's unmerged accuracy from ``results/metrics/<model>.json``, and the seed study's
``results/study/estimates.json`` when present. Applies the claim registry with the one verdict rule
(:mod:`repshare.comparison.verdict`). An input with a problem stops the stage with one line (exit 2)
unless ``compare.allow_problems=true``, which lists the problems (file and field named) for a partial
dashboard. Writes ``results/compare/`` (comparison, claims and verdicts as json/csv, the figure),
``results/metrics/compare.json`` (DVC metrics) and ``results/plots/comparison.csv``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from repshare.comparison.compare import (
    Comparison,
    MethodProblem,
    compare,
    comparison_table,
    highlights,
    load_method_rows,
    load_sections,
    method_folders,
    read_unmerged,
)
from repshare.comparison.figure import comparison_figure
from repshare.comparison.jsonfile import strict
from repshare.comparison.registry import check_registry, quantities, registry
from repshare.comparison.study import StudyError, config_fingerprint, read_study, study_use
from repshare.comparison.verdict import PaperReport, csv_rows, judge_papers, verdicts_doc
from repshare.report.names import METHOD_NAMES
from repshare.utils.io import atomic_dir, write_csv, write_json
from repshare.workload import workload_models

log = logging.getLogger("repshare.compare")
STUDY_FILE = Path("study") / "estimates.json"


def stop_or_warn(problems: list[MethodProblem], allow: bool) -> None:
    """Problems in the inputs stop the stage (one line naming the first) unless allowed."""
    for p in problems:
        log.warning("compare: %s", p.message)
    if problems and not allow:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise ValueError(f"{problems[0].message}{more}; compare.allow_problems=true renders a partial dashboard")


def headline(comp: Comparison, keep_target: float, reports: list[PaperReport]) -> dict[str, Any]:
    """DVC metrics: counts, the best saving at the accuracy target, each paper's verdict and counts."""
    def best(label_free: bool) -> float | None:
        ok = [r["bytes_saved_pct"] for r in comp.rows if math.isfinite(r["accuracy_kept"])
              and r["accuracy_kept"] >= keep_target and (not label_free or not r["labels_used"])]
        return round(max(ok), 4) if ok else None

    out: dict[str, Any] = {"n_settings": len(comp.rows), "n_methods": len(comp.per_method),
                           "n_on_front": len(comp.front), "n_problems": len(comp.problems),
                           "best_saved_pct_at_target": best(False), "best_label_free_saved_pct_at_target": best(True)}
    for s in comp.per_method:
        out[f"{s['method']}_best_saved_pct_at_target"] = s["best_saved_pct_at_target"]
    for r in reports:
        out[f"verdict_{r.paper}"] = r.verdict
        out[f"claims_{r.paper}_holds"] = r.counts["holds"]
        out[f"claims_{r.paper}_does_not"] = r.counts["does not"]
    return out


def run(cfg: DictConfig) -> dict[str, Any]:
    from repshare.utils.runlog import RunLog

    check_registry()  # a bad claim entry: one line naming it, before any input is read
    results = Path(cfg.paths.results_dir)
    c = cfg.compare
    # Provenance beside the metrics (a cache: false out), not inside results/compare/ which the
    # report stage hashes: an unchanged comparison keeps its hash.
    with RunLog(cfg, "compare", results / "metrics", group="comparison") as runlog:
        row_folders, section_folders = method_folders(OmegaConf.to_container(c.methods),
                                                      OmegaConf.to_container(c.sections_only))
        models = workload_models(cfg.workload)
        metric_of = {m.name: m.metric for m in models}
        unmerged, problems = read_unmerged(results, list(metric_of.items()))
        rows, row_problems = load_method_rows(results, row_folders)
        sections, sec_problems = load_sections(results, section_folders)
        problems += row_problems + sec_problems
        try:
            study, study_note = study_use(read_study(results / STUDY_FILE), config_fingerprint(cfg))
        except (StudyError, ValueError) as err:  # ArtifactError too
            problems.append(MethodProblem("study", str(results / STUDY_FILE), str(err)))
            study, study_note = None, f"the seed study could not be read ({err}): verdicts use this run's intervals"
        missing = {p.method: p.message for p in sec_problems}
        reports, issues = judge_papers(registry(), sections, missing, study.estimates if study else None,
                                       quantities=quantities())
        problems += [MethodProblem(m, str(results / section_folders[m] / "section.json"),
                                   f"{results / section_folders[m] / 'section.json'}: {msg}") for m, msg in issues]
        stop_or_warn(problems, bool(c.allow_problems))
        log.info("compare: %s", study_note)

        comp = compare(rows, list(metric_of), unmerged, metric_of, kept_mode=str(c.accuracy_kept),
                       keep_target=float(c.keep_target), problems=problems, method_order=list(row_folders))
        cols, table = comparison_table(comp, METHOD_NAMES)
        _, shortlist = comparison_table(comp, METHOD_NAMES, only=highlights(comp))
        metrics = headline(comp, float(c.keep_target), reports)
        claims = [row for r in reports for row in r.claims]
        with atomic_dir(results / "compare", stage="compare") as out:
            write_json(out / "comparison.json", strict({
                "models": comp.models, "unmerged": comp.unmerged, "metric": metric_of,
                "accuracy_kept": str(c.accuracy_kept), "keep_target": float(c.keep_target),
                "rows": comp.rows, "front": comp.front, "front_label_free": comp.front_label_free,
                "per_method": comp.per_method, "problems": [asdict(p) for p in comp.problems],
                "columns": cols, "table": table, "shortlist": shortlist,
            }))
            write_json(out / "claims.json", strict({"intervals": study_note, "claims": claims}))
            write_csv(out / "claims.csv", csv_rows(reports))
            write_json(out / "verdicts.json", strict(verdicts_doc(reports, study_note)))
            write_csv(out / "comparison.csv", [{k: ("" if v is None else v) for k, v in r.items()} for r in table])
            comparison_figure(comp, out / "comparison", METHOD_NAMES, keep_target=float(c.keep_target))
        write_json(results / "metrics" / "compare.json", strict(metrics))
        keys = ("method", "setting", "bytes_saved_pct", "accuracy_kept", "labels_used", "on_front")
        write_csv(results / "plots" / "comparison.csv", [{k: r[k] for k in keys} for r in comp.rows])

        runlog.summary(**{k: v for k, v in metrics.items() if not isinstance(v, str)})
        runlog.log_table("comparison", [{k: ("" if v is None else v) for k, v in r.items()} for r in table])
        runlog.log_table("claims", csv_rows(reports))
        log.info("compare: %d settings from %d methods, %d on the front, %d claims judged, %d problems",
                 len(comp.rows), len(comp.per_method), len(comp.front), len(claims), len(comp.problems))
    return {"comparison": comp, "verdicts": reports, "metrics": metrics}
