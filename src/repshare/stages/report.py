"""DVC stage ``report``: the reviewer dashboard in ``results/report/`` (last stage of the pipeline).

Reads (each verified against its writer's checksums.json) the comparison stage's
``results/compare/`` (comparison, claims, verdicts, figure) and every method's ``section.json``
and figures, plus the ``<stage>_run.json`` records and ``dvc.lock`` for the provenance footer, and
renders static pages with :func:`repshare.report.render.render_dashboard`. A missing or malformed
input stops the stage with one line (exit 2) unless ``compare.allow_problems=true``, which shows the
problem on the overview (file and field named) and renders everything else.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from repshare.comparison.compare import WRITERS, load_sections, method_folders
from repshare.comparison.figure import CAPTION
from repshare.comparison.jsonfile import read_strict_json
from repshare.comparison.registry import check_registry, quantities, registry
from repshare.report import provenance as prov
from repshare.report.names import COMBINATION_NOTE, METHOD_NAMES, METRIC_NAMES, readable
from repshare.report.render import Dashboard, Page, Problem, page_file, render_dashboard
from repshare.utils.io import atomic_dir
from repshare.workload import workload_models

log = logging.getLogger("repshare.report")
EMPTY = {"columns": [], "table": [], "shortlist": [], "rows": [], "per_method": [], "problems": [], "unmerged": {},
         "keep_target": 0.95, "accuracy_kept": "min"}


def read_comparison(comp_dir: Path, claim_keys: list[str]) -> tuple[dict, dict, dict, list[Problem]]:
    """comparison.json, claims.json, verdicts.json (verified); a problem for each one missing or stale."""
    from repshare.utils.artifacts import verify_file

    docs, problems = [], []
    for name, empty in (("comparison.json", EMPTY), ("claims.json", {"claims": [], "intervals": ""}),
                        ("verdicts.json", {"papers": [], "rule": "", "intervals": ""})):
        path = comp_dir / name
        try:
            docs.append(read_strict_json(verify_file(path, "compare")))
        except ValueError as err:  # missing, corrupt (ArtifactError), malformed
            problems.append(Problem("Comparison", str(path), str(err)))
            docs.append(empty)
    got = [c.get("key") for c in docs[1].get("claims", [])]
    if docs[1].get("claims") and sorted(got) != sorted(claim_keys):
        problems.append(Problem("Comparison", str(comp_dir / "claims.json"),
                                f"{comp_dir / 'claims.json'} does not list the registry's claims (stale: rerun compare)"))
    return docs[0], docs[1], docs[2], problems


def method_cards(per_method: list[dict], row_folders: dict[str, str], section_folders: dict[str, str],
                 pages: dict[str, Page]) -> list[dict[str, Any]]:
    cards = []
    summary = {s["method"]: s for s in per_method}
    for key in section_folders:
        s = summary.get(key)
        if key not in row_folders:
            text = "Saves no memory: its own page, no comparison rows."
        elif s is None:
            text = "No comparison rows (see the problems above)."
        else:
            lab = " and ".join({True: "needs labels", False: "label-free"}[x] for x in s["labels_used"])
            best = (f"best at accuracy kept >= {s['keep_target']:g}: {s['best_saved_pct_at_target'] + 0.0:.2f} % saved "
                    f"({s['best_setting_at_target']})" if s["best_saved_pct_at_target"] is not None
                    else f"no setting keeps >= {s['keep_target']:g} of the accuracy")
            text = f"{s['settings']} settings ({lab}), {s['on_front']} on the front; {best}."
        cards.append({"name": METHOD_NAMES.get(key, readable(key)), "text": text,
                      "href": page_file(key) if key in pages else None})
    return cards


def provenance(cfg: DictConfig, results: Path) -> dict[str, Any]:
    """The footer's values: run records, dvc.lock, overrides of the experiment preset."""
    from repshare.config import CONF_DIR, compose_raw

    name = str(cfg.experiment_name)
    preset = [f"experiment={name}"] if (Path(CONF_DIR) / "experiment" / f"{name}.yaml").is_file() else []
    base = OmegaConf.to_container(compose_raw(preset), resolve=True)
    over = prov.overrides(OmegaConf.to_container(cfg, resolve=True), base)
    roots = [results.resolve(), Path(cfg.paths.data_dir).resolve()]
    # dvc.lock describes this run only where its outputs are this run's folders (not in a sweep job's)
    lock = [r for r in prov.lock_hashes(Path("dvc.lock"))
            if any(root == Path(r["Output"]).resolve() or root in Path(r["Output"]).resolve().parents for root in roots)]
    return prov.summary(prov.run_records(results, Path(cfg.paths.data_dir)), lock, over, name)


