"""The claim registry and the one verdict rule every method's claims are judged by.

Each topic package declares its paper's claims in its ``claims.py`` as :class:`Claim` entries:
what the paper says, its number (a point, a range or a direction) and where it is in the paper,
the measured quantity it is judged on, the subset of the data the paper judged it on, a
tolerance with a sentence of why, and whether the claim is primary. A method's study measures
quantities as :class:`repshare.stats.Estimate` values; :func:`judge` turns one claim and its
estimate into a verdict with :data:`RULE`:

- the acceptance region is the paper's value or range widened by the tolerance on each bounded
  side (a direction claim is a half-line, e.g. a difference > 0);
- **holds**: the whole interval lies inside the region;
- **does not**: the interval lies wholly outside it;
- **inconclusive**: anything else -- an interval that straddles a boundary, an estimate without an
  interval, a measurement that is not a number, or data that cannot carry a verdict (a model at
  chance), checked first so a NaN on one machine and a number on another give the same verdict;
- **not tested**: no estimate.

A paper's verdict (:func:`paper_verdict`) comes from its primary claims only: ``holds`` when every
one holds, ``does not`` when none holds and at least one does not, ``partly`` when some hold and
some do not, else ``inconclusive`` (an untested or inconclusive primary claim prevents ``holds``).

Checks that hold by construction (a fixed input, an inequality the algorithm guarantees) are not
claims: they are :class:`SanityCheck` values, shown apart and never accepted by the verdict code.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from repshare.stats import Estimate

VERDICTS = ("holds", "does not", "inconclusive", "not tested")
PAPER_VERDICTS = ("holds", "partly", "does not", "inconclusive", "not tested")
RULE = ("holds if the whole confidence interval lies inside the paper's value or range widened by the claim's "
        "tolerance; does not if it lies wholly outside; inconclusive otherwise (also without an interval, or on data "
        "at chance); not tested without a measurement. A paper holds only if every primary claim holds.")


class RegistryError(ValueError):
    """A claim entry is malformed (unknown quantity, negative tolerance, missing paper reference...)."""


@dataclass(frozen=True)
class Claim:
    key: str  # unique across the registry: "<paper>.<name>"
    paper: str  # paper key: cka | gemel | meedge | concurrency
    statement: str  # the claim in words
    paper_value: str  # the paper's number as printed, e.g. "17-86 %"
    where: str  # where the paper states it (section, figure, table, slide)
    quantity: str  # key of the measured quantity (the method's study produces it)
    subset: str  # the data the claim is judged on (the paper's own subset)
    low: float | None  # the paper's value/range: low == high for a point; None = unbounded side
    high: float | None
    tolerance: float  # widening of each bounded side, in the quantity's units
    why_tolerance: str  # one sentence: why this tolerance
    primary: bool = True
    unit: str = ""

    def region(self) -> tuple[float, float]:
        lo = -math.inf if self.low is None else self.low - self.tolerance
        hi = math.inf if self.high is None else self.high + self.tolerance
        return lo, hi

    def region_text(self) -> str:
        lo, hi = self.region()
        u = f" {self.unit}" if self.unit else ""
        if math.isinf(lo) and math.isinf(hi):
            return "any value"
        if math.isinf(hi):
            return f"> {lo:g}{u}"
        if math.isinf(lo):
            return f"< {hi:g}{u}"
        return f"[{lo:g}, {hi:g}]{u}"


@dataclass(frozen=True)
class SanityCheck:
    """A check that holds by construction or on fixed inputs: shown apart, never a claim."""

    key: str
    statement: str
    passed: bool
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> SanityCheck:
        try:
            return cls(str(doc["key"]), str(doc["statement"]), bool(doc["passed"]), str(doc.get("detail", "")))
        except KeyError as err:
            raise ValueError(f"sanity check lacks field {err.args[0]!r}") from None


@dataclass(frozen=True)
class Judgement:
    claim: Claim
    verdict: str  # one of VERDICTS
    reason: str  # one sentence: why this verdict
    estimate: Estimate | None

    def row(self) -> dict[str, Any]:
        """The per-claim table row the comparison and the dashboard show."""
        c, e = self.claim, self.estimate
        lo, hi = c.region()
        return {
            "key": c.key, "paper": c.paper, "statement": c.statement, "paper_value": c.paper_value,
            "where": c.where, "subset": c.subset, "quantity": c.quantity, "unit": c.unit, "primary": c.primary,
            "tolerance": c.tolerance, "why_tolerance": c.why_tolerance,
            "region": [None if math.isinf(lo) else lo, None if math.isinf(hi) else hi], "region_text": c.region_text(),
            "estimate": None if e is None else e.to_dict(), "ours": "not measured" if e is None else e.text(unit=c.unit),
            "difference": difference_text(c, e), "verdict": self.verdict, "reason": self.reason,
        }


def difference_text(claim: Claim, est: Estimate | None) -> str:
    """Ours minus the paper's value (or the nearest end of its range); '' for a direction claim."""
    if est is None or not math.isfinite(est.value) or (claim.low is None and claim.high is None):
        return ""
    if claim.low is None or claim.high is None:
        return ""  # a direction: the region is a half-line, no 'paper value' to subtract
    if claim.low <= est.value <= claim.high:
        return "within the paper's range" if claim.low != claim.high else f"{est.value - claim.low:+.3g}"
    ref = claim.low if est.value < claim.low else claim.high
    return f"{est.value - ref:+.3g}"


