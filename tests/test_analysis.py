"""Analysis stage: correlations against closed forms, collapse threshold, figures, report, wiring."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from omegaconf import open_dict

from repshare.analysis import run_analyze
from repshare.analysis.correlation import collapse_threshold, correlate, correlation_table, pair_table
from repshare.analysis.figures import fig3_abs_r, fig4_acc_vs_s, paper_value
from repshare.comparison import read_rows, read_section
from repshare.utils.io import write_json

N_STAGES = 8
PAPER = {"same_stage_S": 0.94, "cross_stage_S": 0.99, "params": 0.89, "size": 0.33, "flops": 0.0021}


# --------------------------------------------------------------------------- fake inputs
def fake_cka(n: int = N_STAGES) -> dict:
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    S = 0.95 - 0.12 * np.abs(i - j) - 0.01 * i  # rows detector i, cols classifier j
    return {"stage_names": {"classifier": [f"s{k}" for k in range(n)], "detector": [f"s{k}" for k in range(n)]},
            "same_stage": np.diag(S).tolist(), "cross_stage": S.tolist(), "shapes": {}, "n": 64}


def fake_pairs(cka: dict, n: int = N_STAGES) -> dict:
    S = np.asarray(cka["cross_stage"])
    pairs = []
    for i in range(n):
        for j in range(n):
            acc = 0.8 + 0.1 * S[i, j] if S[i, j] >= 0.4 else 0.05  # collapses below S = 0.4
            pairs.append({"i": i, "j": j, "kind": "same" if i == j else "cross", "acc": acc, "acc_top5": min(1, acc + 0.1),
                          "params_offloaded": 1000 * (j + 1), "bytes_offloaded": 4000 * (j + 1),
                          "memory_saved_frac": 0.1 * j, "size": 100 * (8 - i), "flops_offloaded": 1e6 * (j + 1) ** 2,
                          "flops_shared": 1e6 * (i + 1)})
    return {"baseline": {"acc": 0.9, "acc_top5": 1.0, "params": 4e6, "bytes": 1.6e7},
            "stage_names": [f"s{k}" for k in range(n)], "pairs": pairs, "n": 64}


def fake_merges(cka: dict) -> dict:
    """merges.json for two adapters under the per-model protocol; lstsq's agreement equals its accuracy."""
    pairs = fake_pairs(cka)["pairs"]
    merges = []
    for adapter, shift in (("resample", 0.0), ("lstsq", 0.05)):
        for p in pairs:
            acc = min(1.0, p["acc"] + shift)
            ab = 0 if adapter == "resample" else 400
            merges.append({"protocol": "per_model", "adapter": adapter, "i": p["i"], "j": p["j"], "kind": p["kind"],
                           "acc": acc, "acc_top5": 1.0, "agree": acc if adapter == "lstsq" else 0.5 * acc,
                           "n": 64, "acc_variants": acc, "n_variants": 64,
                           "agree_variants": acc if adapter == "lstsq" else 0.5 * acc,
                           "params_offloaded": p["params_offloaded"], "bytes_offloaded": p["bytes_offloaded"],
                           "adapter_bytes": ab, "bytes_saved": p["bytes_offloaded"] - ab, "classifier_bytes": 40000,
                           "size": p["size"], "flops_offloaded": p["flops_offloaded"], "flops_shared": p["flops_shared"],
                           "adapter_flops": 10 * ab, "labels_used": False, "fit_seconds": 0.5, "fit_images": 32})
    return {"baselines": {"per_model": {"acc": 0.9, "acc_top5": 1.0, "n": 64, "acc_variants": 0.9, "n_variants": 64}},
            "protocols": ["per_model"], "adapters": ["resample", "lstsq"], "merges": merges,
            "classifier_bytes": 40000, "detector_bytes": 60000}


