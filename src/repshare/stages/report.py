"""DVC stage ``report``: the reviewer dashboard in ``results/report/`` (last stage of the pipeline).

Reads the comparison stage's ``results/comparison/`` and every method's ``section.json``, the
``<stage>_run.json`` records for stage times, and renders static pages with
:func:`repshare.report.render_dashboard`. A missing or malformed input is shown on the overview
(file and field named) while everything else is rendered; ``report.strict=true`` then fails the
stage after writing the pages, for CI.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from repshare.comparison.compare import load_sections
from repshare.comparison.verdict import PAPERS, paper_verdicts
from repshare.report.names import METHOD_NAMES, METRIC_NAMES, STAGE_NAMES, readable
from repshare.report.render import Page, Problem, render_dashboard
from repshare.stages.compare import FIGURE_CAPTION, method_folders
from repshare.utils.io import atomic_dir, read_json
from repshare.workload import workload_models

log = logging.getLogger("repshare.report")

COMBINATION_NOTE = (
    "The methods are not stacked here. Gemel shares identical layers between models; representation "
    "sharing removes the classifier's layers up to the cut and feeds it the detector's stage output; "
    "MEEdge adds and merges exit branches on the classifier. On this workload Gemel's and the cut's "
    "savings overlap in the same early backbone layers, so their sum would overstate a combination; "
    "measuring one needs retraining the merged backbone with the cut in place, which no stage does yet. "
    "MEEdge's branches are complementary (they live after the backbone stages) but are judged by mAE, "
    "not by the classifier's top-1, so its points compare on memory, not one-for-one on accuracy.")


def stage_times(*roots: Path) -> list[dict[str, Any]]:
    """One row per ``<stage>_run.json`` under the roots (results/, data/; W&B's folder skipped), oldest first."""
    found = []
    for root, pattern in ((r, p) for r in roots for p in ("*_run.json", "*/*_run.json", "*/*/*_run.json")):
        for path in root.glob(pattern):
            if "wandb" in path.relative_to(root).parts:
                continue
            try:
                doc = read_json(path)
            except (FileNotFoundError, ValueError):
                continue
            if not isinstance(doc, dict) or "seconds" not in doc:
                continue
            stage = str(doc.get("stage") or path.name[: -len("_run.json")])
            if stage == "report":  # this stage's previous record: not this run's time
                continue
            found.append({"Stage": readable(stage, STAGE_NAMES), "Seconds": doc.get("seconds"),
                          "Finished": doc.get("created", ""), "Record": f"{root.name}/{path.relative_to(root)}"})
    return sorted(found, key=lambda r: str(r["Finished"]))


def _cards(per_method: list[dict], row_folders: dict[str, str], section_folders: dict[str, str],
           pages: dict[str, Page]) -> list[dict[str, Any]]:
    cards = []
    summary = {s["method"]: s for s in per_method}
    for key in section_folders:
        name = METHOD_NAMES.get(key, readable(key))
        s = summary.get(key)
        if key not in row_folders:
            text = "Saves no memory: its own page, no comparison rows."
        elif s is None:
            text = "No comparison rows (see the problems above)."
        else:
            labels = {True: "needs labels", False: "label-free"}
            lab = " and ".join(labels[x] for x in s["labels_used"])
            best = (f"best at accuracy kept >= {s['keep_target']:g}: {s['best_saved_pct_at_target'] + 0.0:.2f} % saved "
                    f"({s['best_setting_at_target']})" if s["best_saved_pct_at_target"] is not None
                    else f"no setting keeps >= {s['keep_target']:g} of the accuracy")
            text = f"{s['settings']} settings ({lab}), {s['on_front']} on the front; {best}."
        page = pages.get(key)
        cards.append({"name": name, "text": text, "href": f"{key}.html" if page else None})
    return cards


def run(cfg: DictConfig) -> dict[str, Any]:
    from importlib import metadata

    from repshare.utils.record import machine, package_versions
    from repshare.utils.runlog import RunLog

    results = Path(cfg.paths.results_dir)
    with RunLog(cfg, "report", results / "metrics", group="comparison") as runlog:
        row_folders, section_folders = method_folders(cfg)
        models = workload_models(cfg.workload)
        sections, sec_problems = load_sections(results, section_folders)
        problems = [Problem(METHOD_NAMES.get(p.method, p.method), p.file, p.message) for p in sec_problems]

        comp_dir = results / "comparison"
        try:
            comp = read_json(comp_dir / "comparison.json")
        except (FileNotFoundError, ValueError) as err:
            problems.append(Problem("Comparison", str(comp_dir / "comparison.json"), f"{err} (run the compare stage)"))
            comp = {"columns": [], "table": [], "per_method": [], "problems": [], "unmerged": {}}
        # The comparison's own problems (rows and metrics files) are shown too; section problems found
        # again here are not repeated.
        seen = {p.file for p in problems}
        problems += [Problem(METHOD_NAMES.get(p["method"], readable(p["method"])), p["file"], p["message"])
                     for p in comp.get("problems", []) if p["file"] not in seen]
        missing = {p.method: p.message for p in sec_problems}
        verdicts = [asdict(v) for v in paper_verdicts(sections, missing, PAPERS)]
        for v, paper in zip(verdicts, PAPERS):
            v["methods"] = list(paper.methods)

        pages = {key: Page(key, METHOD_NAMES.get(key, readable(key)), results / folder, sections.get(key),
                           [Problem(pr.title, pr.file, pr.message) for pr in problems
                            if pr.file.startswith(str(results / folder) + "/")])
                 for key, folder in section_folders.items()}
        unmerged = comp.get("unmerged", {})
        model_rows = [{"Model": m.name, "Task": m.task, "Metric": METRIC_NAMES.get(m.metric, m.metric),
                       "Unmerged": unmerged.get(m.name)} for m in models]
        png = comp_dir / "comparison.png"
        shortlist = comp.get("shortlist", comp.get("table", []))
        try:
            version = metadata.version("repshare")
        except metadata.PackageNotFoundError:
            version = "unknown"
        lede = (f"Workload '{cfg.workload.name}': {', '.join(m.name for m in models)}. Experiment "
                f"'{cfg.experiment_name}', seed {cfg.seed}. Four papers' methods run on the same models; this page "
                "compares them, each method's page has the details.")
        with atomic_dir(results / "report") as out:
            written, shown = render_dashboard(
                out, site_title=str(cfg.report.title), lede=lede, pages=list(pages.values()), verdicts=verdicts,
                method_cards=_cards(comp.get("per_method", []), row_folders, section_folders, pages),
                comparison_columns=comp.get("columns", []), comparison_rows=shortlist,
                comparison_caption=(f"{len(shortlist)} of {len(comp.get('table', []))} settings: both Pareto fronts "
                                    "and each method's best setting at the accuracy target; every setting is in "
                                    "results/comparison/comparison.csv. Accuracy kept = the "
                                    f"{comp.get('accuracy_kept', 'min')} over the workload's models of accuracy "
                                    "relative to unmerged (a model a setting does not touch keeps 1). Memory saved "
                                    "is of the whole workload's weight bytes."),
                comparison_png=png if comp.get("columns") else None, comparison_figure_caption=FIGURE_CAPTION,
                model_rows=model_rows, time_rows=stage_times(results, Path(cfg.paths.data_dir)), machine=machine(),
                versions=package_versions(), config_yaml=OmegaConf.to_yaml(cfg, resolve=True),
                problems=problems, combination_note=COMBINATION_NOTE, version=version)
        problems = shown  # with the figures found missing while rendering
        n_problems = len(problems)
        runlog.summary(pages=len(written), problems=n_problems)
        log.info("report: %d pages in %s, %d problems", len(written), results / "report", n_problems)
        if cfg.report.strict and problems:
            raise ValueError(f"report.strict: {problems[0].file}: {problems[0].message}")
    return {"pages": [results / "report" / p.name for p in written], "problems": problems}
