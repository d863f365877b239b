"""Apply the claim registry to what the method sections measured: a verdict per claim and per paper.

Every registered claim (:func:`repshare.comparison.registry.registry`) is judged by the one rule,
:func:`repshare.claims.judge`, on the estimate of its quantity from the sections of its paper's
methods; the paper's verdict is :func:`repshare.claims.paper_verdict` of its claims (primary ones
vote; an untested or inconclusive primary claim prevents "holds"). When a seed study for this config
is present (:mod:`repshare.comparison.study`), a claim is judged on the study's interval over seeds
for its quantity, and its row says so (``intervals``: ``"seeds"``); otherwise on this run's interval
(``"run"``: over images, pairs or graphs, as the section measured it). Sanity checks are listed per
paper, apart: they never vote.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from repshare.claims import PAPER_VERDICTS, RULE, VERDICTS, Claim, Judgement, judge, paper_verdict
from repshare.comparison.registry import PAPERS, Paper
from repshare.comparison.section import ReportSection
from repshare.stats import Estimate, seeds_with_run


@dataclass
class PaperReport:
    paper: str
    title: str
    citation: str
    methods: list[str]
    verdict: str  # one of PAPER_VERDICTS
    counts: dict[str, int]  # every claim, per verdict
    primary_counts: dict[str, int]  # primary claims only (they decide the verdict)
    claims: list[dict[str, Any]] = field(default_factory=list)  # claim rows (claim_row)
    sanity: list[dict[str, Any]] = field(default_factory=list)  # {method, key, statement, passed, detail}
    reason: str = ""  # why the verdict, in one sentence


def claim_row(j: Judgement, intervals: str, run: Estimate | None, seeds: Estimate | None,
              method: str, missing: str) -> dict[str, Any]:
    """The per-claim table row: Judgement.row() plus which intervals judged it and both estimates."""
    row = j.row()
    if j.verdict == "not tested" and missing:
        row["reason"] = f"{row['reason']} ({missing})"
    row.update({
        "intervals": intervals,  # "run" (this run's items) | "seeds" (the seed study)
        "method": method,  # the section that measured the quantity ("" if none)
        "ours_run": "not measured" if run is None else run.text(unit=j.claim.unit),
        "ours_seeds": "" if seeds is None else seeds.text(unit=j.claim.unit),
        "estimate_run": None if run is None else run.to_dict(),
        "estimate_seeds": None if seeds is None else seeds.to_dict(),
    })
    return row


def _usable(e: Estimate | None) -> bool:
    return e is not None and math.isfinite(e.value)


def _verb(k: int, one: str, many: str) -> str:
    return one if k == 1 else many


def paper_reason(verdict: str, judgements: Sequence[Judgement]) -> str:
    primary = [j for j in judgements if j.claim.primary]
    if not primary:
        return "the registry holds no primary claim for this paper"
    n = len(primary)
    held = sum(j.verdict == "holds" for j in primary)
    failed = sum(j.verdict == "does not" for j in primary)
    open_ = n - held - failed
    if verdict == "holds":
        return f"all {n} primary claims hold"
    if verdict == "partly":
        return (f"of {n} primary claims, {held} {_verb(held, 'holds', 'hold')} and {failed} "
                f"{_verb(failed, 'does not', 'do not')}" + (f" ({open_} open)" if open_ else ""))
    if verdict == "does not":
        return (f"{failed} of {n} primary claims {_verb(failed, 'does not', 'do not')} hold, none holds"
                + (f" ({open_} open)" if open_ else ""))
    if verdict == "not tested":
        return f"none of the {n} primary claims was measured"
    untested = sum(j.verdict == "not tested" for j in primary)
    return (f"of {n} primary claims, {held} hold, {failed} do not, {n - held - failed - untested} inconclusive, "
            f"{untested} not tested: not enough to decide")


def judge_papers(claims: Sequence[Claim], sections: Mapping[str, ReportSection],
                 missing: Mapping[str, str] | None = None, study_estimates: Mapping[str, Estimate] | None = None,
                 papers: Sequence[Paper] = PAPERS, quantities: Collection[str] | None = None) -> tuple[list[PaperReport], list[tuple[str, str]]]:
    """Per paper: every claim judged, the paper's verdict, its sanity checks.

    ``sections``: method key -> section (absent = not run or unreadable); ``missing``: method key -> why
    it is absent; ``study_estimates``: quantity -> Estimate over seeds (only when the study is for this
    config); ``quantities``: every declared quantity key (default: those the claims name). Returns the
    reports and ``(method, message)`` inconsistencies found on the way: a measured quantity that is not
    declared, or one measured by two sections of one paper.
    """
    missing = dict(missing or {})
    study = dict(study_estimates or {})
    known = set(quantities) if quantities is not None else {c.quantity for c in claims}
    issues: list[tuple[str, str]] = []
    reports = []
    for p in papers:
        measured: dict[str, tuple[str, Estimate]] = {}
        sanity: list[dict[str, Any]] = []
        for m in p.methods:
            sec = sections.get(m)
            if sec is None:
                continue
            for q, e in sec.measurements.items():
                if q in measured:
                    issues.append((m, f"quantity {q!r} is measured by both {measured[q][0]} and {m}"))
                    continue
                measured[q] = (m, e)
            sanity += [{"method": m, **c.to_dict()} for c in sec.sanity]
        absent = "; ".join(f"{m}: {missing.get(m, 'no section')}" for m in p.methods if m not in sections)
        rows, judgements = [], []
        for c in (c for c in claims if c.paper == p.key):
            method, run = measured.get(c.quantity, ("", None))
            seeds = study.get(c.quantity)
            use_seeds = _usable(seeds)
            j = judge(c, seeds_with_run(seeds, run) if use_seeds else run)
            judgements.append(j)
            rows.append(claim_row(j, "seeds" if use_seeds else "run", run, seeds if use_seeds else None, method,
                                  f"missing section: {absent}" if absent else ""))
        for q, (m, _) in measured.items():
            if q not in known:
                issues.append((m, f"measurement {q!r} is not a declared quantity (QUANTITIES of the claims modules)"))
        verdict = paper_verdict(judgements)
        counts = {v: sum(j.verdict == v for j in judgements) for v in VERDICTS}
        primary = {v: sum(j.verdict == v for j in judgements if j.claim.primary) for v in VERDICTS}
        reason = paper_reason(verdict, judgements) + (f"; {absent}" if absent else "")
        reports.append(PaperReport(p.key, p.title, p.citation, list(p.methods), verdict, counts, primary, rows,
                                   sanity, reason))
    return reports, issues


CSV_COLUMNS = ("key", "paper", "primary", "statement", "paper_value", "where", "subset", "quantity", "unit",
               "ours", "intervals", "value", "lo", "hi", "n", "over", "ours_run", "ours_seeds", "difference",
               "tolerance", "why_tolerance", "region_text", "verdict", "reason")


def csv_rows(reports: Sequence[PaperReport]) -> list[dict[str, Any]]:
    """One flat row per claim (results/compare/claims.csv)."""
    out = []
    for r in reports:
        for c in r.claims:
            e = c["estimate"] or {}
            flat = {**c, "value": e.get("value"), "lo": e.get("lo"), "hi": e.get("hi"), "n": e.get("n"),
                    "over": e.get("over", "")}
            out.append({k: ("" if flat.get(k) is None else flat.get(k)) for k in CSV_COLUMNS})
    return out


def verdicts_doc(reports: Sequence[PaperReport], study_note: str) -> dict[str, Any]:
    """results/compare/verdicts.json: the paper verdicts, their counts, the rule and the intervals used."""
    return {
        "rule": RULE, "verdicts": list(PAPER_VERDICTS), "intervals": study_note,
        "papers": [{"paper": r.paper, "title": r.title, "citation": r.citation, "methods": r.methods,
                    "verdict": r.verdict, "reason": r.reason, "counts": r.counts, "primary_counts": r.primary_counts,
                    "claims": [c["key"] for c in r.claims],
                    "intervals": {k: sum(c["intervals"] == k for c in r.claims) for k in ("run", "seeds")},
                    "sanity": r.sanity} for r in reports],
    }