def write_inputs(results) -> None:
    cka = fake_cka()
    write_json(results / "cka" / "cka.json", cka)
    write_json(results / "cka" / "per_model" / "cka.json", cka)
    write_json(results / "sharing" / "pairs.json", fake_pairs(cka))
    write_json(results / "sharing" / "merges.json", fake_merges(cka))
    write_json(results / "metrics" / "classifier.json", {"top1": 0.91, "top5": 0.99})
    write_json(results / "metrics" / "detector.json", {"map": 0.42})  # no map_50: tolerated


# --------------------------------------------------------------------------- correlate
def test_correlate_exact_linear_and_negative():
    x = np.arange(10.0)
    assert correlate(x, 3 * x + 2, n_bootstrap=0)["r"] == pytest.approx(1.0)
    res = correlate(x, -0.5 * x, n_bootstrap=0)
    assert res["r"] == pytest.approx(-1.0) and res["abs_r"] == pytest.approx(1.0)
    assert res["rho"] == pytest.approx(-1.0)


def test_correlate_hand_computed():
    # x = (1,2,3,4), y = (1,3,2,4): deviations (-1.5,-.5,.5,1.5) and (-1.5,.5,-.5,1.5)
    # cov sum = 2.25 - .25 - .25 + 2.25 = 4; var sums = 5 and 5 -> r = 4/5 = 0.8
    res = correlate([1, 2, 3, 4], [1, 3, 2, 4], n_bootstrap=0)
    assert res["r"] == pytest.approx(0.8)
    assert res["rho"] == pytest.approx(0.8)  # already ranks
    assert res["n"] == 4


def test_correlate_matches_corrcoef_and_drops_nan():
    rng = np.random.default_rng(1)
    x = rng.normal(size=50)
    y = 0.3 * x + rng.normal(size=50)
    r_np = np.corrcoef(x, y)[0, 1]
    x2, y2 = np.append(x, np.nan), np.append(y, 1.0)
    res = correlate(x2, y2, n_bootstrap=100)
    assert res["r"] == pytest.approx(r_np, abs=1e-12) and res["n"] == 50
    assert res["ci_low"] <= res["r"] <= res["ci_high"]


def test_correlate_constant_and_too_few_do_not_crash():
    res = correlate([1, 1, 1, 1], [1, 2, 3, 4])
    assert math.isnan(res["r"]) and "constant" in res["reason"]
    res = correlate([1, 2], [3, 4])
    assert math.isnan(res["r"]) and "at least 3" in res["reason"]
    with pytest.raises(ValueError, match="differ in length"):
        correlate([1, 2, 3], [1, 2])


def test_bootstrap_ci_contains_true_r():
    # Bivariate normal with correlation 0.6, n = 2000: the 95% CI is about +-0.03 wide.
    rho = 0.6
    rng = np.random.default_rng(0)
    z = rng.normal(size=(2000, 2))
    x = z[:, 0]
    y = rho * z[:, 0] + math.sqrt(1 - rho**2) * z[:, 1]
    res = correlate(x, y, n_bootstrap=500, ci=0.95, seed=0)
    assert res["ci_low"] < rho < res["ci_high"]
    assert res["ci_high"] - res["ci_low"] < 0.1


# --------------------------------------------------------------------------- collapse threshold
def test_collapse_threshold_clean_step():
    S = [0.1, 0.2, 0.3, 0.45, 0.5, 0.7, 0.9]
    acc = [0.05, 0.1, 0.02, 0.8, 0.85, 0.9, 1.0]  # threshold 0.5 * 1.0
    res = collapse_threshold(S, acc, drop=0.5)
    assert res["s_prime"] == pytest.approx(0.45)
    assert res["s_boundary"] == pytest.approx((0.45 + 0.3) / 2)
    assert res["n_collapsed"] == 3 and res["n_below"] == 3
    assert res["frac_collapsed_below"] == pytest.approx(1.0)


