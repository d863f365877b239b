"""Hand-made method outputs (rows, sections, figures, metrics) for the comparison and dashboard tests.

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
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from repshare.comparison import ComparisonRow, Figure, PaperClaim, ReportSection, Table, write_rows, write_section
from repshare.utils.io import write_json

UNMERGED = {"classifier": 0.90, "detector": 0.30, "classifier_color": 0.80}
METRIC = {"classifier": "top1", "detector": "mAP", "classifier_color": "top1"}
FOLDERS = {"cka_sharing": "cka_sharing", "gemel": "gemel", "meedge": "multiexit", "meedge_placement": "placement"}
SECTION_FOLDERS = {**FOLDERS, "concurrency": "concurrency"}
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


def make_section(method: str, folder: Path, verdicts: list[str], title: str | None = None) -> ReportSection:
    figs = []
    for k in range(2):
        rel = f"figures/{method}_{k}.png"
        tiny_png(folder / rel, f"{method} {k}")
        figs.append(Figure(path=rel, caption=f"Figure {k} of {method}: look at the dip in the middle."))
    return ReportSection(
        method=method, title=title or f"{method} <section> & co",
        summary=f"What ran for {method}. <script>alert('x')</script> must show as text.",
        claims=[PaperClaim(claim=f"claim {k} <b>bold?</b>", paper="17-86 %", ours=f"{20 + k} % [15, 25]",
                           verdict=v, note="n = 3 seeds") for k, v in enumerate(verdicts)],
        tables=[Table(title="Per setting", columns=["Setting", "Accuracy", "Saved (MB)"],
                      rows=[{"Setting": "a <i>", "Accuracy": 0.91234, "Saved (MB)": 4.0},
                            {"Setting": "b", "Accuracy": None, "Saved (MB)": 12}],
                      caption="Higher accuracy is better.")],
        figures=figs, notes=["The paper does not say how X is chosen; we use Y (config key method.x)."])


SECTION_VERDICTS = {
    "cka_sharing": ["holds", "does not"],
    "gemel": ["holds", "holds", "not tested"],
    "meedge": ["does not"],
    "meedge_placement": ["does not", "not tested"],
    "concurrency": ["holds"],
}
# Combined per paper (cka: holds+does not -> partly; gemel: holds; meedge: both does not -> does not)
PAPER_VERDICT = {"cka": "partly", "gemel": "holds", "meedge": "does not", "concurrency": "holds"}


def write_fixture_results(results: Path, methods: dict[str, str] | None = None) -> Path:
    """Every method's files under ``results`` (plus the three models' metrics); returns ``results``."""
    methods = methods or SECTION_FOLDERS
    rows = fixture_rows()
    for method, folder in methods.items():
        if method in FOLDERS:
            write_rows(results / folder / "comparison_rows.json", method,
                       [r for r in rows if r.method == method])
        write_section(results / folder / "section.json",
                      make_section(method, results / folder, SECTION_VERDICTS[method]))
        write_json(results / folder / f"{method}_run.json", {"stage": method, "seconds": 12.0,
                                                              "created": "2026-11-23T19:00:00+0000"})
    write_json(results / "metrics" / "classifier.json", {"top1": UNMERGED["classifier"], "top5": 1.0})
    write_json(results / "metrics" / "detector.json", {"map": UNMERGED["detector"], "map_50": 0.5})
    write_json(results / "metrics" / "classifier_color.json", {"top1": UNMERGED["classifier_color"]})
    return results


WORKLOAD = {"name": "fixture", "models": [{"name": m, "task": "detection" if m == "detector" else "classification",
                                            "metric": METRIC[m]} for m in UNMERGED]}