def judge(claim: Claim, est: Estimate | None) -> Judgement:
    """The one verdict rule (module docstring) for one claim and its estimate."""
    if est is None:
        return Judgement(claim, "not tested", "no measurement of " + claim.quantity, est)
    # Interpretability first: a measurement the data cannot carry is inconclusive whether it came out
    # finite or NaN (which of the two can depend on the machine; the verdict must not).
    if not est.interpretable:
        return Judgement(claim, "inconclusive", "not interpretable: " + (est.note or "the data cannot carry it"), est)
    if not math.isfinite(est.value):
        return Judgement(claim, "inconclusive", f"the measurement of {claim.quantity} is not a number", est)
    if not est.has_interval:
        return Judgement(claim, "inconclusive", f"no interval (n = {est.n} {est.over})", est)
    lo, hi = claim.region()
    region = claim.region_text()
    if lo <= est.lo and est.hi <= hi:
        return Judgement(claim, "holds", f"the {level(est)} interval lies inside {region}", est)
    if est.hi < lo or est.lo > hi:
        return Judgement(claim, "does not", f"the {level(est)} interval lies outside {region}", est)
    return Judgement(claim, "inconclusive", f"the {level(est)} interval straddles the edge of {region}", est)


def level(est: Estimate) -> str:
    return "exact" if est.method == "exact" else f"{100 * est.level:g} %"


def paper_verdict(judgements: Sequence[Judgement]) -> str:
    """A paper's verdict from its claims' judgements (primary claims only; rule in the module docstring)."""
    for j in judgements:
        if not isinstance(j, Judgement):
            raise TypeError(f"paper_verdict takes claim judgements, got {type(j).__name__} (sanity checks never vote)")
    primary = [j.verdict for j in judgements if j.claim.primary]
    if not primary:
        return "not tested"
    if all(v == "holds" for v in primary):
        return "holds"
    if "holds" in primary and "does not" in primary:
        return "partly"
    if "does not" in primary and "holds" not in primary:
        return "does not"
    if all(v == "not tested" for v in primary):
        return "not tested"
    return "inconclusive"


def validate_registry(claims: Iterable[Any], quantities: Mapping[str, str], papers: Iterable[str]) -> list[Claim]:
    """Check every entry; RegistryError names the first bad one. ``quantities``: key -> description."""
    papers = set(papers)
    seen: set[str] = set()
    out = []
    for k, c in enumerate(claims):
        if not isinstance(c, Claim):
            raise RegistryError(f"claim registry entry {k} is a {type(c).__name__}, not a Claim "
                                "(sanity checks are not claims)")
        name = c.key or f"entry {k}"
        if not c.key or c.key in seen:
            raise RegistryError(f"claim {name!r}: key is empty or repeated")
        seen.add(c.key)
        if c.paper not in papers:
            raise RegistryError(f"claim {name!r}: paper {c.paper!r} is not one of {', '.join(sorted(papers))}")
        if c.quantity not in quantities:
            raise RegistryError(f"claim {name!r}: unknown quantity {c.quantity!r}")
        for attr in ("statement", "paper_value", "where", "subset", "why_tolerance"):
            if not str(getattr(c, attr)).strip():
                raise RegistryError(f"claim {name!r}: missing {attr} (every claim states the paper's number, where "
                                    "it is in the paper, the subset and why its tolerance)")
        if not isinstance(c.tolerance, (int, float)) or not math.isfinite(c.tolerance) or c.tolerance < 0:
            raise RegistryError(f"claim {name!r}: tolerance {c.tolerance!r} must be a finite number >= 0")
        if c.low is None and c.high is None:
            raise RegistryError(f"claim {name!r}: needs a value, a range or a direction (low and high are both None)")
        if c.low is not None and c.high is not None and c.low > c.high:
            raise RegistryError(f"claim {name!r}: low {c.low} > high {c.high}")
        out.append(c)
    return out


def estimates_from_dict(doc: Mapping[str, Any], where: str) -> dict[str, Estimate]:
    """``{quantity: estimate dict}`` as stored in a section file -> Estimates; ValueError names the entry."""
    out = {}
    for key, value in doc.items():
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: measurement {key!r} is not an object")
        try:
            out[key] = Estimate.from_dict(value)
        except ValueError as err:
            raise ValueError(f"{where}: measurement {key!r}: {err}") from None
    return out


@dataclass
class PaperResult:
    paper: str
    verdict: str  # one of PAPER_VERDICTS
    judgements: list[Judgement] = field(default_factory=list)
    sanity: list[SanityCheck] = field(default_factory=list)
    source: str = "images"  # which intervals the verdicts used: "images" (this run) or "seeds" (the study)


def judge_paper(paper: str, claims: Sequence[Claim], estimates: Mapping[str, Estimate],
                sanity: Sequence[SanityCheck] = (), source: str = "images") -> PaperResult:
    """Judge every claim of one paper against the measured ``estimates`` (quantity -> Estimate)."""
    js = [judge(c, estimates.get(c.quantity)) for c in claims if c.paper == paper]
    return PaperResult(paper, paper_verdict(js), js, list(sanity), source)
