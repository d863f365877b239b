"""Render the reviewer dashboard from Jinja2 templates (package data in ``templates/``).

Pure of the pipeline config: the ``report`` stage gathers plain values and calls
:func:`render_dashboard`. Every text value goes through Jinja2's autoescaping; images are embedded
as ``data:`` URIs so a page opens from disk with no server and no network, and the
Content-Security-Policy in ``base.html`` forbids scripts and any fetch. A figure whose file is
missing is shown as an error box naming the file and the section field, not as a broken image.
"""

from __future__ import annotations

import base64
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from repshare.comparison.section import Figure, ReportSection
from repshare.utils.io import write_text

MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}


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


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("repshare.report", "templates"),
        autoescape=jinja2.select_autoescape(["html"], default_for_string=True, default=True),
        undefined=jinja2.StrictUndefined,  # a missing value is a bug, not an empty cell
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["cell"] = cell
    return env


def css() -> str:
    return resources.files("repshare.report").joinpath("templates/style.css").read_text(encoding="utf-8")


def data_uri(path: Path) -> str:
    mime = MIME.get(path.suffix.lower())
    if mime is None:
        raise ValueError(f"{path}: not an image the dashboard can embed (use {', '.join(MIME)})")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def embed_figure(fig: Figure, folder: Path, where: str) -> tuple[dict[str, Any], Problem | None]:
    """A figure for the template: its image as a data URI, or the problem naming the missing file."""
    path = folder / fig.path
    alt = fig.caption.split(". ")[0][:160] or Path(fig.path).stem
    try:
        src = data_uri(path)
    except FileNotFoundError:
        prob = Problem("Figure missing", str(path), f"{where} names a file that does not exist")
        return {"src": None, "problem": f"{path} ({where})", "caption": fig.caption, "alt": alt}, prob
    except ValueError as err:
        prob = Problem("Figure not embeddable", str(path), f"{where}: {err}")
        return {"src": None, "problem": f"{err} ({where})", "caption": fig.caption, "alt": alt}, prob
    return {"src": src, "caption": fig.caption, "alt": alt, "problem": None}, None


def _counts_text(counts: Mapping[str, int]) -> str:
    return " / ".join(str(counts.get(k, 0)) for k in ("holds", "partly", "does not", "not tested"))


def render_dashboard(out_dir: str | Path, *, site_title: str, lede: str, pages: Sequence[Page],
                     verdicts: Sequence[Mapping[str, Any]], method_cards: Sequence[Mapping[str, Any]],
                     comparison_columns: Sequence[str], comparison_rows: Sequence[Mapping[str, Any]],
                     comparison_caption: str, comparison_png: Path | None, comparison_figure_caption: str,
                     model_rows: Sequence[Mapping[str, Any]], time_rows: Sequence[Mapping[str, Any]],
                     machine: Mapping[str, Any], versions: Mapping[str, Any], config_yaml: str,
                     problems: Sequence[Problem] = (), combination_note: str = "",
                     generated: str | None = None, version: str = "",
                     max_claims: int = 4) -> tuple[list[Path], list[Problem]]:
    """Write ``index.html`` and one ``<key>.html`` per page into ``out_dir``.

    Returns the written paths (overview first) and every problem shown, those given plus the
    figures found missing while rendering.

    ``verdicts``: dicts with title, citation, verdict, counts, claims (each with method), reason.
    Figure problems found while rendering are added to the overview's problem list.
    """
    out_dir = Path(out_dir)
    env = environment()
    generated = generated or time.strftime("%Y-%m-%d %H:%M:%S %z")
    nav = [{"href": "index.html", "text": "Overview", "broken": False}]
    nav += [{"href": f"{p.key}.html", "text": p.name, "broken": p.section is None} for p in pages]
    common = {"site_title": site_title, "nav": nav, "css": css(), "generated": generated, "version": version}
    all_problems = list(problems)
    written: list[Path] = []

    for p in pages:
        figs, page_problems = [], list(p.problems)
        if p.section is not None:
            for k, f in enumerate(p.section.figures):
                fig, prob = embed_figure(f, p.folder, f"{p.folder / 'section.json'} figures[{k}].path")
                figs.append(fig)
                if prob is not None:
                    page_problems.append(prob)
                    all_problems.append(Problem(f"{p.name}: {prob.title}", prob.file, prob.message))
        html = env.get_template("section.html").render(
            **common, here=f"{p.key}.html", page_title=p.name, title=p.section.title if p.section else p.name,
            section=p.section, figures=figs, problems=page_problems)
        written.append(write_text(out_dir / f"{p.key}.html", html))

    page_of = {p.key: p for p in pages}
    verdict_view = []
    for v in verdicts:
        methods = list(dict.fromkeys([c["method"] for c in v["claims"]] + list(v.get("methods", []))))
        links = [{"href": f"{m}.html", "text": page_of[m].name} for m in methods if m in page_of]
        tested = [c for c in v["claims"] if c["verdict"] != "not tested"] or list(v["claims"])
        verdict_view.append({**v, "claims": tested, "counts_text": _counts_text(v["counts"]), "links": links})

    fig = None
    if comparison_png is not None:
        fig, prob = embed_figure(Figure(path=comparison_png.name, caption=comparison_figure_caption),
                                 comparison_png.parent, "the comparison stage's figure")
        if prob is not None:
            all_problems.append(prob)
    time_total = sum(float(r.get("Seconds") or 0) for r in time_rows)
    html = env.get_template("overview.html").render(
        **common, here="index.html", page_title="Overview", lede=lede, problems=all_problems,
        verdicts=verdict_view, max_claims=max_claims, method_cards=method_cards, comparison_figure=fig,
        comparison_columns=list(comparison_columns), comparison_rows=list(comparison_rows),
        comparison_caption=comparison_caption, combination_note=combination_note,
        model_columns=list(model_rows[0]) if model_rows else [], model_rows=list(model_rows),
        time_columns=list(time_rows[0]) if time_rows else [], time_rows=list(time_rows),
        time_caption=f"Wall-clock seconds from each stage's <stage>_run.json ({time_total:.0f} s in all, "
                     "this dashboard's own stage excluded); a stage skipped by DVC keeps its last time.",
        machine_rows=[{"Property": k, "Value": v} for k, v in machine.items()],
        version_rows=[{"Package": k, "Version": v} for k, v in versions.items()],
        config_yaml=config_yaml)
    written.insert(0, write_text(out_dir / "index.html", html))
    return written, all_problems
