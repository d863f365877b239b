"""Interactive charts on the dashboard: Vega-Lite specs drawn by the vendored Vega libraries.

The libraries (``static/``, see its README for versions and licences) are inlined into each page that
has a chart, so a page opens from a folder with no network; the page's Content-Security-Policy admits
exactly these scripts by their sha256 hashes (no 'unsafe-eval': ``dashboard.js`` asks Vega for its
expression interpreter). A spec sits in the page as ``<script type="application/json">`` (data, not
code: never executed, and ``<``, ``>``, ``&`` are escaped so no text in it can close the element).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

SCRIPTS = ("vega.min.js", "vega-lite.min.js", "vega-embed.min.js", "dashboard.js")
BASE_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


@functools.lru_cache(maxsize=1)
def scripts() -> tuple[tuple[str, str, str], ...]:
    """(file name, text, CSP hash source) of each vendored script, in load order."""
    out = []
    for name in SCRIPTS:
        text = resources.files("repshare.report").joinpath(f"static/{name}").read_text(encoding="utf-8")
        if "</script" in text.lower():
            raise ValueError(f"static/{name} contains '</script' and cannot be inlined")
        digest = base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")
        out.append((name, text, f"'sha256-{digest}'"))
    return tuple(out)


def policy(with_charts: bool) -> str:
    """The page's Content-Security-Policy: no script at all, or exactly the vendored ones."""
    if not with_charts:
        return BASE_POLICY
    return BASE_POLICY + "; script-src " + " ".join(h for _, _, h in scripts())


def spec_json(spec: Mapping[str, Any]) -> str:
    """The spec as JSON safe inside <script type="application/json"> (no '<', '>' or '&' left)."""
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def comparison_spec(rows: Sequence[Mapping[str, Any]], names: Mapping[str, str], keep_target: float) -> dict[str, Any]:
    """Memory saved vs accuracy kept, one point per setting: hover for the setting, drag to pan, wheel to
    zoom, click a legend entry to pick a method; the two Pareto fronts as staircases."""
    data = []
    for r in rows:
        x, y = _num(r.get("bytes_saved_pct")), _num(r.get("accuracy_kept"))
        if x is None or y is None:
            continue  # no accuracy: not on the chart (listed in the table)
        data.append({"method": names.get(r["method"], r["method"]), "setting": str(r["setting"]), "saved": round(x, 4),
                     "kept": round(y, 4), "labels": "needs labels" if r["labels_used"] else "label-free",
                     "front": bool(r.get("on_front")), "front_free": bool(r.get("on_label_free_front"))})
    x = {"field": "saved", "type": "quantitative", "title": "memory saved (% of weight bytes)",
         "scale": {"padding": 14}}
    y = {"field": "kept", "type": "quantitative", "title": "accuracy kept (worst model)",
         "scale": {"zero": False, "padding": 14}}

    def front(flag: str, dash: list[int]) -> dict[str, Any]:
        return {"transform": [{"filter": f"datum.{flag}"}],
                "mark": {"type": "line", "interpolate": "step-before", "color": "#333", "strokeWidth": 1,
                         "strokeDash": dash},
                "encoding": {"x": x, "y": y, "order": {"field": "saved", "type": "quantitative"}}}

    return {
        "width": "container", "height": 340, "autosize": {"type": "fit", "contains": "padding"},
        "data": {"values": data},
        # legends below the plot, one column each: they fit beside each other on a 390 px phone
        "config": {"legend": {"orient": "bottom", "columns": 1, "labelLimit": 190}, "axis": {"labelOverlap": True}},
        "layer": [
            {"mark": {"type": "rule", "color": "#c0392b", "strokeDash": [2, 3]},
             "encoding": {"y": {"datum": keep_target}}},
            front("front", []),
            front("front_free", [5, 4]),
            {"mark": {"type": "point", "filled": True, "size": 70, "stroke": "#222", "strokeWidth": 0.5},
             "params": [{"name": "pick", "select": {"type": "point", "fields": ["method"]}, "bind": "legend"},
                        {"name": "zoom", "select": "interval", "bind": "scales"}],
             "encoding": {
                 "x": x, "y": y,
                 "color": {"field": "method", "type": "nominal", "title": "method"},
                 "shape": {"field": "labels", "type": "nominal", "title": "labels"},
                 "opacity": {"condition": {"param": "pick", "value": 0.9}, "value": 0.12},
                 "tooltip": [{"field": "method"}, {"field": "setting"},
                             {"field": "saved", "title": "memory saved (%)", "format": ".3f"},
                             {"field": "kept", "title": "accuracy kept", "format": ".4f"},
                             {"field": "labels"}, {"field": "front", "title": "on the Pareto front"}]}},
        ],
    }
