"""Render the reviewer dashboard from Jinja2 templates (package data in ``templates/``).

Pure of the pipeline config: the ``report`` stage gathers plain values and calls
:func:`render_dashboard`. Pages: ``index.html`` (a verdict per paper, every method on one workload,
provenance), ``claims.html`` (every registered claim: the paper's value and where, ours with its
interval, the difference, the tolerance, the verdict and why; sanity checks apart) and one
``<method>.html`` per method section.

Safety: every text value goes through Jinja2's autoescaping; page file names come only from method
keys that are identifiers (:func:`page_file`), and every link is such a file name (plus a
``#fragment``); images are embedded as ``data:`` URIs; a page's Content-Security-Policy admits no
script, or on a page with charts exactly the vendored Vega scripts by hash (:mod:`repshare.report.vega`).
The pages hold no date or duration: the same results render to the same bytes.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from repshare.claims import VERDICTS
from repshare.comparison.section import Figure, ReportSection
import repshare.report.vega as vega
from repshare.report.intervals import interval_svg
from repshare.utils.io import write_text

MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}
PAGE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")


@dataclass
class Problem:
    """Something the dashboard could not show: where (file, field) and why."""

    title: str
    file: str
    message: str


@dataclass
class Page:
    """One method's page: ``<key>.html``; ``section`` None when it could not be read."""

    key: str
    name: str
    folder: Path  # where the section's relative figure paths start
    section: ReportSection | None
    problems: list[Problem] = field(default_factory=list)


def page_file(key: str) -> str:
    """``<key>.html`` for a method key; a key that is not an identifier never becomes a file or link name."""
    if not isinstance(key, str) or not PAGE_KEY.match(key) or key in ("index", "claims"):
        raise ValueError(f"method key {key!r} cannot name a dashboard page (letters, digits, _ and -; not index/claims)")
    return f"{key}.html"


