"""Comparison stage: Pareto front on hand-made points, untouched models filled, the claim registry applied
to hand-made sections (every paper verdict), rows and sections through their files, bad input."""

from __future__ import annotations

import json
import math
import os
from dataclasses import replace
from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict

from comparison_fixtures import (
    CLAIM_VERDICT,
    FOLDERS,
    FRONT,
    FRONT_LABEL_FREE,
    METRIC,
    PAPER_VERDICT,
    SECTION_FOLDERS,
    UNMERGED,
    fixture_rows,
    make_row,
    make_section,
    write_fixture_results,
    write_method,
)
from repshare.claims import Claim, RegistryError, SanityCheck, validate_registry
from repshare.comparison import ReportSection, read_rows, read_section, write_rows, write_section
from repshare.comparison.compare import (
    accuracy_kept,
    compare,
    fill_untouched,
    load_method_rows,
    load_sections,
    pareto_front,
    read_unmerged,
    unmerged_accuracy,
)
from repshare.comparison.registry import PAPERS, Paper, registry
from repshare.comparison.rows import RowsError
from repshare.comparison.section import SectionError
from repshare.comparison.verdict import judge_papers
from repshare.stats import Estimate, exact
from repshare.utils.artifacts import record_checksums
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


# --------------------------------------------------------------------------- rows through their file
def test_rows_round_trip_through_the_file(tmp_path):
    rows = fixture_rows()
    path = write_rows(tmp_path / "comparison_rows.json", "gemel", [r for r in rows if r.method == "gemel"])
    assert read_rows(path) == [r for r in rows if r.method == "gemel"]


def _bad_row(tmp_path, mutate) -> str:
    path = write_rows(tmp_path / "comparison_rows.json", "gemel", [fixture_rows()[3]])
    doc = json.loads(path.read_text())
    mutate(doc)
    text = json.dumps(doc)
    path.write_text(text)
    with pytest.raises(RowsError) as err:
        read_rows(path)
    return str(err.value)


@pytest.mark.parametrize("mutate,match", [
    (lambda d: d.update(schema_version=0), "'schema_version' is 0, expected 1"),
    (lambda d: d["rows"][0].update(bogus=1), "unknown field 'bogus'"),
    (lambda d: d["rows"][0].update(bytes_saved_pct=1e9), r"bytes_saved_pct' must be in \[-100, 100\]"),
    (lambda d: d["rows"][0].update(bytes_saved_pct=-150.0, bytes_saved=-1), r"must be in \[-100, 100\]"),
    (lambda d: d["rows"][0].update(bytes_saved_pct=-5.0), "other sign than bytes_saved"),
    (lambda d: d["rows"][0]["accuracy"].update(detector=float("nan")), "NaN is not a number in strict JSON"),
    (lambda d: d["rows"][0]["accuracy"].update(detector=1.5), r"'accuracy.detector' must be a finite number in \[0, 1\]"),
    (lambda d: d["rows"][0]["accuracy_rel"].update(detector=-0.1), "'accuracy_rel.detector'"),
    (lambda d: d["rows"][0].update(models=["../../x"]), "model name '../../x' is not an identifier"),
    (lambda d: d["rows"][0].update(method="javascript:alert(1)"), "'method' must be an identifier"),
    (lambda d: d["rows"][0]["metric"].update(detector="foo"), "field 'metric' must map model names to one of"),
    (lambda d: d["rows"][0].update(retrain_seconds=-1.0), "'retrain_seconds' must be >= 0"),
])
def test_rows_reader_rejects_bad_rows_naming_the_field(tmp_path, mutate, match):
    import re

    assert re.search(match, _bad_row(tmp_path, mutate))


def test_rows_writer_refuses_a_nan_accuracy(tmp_path):
    row = replace(fixture_rows()[0], accuracy={"classifier": float("nan")})
    with pytest.raises(RowsError, match="'accuracy.classifier' must be a finite number"):
        write_rows(tmp_path / "r.json", "cka_sharing", [row])


# --------------------------------------------------------------------------- sections through their file
def test_section_round_trips_with_measurements_and_sanity(tmp_path):
    sec = make_section("gemel", tmp_path)
    path = write_section(tmp_path / "section.json", sec)
    assert read_section(path) == sec
    assert json.loads(path.read_text())["schema_version"] == 2


