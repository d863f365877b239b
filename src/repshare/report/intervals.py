"""A small static picture per claim: the paper's acceptance region and our interval on one axis.

Inline SVG drawn here (no script, so it shows even where charts cannot run): a grey band for the
region (the paper's value or range widened by the tolerance; an open side runs to the edge), a line
for our interval in the verdict's colour, a dot for our value. Every number is in the SVG's <title>,
which a browser shows on hover.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from markupsafe import Markup, escape

COLOURS = {"holds": "#1e7b34", "does not": "#b42318", "inconclusive": "#9a6700", "not tested": "#6e7781"}
WIDTH, HEIGHT, PAD = 180, 26, 6


def _finite(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def interval_svg(row: Mapping[str, Any]) -> Markup:
    """The picture for one claim row (as written to claims.json)."""
    rlo, rhi = (_finite(v) for v in row["region"])
    est = row.get("estimate") or {}
    value, lo, hi = _finite(est.get("value")), _finite(est.get("lo")), _finite(est.get("hi"))
    points = [v for v in (rlo, rhi, value, lo, hi) if v is not None]
    if not points:
        return Markup("")
    a, b = min(points), max(points)
    span = b - a or max(abs(a), 1.0)
    a, b = a - 0.15 * span, b + 0.15 * span

    def x(v: float) -> float:
        return round(PAD + (v - a) / (b - a) * (WIDTH - 2 * PAD), 2)

    colour = COLOURS.get(row["verdict"], "#6e7781")
    left = PAD if rlo is None else x(rlo)
    right = WIDTH - PAD if rhi is None else x(rhi)
    parts = [f'<rect x="{left}" y="5" width="{max(right - left, 1.5)}" height="{HEIGHT - 10}" fill="#d0d7de" rx="2"/>']
    if lo is not None and hi is not None:
        parts.append(f'<line x1="{x(lo)}" y1="{HEIGHT / 2}" x2="{x(hi)}" y2="{HEIGHT / 2}" stroke="{colour}" '
                     'stroke-width="3" stroke-linecap="round"/>')
    if value is not None:
        parts.append(f'<circle cx="{x(value)}" cy="{HEIGHT / 2}" r="3.5" fill="{colour}" stroke="#fff" stroke-width="1"/>')
    title = f"paper's region {row['region_text']}; ours {row['ours']}; {row['verdict']}"
    return Markup(f'<svg class="interval" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" '
                  f'role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>{"".join(parts)}</svg>')
