"""Every method side by side on one workload: merge the rows, fill untouched models, the Pareto front.

Pure functions over :class:`ComparisonRow` lists and plain values, and the loaders that read and
verify every method's files (a bad file becomes a :class:`MethodProblem` naming the file and field;
the stage decides whether problems stop it). Definitions used throughout:

- **accuracy kept** of a row = the *smallest* accuracy_rel over all the workload's models (a model
  the setting does not touch keeps 1.0): the box is only as good as its most damaged model. The
  ``mean`` is offered as an alternative (``compare.accuracy_kept``).
- **memory saved** = ``bytes_saved_pct`` (of the whole workload's weight bytes).
- **Pareto front**: rows no other row beats on both axes (saves at least as much *and* keeps at least
  as much, strictly better on one). Computed over all rows, and over the label-free rows alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from repshare.comparison.jsonfile import read_strict_json
from repshare.comparison.rows import IDENTIFIER, ComparisonRow, RowsError, read_rows
from repshare.comparison.section import ReportSection, SectionError, read_section

KEPT_MODES = ("min", "mean")
# The workload's metric name -> its key in results/metrics/<model>.json (written by training).
METRIC_KEYS = {"top1": "top1", "top5": "top5", "mAP": "map", "mAP50": "map_50", "mAE": "mae"}
# results/<folder> -> the stage that writes it (named in "rerun the ... stage" messages).
WRITERS = {"analyze": "analyze", "gemel": "gemel", "kd_recover": "kd_recover", "placement": "placement",
           "concurrency": "concurrency"}


@dataclass
class MethodProblem:
    """A method file that could not be used: shown on the dashboard, the other methods still are."""

    method: str
    file: str
    message: str


@dataclass
class Comparison:
    rows: list[dict[str, Any]]  # one per (method, setting), filled, with kept / front flags
    front: list[int]  # indices into rows on the Pareto front (all methods)
    front_label_free: list[int]  # same, label-free rows only
    per_method: list[dict[str, Any]]  # one summary per method
    problems: list[MethodProblem] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    unmerged: dict[str, float] = field(default_factory=dict)


def load_method_rows(results_dir: str | Path, folders: Mapping[str, str]) -> tuple[list[ComparisonRow], list[MethodProblem]]:
    """Read ``results/<folder>/comparison_rows.json`` for each method; a bad file becomes a problem.

    A row whose ``method`` differs from the method the folder belongs to is a problem too (it would
    be plotted under the wrong marker).
    """
    rows: list[ComparisonRow] = []
    problems: list[MethodProblem] = []
    for method, folder in folders.items():
        if not (IDENTIFIER.match(method) and IDENTIFIER.match(folder)):
            problems.append(MethodProblem(method, folder, f"method {method!r} / folder {folder!r} is not an identifier"))
            continue
        path = Path(results_dir) / folder / "comparison_rows.json"
        try:
            got = read_rows(path, WRITERS.get(folder, folder))
            for k, r in enumerate(got):
                if r.method != method:
                    raise RowsError(f"{path} row {k}: field 'method' is {r.method!r}, expected {method!r}")
        except ValueError as err:  # RowsError and ArtifactError
            problems.append(MethodProblem(method, str(path), str(err)))
            continue
        rows.extend(got)
    return rows, problems


def method_folders(methods: Mapping[str, str], sections_only: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(methods with rows, every method with a section) -> folder under results/ (compare.methods,
    compare.sections_only)."""
    rows = {str(k): str(v) for k, v in methods.items()}
    return rows, {**rows, **{str(k): str(v) for k, v in sections_only.items()}}


def read_unmerged(results_dir: str | Path, models: Sequence[tuple[str, str]]) -> tuple[dict[str, float], list[MethodProblem]]:
    """Each workload model's unmerged accuracy from ``results/metrics/<name>.json`` (``models``: (name, metric)).

    Those metrics files are DVC metrics (no checksums.json: training writes them beside its run
    records); their values are checked instead (a finite fraction). A name that is not an identifier is
    never turned into a path."""
    docs, files = {}, {}
    for name, _ in models:
        if not IDENTIFIER.match(name):
            continue  # unmerged_accuracy reports it; no path is built from it
        path = Path(results_dir) / "metrics" / f"{name}.json"
        files[name] = str(path)
        if not path.is_file():
            continue  # unmerged_accuracy reports the missing file
        try:
            docs[name] = read_strict_json(path)
        except ValueError as err:
            docs[name], files[name] = {}, f"{path} ({err})"
    return unmerged_accuracy(docs, dict(models), files)


