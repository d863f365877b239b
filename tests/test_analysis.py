"""The CKA-sharing analysis: two-way bootstrap against brute force, the hinge S', the chance guard, the
claims judged on the paper's subset, figures, and the analyze stage on fake inputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import open_dict
from safetensors.torch import save_file

from repshare.claims import judge
from repshare.comparison import read_rows, read_section
from repshare.sharing.claims import CLAIMS, QUANTITIES
from repshare.sharing.correlation import correlate, hinge_fit, hinge_grid, resample_images, two_way_samples
from repshare.sharing.figures import fig3_abs_r, fig4_acc_vs_s, paper_value
from repshare.sharing.measure import Chance, measurements
from repshare.stats import pearson_r, percentile_bounds
from repshare.utils.io import atomic_dir, write_json

N_STAGES, N_IMAGES = 8, 60
PAPER = {"same_stage_S": 0.94, "cross_stage_S": 0.99, "params": 0.89, "size": 0.33, "flops": 0.0021}
CLAIM = {c.key: c for c in CLAIMS}


def hits_for(acc: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """(P, n) 0/1 hits with exactly round(acc * n) hits per row, in seeded random places."""
    rng = np.random.default_rng(seed)
    out = np.zeros((len(acc), n), dtype=np.int8)
    for k, a in enumerate(acc):
        out[k, rng.permutation(n)[: int(round(a * n))]] = 1
    return out


# --------------------------------------------------------------------------- resampling against brute force
def test_image_resampling_is_the_brute_force_bootstrap():
    hits = hits_for(np.array([0.2, 0.5, 0.9]), 30)
    res = resample_images(hits, 50, seed=3)
    idx = np.random.default_rng(3).integers(0, 30, size=(50, 30))  # repshare.stats' draw
    want = np.stack([hits[:, row].mean(axis=1) for row in idx])
    np.testing.assert_allclose(res.boot, want, atol=1e-12)
    np.testing.assert_allclose(res.acc, [0.2, 0.5, 0.9])
    with pytest.raises(ValueError, match="0 or 1"):
        resample_images(np.array([[1, -1]]), 5, 0)


def test_two_way_r_interval_is_the_brute_force_one():
    acc = np.array([0.1, 0.3, 0.2, 0.6, 0.5, 0.9, 0.7])
    s = np.array([0.05, 0.2, 0.3, 0.5, 0.55, 0.8, 0.9])
    hits = hits_for(acc, 40, seed=1)
    res = resample_images(hits, 200, seed=11)
    row = correlate(s, res, np.arange(7), level=0.9, seed=5)
    # brute force: replicate b resamples images with draw b of seed 11 and pairs with draw b of seed 5
    img = np.random.default_rng(11).integers(0, 40, size=(200, 40))
    pairs = np.random.default_rng(5).integers(0, 7, size=(200, 7))
    rs = []
    for b in range(200):
        a = hits[:, img[b]].mean(axis=1)[pairs[b]]
        x = s[pairs[b]]
        rs.append(np.corrcoef(x, a)[0, 1] if np.ptp(x) > 0 and np.ptp(a) > 0 else np.nan)
    lo, hi = np.nanpercentile(rs, [5, 95])
    assert row["r"] == pytest.approx(np.corrcoef(s, acc)[0, 1], abs=1e-12)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((lo, hi), abs=1e-12)
    assert row["n"] == 7 and row["abs_r"] == pytest.approx(abs(row["r"]))


def test_paired_difference_uses_the_same_replicates():
    s = np.linspace(0.1, 0.9, 8)
    x = np.array([3.0, 1, 4, 1, 5, 9, 2, 6])
    res = resample_images(hits_for(0.1 + 0.8 * s, 50), 100, seed=2)
    point, diff = two_way_samples(lambda a, sb, xb: np.abs(pearson_r(sb, a)) - np.abs(pearson_r(xb, a)), res,
                                  np.arange(8), [s, x], seed=4)
    _, r_s = two_way_samples(lambda a, sb: np.abs(pearson_r(sb, a)), res, np.arange(8), [s], seed=4)
    _, r_x = two_way_samples(lambda a, xb: np.abs(pearson_r(xb, a)), res, np.arange(8), [x], seed=4)
    np.testing.assert_allclose(diff, r_s - r_x, equal_nan=True)  # same pairs and images in every replicate
    assert point == pytest.approx(abs(np.corrcoef(s, res.acc)[0, 1]) - abs(np.corrcoef(x, res.acc)[0, 1]))


def test_correlate_constant_and_too_few_do_not_crash():
    res = resample_images(hits_for(np.array([0.5, 0.5, 0.5, 0.5]), 10), 20, 0)
    assert "constant" in correlate(np.array([1.0, 2, 3, 4]), res, np.arange(4))["reason"]
    short = correlate(np.array([1.0, np.nan, np.nan, 4]), res, np.arange(4))  # non-finite predictors dropped
    assert "at least 3" in short["reason"] and short["n"] == 2 and math.isnan(short["r"])


# --------------------------------------------------------------------------- the paper's S'
def test_hinge_recovers_a_known_threshold():
    s = np.array([0.05, 0.15, 0.25, 0.35, 0.45, 0.6, 0.75, 0.9])
    acc = 0.03 + 1.5 * np.maximum(0.0, s - 0.4)  # flat at 0.03 below 0.4, linear above: the paper's picture
    grid = np.round(np.arange(0.05, 0.901, 0.01), 10)
    tau, floor, slope = hinge_fit(acc, s, grid)
    assert (tau[0], floor[0], slope[0]) == pytest.approx((0.4, 0.03, 1.5), abs=1e-9)


def test_hinge_is_the_brute_force_least_squares_breakpoint():
    rng = np.random.default_rng(0)
    s = np.sort(rng.uniform(0, 1, 10))
    acc = 0.1 + 0.8 * np.maximum(0, s - 0.5) + rng.normal(0, 0.03, 10)
    grid = hinge_grid(s, 51)
    sse = []
    for t in grid:
        A = np.stack([np.ones_like(s), np.maximum(0, s - t)], 1)
        coef, *_ = np.linalg.lstsq(A, acc, rcond=None)
        fit = A @ coef if coef[1] >= 0 else np.full_like(acc, acc.mean())
        sse.append(((acc - fit) ** 2).sum())
    assert hinge_fit(acc, s, grid)[0][0] == pytest.approx(grid[int(np.argmin(sse))])


def test_hinge_on_linear_data_puts_the_threshold_at_the_lowest_s():
    s = np.linspace(0.2, 0.9, 8)
    tau, floor, slope = hinge_fit(0.1 + s, s, hinge_grid(s))
    assert tau[0] == pytest.approx(0.2) and slope[0] == pytest.approx(1.0)


# --------------------------------------------------------------------------- the claims' measurements
def ref_cell(s_same, acc_same, flops_same, n=N_IMAGES):
    """A same-stage-only paper cell (8 pairs): S, #Params, Size, FLOPs and acc per pair."""
    k = len(s_same)
    df = pd.DataFrame({"i": range(k), "j": range(k), "kind": "same", "S": s_same, "params": np.arange(1, k + 1) * 1e3,
                       "size": np.arange(k, 0, -1) * 100.0, "flops": flops_same, "acc": acc_same, "pos": range(k)})
    return df, resample_images(hits_for(np.asarray(acc_same), n), 300, seed=1)


