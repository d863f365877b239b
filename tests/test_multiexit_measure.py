"""MEEdge part 1's measurements and cost model against hand-computed values and brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from repshare.multiexit.cost import CostModel, Latency, backbone_timings, cost_model, measure_latency
from repshare.multiexit.measure import (
    Boot, RuleSweep, chance_note, guard_chance, heterogeneous_choice, paired_difference, reach_fraction,
    rule_choice, saved_ratio,
)
from repshare.multiexit.merge import select_by_accuracy
from repshare.stats import exact


def test_rule_choice_takes_the_best_fraction_and_the_larger_on_ties():
    acc = np.array([[0.5, 0.7, 0.7, 0.6],   # tie between 1 and 2 -> 2
                    [0.9, 0.1, 0.1, 0.1],   # clear best -> 0
                    [0.2, 0.2, 0.2, 0.2]])  # all tied -> the last
    assert rule_choice(acc).tolist() == [2, 0, 3]
    # the same rule as merge.select_by_accuracy, row by row
    for row, k in zip(acc, rule_choice(acc)):
        best, _ = select_by_accuracy([0.1, 0.2, 0.3, 0.4], lambda f, r=row: r[[0.1, 0.2, 0.3, 0.4].index(f)])
        assert best == [0.1, 0.2, 0.3, 0.4][k]


def test_saved_ratio_point_value_by_hand():
    # 4 select images. Branch a: fraction 1 is right on 3 images, fraction 0 on 2 -> picks 1 (saves 30).
    a = RuleSweep(np.array([[1, 1, 0, 0], [1, 1, 1, 0]], np.float32), np.array([10, 30]))
    # Branch b: both fractions right on 2 images -> tie -> the larger (saves 8).
    b = RuleSweep(np.array([[1, 0, 1, 0], [0, 1, 0, 1]], np.float32), np.array([4, 8]))
    # Twin: fraction 0 right on 4 of 4 -> picks 0 (saves 19).
    t = RuleSweep(np.array([[1, 1, 1, 1], [0, 0, 0, 0]], np.float32), np.array([19, 38]))
    est = saved_ratio([a, b], [t], Boot(n_boot=0), "")
    assert est.value == pytest.approx((30 + 8) / 19)
    assert math.isnan(est.lo)  # no resamples, no interval


def test_saved_ratio_interval_matches_a_brute_force_rerun_of_the_rule():
    rng = np.random.default_rng(3)
    n = 30
    sweeps = [RuleSweep((rng.random((3, n)) < p).astype(np.float32), np.array(s))
              for p, s in ((0.5, [5, 7, 9]), (0.6, [2, 3, 4]), (0.55, [10, 14, 21]))]
    boot = Boot(n_boot=200, seed=11)
    est = saved_ratio(sweeps[:2], sweeps[2:], boot, "")
    # Reference: draw the same resamples, re-run merge.select_by_accuracy on each, take percentiles.
    idx = np.random.default_rng(11).integers(0, n, size=(200, n))
    ratios = []
    for rows in idx:
        saved = []
        for s in sweeps:
            fr = list(range(3))
            best, _ = select_by_accuracy(fr, lambda k, s=s: float(s.select_correct[k, rows].mean()))
            saved.append(s.params_saved[best])
        ratios.append((saved[0] + saved[1]) / saved[2])
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    assert (est.lo, est.hi) == pytest.approx((lo, hi))
    assert est.n == n and est.over == "images"


def test_a_certain_choice_gives_a_zero_width_interval():
    sure = RuleSweep(np.array([[0, 0, 0], [1, 1, 1]], np.float32), np.array([3, 6]))
    est = saved_ratio([sure, sure], [sure], Boot(n_boot=100), "")
    assert (est.value, est.lo, est.hi) == (2.0, 2.0, 2.0)


def test_reach_fraction_by_hand_and_by_brute_force():
    fr = [0.2, 0.5, 1.0]
    orig = np.array([1, 1, 0, 0], np.float32)  # 2 of 4
    rec = np.array([[1, 1, 1, 0],   # 3 >= 2
                    [1, 0, 1, 0],   # 2 >= 2
                    [0, 0, 0, 1]], np.float32)  # 1 < 2
    assert reach_fraction(fr, [rec], [orig], Boot(n_boot=0), "").value == 0.5
    never = np.zeros((3, 4), np.float32)
    assert reach_fraction(fr, [never], [np.ones(4, np.float32)], Boot(n_boot=0), "").value == 0.0
    # mean over two branches; interval = percentiles of the same statistic on the same resamples
    est = reach_fraction(fr, [rec, never], [orig, np.ones(4, np.float32)], Boot(n_boot=50, seed=2), "")
    assert est.value == pytest.approx(0.25)
    idx = np.random.default_rng(2).integers(0, 4, size=(50, 4))
    ref = []
    for rows in idx:
        per = []
        for r, o in ((rec, orig), (never, np.ones(4))):
            ok = [f for f, line in zip(fr, r) if line[rows].sum() >= o[rows].sum()]
            per.append(max(ok) if ok else 0.0)
        ref.append(np.mean(per))
    assert (est.lo, est.hi) == pytest.approx(tuple(np.percentile(ref, [2.5, 97.5])))


def test_paired_difference_value_and_pairing():
    a = [np.array([1, 1, 0, 1], np.float32), np.array([0, 1, 0, 0], np.float32)]
    b = [np.array([1, 0, 0, 1], np.float32), np.array([0, 1, 1, 0], np.float32)]
    est = paired_difference(a, b, Boot(n_boot=100), "")
    assert est.value == pytest.approx((3 / 4 - 2 / 4 + 1 / 4 - 2 / 4) / 2)  # 0
    # a branch compared with itself: every resample gives exactly 0
    same = paired_difference(a, a, Boot(n_boot=100), "")
    assert (same.value, same.lo, same.hi) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="matching"):
        paired_difference(a, b[:1], Boot(), "")


def test_heterogeneous_choice_by_hand():
    sel = {"e1-a": 0.5, "e1-b": 0.6, "e2-a": 0.85, "e2-b": 0.7, "e2-c": 0.9}
    exit_of = {"e1-a": 1, "e1-b": 1, "e2-a": 2, "e2-b": 2, "e2-c": 2}
    structure = {"e1-a": "A", "e1-b": "B", "e2-a": "A", "e2-b": "B", "e2-c": "C"}
    hetero, homo = heterogeneous_choice(sel, exit_of, structure)
    assert hetero == {1: "e1-b", 2: "e2-c"}
    assert homo == {1: "e1-a", 2: "e2-a"}  # A: mean 0.675 > B: 0.65 (C is not at exit 1)
    # C exists only at exit 2: it can never be the homogeneous structure
    _, none = heterogeneous_choice({"e1-a": 0.1, "e2-c": 0.9}, {"e1-a": 1, "e2-c": 2}, {"e1-a": "A", "e2-c": "C"})
    assert none == {}


def test_chance_guard():
    assert chance_note({"m": (5, 48)}, 8) is not None  # 0.104 vs 1/8
    assert chance_note({"m": (40, 48)}, 8) is None
    val = {"final": np.r_[np.ones(40), np.zeros(8)], "b1": np.r_[np.ones(6), np.zeros(42)], "b2": np.ones(48)}
    out = guard_chance({"q1": exact(0.3), "q2": exact(0.4)}, {"q1": ["b1"], "q2": ["b2"]}, val, 8)
    assert not out["q1"].interpretable and "branch b1 at chance" in out["q1"].note
    assert out["q2"].interpretable


def test_cost_model_by_hand():
    cm = CostModel(flops_per_s=1e9, call_overhead_s=1e-4)
    assert cm.seconds(2e6) == pytest.approx(1e-4 + 2e-3)
    assert cost_model({"flops_per_s": 2e9, "call_overhead_s": 0}).seconds(4e9) == pytest.approx(2.0)
    lin = nn.Linear(10, 5)
    t = Latency("flops", cm)(lin, torch.zeros(1, 10))
    assert t.median_s == pytest.approx(1e-4 + 2 * 10 * 5 / 1e9) and t.spread_s == 0.0  # a multiply-add is 2 FLOPs
    with pytest.raises(ValueError, match="flops_per_s"):
        CostModel(0.0)
    with pytest.raises(ValueError, match="call_overhead_s"):
        CostModel(1e9, -1.0)
    with pytest.raises(ValueError, match="latency.source"):
        Latency("wallclock", cm)
    with pytest.raises(ValueError, match="warmup"):
        measure_latency(lin, torch.zeros(1, 10), repeats=2, warmup=-1)


def test_backbone_timings_follow_the_stage_flops():
    import timm

    model = timm.create_model("efficientnet_b0", pretrained=False, num_classes=4).eval()
    cm = CostModel(1e9, 0.0)
    stages, head, flops, head_flops = backbone_timings(model, torch.zeros(1, 3, 32, 32), Latency("flops", cm))
    assert len(stages) == len(flops) == 8 and head_flops > 0
    assert [t.median_s for t in stages] == pytest.approx([f / 1e9 for f in flops])
    # the cost model is a function of the input size only: the same call twice gives the same seconds
    again, _, _, _ = backbone_timings(model, torch.ones(1, 3, 32, 32), Latency("flops", cm))
    assert [t.median_s for t in again] == [t.median_s for t in stages]