def unmerged_accuracy(metrics_docs: Mapping[str, Mapping[str, Any]], metric_of: Mapping[str, str],
                      files: Mapping[str, str] | None = None) -> tuple[dict[str, float], list[MethodProblem]]:
    """Each workload model's unmerged accuracy from its metrics doc (``results/metrics/<name>.json``).

    ``metrics_docs``: model -> the parsed json (absent model = file missing); ``metric_of``: model ->
    workload metric name. Missing files or fields become problems naming the file and field.
    """
    out: dict[str, float] = {}
    problems: list[MethodProblem] = []
    for model, metric in metric_of.items():
        where = (files or {}).get(model, f"results/metrics/{model}.json")
        if not IDENTIFIER.match(str(model)):
            problems.append(MethodProblem("workload", str(model), f"workload model name {model!r} is not an identifier "
                                                                   "(letters, digits, _ and -): no file is read for it"))
            continue
        if metric not in METRIC_KEYS:
            problems.append(MethodProblem("workload", where, f"workload model {model!r}: unknown metric {metric!r} "
                                                             f"(one of {', '.join(METRIC_KEYS)})"))
            continue
        doc = metrics_docs.get(model)
        if doc is None:
            problems.append(MethodProblem("workload", where, f"missing file {where} (unmerged accuracy of {model!r})"))
            continue
        key = METRIC_KEYS[metric]
        v = doc.get(key) if isinstance(doc, Mapping) else None
        if v is None and isinstance(doc, Mapping) and isinstance(doc.get("not_measured"), str):
            continue  # said why by the stage that wrote it (e.g. a detector on ImageNet: no boxes); stays unknown
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 <= v <= 1:
            problems.append(MethodProblem("workload", where, f"{where}: field {key!r} ({metric} of {model!r}) "
                                                              f"must be a finite number in [0, 1], got {v!r}"))
            continue
        out[model] = float(v)
    return out, problems


def fill_untouched(row: ComparisonRow, models: Sequence[str], unmerged: Mapping[str, float],
                   metric_of: Mapping[str, str]) -> ComparisonRow:
    """A copy of ``row`` listing every workload model: an untouched one keeps its unmerged accuracy."""
    acc, rel, metric = dict(row.accuracy), dict(row.accuracy_rel), dict(row.metric)
    for m in models:
        if m not in acc and m not in row.models:
            acc[m] = unmerged.get(m, math.nan)
            rel[m] = 1.0
        metric.setdefault(m, metric_of.get(m, ""))
    return replace(row, accuracy=acc, accuracy_rel=rel, metric=metric)