GOOD = Chance(num_classes=8, baseline_correct=55, n_images=N_IMAGES, detector_map50=0.4)


def test_cka_beats_flops_judged_on_the_same_stage_pairs():
    s = np.array([0.9, 0.3, 0.8, 0.2, 0.7, 0.4, 0.6, 0.5])  # not monotone in the stage
    acc = 0.1 + 0.8 * s  # accuracy follows CKA exactly
    flops = np.arange(1, 9) ** 2 * 1e6  # monotone in the stage: nearly uncorrelated with accuracy here
    df, res = ref_cell(s, acc, flops)
    m = measurements(df, res, GOOD, 0.95, 0, 300)
    assert set(m) <= set(QUANTITIES)
    assert m["cka.abs_r_same"].value == pytest.approx(1.0, abs=0.02)
    assert m["cka.abs_r_flops_same"].value == pytest.approx(abs(np.corrcoef(flops, res.acc)[0, 1]))
    assert judge(CLAIM["cka.beats_flops"], m["cka.gap_flops_same"]).verdict == "holds"
    assert judge(CLAIM["cka.same_stage_r"], m["cka.abs_r_same"]).verdict == "holds"
    assert m["cka.gap_flops_same"].over == "pairs" and m["cka.gap_flops_same"].n == 8


