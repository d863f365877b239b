"""Comparison stage: Pareto front on hand-made points, untouched models filled, verdicts, bad input."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from comparison_fixtures import (
    FOLDERS,
    FRONT,
    FRONT_LABEL_FREE,
    METRIC,
    PAPER_VERDICT,
    SECTION_FOLDERS,
    UNMERGED,
    fixture_rows,
    make_row,
    write_fixture_results,
)
from repshare.comparison import PaperClaim, ReportSection, read_section, write_section
from repshare.comparison.compare import (
    accuracy_kept,
    check_section,
    compare,
    fill_untouched,
    load_method_rows,
    load_sections,
    pareto_front,
    unmerged_accuracy,
)
from repshare.comparison.verdict import claim_from_range, combine, judge_range, paper_verdicts
from repshare.utils.io import write_json

MODELS = list(UNMERGED)


# --------------------------------------------------------------------------- Pareto front
def test_pareto_front_hand_made():
    pts = [(1, 0.9), (2, 0.8), (2, 0.7), (0.5, 0.95), (1, 0.85), (3, 0.5), (0.5, 0.9)]
    # (2, .7) < (2, .8); (1, .85) < (1, .9); (.5, .9) < (.5, .95) and < (1, .9)
    assert pareto_front(pts) == [3, 0, 1, 5]


def test_pareto_front_duplicates_nan_and_empty():
    assert pareto_front([(1, 1), (1, 1), (0, 0)]) == [0, 1]  # exact duplicates both stay
    assert pareto_front([(math.nan, 1), (1, 0.5)]) == [1]
    assert pareto_front([]) == []
    # a point beaten on one axis and tied on the other is dominated
    assert pareto_front([(1, 0.9), (1, 0.8), (0.9, 0.9)]) == [0]


def test_pareto_front_matches_brute_force():
    import random

    rng = random.Random(0)
    for _ in range(50):
        pts = [(rng.randint(0, 5), rng.randint(0, 5) / 5) for _ in range(rng.randint(1, 12))]
        brute = [k for k, p in enumerate(pts) if not any(
            q[0] >= p[0] and q[1] >= p[1] and q != p for q in pts)]
        assert sorted(pareto_front(pts)) == brute


# --------------------------------------------------------------------------- filling and scoring
def test_fill_untouched_uses_unmerged_accuracy():
    row = make_row("cka_sharing", "a", 10, 0.9, False, ["classifier"])
    filled = fill_untouched(row, MODELS, UNMERGED, METRIC)
    assert filled.accuracy["detector"] == 0.30 and filled.accuracy_rel["detector"] == 1.0
    assert filled.accuracy["classifier_color"] == 0.80
    assert filled.accuracy["classifier"] == pytest.approx(0.81)  # untouched by filling
    assert filled.metric == {"classifier": "top1", "detector": "mAP", "classifier_color": "top1"}
    assert row.accuracy == {"classifier": pytest.approx(0.81)}  # the input row is not modified
    assert accuracy_kept(filled, MODELS, "min") == pytest.approx(0.9)
    assert accuracy_kept(filled, MODELS, "mean") == pytest.approx((0.9 + 1 + 1) / 3)
    with pytest.raises(ValueError, match="accuracy_kept='max'"):
        accuracy_kept(filled, MODELS, "max")


def test_compare_fronts_and_summary_on_hand_made_rows():
    comp = compare(fixture_rows(), MODELS, UNMERGED, METRIC, keep_target=0.95)
    key = lambda k: (comp.rows[k]["method"], comp.rows[k]["setting"])  # noqa: E731
    assert {key(k) for k in comp.front} == FRONT
    assert {key(k) for k in comp.front_label_free} == FRONT_LABEL_FREE
    kept = {(r["method"], r["setting"]): r["accuracy_kept"] for r in comp.rows}
    assert kept[("gemel", "g1")] == pytest.approx(0.96) and kept[("meedge", "m1")] == pytest.approx(1.0)
    per = {s["method"]: s for s in comp.per_method}
    assert [s["method"] for s in comp.per_method] == ["cka_sharing", "gemel", "meedge", "meedge_placement"]
    # cka: a (10 %, .99) and c (35 %, .95) reach the target; b (.90) does not -> best 35 % (c)
    assert per["cka_sharing"]["best_saved_pct_at_target"] == 35 and per["cka_sharing"]["best_setting_at_target"] == "c"
    assert per["gemel"]["best_saved_pct_at_target"] == 20 and per["gemel"]["max_saved_pct"] == 50
    assert per["cka_sharing"]["labels_used"] == [False, True] and per["meedge"]["on_front"] == 2


def test_compare_with_a_nan_accuracy_keeps_the_row_off_the_front():
    rows = fixture_rows()
    rows[0] = replace(rows[0], accuracy_rel={"classifier": float("nan")})
    comp = compare(rows, MODELS, UNMERGED, METRIC)
    assert math.isnan(comp.rows[0]["accuracy_kept"]) and not comp.rows[0]["on_front"]


# --------------------------------------------------------------------------- reading files
def test_load_method_rows_bad_file_named_others_kept(tmp_path):
    results = write_fixture_results(tmp_path / "results")
    doc = json.loads((results / "gemel" / "comparison_rows.json").read_text())
    del doc["rows"][1]["bytes_saved"]
    write_json(results / "gemel" / "comparison_rows.json", doc)
    (results / "placement" / "comparison_rows.json").unlink()
    rows, problems = load_method_rows(results, FOLDERS)
    assert sorted({r.method for r in rows}) == ["cka_sharing", "meedge"]
    by = {p.method: p for p in problems}
    assert set(by) == {"gemel", "meedge_placement"}
    assert "gemel/comparison_rows.json row 1" in by["gemel"].message and "'bytes_saved'" in by["gemel"].message
    assert by["meedge_placement"].file.endswith("placement/comparison_rows.json")
    assert "missing file" in by["meedge_placement"].message


def test_load_method_rows_wrong_method_key(tmp_path):
    results = write_fixture_results(tmp_path / "results")
    doc = json.loads((results / "multiexit" / "comparison_rows.json").read_text())
    doc["rows"][0]["method"] = "gemel"
    write_json(results / "multiexit" / "comparison_rows.json", doc)
    _, problems = load_method_rows(results, FOLDERS)
    assert len(problems) == 1 and "field 'method' is 'gemel', expected 'meedge'" in problems[0].message


def test_unmerged_accuracy_names_file_and_field():
    acc, problems = unmerged_accuracy({"classifier": {"top1": 0.9}, "detector": {"map_50": 0.5}},
                                      METRIC, {"detector": "r/metrics/detector.json"})
    assert acc == {"classifier": 0.9}
    msgs = {p.file: p.message for p in problems}
    assert "field 'map'" in msgs["r/metrics/detector.json"]
    assert "missing file results/metrics/classifier_color.json" in msgs["results/metrics/classifier_color.json"]


def test_check_section_names_the_field(tmp_path):
    sec = ReportSection(method="gemel", title="t", summary="s",
                        claims=[PaperClaim(claim="c", paper="p", ours="o", verdict="holds")])
    path = write_section(tmp_path / "section.json", sec)
    doc = json.loads(path.read_text())
    doc["claims"][0]["verdict"] = "maybe"
    write_json(path, doc)
    with pytest.raises(ValueError, match=r"section.json: field 'claims\[0\].verdict' must be one of"):
        check_section(read_section(path), path, "gemel")
    doc["claims"][0]["verdict"] = "holds"
    doc["figures"] = [{"path": "../../etc/passwd.png", "caption": "x"}]
    write_json(path, doc)
    with pytest.raises(ValueError, match=r"figures\[0\].path"):
        check_section(read_section(path), path, "gemel")
    with pytest.raises(ValueError, match="field 'method'"):
        check_section(read_section(path), path, "meedge")


# --------------------------------------------------------------------------- verdicts
def test_combine_rule():
    assert combine(["holds", "holds", "not tested"]) == "holds"
    assert combine(["does not", "does not"]) == "does not"
    assert combine(["holds", "does not"]) == "partly"
    assert combine(["partly"]) == "partly"
    assert combine(["not tested"]) == combine([]) == "not tested"
    with pytest.raises(ValueError, match="'yes'"):
        combine(["yes"])


def test_paper_verdicts_from_hand_made_sections(tmp_path):
    results = write_fixture_results(tmp_path / "results")
    sections, problems = load_sections(results, SECTION_FOLDERS)
    assert not problems
    got = {v.paper: v for v in paper_verdicts(sections)}
    assert {k: v.verdict for k, v in got.items()} == PAPER_VERDICT
    # MEEdge: both sections' claims are counted (3 claims: 2 does not, 1 not tested)
    assert got["meedge"].counts == {"holds": 0, "partly": 0, "does not": 2, "not tested": 1}
    assert {c["method"] for c in got["meedge"].claims} == {"meedge", "meedge_placement"}
    # a paper whose section is missing is "not tested", with the reason
    del sections["concurrency"]
    v = {v.paper: v for v in paper_verdicts(sections, {"concurrency": "missing file x/section.json"})}["concurrency"]
    assert v.verdict == "not tested" and "missing file x/section.json" in v.reason


def test_judge_range():
    # Gemel: 17-86 % memory saved
    assert judge_range(30, 17, 86) == "holds"
    assert judge_range(12, 17, 86, ci_low=8, ci_high=18) == "holds"  # CI reaches the range
    assert judge_range(5, 17, 86, ci_low=3, ci_high=7) == "partly"  # saves memory, less than claimed
    assert judge_range(0, 17, 86) == "does not"
    assert judge_range(1, 17, 86, ci_low=-1, ci_high=3) == "does not"  # CI includes no effect
    assert judge_range(-2, 7.23, 329.79) == "does not"
    assert judge_range(float("nan"), 0, 1) == "not tested"
    # a claim below the null (e.g. latency reduced: -50 .. -20 %)
    assert judge_range(-10, -50, -20) == "partly" and judge_range(5, -50, -20) == "does not"
    c = claim_from_range("saves memory", "17-86 %", "30 %", 30, 17, 86)
    assert isinstance(c, PaperClaim) and c.verdict == "holds"


# --------------------------------------------------------------------------- the stage
def test_compare_stage_on_fixtures(smoke_cfg):
    from pathlib import Path

    from repshare.stages.compare import run

    results = write_fixture_results(Path(smoke_cfg.paths.results_dir))
    (results / "gemel" / "comparison_rows.json").write_text("{not json")
    out = run(smoke_cfg)
    comp = json.loads((results / "comparison" / "comparison.json").read_text())
    assert {r["method"] for r in comp["rows"]} == {"cka_sharing", "meedge", "meedge_placement"}
    assert len(comp["problems"]) == 1 and "malformed json" in comp["problems"][0]["message"]
    assert comp["problems"][0]["file"].endswith("gemel/comparison_rows.json")
    # without gemel's g2 (50 %, .80) the front is a, c, m1, m2
    front = {(comp["rows"][k]["method"], comp["rows"][k]["setting"]) for k in comp["front"]}
    assert front == FRONT - {("gemel", "g2")}
    verdicts = json.loads((results / "comparison" / "verdicts.json").read_text())["papers"]
    assert {v["paper"]: v["verdict"] for v in verdicts} == PAPER_VERDICT  # sections are still fine
    for ext in ("png", "pdf"):
        assert (results / "comparison" / f"comparison.{ext}").stat().st_size > 5000
    metrics = json.loads((results / "metrics" / "comparison.json").read_text())
    assert metrics["n_settings"] == 6 and metrics["n_problems"] == 1
    assert metrics["best_saved_pct_at_target"] == 35 and metrics["best_label_free_saved_pct_at_target"] == 20
    assert (results / "plots" / "comparison.csv").read_text().count("\n") == 7
    assert (results / "metrics" / "compare_run.json").is_file()
    assert out["metrics"] == metrics
