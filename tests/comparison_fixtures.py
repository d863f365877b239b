"""Hand-made method outputs (rows, sections with measurements, figures, metrics) for the comparison and
dashboard tests, written as the method stages write them (atomic folders with checksums.json).

Workload: classifier (top-1 0.90), detector (mAP 0.30), classifier_color (top-1 0.80). Points
(memory saved %, accuracy kept = min accuracy_rel over the three models) are chosen so the Pareto
front is known by hand:

    method            setting   saved  kept   labels  front(all)  front(label-free)
    cka_sharing       a          10    0.99   no      yes         yes
    cka_sharing       b          30    0.90   no      no  (c)     yes
    cka_sharing       c          35    0.95   yes     yes         -
    gemel             g1         20    0.96   yes     no  (c, d)  -
    gemel             g2         50    0.80   yes     yes         -
    meedge            m1          5    1.00   no      yes         yes
    meedge            m2         20    0.98   no      yes         yes
    meedge_placement  p1         20    0.97   no      no  (m2)    no (m2)

Measurements: for every quantity the real claim registry names, an interval placed by hand
relative to the regions of the claims on it (the plan below), so each paper's verdict is known:

    cka          every quantity inside every region of its claims            -> holds
    gemel        its first primary claim's quantity outside, the rest inside  -> partly
    meedge       every quantity outside every region                          -> does not
    concurrency  first primary quantity inside but not interpretable (a model
                 at chance), the rest inside                                  -> inconclusive

A "not tested" paper is made by leaving its section out (tests do that).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from repshare.claims import Claim, SanityCheck  # noqa: E402
from repshare.comparison import ComparisonRow, Figure, ReportSection, Table, write_rows, write_section  # noqa: E402
from repshare.comparison.registry import PAPERS, registry  # noqa: E402
from repshare.stats import Estimate  # noqa: E402
from repshare.utils.io import atomic_dir, write_json  # noqa: E402

UNMERGED = {"classifier": 0.90, "detector": 0.30, "classifier_color": 0.80}
METRIC = {"classifier": "top1", "detector": "mAP", "classifier_color": "top1"}
FOLDERS = {"cka_sharing": "analyze", "gemel": "gemel", "meedge": "kd_recover", "meedge_placement": "placement"}
SECTION_FOLDERS = {**FOLDERS, "concurrency": "concurrency"}
WRITERS = {"cka_sharing": "analyze", "gemel": "gemel", "meedge": "kd_recover", "meedge_placement": "placement",
           "concurrency": "concurrency"}
WORKLOAD_BYTES = 40_000_000

# (method, setting, saved %, kept, labels, models touched)
POINTS = [
    ("cka_sharing", "a", 10, 0.99, False, ["classifier"]),
    ("cka_sharing", "b", 30, 0.90, False, ["classifier"]),
    ("cka_sharing", "c", 35, 0.95, True, ["classifier"]),
    ("gemel", "g1", 20, 0.96, True, ["classifier", "detector", "classifier_color"]),
    ("gemel", "g2", 50, 0.80, True, ["classifier", "detector"]),
    ("meedge", "m1", 5, 1.00, False, ["classifier"]),
    ("meedge", "m2", 20, 0.98, False, ["classifier"]),
    ("meedge_placement", "p1", 20, 0.97, False, ["classifier"]),
]
FRONT = {("cka_sharing", "a"), ("cka_sharing", "c"), ("gemel", "g2"), ("meedge", "m1"), ("meedge", "m2")}
FRONT_LABEL_FREE = {("cka_sharing", "a"), ("cka_sharing", "b"), ("meedge", "m1"), ("meedge", "m2")}

PLAN = {"cka": "holds", "gemel": "partly", "meedge": "does not", "concurrency": "inconclusive"}
PAPER_VERDICT = dict(PLAN)
CHANCE_NOTE = "model proxy at chance: top-1 0.125 vs 1/8"


def make_row(method: str, setting: str, saved_pct: float, kept: float, labels: bool, models: list[str]) -> ComparisonRow:
    # The first touched model carries the worst relative accuracy; the others lose half as much.
    rel = {m: (kept if k == 0 else 1 - (1 - kept) / 2) for k, m in enumerate(models)}
    return ComparisonRow(
        method=method, setting=setting, models=models,
        bytes_saved=int(WORKLOAD_BYTES * saved_pct / 100), bytes_saved_pct=float(saved_pct),
        accuracy={m: UNMERGED[m] * r for m, r in rel.items()}, accuracy_rel=rel, labels_used=labels,
        retrain_seconds=12.5 if labels else 0.0, retrain_images=1000 if labels else 0,
        extra_flops_per_image=1.5e6, metric={m: METRIC[m] for m in models}, extra={"note": "fixture"})


def fixture_rows() -> list[ComparisonRow]:
    return [make_row(*p) for p in POINTS]


def tiny_png(path: Path, title: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [1, 0, 1])
    ax.set_title(title)
    fig.savefig(path, dpi=60)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- measurements by hand
def _step(x: float) -> float:
    return max(1.0, abs(x)) * 0.1


def interval(kind: str, regions: list[tuple[float, float]], reference: tuple[float, float]) -> tuple[float, float]:
    """An interval placed by hand: "inside" every region, "outside" all of them, or straddling the
    reference region's lower (else upper) edge."""
    if kind == "inside":
        lo, hi = max(r[0] for r in regions), min(r[1] for r in regions)
        assert lo <= hi, f"the claims' regions do not intersect: {regions}"
        if math.isfinite(lo) and math.isfinite(hi):
            c, w = (lo + hi) / 2, (hi - lo) / 4
            return c - w, c + w
        if math.isfinite(lo):
            return lo + _step(lo), lo + 2 * _step(lo)
        return hi - 2 * _step(hi), hi - _step(hi)
    if kind == "outside":
        lo, hi = min(r[0] for r in regions), max(r[1] for r in regions)
        if math.isfinite(hi):
            return hi + _step(hi), hi + 2 * _step(hi)
        return lo - 2 * _step(lo), lo - _step(lo)
    lo, hi = reference
    edge = lo if math.isfinite(lo) else hi
    return edge - _step(edge), edge + _step(edge)