def test_flops_beating_cka_on_the_same_stage_pairs_does_not_hold():
    s = np.array([0.9, 0.3, 0.8, 0.2, 0.7, 0.4, 0.6, 0.5])
    flops = np.arange(1, 9) * 1e6
    acc = 0.9 - 0.1 * np.arange(8)  # follows the stage (and FLOPs), not CKA
    df, res = ref_cell(s, acc, flops)
    m = measurements(df, res, GOOD, 0.95, 0, 300)
    assert judge(CLAIM["cka.beats_flops"], m["cka.gap_flops_same"]).verdict == "does not"


def test_threshold_measured_as_the_paper_defines_it():
    s = np.array([0.05, 0.15, 0.25, 0.35, 0.5, 0.6, 0.75, 0.9])
    acc = np.round(0.1 + 0.8 * np.maximum(0.0, s - 0.4) / 0.5, 3)
    df, res = ref_cell(s, acc, np.arange(1, 9) * 1e6, n=600)
    m = measurements(df, res, GOOD, 0.95, 0, 300)
    assert 0.35 <= m["cka.s_prime"].value <= 0.5
    assert m["cka.s_prime"].lo <= 0.4 <= m["cka.s_prime"].hi
    assert m["cka.acc_below_s_prime"].value == pytest.approx(0.1, abs=0.03)


@pytest.mark.parametrize("chance, why", [
    (Chance(8, 8, N_IMAGES, 0.4), "unmerged classifier is at chance"),
    (Chance(8, 55, N_IMAGES, 0.001), "detector learned no detection"),
])
def test_models_at_chance_make_every_estimate_not_interpretable(chance, why):
    s = np.array([0.9, 0.3, 0.8, 0.2, 0.7, 0.4, 0.6, 0.5])
    df, res = ref_cell(s, 0.1 + 0.8 * s, np.arange(1, 9) * 1e6)
    m = measurements(df, res, chance, 0.95, 0, 300)
    assert m and all(not e.interpretable and why in e.note for e in m.values())
    assert judge(CLAIM["cka.same_stage_r"], m["cka.abs_r_same"]).verdict == "inconclusive"


def test_merges_at_chance_are_not_interpretable():
    s = np.array([0.9, 0.3, 0.8, 0.2, 0.7, 0.4, 0.6, 0.5])
    df, res = ref_cell(s, 0.125 + 0.02 * s, np.arange(1, 9) * 1e6)  # 8 classes: every merge near 1/8
    m = measurements(df, res, GOOD, 0.95, 0, 300)
    assert not m["cka.abs_r_same"].interpretable and "no merge of the subset is above chance" in m["cka.abs_r_same"].note


# --------------------------------------------------------------------------- figures
def test_figures_written(tmp_path):
    rows = [{"metric": m, "kind": k, "r": 0.5, "abs_r": 0.5, "ci_low": 0.1, "ci_high": 0.8, "n": 8}
            for m in ("S", "params", "size", "flops") for k in ("same", "cross", "all")]
    df = pd.DataFrame({"i": [0, 1, 0], "j": [0, 1, 1], "kind": ["same", "same", "cross"], "S": [0.9, 0.3, 0.5],
                       "acc": [0.8, 0.1, 0.4]})
    paths = fig3_abs_r(rows, PAPER, tmp_path / "f3") + fig4_acc_vs_s(df, tmp_path / "f4", {
        "s_prime": 0.4, "floor": 0.1, "slope": 1.0}, rows)
    for p in paths:
        head = p.read_bytes()[:8]
        assert head.startswith(b"\x89PNG") if p.suffix == ".png" else head.startswith(b"%PDF")
    # the paper states #Params/Size/FLOPs in its same-stage paragraph: same-stage only
    assert paper_value(PAPER, "S", "same") == 0.94 and paper_value(PAPER, "params", "same") == 0.89
    assert paper_value(PAPER, "params", "cross") is None and paper_value(PAPER, "S", "cross") == 0.99