@pytest.mark.parametrize("mutate,match", [
    (lambda d: d.update(schema_version=1), "'schema_version' is 1, expected 2"),
    (lambda d: d.pop("schema_version"), "'schema_version' is None"),
    (lambda d: d.update(claims=[]), "unknown field 'claims'"),
    (lambda d: d["tables"][0].update(extra="x"), r"unknown field 'tables\[0\].extra'"),
    (lambda d: d.pop("title"), "missing field 'title'"),
    (lambda d: d.update(method="../gemel"), "field 'method' must be an identifier"),
    (lambda d: d["figures"][0].update(path="../../etc/passwd.png"), r"figures\[0\].path"),
    (lambda d: d["figures"][0].update(path="javascript:alert(1)"), r"figures\[0\].path"),
    (lambda d: d["measurements"]["gemel.memory_saved_pct"].update(lo=5, hi=1), "lo <= hi"),
    (lambda d: d["measurements"]["gemel.memory_saved_pct"].update(over="vibes"), "Estimate.over='vibes'"),
    (lambda d: d["sanity"][0].update(passed="yes"), r"sanity\[0\].passed"),
    (lambda d: d["tables"][0]["rows"][0].update(Accuracy=float("nan")), "NaN is not a number in strict JSON"),
])
def test_section_reader_rejects_bad_files_naming_the_field(tmp_path, mutate, match):
    path = write_section(tmp_path / "section.json", make_section("gemel", tmp_path))
    doc = json.loads(path.read_text())
    mutate(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(SectionError, match=match):
        read_section(path)


def test_write_section_makes_strict_json_of_nan_cells(tmp_path):
    sec = make_section("gemel", tmp_path)
    sec.tables[0].rows[0]["Accuracy"] = float("nan")
    path = write_section(tmp_path / "section.json", sec)
    assert "NaN" not in path.read_text() and read_section(path).tables[0].rows[0]["Accuracy"] is None


# --------------------------------------------------------------------------- loading a results folder
def rewrite(results: Path, folder: str, name: str, mutate, stage: str = "gemel") -> None:
    """Edit one file as a buggy writer would (its checksums re-recorded, so the content is what is tested)."""
    path = results / folder / name
    doc = json.loads(path.read_text())
    mutate(doc)
    write_json(path, doc)
    record_checksums(results / folder, stage)


def test_load_method_rows_bad_file_named_others_kept(tmp_path):
    results = write_fixture_results(tmp_path / "results")
    rewrite(results, "gemel", "comparison_rows.json", lambda d: d["rows"][1].pop("bytes_saved"))
    (results / "placement" / "comparison_rows.json").unlink()
    rows, problems = load_method_rows(results, FOLDERS)
    assert sorted({r.method for r in rows}) == ["cka_sharing", "meedge"]
    by = {p.method: p for p in problems}
    assert set(by) == {"gemel", "meedge_placement"}
    assert "gemel/comparison_rows.json row 1" in by["gemel"].message and "'bytes_saved'" in by["gemel"].message
    assert by["meedge_placement"].file.endswith("placement/comparison_rows.json")
    assert "missing file" in by["meedge_placement"].message and "rerun the placement stage" in by["meedge_placement"].message


def test_corrupted_inputs_are_caught_by_their_checksums(tmp_path):
    results = write_fixture_results(tmp_path / "results")
    sec = results / "analyze" / "section.json"
    data = bytearray(sec.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit, still valid-looking text
    sec.write_bytes(bytes(data))
    rows = results / "gemel" / "comparison_rows.json"
    rows.write_bytes(rows.read_bytes()[:-40])  # truncated
    sections, sp = load_sections(results, SECTION_FOLDERS)
    _, rp = load_method_rows(results, FOLDERS)
    assert "cka_sharing" not in sections and len(sp) == 1 and len(rp) == 1
    assert "is corrupt" in sp[0].message and "rerun the analyze stage" in sp[0].message
    assert "comparison_rows.json is corrupt" in rp[0].message and "rerun the gemel stage" in rp[0].message


def test_load_method_rows_wrong_method_key(tmp_path):
    results = write_fixture_results(tmp_path / "results")
    rewrite(results, "kd_recover", "comparison_rows.json", lambda d: d["rows"][0].update(method="gemel"), "kd_recover")
    _, problems = load_method_rows(results, FOLDERS)
    assert len(problems) == 1 and "field 'method' is 'gemel', expected 'meedge'" in problems[0].message


def test_keys_that_are_paths_never_reach_the_file_system(tmp_path):
    results = write_fixture_results(tmp_path / "results")
    outside = tmp_path / "x"
    write_method(tmp_path, "gemel", "x")  # a valid folder outside results/, where ../x would point
    for folders in ({"gemel": "../x"}, {"../x": "gemel"}, {"javascript:alert(1)//": "gemel"}):
        sections, problems = load_sections(results, folders)
        rows, rproblems = load_method_rows(results, folders)
        assert not sections and not rows and len(problems) == len(rproblems) == 1
        assert "is not an identifier" in problems[0].message
    assert outside.is_dir()


def test_unmerged_accuracy_names_file_and_field(tmp_path):
    acc, problems = unmerged_accuracy({"classifier": {"top1": 0.9}, "detector": {"map_50": 0.5}},
                                      METRIC, {"detector": "r/metrics/detector.json"})
    assert acc == {"classifier": 0.9}
    msgs = {p.file: p.message for p in problems}
    assert "field 'map'" in msgs["r/metrics/detector.json"]
    assert "missing file results/metrics/classifier_color.json" in msgs["results/metrics/classifier_color.json"]
    # an unknown metric, a name that is a path, an accuracy outside [0, 1]
    write_json(tmp_path / "metrics" / "a.json", {"top1": 1.7})
    write_json(tmp_path / "x.json", {"top1": 0.5})  # what ../x would read
    acc, problems = read_unmerged(tmp_path, [("a", "top1"), ("b", "foo"), ("../x", "top1")])
    assert acc == {}
    text = " | ".join(p.message for p in problems)
    assert "in [0, 1], got 1.7" in text and "unknown metric 'foo'" in text and "'../x' is not an identifier" in text


# --------------------------------------------------------------------------- the registry applied
PAPER = Paper("toy", "A toy paper", "Toy et al.", ("m1", "m2"), ())
BASE = Claim(key="toy.a", paper="toy", statement="a", paper_value="0.5", where="Sec. 1", quantity="m1.a",
             subset="all", low=0.5, high=0.5, tolerance=0.1, why_tolerance="one step")
CLAIMS = [BASE, replace(BASE, key="toy.b", quantity="m2.b", low=0.0, high=None, tolerance=0.0),
          replace(BASE, key="toy.c", quantity="m2.c", primary=False)]


def section(method: str, meas: dict[str, Estimate], sanity=()) -> ReportSection:
    return ReportSection(method=method, title=method, summary="", measurements=meas, sanity=list(sanity))


def iv(lo: float, hi: float, **kw) -> Estimate:
    return Estimate((lo + hi) / 2, lo, hi, 50, "images", "bootstrap", **kw)


# (estimate of a, estimate of b) -> paper verdict; regions: a in [0.4, 0.6], b > 0
@pytest.mark.parametrize("a,b,want", [
    (iv(0.4, 0.6), iv(0.0, 1.0), "holds"),                       # both inside, touching the edges
    (iv(0.45, 0.55), iv(-1.0, -0.1), "partly"),                  # one holds, one does not
    (iv(0.7, 0.9), iv(-1.0, -0.1), "does not"),                  # both outside
    (iv(0.7, 0.9), iv(-0.1, 0.1), "does not"),                   # one does not, one open, none holds
    (iv(0.45, 0.55), iv(-0.1, 0.1), "inconclusive"),             # straddles 0
    (iv(0.45, 0.55), iv(0.1, 0.2, interpretable=False), "inconclusive"),  # at chance
    (iv(0.45, 0.55), exact(0.2), "holds"),                       # an exact value is its own interval
    (iv(0.45, 0.55), Estimate(0.2, math.nan, math.nan, 1, "seeds", "t"), "inconclusive"),  # no interval
    (iv(0.45, 0.55), None, "inconclusive"),                      # a primary claim not measured prevents holds
    (None, None, "not tested"),
])
def test_paper_verdict_at_every_boundary(a, b, want):
    secs = {"m1": section("m1", {} if a is None else {"m1.a": a}),
            "m2": section("m2", ({} if b is None else {"m2.b": b}) | {"m2.c": iv(5, 6)})}
    (rep,), issues = judge_papers(CLAIMS, secs, papers=[PAPER], quantities=["m1.a", "m2.b", "m2.c"])
    assert rep.verdict == want and not issues
    assert {c["key"]: c["verdict"] for c in rep.claims}["toy.c"] == "does not"  # secondary: never votes
    assert rep.counts["does not"] >= 1 and sum(rep.counts.values()) == 3 and sum(rep.primary_counts.values()) == 2


def test_missing_section_reads_not_tested_with_the_reason():
    (rep,), _ = judge_papers(CLAIMS, {"m1": section("m1", {"m1.a": iv(0.45, 0.55)})}, {"m2": "missing file m2/section.json"},
                             papers=[PAPER], quantities=["m1.a", "m2.b", "m2.c"])
    row = {c["key"]: c for c in rep.claims}["toy.b"]
    assert row["verdict"] == "not tested" and "missing file m2/section.json" in row["reason"]
    assert rep.verdict == "inconclusive" and "m2: missing file m2/section.json" in rep.reason


def test_sanity_checks_are_listed_apart_and_never_vote():
    good = {"m1": section("m1", {"m1.a": iv(0.45, 0.55)}, [SanityCheck("toy.s", "by construction", False, "eta 0.8")]),
            "m2": section("m2", {"m2.b": iv(0.1, 0.2)}, [SanityCheck("toy.t", "fixed chain", True)])}
    (rep,), _ = judge_papers(CLAIMS, good, papers=[PAPER], quantities=["m1.a", "m2.b", "m2.c"])
    assert rep.verdict == "holds"  # a failed sanity check does not move the verdict
    assert [(s["key"], s["passed"], s["method"]) for s in rep.sanity] == [("toy.s", False, "m1"), ("toy.t", True, "m2")]
    assert len(rep.claims) == 3 and all(c["key"].startswith("toy.") and c["key"] not in ("toy.s", "toy.t")
                                        for c in rep.claims)
    # and a sanity check can never enter the registry as a claim
    with pytest.raises(RegistryError, match="SanityCheck, not a Claim"):
        validate_registry([*CLAIMS, SanityCheck("toy.s", "by construction", True)], {"m1.a": "", "m2.b": "", "m2.c": ""},
                          ["toy"])


def test_inconsistent_measurements_are_reported():
    secs = {"m1": section("m1", {"m1.a": iv(0.45, 0.55), "m2.b": iv(0.1, 0.2), "typo.q": iv(0, 1)}),
            "m2": section("m2", {"m2.b": iv(0.1, 0.2)})}
    _, issues = judge_papers(CLAIMS, secs, papers=[PAPER], quantities=["m1.a", "m2.b", "m2.c"])
    text = " | ".join(f"{m}: {msg}" for m, msg in issues)
    assert "'m2.b' is measured by both m1 and m2" in text and "'typo.q' is not a declared quantity" in text


def test_study_intervals_are_used_and_said_but_never_narrow_the_runs():
    """Seeds that disagree widen the interval (a run's 'holds' becomes inconclusive); seeds that agree
    more tightly than one run's sampling do not make a verdict (they would for a quantity that does not
    vary with the model seed, whose interval over seeds has zero width)."""
    nan_study = Estimate(math.nan, math.nan, math.nan, 0, "seeds", "t")
    quantities = ["m1.a", "m2.b", "m2.c"]
    secs = {"m1": section("m1", {"m1.a": iv(0.45, 0.55)}), "m2": section("m2", {"m2.b": iv(0.1, 0.2)})}
    (alone,), _ = judge_papers(CLAIMS, secs, papers=[PAPER], quantities=quantities)
    assert {c["key"]: c["verdict"] for c in alone.claims}["toy.a"] == "holds"
    wide = {"m1.a": Estimate(0.5, 0.3, 0.7, 3, "seeds", "t"), "m2.c": nan_study}
    (rep,), _ = judge_papers(CLAIMS, secs, study_estimates=wide, papers=[PAPER], quantities=quantities)
    rows = {c["key"]: c for c in rep.claims}
    assert rows["toy.a"]["verdict"] == "inconclusive" and rows["toy.a"]["intervals"] == "seeds"
    assert "0.450" in rows["toy.a"]["ours_run"] and "(3 seeds)" in rows["toy.a"]["ours"]
    assert rows["toy.b"]["intervals"] == "run" and rows["toy.c"]["intervals"] == "run"  # a NaN study value is no value
    assert rep.verdict != "holds"
    secs["m1"] = section("m1", {"m1.a": iv(0.3, 0.7)})
    (run_only,), _ = judge_papers(CLAIMS, secs, papers=[PAPER], quantities=quantities)
    narrow = {"m1.a": Estimate(0.5, 0.45, 0.55, 3, "seeds", "t")}
    (rep,), _ = judge_papers(CLAIMS, secs, study_estimates=narrow, papers=[PAPER], quantities=quantities)
    rows = {c["key"]: c for c in rep.claims}
    assert rows["toy.a"]["verdict"] == {c["key"]: c["verdict"] for c in run_only.claims}["toy.a"] == "inconclusive"
    assert "widened" in rows["toy.a"]["estimate"]["note"]


def test_fixture_sections_give_the_planned_verdict_per_paper_and_claim(tmp_path):
    """The real registry on the hand-made sections: each paper's verdict and each claim's as planned."""
    results = write_fixture_results(tmp_path / "results")
    sections, problems = load_sections(results, SECTION_FOLDERS)
    assert not problems
    reports, issues = judge_papers(registry(), sections)
    assert not issues
    assert {r.paper: r.verdict for r in reports} == PAPER_VERDICT
    assert {c["key"]: c["verdict"] for r in reports for c in r.claims} == CLAIM_VERDICT
    assert [r.paper for r in reports] == [p.key for p in PAPERS]


# --------------------------------------------------------------------------- the stage
def test_compare_stage_on_fixtures(smoke_cfg):
    from repshare.stages.compare import run

    results = write_fixture_results(Path(smoke_cfg.paths.results_dir))
    out = run(smoke_cfg)
    comp = json.loads((results / "compare" / "comparison.json").read_text())
    assert {r["method"] for r in comp["rows"]} == {"cka_sharing", "gemel", "meedge", "meedge_placement"}
    front = {(comp["rows"][k]["method"], comp["rows"][k]["setting"]) for k in comp["front"]}
    assert front == FRONT and comp["problems"] == []
    verdicts = json.loads((results / "compare" / "verdicts.json").read_text())
    assert {v["paper"]: v["verdict"] for v in verdicts["papers"]} == PAPER_VERDICT
    assert "no seed study" in verdicts["intervals"]
    claims = json.loads((results / "compare" / "claims.json").read_text())["claims"]
    assert {c["key"]: c["verdict"] for c in claims} == CLAIM_VERDICT
    assert all(c["intervals"] == "run" for c in claims)
    csv_text = (results / "compare" / "claims.csv").read_text()
    assert csv_text.splitlines()[0].startswith("key,paper,primary,statement,paper_value,where,subset")
    assert len(csv_text.splitlines()) == len(CLAIM_VERDICT) + 1
    for ext in ("png", "pdf"):
        assert (results / "compare" / f"comparison.{ext}").stat().st_size > 5000
    metrics = json.loads((results / "metrics" / "compare.json").read_text())
    assert metrics["n_settings"] == 8 and metrics["n_problems"] == 0
    assert metrics["best_saved_pct_at_target"] == 35 and metrics["best_label_free_saved_pct_at_target"] == 20
    assert {k: v for k, v in metrics.items() if k.startswith("verdict_")} == {
        f"verdict_{p}": v for p, v in PAPER_VERDICT.items()}
    assert (results / "plots" / "comparison.csv").read_text().count("\n") == 9
    assert json.loads((results / "compare" / "checksums.json").read_text())["stage"] == "compare"
    assert (results / "metrics" / "compare_run.json").is_file()
    assert out["metrics"] == metrics


def test_compare_stage_is_deterministic(smoke_cfg, tmp_path):
    from repshare.stages.compare import run

    results = write_fixture_results(Path(smoke_cfg.paths.results_dir))
    run(smoke_cfg)
    first = {p.name: p.read_bytes() for p in (results / "compare").iterdir()}
    os.rename(results / "compare", tmp_path / "first")
    run(smoke_cfg)
    assert {p.name: p.read_bytes() for p in (results / "compare").iterdir()} == first


def params_file(cfg, tmp_path: Path) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return path


def run_stage_line(fn, params: Path, capsys, *overrides: str) -> tuple[int, str]:
    from repshare.stage import run_stage

    with pytest.raises(SystemExit) as stop:
        run_stage(fn, ["--params", str(params), *overrides])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error")]
    return stop.value.code, "\n".join(err)


def test_bad_inputs_stop_the_stage_with_one_line_unless_allowed(smoke_cfg, tmp_path, capsys):
    from repshare.stages.compare import run

    results = write_fixture_results(Path(smoke_cfg.paths.results_dir))
    rewrite(results, "gemel", "comparison_rows.json", lambda d: d["rows"][0].update(bytes_saved_pct=1e9))
    (results / "concurrency" / "section.json").unlink()
    params = params_file(smoke_cfg, tmp_path)
    code, line = run_stage_line(run, params, capsys)
    assert code == 2 and len(line.splitlines()) == 1
    assert "bytes_saved_pct" in line and "and 1 more problems" in line and "compare.allow_problems=true" in line
    assert not (results / "compare").exists()  # nothing written
    # allowed: a partial comparison, the problems listed, the missing paper's claims not tested
    with open_dict(smoke_cfg):
        smoke_cfg.compare.allow_problems = True
    run(smoke_cfg)
    comp = json.loads((results / "compare" / "comparison.json").read_text())
    assert len(comp["problems"]) == 2 and {r["method"] for r in comp["rows"]} == {"cka_sharing", "meedge",
                                                                                  "meedge_placement"}
    verdicts = {v["paper"]: v for v in json.loads((results / "compare" / "verdicts.json").read_text())["papers"]}
    assert verdicts["concurrency"]["verdict"] == "not tested" and "concurrency" in verdicts["concurrency"]["reason"]
    assert verdicts["gemel"]["verdict"] == PAPER_VERDICT["gemel"]  # its section is fine; its rows are not


def test_a_bad_registry_entry_stops_compare_and_report_naming_it(smoke_cfg, tmp_path, capsys, monkeypatch):
    import repshare.gemel.claims as gemel_claims
    from repshare.stages import compare, report

    write_fixture_results(Path(smoke_cfg.paths.results_dir))
    bad = replace(gemel_claims.CLAIMS[0], tolerance=-1.0)
    monkeypatch.setattr(gemel_claims, "CLAIMS", [bad, *gemel_claims.CLAIMS[1:]])
    params = params_file(smoke_cfg, tmp_path)
    for stage in (compare.run, report.run):
        code, line = run_stage_line(stage, params, capsys)
        assert code == 2 and len(line.splitlines()) == 1, line
        assert f"claim {bad.key!r}: tolerance -1.0 must be a finite number >= 0" in line


def test_study_estimates_feed_the_verdicts_only_for_this_config(smoke_cfg):
    from repshare.comparison.study import Study, config_fingerprint, write_study
    from repshare.stages.compare import run

    results = write_fixture_results(Path(smoke_cfg.paths.results_dir))
    # a claim that holds on the run's interval, and seeds that straddle the edge of its region
    claim = next(c for c in registry() if c.paper == "concurrency" and CLAIM_VERDICT[c.key] == "holds")
    lo, hi = claim.region()
    edge = (lo - 1.0, lo + 1.0) if math.isinf(hi) else ((hi - 1.0, hi + 1.0) if math.isinf(lo) else
                                                       (lo - (hi - lo) / 4, lo + (hi - lo) / 4))
    seeds = {claim.quantity: Estimate(sum(edge) / 2, *edge, 3, "seeds", "t")}
    write_study(results / "study", Study(config_fingerprint(smoke_cfg), [0, 1, 2], "abc", seeds))
    run(smoke_cfg)
    verdicts = {v["paper"]: v for v in json.loads((results / "compare" / "verdicts.json").read_text())["papers"]}
    claims = {c["key"]: c for c in json.loads((results / "compare" / "claims.json").read_text())["claims"]}
    assert claims[claim.key]["intervals"] == "seeds" and claims[claim.key]["verdict"] == "inconclusive"
    assert verdicts["concurrency"]["intervals"]["seeds"] >= 1
    # another config (a different data size): the study is ignored, and the reason says so
    with open_dict(smoke_cfg):
        smoke_cfg.data.n_val = int(smoke_cfg.data.n_val) + 8
    run(smoke_cfg)
    doc = json.loads((results / "compare" / "claims.json").read_text())
    assert {c["key"]: c["verdict"] for c in doc["claims"]} == CLAIM_VERDICT
    assert "for another config" in doc["intervals"]
    # a corrupt study file is a problem like any other input
    study = results / "study" / "estimates.json"
    study.write_text(study.read_text().replace('"seeds"', '"seedz"', 1))
    with pytest.raises(ValueError, match="estimates.json is corrupt"):
        run(smoke_cfg)