def cell(v: Any) -> str:
    """Short text for a table cell (Jinja2 escapes it afterwards)."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "n/a"
        v += 0.0  # -0.0 -> 0.0
        return f"{v:.4g}" if abs(v) < 1e6 else f"{v:.3e}"
    if isinstance(v, (list, tuple)):
        return ", ".join(cell(x) for x in v)
    return str(v)


def anchor(key: str) -> str:
    """An element id for a claim key (ids keep letters, digits, '.', '_', '-')."""
    return "c-" + re.sub(r"[^A-Za-z0-9._-]", "-", str(key))


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("repshare.report", "templates"),
        autoescape=jinja2.select_autoescape(["html"], default_for_string=True, default=True),
        undefined=jinja2.StrictUndefined,  # a missing value is a bug, not an empty cell
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["cell"] = cell
    env.filters["anchor"] = anchor
    env.filters["interval_svg"] = interval_svg
    env.filters["spec_json"] = vega.spec_json
    return env


def css() -> str:
    return resources.files("repshare.report").joinpath("templates/style.css").read_text(encoding="utf-8")


def data_uri(path: Path) -> str:
    mime = MIME.get(path.suffix.lower())
    if mime is None:
        raise ValueError(f"{path}: not an image the dashboard can embed (use {', '.join(MIME)})")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def embed_figure(fig: Figure, folder: Path, where: str, stage_hint: str = "") -> tuple[dict[str, Any], Problem | None]:
    """A figure for the template: its image as a data URI (verified against the folder's checksums when
    ``stage_hint`` is given), or the problem naming the missing or corrupt file."""
    path = folder / fig.path
    alt = fig.caption.split(". ")[0][:160] or Path(fig.path).stem
    try:
        if stage_hint:
            from repshare.utils.artifacts import verify_file

            verify_file(path, stage_hint)
        src = data_uri(path)
    except FileNotFoundError:
        prob = Problem("Figure missing", str(path), f"{where} names a file that does not exist")
        return {"src": None, "problem": f"{path} ({where})", "caption": fig.caption, "alt": alt}, prob
    except ValueError as err:  # not embeddable, or ArtifactError (missing / corrupt)
        prob = Problem("Figure not shown", str(path), f"{where}: {err}")
        return {"src": None, "problem": f"{err} ({where})", "caption": fig.caption, "alt": alt}, prob
    return {"src": src, "caption": fig.caption, "alt": alt, "problem": None}, None


def counts_text(counts: Mapping[str, int]) -> str:
    parts = [f"{counts.get(v, 0)} {v}" for v in VERDICTS if counts.get(v, 0)]
    return ", ".join(parts) or "no claims"


@dataclass
class Dashboard:
    """Everything the pages show, as plain values (the report stage fills it)."""

    site_title: str
    lede: str
    pages: Sequence[Page]
    papers: Sequence[Mapping[str, Any]]  # verdicts.json "papers"
    claims: Sequence[Mapping[str, Any]]  # claims.json "claims"
    intervals_note: str
    rule: str
    method_cards: Sequence[Mapping[str, Any]]
    comparison_columns: Sequence[str]
    comparison_rows: Sequence[Mapping[str, Any]]  # the shortlist (table)
    comparison_points: Sequence[Mapping[str, Any]]  # every row (chart)
    comparison_caption: str
    comparison_png: Path | None
    comparison_figure_caption: str
    keep_target: float
    model_rows: Sequence[Mapping[str, Any]]
    provenance: Mapping[str, Any]
    config_yaml: str
    quantities: Mapping[str, str] = field(default_factory=dict)  # quantity key -> what it is
    problems: Sequence[Problem] = ()
    combination_note: str = ""
    version: str = ""
    stage_hints: Mapping[str, str] = field(default_factory=dict)  # method key -> stage that wrote its folder


def render_dashboard(out_dir: str | Path, d: Dashboard, method_names: Mapping[str, str]) -> tuple[list[Path], list[Problem]]:
    """Write ``index.html``, ``claims.html`` and one ``<key>.html`` per page into ``out_dir``.

    Returns the written paths (overview first) and every problem shown: those given plus the figures
    found missing or corrupt while rendering.
    """
    out_dir = Path(out_dir)
    env = environment()
    files = {p.key: page_file(p.key) for p in d.pages}
    nav = [{"href": "index.html", "text": "Overview", "broken": False},
           {"href": "claims.html", "text": "Claims", "broken": False}]
    nav += [{"href": files[p.key], "text": p.name, "broken": p.section is None} for p in d.pages]
    common = {"site_title": d.site_title, "nav": nav, "css": css(), "version": d.version, "prov": d.provenance,
              "scripts": [], "policy": vega.policy(False)}
    charts = {**common, "scripts": [text for _, text, _ in vega.scripts()], "policy": vega.policy(True)}
    all_problems = list(d.problems)
    written: list[Path] = []
    by_method: dict[str, list[Mapping[str, Any]]] = {}
    for c in d.claims:
        by_method.setdefault(c.get("method") or "", []).append(c)
    paper_of = {m: p for p in d.papers for m in p.get("methods", [])}

    for p in d.pages:
        figs, page_problems = [], list(p.problems)
        if p.section is not None:
            for k, f in enumerate(p.section.figures):
                fig, prob = embed_figure(f, p.folder, f"{p.folder / 'section.json'} figures[{k}].path",
                                         d.stage_hints.get(p.key, ""))
                figs.append(fig)
                if prob is not None:
                    page_problems.append(prob)
                    all_problems.append(Problem(f"{p.name}: {prob.title}", prob.file, prob.message))
        measured = [] if p.section is None else [
            {"Quantity": q, "What it is": d.quantities.get(q, ""), "Ours": e.text()} for q, e in sorted(p.section.measurements.items())]
        html = env.get_template("section.html").render(
            **common, here=files[p.key], page_title=p.name, title=p.section.title if p.section else p.name,
            section=p.section, figures=figs, problems=page_problems, claims=by_method.get(p.key, []),
            measured=measured, paper=paper_of.get(p.key))
        written.append(write_text(out_dir / files[p.key], html))

    papers = []
    for v in d.papers:
        links = [{"href": files[m], "text": method_names.get(m, m)} for m in v.get("methods", []) if m in files]
        mine = [c for c in d.claims if c["paper"] == v["paper"]]
        papers.append({**v, "links": links, "claims": mine, "primary": [c for c in mine if c["primary"]],
                       "counts_text": counts_text(v["counts"]), "primary_text": counts_text(v["primary_counts"])})

    html = env.get_template("claims.html").render(
        **common, here="claims.html", page_title="Claims", papers=papers, intervals_note=d.intervals_note, rule=d.rule)
    written.insert(0, write_text(out_dir / "claims.html", html))

    fig = None
    if d.comparison_png is not None:
        fig, prob = embed_figure(Figure(path=d.comparison_png.name, caption=d.comparison_figure_caption),
                                 d.comparison_png.parent, "the comparison stage's figure", "compare")
        if prob is not None:
            all_problems.append(prob)
    spec = vega.comparison_spec(d.comparison_points, method_names, d.keep_target) if d.comparison_points else None
    html = env.get_template("overview.html").render(
        **(charts if spec else common), here="index.html", page_title="Overview", lede=d.lede, problems=all_problems,
        papers=papers, intervals_note=d.intervals_note, method_cards=d.method_cards, comparison_figure=fig,
        comparison_spec=spec, comparison_columns=list(d.comparison_columns), comparison_rows=list(d.comparison_rows),
        comparison_caption=d.comparison_caption, combination_note=d.combination_note,
        model_columns=list(d.model_rows[0]) if d.model_rows else [], model_rows=list(d.model_rows),
        config_yaml=d.config_yaml)
    written.insert(0, write_text(out_dir / "index.html", html))
    return written, all_problems