# --------------------------------------------------------------------------- the stage on fake inputs
def fake_inputs(results, classifier_top1_hits: int = 55):
    """What cka and evaluate_merged write (with their checksums), for resample and lstsq, per-model input."""
    i, j = np.meshgrid(np.arange(N_STAGES), np.arange(N_STAGES), indexing="ij")
    S = np.clip(0.95 - 0.12 * np.abs(i - j) - 0.01 * i, 0, 1)
    merges, accs = [], []
    for adapter, shift, ab in (("lstsq", 0.05, 400), ("resample", 0.0, 0)):
        for a, b in zip(i.ravel(), j.ravel()):
            acc = 0.8 + 0.1 * S[a, b] + shift if S[a, b] >= 0.4 else 0.05
            accs.append(round(min(acc, 1.0) * N_IMAGES) / N_IMAGES)
            merges.append({"protocol": "per_model", "adapter": adapter, "i": int(a), "j": int(b),
                           "kind": "same" if a == b else "cross", "acc": accs[-1], "acc_top5": 1.0, "n": N_IMAGES,
                           "agree": accs[-1] if adapter == "lstsq" else 0.5 * accs[-1],
                           "acc_variants": accs[-1], "n_variants": N_IMAGES, "params_offloaded": 1000 * (b + 1),
                           "bytes_offloaded": 4000 * (b + 1), "adapter_bytes": ab, "bytes_saved": 4000 * (b + 1) - ab,
                           "size": 100 * (8 - b), "flops_offloaded": 1e6 * (b + 1) ** 2, "flops_shared": 1e6 * (a + 1),
                           "adapter_flops": 10 * ab, "labels_used": False, "fit_flops": 9e9 if ab else 0.0,
                           "fit_images": 32 if ab else 0})
    doc = {"baselines": {"per_model": {"acc": classifier_top1_hits / N_IMAGES, "n": N_IMAGES,
                                       "acc_variants": classifier_top1_hits / N_IMAGES, "n_variants": N_IMAGES}},
           "protocols": ["per_model"], "adapters": ["resample", "lstsq"], "merges": merges, "num_classes": 8,
           "classifier_bytes": 40000, "detector_bytes": 60000, "calibration_split": "select", "n_calibration": 32,
           "n_eval": N_IMAGES, "n_variants": N_IMAGES, "report_split": "val"}
    cka = {"cross_stage": S.tolist(), "same_stage": np.diag(S).tolist(), "n": N_IMAGES, "estimator": "full_biased"}
    with atomic_dir(results / "cka", stage="cka") as tmp:
        write_json(tmp / "cka.json", cka)
        write_json(tmp / "per_model" / "cka.json", cka)
        (tmp / "per_model" / "cka_heatmap.png").write_bytes(b"\x89PNG fake")
    with atomic_dir(results / "evaluate_merged", stage="evaluate_merged") as tmp:
        write_json(tmp / "merges.json", doc)
        np.save(tmp / "correct.npy", hits_for(np.array(accs), N_IMAGES), allow_pickle=False)
        base = np.zeros(N_IMAGES, dtype=np.int8)
        base[:classifier_top1_hits] = 1
        np.save(tmp / "baseline_correct.npy", base, allow_pickle=False)
    write_json(results / "metrics" / "classifier.json", {"top1": 0.91, "top5": 0.99})
    write_json(results / "metrics" / "detector.json", {"map": 0.42, "map_50": 0.6})
    for name, numel in (("classifier", 10000), ("detector", 15000), ("classifier_color", 25000)):  # 200 000 bytes
        (results / "models" / name).mkdir(parents=True, exist_ok=True)
        save_file({"w": torch.zeros(numel)}, str(results / "models" / name / "model.safetensors"))