def test_collapse_threshold_non_monotone_and_edge_cases():
    # a collapsed pair at S = 0.6 makes everything below 0.7 "unsafe", even the good pair at 0.5
    res = collapse_threshold([0.2, 0.5, 0.6, 0.7, 0.9], [0.1, 0.9, 0.1, 0.9, 1.0], drop=0.5)
    assert res["s_prime"] == pytest.approx(0.7)
    assert res["n_below"] == 3 and res["frac_collapsed_below"] == pytest.approx(2 / 3)
    res = collapse_threshold([0.1, 0.5], [1.0, 0.9])
    assert res["s_prime"] == pytest.approx(0.1) and res["n_collapsed"] == 0
    res = collapse_threshold([0.1, 0.9], [1.0, 0.1])
    assert math.isnan(res["s_prime"])


# --------------------------------------------------------------------------- pair table
def test_pair_table_uses_cross_stage_row_i_col_j():
    cka = fake_cka()
    cka["cross_stage"][2][5] = 0.123456  # asymmetric on purpose
    df = pair_table(cka, fake_pairs(fake_cka()))
    row = df[(df.i == 2) & (df.j == 5)].iloc[0]
    assert row["S"] == pytest.approx(0.123456)
    assert df[(df.i == 5) & (df.j == 2)].iloc[0]["S"] != pytest.approx(0.123456)
    assert row["params"] == 6000 and row["flops"] == 36e6
    assert len(df) == 64 and (df[df.kind == "same"].i == df[df.kind == "same"].j).all()


def test_pair_table_rejects_out_of_range_pair():
    cka = fake_cka(4)
    with pytest.raises(ValueError, match=r"i=0, j=4.*shape \(4, 4\)"):
        pair_table(cka, fake_pairs(fake_cka()))


def test_correlation_table_kinds():
    df = pair_table(fake_cka(), fake_pairs(fake_cka()))
    rows = correlation_table(df, n_bootstrap=50)
    same = next(r for r in rows if r["metric"] == "S" and r["kind"] == "same")
    assert same["n"] == 8
    sub = df[df.kind == "same"]
    assert same["r"] == pytest.approx(np.corrcoef(sub.S, sub.acc)[0, 1])
    assert {r["n"] for r in rows if r["kind"] == "all"} == {64}


# --------------------------------------------------------------------------- figures + report
def test_figures_written(tmp_path):
    df = pair_table(fake_cka(), fake_pairs(fake_cka()))
    rows = correlation_table(df, n_bootstrap=20)
    paths = fig3_abs_r(rows, PAPER, tmp_path / "f3") + fig4_acc_vs_s(df, tmp_path / "f4", s_prime=0.4, rows=rows)
    for p in paths:
        assert p.stat().st_size > 1000
        head = p.read_bytes()[:8]
        assert head.startswith(b"\x89PNG") if p.suffix == ".png" else head.startswith(b"%PDF")
    assert paper_value(PAPER, "S", "same") == 0.94 and paper_value(PAPER, "params", "same") is None


def test_report_escapes_and_embeds(tmp_path):
    build_report = pytest.importorskip("repshare.analysis.report").__dict__.get("build_report")
    if build_report is None:
        pytest.skip("the static report was replaced by the dashboard")
    df = pair_table(fake_cka(), fake_pairs(fake_cka()))
    png = fig4_acc_vs_s(df, tmp_path / "f4")[0]
    out = build_report(tmp_path / "rep", [png], {"T <b>": [{"name": "<script>alert(1)</script>", "v": 1.5}]},
                       PAPER, {"experiment_name": "<script>"}, {"torch": "2.x"}, {"classifier": {"top1": 0.9}})
    text = out.read_text()
    assert "<script>" not in text
    assert "&lt;script&gt;" in text and "T &lt;b&gt;" in text
    assert "data:image/png;base64," in text
    assert "http://" not in text.replace("http-equiv", "") and "src=\"f4" not in text