def accuracy_kept(row: ComparisonRow, models: Sequence[str], mode: str = "min") -> float:
    """min (or mean) of accuracy_rel over the workload's models; nan when a model has no value."""
    if mode not in KEPT_MODES:
        raise ValueError(f"compare.accuracy_kept={mode!r} is not one of {', '.join(KEPT_MODES)}")
    vals = [float(row.accuracy_rel.get(m, math.nan)) for m in models]
    if not vals or any(not math.isfinite(v) for v in vals):
        return math.nan
    return min(vals) if mode == "min" else sum(vals) / len(vals)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point dominates, both coordinates to maximise.

    q dominates p when q >= p in both coordinates and q > p in at least one. Points with a nan
    coordinate are never on the front; exact duplicates are all kept. Sorted by the first coordinate.
    """
    idx = [k for k, (x, y) in enumerate(points) if math.isfinite(x) and math.isfinite(y)]
    # Sweep from the largest x down; a point is on the front if its y beats every y seen at larger x.
    idx.sort(key=lambda k: (-points[k][0], -points[k][1]))
    front: list[int] = []
    best_y = -math.inf
    k = 0
    while k < len(idx):
        x = points[idx[k]][0]
        group = [j for j in idx[k:] if points[j][0] == x]  # equal x: only the highest y can survive
        top = max(points[j][1] for j in group)
        if top > best_y:
            front += [j for j in group if points[j][1] == top]
            best_y = top
        k += len(group)
    return sorted(front, key=lambda j: (points[j][0], points[j][1], j))


def _method_summary(method: str, rows: list[dict[str, Any]], keep_target: float) -> dict[str, Any]:
    ok = [r for r in rows if math.isfinite(r["accuracy_kept"]) and r["accuracy_kept"] >= keep_target]
    best = max(ok, key=lambda r: r["bytes_saved_pct"], default=None)
    most = max(rows, key=lambda r: r["bytes_saved_pct"], default=None)
    return {
        "method": method,
        "settings": len(rows),
        "labels_used": sorted({r["labels_used"] for r in rows}),
        "on_front": sum(r["on_front"] for r in rows),
        "best_saved_pct_at_target": best["bytes_saved_pct"] if best else None,
        "best_setting_at_target": best["setting"] if best else None,
        "accuracy_kept_at_best": best["accuracy_kept"] if best else None,
        "max_saved_pct": most["bytes_saved_pct"] if most else None,
        "keep_target": keep_target,
    }


def compare(rows: Iterable[ComparisonRow], models: Sequence[str], unmerged: Mapping[str, float],
            metric_of: Mapping[str, str], *, kept_mode: str = "min", keep_target: float = 0.95,
            problems: Sequence[MethodProblem] = (), method_order: Sequence[str] = ()) -> Comparison:
    """Fill, score and rank every row; the Pareto fronts; a summary per method."""
    filled = [fill_untouched(r, models, unmerged, metric_of) for r in rows]
    plain: list[dict[str, Any]] = []
    for r in filled:
        d = asdict(r)
        d["accuracy_kept"] = accuracy_kept(r, models, kept_mode)
        plain.append(d)
    pts = [(float(d["bytes_saved_pct"]), float(d["accuracy_kept"])) for d in plain]
    front = pareto_front(pts)
    free = [k for k, d in enumerate(plain) if not d["labels_used"]]
    front_free = [free[k] for k in pareto_front([pts[j] for j in free])]
    for k, d in enumerate(plain):
        d["on_front"] = k in front
        d["on_label_free_front"] = k in front_free
    order = list(dict.fromkeys([*method_order, *(d["method"] for d in plain)]))
    per_method = [_method_summary(m, [d for d in plain if d["method"] == m], keep_target)
                  for m in order if any(d["method"] == m for d in plain)]
    return Comparison(rows=plain, front=front, front_label_free=front_free, per_method=per_method,
                      problems=list(problems), models=list(models), unmerged=dict(unmerged))


def highlights(comp: Comparison) -> list[int]:
    """The rows a reviewer needs: both Pareto fronts plus each method's best setting at the target
    (or its largest saving when none reaches it). The full table goes to the CSV."""
    keep = set(comp.front) | set(comp.front_label_free)
    for s in comp.per_method:
        mine = [k for k, r in enumerate(comp.rows) if r["method"] == s["method"]]
        best = [k for k in mine if comp.rows[k]["setting"] == s["best_setting_at_target"]]
        keep.update(best[:1] or sorted(mine, key=lambda k: -comp.rows[k]["bytes_saved_pct"])[:1])
    return sorted(keep)


def comparison_table(comp: Comparison, names: Mapping[str, str] | None = None,
                     only: Iterable[int] | None = None) -> tuple[list[str], list[dict[str, Any]]]:
    """Readable columns and rows (``only``: these row indices) for the dashboard and the CSV;
    front first, then by memory saved."""
    names = names or {}
    cols = ["Method", "Setting", "Labels", "Memory saved (MB)", "Memory saved (%)", "Accuracy kept (worst model)"]
    cols += [f"{m} accuracy" for m in comp.models]
    cols += ["Retraining (s, cost model)", "Retraining images", "Extra MFLOPs / image", "Pareto front"]
    chosen = range(len(comp.rows)) if only is None else only
    order = sorted(chosen, key=lambda k: (not comp.rows[k]["on_front"], -comp.rows[k]["bytes_saved_pct"]))
    out = []
    for k in order:
        r = comp.rows[k]
        row = {
            "Method": names.get(r["method"], r["method"]),
            "Setting": r["setting"],
            "Labels": "needs labels" if r["labels_used"] else "label-free",
            "Memory saved (MB)": round(r["bytes_saved"] / 1e6, 3),
            "Memory saved (%)": round(r["bytes_saved_pct"], 2),
            "Accuracy kept (worst model)": _round(r["accuracy_kept"], 4),
            # 0 modelled seconds beside retraining images: the method models no time (shown as "-", not 0)
            "Retraining (s, cost model)": (round(r["retrain_seconds"], 1)
                                           if r["retrain_seconds"] > 0 or not r["retrain_images"] else None),
            "Retraining images": int(r["retrain_images"]),
            "Extra MFLOPs / image": round(r["extra_flops_per_image"] / 1e6, 3),
            "Pareto front": "all + label-free" if r["on_label_free_front"] and r["on_front"]
            else "all" if r["on_front"] else "label-free" if r["on_label_free_front"] else "",
        }
        for m in comp.models:
            row[f"{m} accuracy"] = _round(r["accuracy"].get(m, math.nan), 4)
        out.append(row)
    return cols, out


def _round(v: float, nd: int) -> float | None:
    return round(float(v), nd) if isinstance(v, (int, float)) and math.isfinite(v) else None


# --------------------------------------------------------------------------- sections
def load_sections(results_dir: str | Path, folders: Mapping[str, str]) -> tuple[dict[str, ReportSection], list[MethodProblem]]:
    """Read and verify ``results/<folder>/section.json`` per method; a missing or bad one becomes a problem."""
    sections: dict[str, ReportSection] = {}
    problems: list[MethodProblem] = []
    for method, folder in folders.items():
        if not (IDENTIFIER.match(method) and IDENTIFIER.match(folder)):
            problems.append(MethodProblem(method, folder, f"method {method!r} / folder {folder!r} is not an identifier"))
            continue
        path = Path(results_dir) / folder / "section.json"
        try:
            sec = read_section(path, WRITERS.get(folder, folder))
            if sec.method != method:
                raise SectionError(f"{path}: field 'method' is {sec.method!r}, expected {method!r} (the folder's method)")
            sections[method] = sec
        except (FileNotFoundError, ValueError) as err:  # SectionError and ArtifactError are ValueErrors
            problems.append(MethodProblem(method, str(path), str(err)))
    return sections, problems
