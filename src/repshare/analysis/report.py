"""DEPRECATED: the old single-page report. The reviewer dashboard (``repshare.report``, the
``report`` stage) replaces it; the analyze stage now hands a ``section.json`` to the dashboard.

Nothing in the pipeline calls :func:`build_report` any more; it stays only while
``tests/test_analysis.py`` still imports it. Delete this module with that test.
"""

from __future__ import annotations

import base64
import html
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from repshare.utils.io import write_text

MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}
CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:0.85em}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f0f0f0}
td.s,th.s{text-align:left}img{max-width:100%;border:1px solid #ddd;margin:0.5em 0}
pre{background:#f7f7f7;padding:1em;overflow-x:auto;font-size:0.8em}
"""


def esc(v: Any) -> str:
    return html.escape(str(v), quote=True)


def fmt(v: Any) -> str:
    """Short, escaped text for a table cell."""
    if v is None:
        return "&ndash;"
    if isinstance(v, bool):
        return esc(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return esc(f"{v:.4g}")
    return esc(v)


def html_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    if not rows:
        return "<p><em>(empty)</em></p>"
    cols = list(columns) if columns else list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{esc(c)}</th>" for c in cols)
    body = []
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c)
            cls = ' class="s"' if isinstance(v, str) else ""
            cells.append(f"<td{cls}>{fmt(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def embed_image(path: str | Path) -> str:
    """An <img> with the file as a data URI (png/jpg/svg); other files (pdf) are named only."""
    path = Path(path)
    mime = MIME.get(path.suffix.lower())
    if mime is None:
        return f"<p>See <code>{esc(path.name)}</code> beside the figures.</p>"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<figure><img alt="{esc(path.stem)}" src="data:{mime};base64,{data}"><figcaption>{esc(path.name)}</figcaption></figure>'


def config_text(config: Any) -> str:
    if isinstance(config, DictConfig):
        return OmegaConf.to_yaml(config, resolve=True)
    if isinstance(config, Mapping):
        return OmegaConf.to_yaml(OmegaConf.create(dict(config)))
    return str(config)


def build_report(out_dir: str | Path, figures: Sequence[str | Path], tables: Mapping[str, Sequence[Mapping]],
                 paper_r: Mapping[str, float], config: Any, versions: Mapping[str, Any],
                 metrics: Mapping[str, Mapping[str, Any]], title: str = "Representation sharing guided by CKA",
                 notes: Sequence[str] = ()) -> Path:
    """Write ``out_dir/index.html``; return its path (deprecated: use ``repshare.report``).

    ``tables``: section title -> rows (dicts); ``metrics``: model name -> its metrics dict;
    ``notes``: free-text paragraphs (definitions); all escaped.
    """
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">",
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f"<p>Generated {esc(time.strftime('%Y-%m-%d %H:%M:%S %z'))}. Reproduction of Cao et al., MobiCom'24.</p>",
    ]
    for n in notes:
        parts.append(f"<p>{esc(n)}</p>")
    parts.append("<h2>Paper reference values (|Pearson r|)</h2>")
    parts.append(html_table([{"key": k, "paper |r|": float(v)} for k, v in paper_r.items()]))
    parts.append("<h2>Figures</h2>")
    parts += [embed_image(f) for f in figures]
    for name, rows in tables.items():
        parts.append(f"<h2>{esc(name)}</h2>")
        parts.append(html_table(list(rows)))
    parts.append("<h2>Source-model metrics</h2>")
    parts.append(html_table([{"model": m, **dict(v)} for m, v in metrics.items()]))
    parts.append("<h2>Package versions</h2>")
    parts.append(html_table([{"package": k, "version": v} for k, v in versions.items()]))
    parts.append("<h2>Configuration</h2>")
    parts.append(f"<pre>{esc(config_text(config))}</pre>")
    parts.append("</body></html>\n")
    return write_text(Path(out_dir) / "index.html", "\n".join(parts))