def run(cfg: DictConfig) -> dict[str, Any]:
    from importlib import metadata

    from repshare.utils.runlog import RunLog

    check_registry()
    results = Path(cfg.paths.results_dir)
    with RunLog(cfg, "report", results / "metrics", group="comparison") as runlog:
        row_folders, section_folders = method_folders(OmegaConf.to_container(cfg.compare.methods),
                                                      OmegaConf.to_container(cfg.compare.sections_only))
        sections, sec_problems = load_sections(results, section_folders)
        problems = [Problem(METHOD_NAMES.get(p.method, p.method), p.file, p.message) for p in sec_problems]
        comp_dir = results / "compare"
        comp, claims, verdicts, comp_problems = read_comparison(comp_dir, [c.key for c in registry()])
        problems += comp_problems
        seen = {p.file for p in problems}  # the comparison's own problems, those not found again here
        problems += [Problem(METHOD_NAMES.get(p["method"], readable(p["method"])), p["file"], p["message"])
                     for p in comp.get("problems", []) if p["file"] not in seen]
        pages = {key: Page(key, METHOD_NAMES.get(key, readable(key)), results / folder, sections.get(key),
                           [pr for pr in problems if pr.file.startswith(str(results / folder) + "/")])
                 for key, folder in section_folders.items()}
        models = workload_models(cfg.workload)
        unmerged = comp.get("unmerged", {})
        shortlist = comp.get("shortlist", [])
        try:
            version = metadata.version("repshare")
        except metadata.PackageNotFoundError:
            version = "unknown"
        dash = Dashboard(
            site_title=str(cfg.report.title), pages=list(pages.values()), papers=verdicts.get("papers", []),
            lede=(f"Workload '{cfg.workload.name}': {', '.join(m.name for m in models)}. Experiment "
                  f"'{cfg.experiment_name}', seed {cfg.seed}. Four papers' methods run on the same models; this page "
                  "gives each paper's verdict and compares the methods; each method's page has the details."),
            claims=claims.get("claims", []), intervals_note=str(claims.get("intervals", "")),
            rule=str(verdicts.get("rule", "")), method_cards=method_cards(comp.get("per_method", []), row_folders,
                                                                       section_folders, pages),
            comparison_columns=comp.get("columns", []), comparison_rows=shortlist, comparison_points=comp.get("rows", []),
            comparison_caption=(f"{len(shortlist)} of {len(comp.get('table', []))} settings: both Pareto fronts and each "
                                "method's best setting at the accuracy target; every setting is in "
                                "results/compare/comparison.csv. Accuracy kept = the "
                                f"{comp.get('accuracy_kept', 'min')} over the workload's models of accuracy relative "
                                "to unmerged (a model a setting does not touch keeps 1). Memory saved is of the whole "
                                "workload's weight bytes."),
            comparison_png=comp_dir / "comparison.png" if comp.get("columns") else None,
            comparison_figure_caption=CAPTION, keep_target=float(comp.get("keep_target", 0.95)),
            model_rows=[{"Model": m.name, "Task": m.task, "Metric": METRIC_NAMES.get(m.metric, m.metric),
                         "Unmerged": unmerged.get(m.name)} for m in models],
            provenance=provenance(cfg, results), config_yaml=OmegaConf.to_yaml(cfg, resolve=True),
            quantities=quantities(), problems=problems, combination_note=COMBINATION_NOTE, version=version,
            stage_hints={k: WRITERS.get(f, f) for k, f in section_folders.items()})
        if problems and not cfg.compare.allow_problems:  # before writing: the previous dashboard stays
            more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
            raise ValueError(f"{problems[0].message}{more}; compare.allow_problems=true renders a partial dashboard")
        with atomic_dir(results / "report", stage="report") as out:
            written, shown = render_dashboard(out, dash, METHOD_NAMES)
            if len(shown) > len(problems) and not cfg.compare.allow_problems:  # a figure missing or corrupt
                raise ValueError(f"{shown[len(problems)].message}; compare.allow_problems=true renders a partial "
                                 "dashboard")
        runlog.summary(pages=len(written), problems=len(shown))
        log.info("report: %d pages in %s, %d problems", len(written), results / "report", len(shown))
    return {"pages": [results / "report" / p.name for p in written], "problems": shown}