# --------------------------------------------------------------------------- stage wiring
def test_run_analyze_end_to_end(smoke_cfg, tmp_path):
    results = tmp_path / "results"
    write_inputs(results)
    with open_dict(smoke_cfg):
        smoke_cfg.analysis.n_bootstrap = 50
    metrics = run_analyze(smoke_cfg)
    saved = json.loads((results / "metrics.json").read_text())
    for key in ("r_same_S", "r_cross_S", "r_params", "r_size", "r_flops", "collapse_threshold",
                "classifier_top1", "detector_map", "baseline_acc", "best_merged_acc"):
        assert key in saved, key
    assert saved["detector_map_50"] is None  # missing key tolerated
    assert saved["r_same_S"] == pytest.approx(metrics["r_same_S"])
    df = pair_table(fake_cka(), fake_pairs(fake_cka()))
    same = df[df.kind == "same"]
    assert saved["r_same_S"] == pytest.approx(np.corrcoef(same.S, same.acc)[0, 1])
    # fake acc collapses below S = 0.4: S' is the lowest S >= 0.4 in the grid
    assert saved["collapse_threshold"] == pytest.approx(df.S[df.S >= 0.4].min())
    assert saved["best_merged_acc"] == pytest.approx(0.8 + 0.1 * df.S.max())
    for name in ("fig3_abs_r.png", "fig3_abs_r.pdf", "fig4_acc_vs_s.png", "fig4_acc_vs_s.pdf", "correlations.csv"):
        assert (results / "figures" / name).stat().st_size > 0
    assert not (results / "report").exists()  # HTML is the dashboard's job: a section.json instead
    out = results / "cka_sharing"
    sec = read_section(out / "section.json")
    assert sec.claims[0].paper == "|r| = 0.94" and sec.claims[1].paper == "|r| = 0.99"
    assert sec.claims[0].verdict == "holds"  # fake same-stage acc is linear in S
    for f in sec.figures:
        assert (out / f.path).is_file(), f.path
    rows = read_rows(out / "comparison_rows.json")
    assert len(rows) == 128 and not any(r.labels_used for r in rows)
    r = [r for r in rows if r.extra["adapter"] == "lstsq" and (r.extra["i"], r.extra["j"]) == (2, 3)][0]
    assert r.bytes_saved == 4000 * 4 - 400 and r.bytes_saved_pct == pytest.approx(100 * (16000 - 400) / 100000)
    assert r.accuracy_rel["classifier"] == pytest.approx(r.accuracy["classifier"] / 0.9)
    assert r.extra_flops_per_image == 4000 - 1e6 * 16  # adapter FLOPs minus the off-loaded classifier FLOPs
    corr = pd.read_csv(out / "correlations.csv")
    agree = corr[(corr.adapter == "lstsq") & (corr.metric == "agree") & (corr.kind == "all")]
    assert agree.r.iloc[0] == pytest.approx(1.0)  # agreement equals accuracy in the fake
    regret = pd.read_csv(out / "regret.csv")
    assert set(regret.predictor) == {"cka", "agreement", "cka_x_agreement", "params", "size", "flops"}
    assert regret[regret.predictor == "agreement"].mean_regret.iloc[0] == pytest.approx(0.0)  # agreement == acc
    plot = pd.read_csv(results / "plots" / "acc_vs_cka.csv")
    assert list(plot.columns) == ["i", "j", "kind", "S", "acc"] and len(plot) == 64
    bars = pd.read_csv(results / "plots" / "abs_r.csv")
    assert list(bars.columns) == ["metric", "abs_r", "kind", "source"]
    assert (out / "analyze_run.json").is_file()


def test_run_analyze_missing_input(smoke_cfg, tmp_path):
    results = tmp_path / "results"
    write_inputs(results)
    (results / "sharing" / "pairs.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"sharing/pairs\.json.*evaluate_merged"):
        run_analyze(smoke_cfg)
    assert not (results / "metrics.json").exists()
