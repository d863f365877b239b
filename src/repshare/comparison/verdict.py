"""A short verdict per paper, from the claims each method's section records beside our numbers.

Each method's stage judges its own claims (``PaperClaim.verdict``; :func:`judge_range` is the rule
offered to them for a number against the paper's range). Here the claims of every section that
belongs to one paper are combined into that paper's verdict:

- no section or no tested claim -> ``not tested`` (with the reason);
- every tested claim ``holds`` -> ``holds``; every tested claim ``does not`` -> ``does not``;
- anything else -> ``partly``. Claims marked ``not tested`` are listed but do not vote.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from repshare.comparison.section import VERDICTS, PaperClaim, ReportSection


@dataclass(frozen=True)
class Paper:
    key: str
    title: str
    citation: str
    methods: tuple[str, ...]  # section keys (ReportSection.method) that test this paper


# The four papers of the README, and which method sections test each.
PAPERS: tuple[Paper, ...] = (
    Paper("cka", "Representation sharing guided by CKA", "Cao et al., MobiCom'24", ("cka_sharing",)),
    Paper("gemel", "Gemel: layer merging across the workload", "Padmanabhan et al., NSDI'23", ("gemel",)),
    Paper("meedge", "MEEdge: memory-elastic multi-exit networks", "MEEdge (no public code)",
          ("meedge", "meedge_placement")),
    Paper("concurrency", "Concurrency score of network architectures", "Hadidi et al., IEEE EDGE'23",
          ("concurrency",)),
)


@dataclass
class PaperVerdict:
    paper: str
    title: str
    citation: str
    verdict: str  # one of VERDICTS
    counts: dict[str, int]
    claims: list[dict[str, Any]] = field(default_factory=list)  # each PaperClaim + its method
    reason: str = ""


def combine(verdicts: Sequence[str]) -> str:
    """One verdict from several (rule in the module docstring)."""
    bad = [v for v in verdicts if v not in VERDICTS]
    if bad:
        raise ValueError(f"verdict {bad[0]!r} is not one of {', '.join(VERDICTS)}")
    tested = [v for v in verdicts if v != "not tested"]
    if not tested:
        return "not tested"
    if all(v == "holds" for v in tested):
        return "holds"
    if all(v == "does not" for v in tested):
        return "does not"
    return "partly"


def paper_verdicts(sections: Mapping[str, ReportSection], missing: Mapping[str, str] | None = None,
                   papers: Sequence[Paper] = PAPERS) -> list[PaperVerdict]:
    """Per paper: its claims from every section that tests it, and the combined verdict.

    ``sections``: method key -> its section (absent = not run / unreadable); ``missing``: method key ->
    why its section is absent (shown as the reason when nothing was tested).
    """
    missing = dict(missing or {})
    out = []
    for p in papers:
        claims: list[dict[str, Any]] = []
        reasons = []
        for m in p.methods:
            sec = sections.get(m)
            if sec is None:
                reasons.append(f"{m}: {missing.get(m, 'no section')}")
                continue
            claims += [{**asdict(c), "method": m} for c in sec.claims]
            if not sec.claims:
                reasons.append(f"{m}: the section states no claim")
        verdicts = [c["verdict"] for c in claims]
        counts = {v: verdicts.count(v) for v in VERDICTS}
        verdict = combine(verdicts)
        reason = "; ".join(reasons) if verdict == "not tested" or reasons else ""
        out.append(PaperVerdict(p.key, p.title, p.citation, verdict, counts, claims, reason))
    return out


def judge_range(ours: float, paper_low: float, paper_high: float, ci_low: float | None = None,
                ci_high: float | None = None, null: float = 0.0) -> str:
    """Our measurement (with its CI when there is one) against the paper's range [low, high].

    ``holds``: the CI (or the point) overlaps the paper's range. ``partly``: it misses the range but
    lies wholly on the paper's side of ``null`` (the no-effect value, e.g. 0 % saved, r = 0): the
    effect is there, of another size. ``does not``: otherwise (no effect, or the opposite one).
    ``not tested``: our value is missing or nan.
    """
    if ours is None or not math.isfinite(ours):
        return "not tested"
    lo, hi = min(paper_low, paper_high), max(paper_low, paper_high)
    a = ours if ci_low is None or not math.isfinite(ci_low) else min(ci_low, ours)
    b = ours if ci_high is None or not math.isfinite(ci_high) else max(ci_high, ours)
    if a <= hi and b >= lo:
        return "holds"
    above = lo > null  # the paper's effect is above the no-effect value
    if (above and a > null) or (not above and hi < null and b < null):
        return "partly"
    return "does not"


def verdict_rows(verdicts: Sequence[PaperVerdict]) -> list[dict[str, Any]]:
    """One readable row per paper for the overview's verdict table."""
    rows = []
    for v in verdicts:
        tested = [c for c in v.claims if c["verdict"] != "not tested"]
        rows.append({
            "Paper": f"{v.title} ({v.citation})",
            "Verdict": v.verdict,
            "Claims (holds / partly / does not / not tested)":
                " / ".join(str(v.counts.get(k, 0)) for k in VERDICTS),
            "What the paper claims": "; ".join(f"{c['claim']} ({c['paper']})" for c in tested) or v.reason,
            "What we measured": "; ".join(c["ours"] for c in tested) or "",
        })
    return rows


def claim_from_range(claim: str, paper_text: str, ours_text: str, ours: float, paper_low: float,
                     paper_high: float, ci_low: float | None = None, ci_high: float | None = None,
                     null: float = 0.0, note: str = "") -> PaperClaim:
    """A PaperClaim whose verdict is :func:`judge_range` (for method stages that want the rule)."""
    return PaperClaim(claim=claim, paper=paper_text, ours=ours_text,
                      verdict=judge_range(ours, paper_low, paper_high, ci_low, ci_high, null), note=note)