@pytest.fixture
def analyzed(smoke_cfg):
    from repshare.stages.analyze import run

    results = __import__("pathlib").Path(smoke_cfg.paths.results_dir)
    fake_inputs(results)
    with open_dict(smoke_cfg):
        smoke_cfg.analysis.n_bootstrap = 100
    return run(smoke_cfg), results, smoke_cfg


def test_analyze_stage_writes_measurements_rows_and_metrics(analyzed):
    metrics, results, cfg = analyzed
    out = results / "analyze"
    sec = read_section(out / "section.json")
    assert set(sec.measurements) == set(QUANTITIES)  # every claim's quantity is measured
    assert all(e.interpretable for e in sec.measurements.values())
    # the same-stage |r| is the correlation of the 8 same-stage pairs of the paper's setting (resample)
    ref = [m for m in json.loads((results / "evaluate_merged" / "merges.json").read_text())["merges"]
           if m["adapter"] == "resample" and m["i"] == m["j"]]
    S = np.asarray(json.loads((results / "cka" / "per_model" / "cka.json").read_text())["cross_stage"])
    want = abs(np.corrcoef([S[m["i"], m["j"]] for m in ref], [m["acc"] for m in ref])[0, 1])
    assert sec.measurements["cka.abs_r_same"].value == pytest.approx(want)
    assert metrics["cka.abs_r_same"] == pytest.approx(want) and metrics["r_same_S"] == pytest.approx(want)
    assert "provenance" not in json.loads((results / "metrics.json").read_text())
    assert (results / "metrics" / "analyze_run.json").is_file() and not (out / "analyze_run.json").exists()
    rows = read_rows(out / "comparison_rows.json")
    assert len(rows) == 128 and not any(r.labels_used for r in rows)
    r = [r for r in rows if r.extra["adapter"] == "lstsq" and (r.extra["i"], r.extra["j"]) == (2, 3)][0]
    assert r.bytes_saved == 4000 * 4 - 400 and r.bytes_saved_pct == pytest.approx(100 * (16000 - 400) / 200000)
    assert r.retrain_seconds == pytest.approx(9e9 / cfg.multiexit.latency.flops_per_s)  # the FLOP cost model
    assert r.extra_flops_per_image == 4000 - 1e6 * 16
    regret = pd.read_csv(out / "regret.csv")
    assert regret[regret.predictor == "agreement"].mean_regret.iloc[0] == pytest.approx(0.0)  # agreement == acc
    for f in sec.figures:
        assert (out / f.path).is_file(), f.path
    assert [c.key for c in sec.sanity] and all(c.passed for c in sec.sanity)


def test_analyze_is_deterministic(analyzed):
    from repshare.stages.analyze import run

    _, results, cfg = analyzed
    first = {p: p.read_bytes() for p in (results / "analyze").iterdir() if p.suffix in (".json", ".csv")}
    run(cfg)
    second = {p: p.read_bytes() for p in (results / "analyze").iterdir() if p.suffix in (".json", ".csv")}
    assert first == second


def test_classifier_at_chance_reads_not_interpretable(smoke_cfg):
    from repshare.stages.analyze import run

    results = __import__("pathlib").Path(smoke_cfg.paths.results_dir)
    fake_inputs(results, classifier_top1_hits=8)  # 8/60 with 8 classes: chance
    with open_dict(smoke_cfg):
        smoke_cfg.analysis.n_bootstrap = 50
    run(smoke_cfg)
    sec = read_section(results / "analyze" / "section.json")
    assert all(not e.interpretable for e in sec.measurements.values())
    assert "Not interpretable" in sec.summary


def test_corrupt_or_missing_inputs_name_the_file_and_stage(smoke_cfg):
    from repshare.stages.analyze import run
    from repshare.utils.artifacts import ArtifactError

    results = __import__("pathlib").Path(smoke_cfg.paths.results_dir)
    fake_inputs(results)
    path = results / "evaluate_merged" / "correct.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"correct\.npy.*evaluate_merged"):
        run(smoke_cfg)
    (results / "evaluate_merged" / "merges.json").unlink()
    with pytest.raises(ArtifactError, match=r"merges\.json.*evaluate_merged"):
        run(smoke_cfg)
    assert not (results / "metrics.json").exists()
