"""Config groups ``compare`` (conf/compare/default.yaml: which method folders the comparison reads, how
rows are scored) and ``report`` (conf/report/default.yaml: the reviewer dashboard).

Method keys become dashboard page names (``<key>.html``) and folders become paths under results/, so
both are identifiers: a key can never be a path (``../x``) or a URL scheme (``javascript:``).
"""

from __future__ import annotations

from dataclasses import dataclass

from repshare.config.rules import Check, Identifier, Interval, Keys, NonEmpty, OneOf, Table, Values


@dataclass
class CompareConfig:
    """The comparison stage: which method folders hold rows/sections, how rows are scored."""

    methods: dict[str, str]  # method key -> folder under results/ with comparison_rows.json (and section.json)
    sections_only: dict[str, str]  # method key -> folder with a section.json only (no memory rows)
    accuracy_kept: str  # min | mean of accuracy_rel over the workload's models
    keep_target: float  # "keeps accuracy" = accuracy kept >= this (per-method best setting)
    allow_problems: bool  # true: compare and report warn about bad inputs and render a partial dashboard


@dataclass
class ReportConfig:
    """The reviewer dashboard (results/report/)."""

    title: str


# Pages the dashboard writes itself: a method key must not take their file name.
RESERVED_PAGES = ("index", "claims", "diff")


def _not_in_methods(key, root) -> str | None:
    return None if key not in root.compare.methods else "is also a key of compare.methods (one page per method)"


def _not_reserved(key, root) -> str | None:
    return None if key not in RESERVED_PAGES else f"is the name of a dashboard page ({key}.html): choose another key"


RULES: Table = [
    ("compare.methods", NonEmpty(), Keys(Identifier(), Check(_not_reserved)), Values(Identifier())),
    ("compare.sections_only", Keys(Identifier(), Check(_not_in_methods), Check(_not_reserved)), Values(Identifier())),
    ("compare.accuracy_kept", OneOf("min", "mean")),
    ("compare.keep_target", Interval(0, 1, open_low=True)),
    ("report.title", NonEmpty(), Check(lambda t, root: None if len(t) <= 200 else "must be at most 200 characters")),
]