def estimate(lo: float, hi: float, interpretable: bool = True, note: str = "fixture") -> Estimate:
    return Estimate((lo + hi) / 2, lo, hi, 200, "images", "bootstrap", note=note if interpretable else CHANCE_NOTE,
                    interpretable=interpretable)


def method_of(paper_key: str, quantity: str) -> str:
    """The section that measures a quantity: MEEdge's two parts by the quantity's prefix."""
    paper = next(p for p in PAPERS if p.key == paper_key)
    prefix = quantity.split(".", 1)[0]
    return prefix if prefix in paper.methods else paper.methods[0]


def planned_measurements(plan: dict[str, str] | None = None, claims: list[Claim] | None = None) -> tuple[
        dict[str, dict[str, Estimate]], dict[str, str]]:
    """(method -> quantity -> Estimate, claim key -> planned verdict for the claims that placed an interval)."""
    plan = plan or PLAN
    claims = claims if claims is not None else registry()
    out: dict[str, dict[str, Estimate]] = {}
    expected: dict[str, str] = {}
    for paper, kind in plan.items():
        mine = [c for c in claims if c.paper == paper]
        first_primary = next(c for c in mine if c.primary)
        for q in dict.fromkeys(c.quantity for c in mine):
            on_q = [c for c in mine if c.quantity == q]
            ref = first_primary if first_primary.quantity == q else on_q[0]
            regions = [c.region() for c in on_q]
            special = ref is first_primary
            if kind == "holds" or (kind in ("partly", "inconclusive") and not special):
                est, verdict = estimate(*interval("inside", regions, ref.region())), "holds"
            elif kind == "does not" or kind == "partly":
                est, verdict = estimate(*interval("outside", regions, ref.region())), "does not"
            else:  # inconclusive: inside, but the data cannot carry a verdict
                est, verdict = estimate(*interval("inside", regions, ref.region()), interpretable=False), "inconclusive"
            out.setdefault(method_of(paper, q), {})[q] = est
            expected.update({c.key: verdict for c in on_q})
    return out, expected


MEASUREMENTS, CLAIM_VERDICT = planned_measurements()


def make_section(method: str, folder: Path, measurements: dict[str, Estimate] | None = None,
                 title: str | None = None) -> ReportSection:
    figs = []
    for k in range(2):
        rel = f"figures/{method}_{k}.png"
        tiny_png(folder / rel, f"{method} {k}")
        figs.append(Figure(path=rel, caption=f"Figure {k} of {method}: look at the dip in the middle."))
    return ReportSection(
        method=method, title=title or f"{method} <section> & co",
        summary=f"What ran for {method}. <script>alert('x')</script> must show as text.",
        tables=[Table(title="Per setting", columns=["Setting", "Accuracy", "Saved (MB)"],
                      rows=[{"Setting": "a <i>", "Accuracy": 0.91234, "Saved (MB)": 4.0},
                            {"Setting": "b", "Accuracy": None, "Saved (MB)": 12}],
                      caption="Higher accuracy is better.")],
        figures=figs, notes=["The paper does not say how X is chosen; we use Y (config key method.x)."],
        measurements=dict(MEASUREMENTS.get(method, {}) if measurements is None else measurements),
        sanity=[SanityCheck(f"{method}.by_construction", f"{method}: a check <b>by construction</b> holds", True,
                            "fixed input"),
                SanityCheck(f"{method}.fixed_chain", f"{method}: the hand-built chain gives eta = 1", method != "gemel",
                            "eta 0.8 on the chain" if method == "gemel" else "eta 1.0")])


def write_method(results: Path, method: str, folder: str, section: ReportSection | None = None,
                 rows: list[ComparisonRow] | None = None) -> Path:
    """One method's folder, as its stage writes it: one atomic folder with checksums.json."""
    with atomic_dir(results / folder, stage=WRITERS.get(method, method)) as tmp:
        if method in FOLDERS:
            write_rows(tmp / "comparison_rows.json", method,
                       [r for r in fixture_rows() if r.method == method] if rows is None else rows)
        write_section(tmp / "section.json", section or make_section(method, tmp))
    return results / folder


def write_fixture_results(results: Path, methods: dict[str, str] | None = None) -> Path:
    """Every method's files under ``results`` (plus the three models' metrics); returns ``results``."""
    methods = methods or SECTION_FOLDERS
    for method, folder in methods.items():
        write_method(results, method, folder)
        write_json(results / "metrics" / f"{method}_run.json", {
            "stage": WRITERS[method], "seconds": 12.0, "created": "2026-11-23T19:00:00+0000", "git_commit": "abc123",
            "versions": {"python": "3.11", "numpy": "2"}, "machine": {"cpu_count": 2}})
    write_json(results / "metrics" / "classifier.json", {"top1": UNMERGED["classifier"], "top5": 1.0})
    write_json(results / "metrics" / "detector.json", {"map": UNMERGED["detector"], "map_50": 0.5})
    write_json(results / "metrics" / "classifier_color.json", {"top1": UNMERGED["classifier_color"]})
    return results


WORKLOAD = {"name": "fixture", "models": [{"name": m, "task": "detection" if m == "detector" else "classification",
                                            "metric": METRIC[m]} for m in UNMERGED]}
