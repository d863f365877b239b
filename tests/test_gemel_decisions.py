"""Gemel's accept/reject rule, the report-split target check, the cost model, the tied tensor map, the
decision-sensitivity sets and the chance guard, against hand-computed values and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from repshare.gemel.coco_map import match
from repshare.gemel.decision import Decision, ModelDecision, decide, meets_target_on_report
from repshare.gemel.layers import LayerInstance, identical_layers
from repshare.gemel.measures import DETECTOR_CHANCE_MAP, at_chance, query_accuracy, replicates
from repshare.gemel.merge import tie_layers
from repshare.gemel.models import Member
from repshare.gemel.outcomes import ClassifierOutcome, DetectionOutcome, counts_from_indices, value
from repshare.gemel.search import Iteration, SearchResult
from repshare.gemel.study import Trial, saved_bytes, sensitivity_sets
from repshare.gemel.timing import CostModel, frame_flops, tensor_map, tied_tensor_map
from repshare.workload import WorkloadModel


def _outcome(n: int, right: set[int] | range) -> ClassifierOutcome:
    c = np.zeros(n, bool)
    c[list(right)] = True
    return ClassifierOutcome(c)


# --------------------------------------------------------------------------- outcomes
def test_classifier_metric_on_counts_is_the_weighted_top1():
    o = _outcome(4, {0, 1})
    assert value(o) == 0.5
    assert o.metric(np.array([[2, 0, 1, 1], [0, 0, 3, 1]])).tolist() == [0.5, 0.0]
    assert counts_from_indices(np.array([[0, 0, 3, 2], [1, 1, 1, 1]]), 4).tolist() == [[2, 0, 1, 1], [0, 4, 0, 0]]


# --------------------------------------------------------------------------- the rule
def test_same_accuracy_as_unmerged_is_accepted_robustly_and_the_se_is_the_closed_form():
    n = 2000
    u = _outcome(n, range(1800))  # 0.90
    a = _outcome(n, list(range(60, 1800)) + list(range(1800, 1860)))  # 0.90, 60 images swapped either way
    d = decide({"m": a}, {"m": u}, 0.95, alpha=0.05, n_boot=2000, seed=0)
    (m,) = d.models
    assert m.margin == pytest.approx(0.9 - 0.95 * 0.9)  # 0.045
    per_image = a.correct.astype(float) - 0.95 * u.correct.astype(float)
    se = per_image.std(ddof=1) / math.sqrt(n)  # paired: the SE of a mean of per-image differences
    assert m.se == pytest.approx(se, rel=0.1)
    assert m.lower == pytest.approx(m.margin - 1.645 * se, abs=0.4 * se)  # one-sided 95 %, normal approximation
    assert d.accepted and d.robust and m.passed


def test_exactly_at_target_is_rejected_and_fragile():
    n = 2000
    u = _outcome(n, range(1800))
    a = _outcome(n, range(1710))  # 0.855 = 0.95 x 0.9: margin 0
    d = decide({"m": a}, {"m": u}, 0.95, n_boot=1000, seed=1)
    assert d.models[0].margin == pytest.approx(0.0, abs=1e-12)
    assert not d.accepted and not d.robust  # the point estimate sits on the boundary: no evidence either way


def test_just_above_target_is_not_enough_but_clearly_above_is():
    n = 2000
    u = _outcome(n, range(1800))
    just = decide({"m": _outcome(n, range(1714))}, {"m": u}, 0.95, seed=2)  # margin 0.002 ~ 0.5 SE
    clear = decide({"m": _outcome(n, range(1760))}, {"m": u}, 0.95, seed=2)  # margin 0.025
    assert just.models[0].margin > 0 and not just.accepted
    assert clear.accepted and clear.robust


def test_far_below_target_is_rejected_robustly_and_one_failing_model_rejects_the_trial():
    n = 1000
    u = _outcome(n, range(900))
    good, bad = _outcome(n, range(900)), _outcome(n, range(700))
    d = decide({"a": good, "b": bad}, {"a": u, "b": u}, 0.95, seed=3)
    assert [m.passed for m in d.models] == [True, False]
    assert not d.accepted and d.robust  # b's whole interval is below 0


def test_decision_properties_by_hand():
    def md(lower, lo, hi):
        return ModelDecision("m", 10, 0.9, 0.9, 0.95, 0.0, lower, lo, hi, 0.01)

    assert Decision((md(0.01, 0.005, 0.05),), 0.05).robust  # accepted, interval above 0
    assert not Decision((md(0.01, -0.001, 0.05),), 0.05).robust  # accepted at 95 % one-sided, not two-sided
    assert Decision((md(0.01, 0.005, 0.05), md(-0.1, -0.2, -0.01)), 0.05).robust  # rejected by a clear failure
    assert not Decision((md(-0.01, -0.02, 0.01),), 0.05).robust  # rejected, interval straddles 0


def test_paired_outcomes_must_cover_the_same_images():
    with pytest.raises(ValueError, match="differ in images"):
        decide({"m": _outcome(10, {1})}, {"m": _outcome(12, {1})}, 0.95)


def test_meets_target_on_report_by_hand():
    got = meets_target_on_report({"a": 0.855, "b": 0.8549, "c": 0.0}, {"a": 0.9, "b": 0.9, "c": 0.0}, 0.95)
    assert got == {"a": True, "b": False, "c": True}  # equality meets the target


# --------------------------------------------------------------------------- cost model
def test_cost_model_by_hand():
    cm = CostModel(load_gb_per_s=2.0, tflops=0.5, run_overhead_ms=1.5)
    assert cm.load_ms(16_000_000) == pytest.approx(8.0)  # 16e6 B / 2e9 B/s = 8 ms
    assert cm.run_ms(250_000_000) == pytest.approx(1.5 + 0.5)  # 2.5e8 FLOP / 5e11 FLOP/s = 0.5 ms
    with pytest.raises(ValueError, match="load_gb_per_s=0"):
        CostModel(0, 1, 1)


def test_frame_flops_by_hand():
    class ToFloat(nn.Module):
        def forward(self, x):
            return x.float()

    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 8 * 8, 4))
    member = Member(WorkloadModel("m", "classification", "top1"), "labels", ToFloat(), 4)
    conv = 2 * (8 * 8 * 8) * (3 * 3 * 3)  # 2 FLOPs per multiply-add, per output value
    linear = 2 * 512 * 4
    assert frame_flops(model, member, 8) == conv + linear


# --------------------------------------------------------------------------- tensor maps
def test_tied_tensor_map_equals_the_map_of_really_tied_models():
    torch.manual_seed(0)
    models = {"a": nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1)),
              "b": nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1))}
    inst = identical_layers(models)
    before = tensor_map(models)
    tie_layers(models, inst[:1], "first")
    real = tensor_map(models)
    ours = tied_tensor_map(before, inst[:1])

    def partition(tmap):  # which (model, bytes) entries share a tensor: ids differ, structure must not
        groups = {}
        for m, t in tmap.items():
            for tid, b in t.items():
                groups.setdefault(tid, []).append((m, b))
        return sorted(sorted(v) for v in groups.values())

    assert partition(ours) == partition(real)
    assert sum(map(len, (set(t) for t in ours.values()))) == sum(len(t) for t in before.values())
    shared = {tid for tid in ours["a"] if tid in ours["b"]}
    assert shared == {"shared/0.weight", "shared/0.bias"}


# --------------------------------------------------------------------------- decision sensitivity
def _trial(accepted: bool, robust: bool) -> Trial:
    lo, hi = (0.01, 0.05) if robust == accepted else (-0.01, 0.05)
    if not accepted and robust:
        lo, hi = -0.2, -0.1
    m = ModelDecision("m", 10, 0.9, 0.9, 0.95, 0.0, 0.01 if accepted else -0.05, lo, hi, 0.01)
    d = Decision((m,), 0.05)
    assert d.accepted == accepted and d.robust == robust
    return Trial(["m"], {}, {}, d, 1, 0, 0.0)


def test_sensitivity_sets_flip_only_fragile_decisions():
    inst = [LayerInstance(k, ("L",), b, {"x": f"l{k}", "y": f"l{k}"}) for k, b in enumerate([100, 60, 40, 30])]
    its = [Iteration(0, 0, 0, [0], 100, 100, True, {"trial": _trial(True, True)}),  # robust accept
           Iteration(1, 1, 0, [1], 60, 160, True, {"trial": _trial(True, False)}),  # fragile accept
           Iteration(2, 2, 0, [2], 40, 160, False, {"trial": _trial(False, False)}),  # fragile reject
           Iteration(3, 3, 0, [3], 30, 160, False, {"trial": _trial(False, True)})]  # robust reject
    sets = sensitivity_sets(SearchResult(its, inst[:2], "groups exhausted"), inst)
    assert [saved_bytes(sets[k]) for k in ("robust", "decided", "optimistic")] == [100, 160, 200]


# --------------------------------------------------------------------------- chance guard and query accuracy
def test_chance_guard_by_hand():
    members = {n: Member(WorkloadModel(n, t, "top1"), "labels", nn.Identity(), 8)
               for n, t in [("low", "classification"), ("ok", "classification"), ("det", "detection"),
                            ("good", "detection")]}
    boxes = np.array([[0, 0, 10, 10]], np.float32)
    targets = [{"boxes": boxes, "labels": np.array([0])} for _ in range(50)]
    miss = [{"boxes": boxes + 50, "scores": np.array([0.9], np.float32), "labels": np.array([0])} for _ in range(50)]
    hit = [{"boxes": boxes, "scores": np.array([0.9], np.float32), "labels": np.array([0])} for _ in range(50)]
    outs = {"low": _outcome(100, range(15)),  # 0.15 vs chance 0.125: not above it
            "ok": _outcome(100, range(40)),  # 0.40: above
            "det": DetectionOutcome(match(miss, targets)),  # mAP 0
            "good": DetectionOutcome(match(hit, targets))}  # mAP 1
    reps = {n: replicates(o, 200, 0) for n, o in outs.items()}
    chance = at_chance(outs, members, reps)
    assert [c.split()[0] for c in chance] == ["low", "det"]
    assert DETECTOR_CHANCE_MAP > 0


def test_query_accuracy_by_hand():
    assert query_accuracy({"a": 0.8, "b": 0.4}, {"a": 1.0, "b": 0.5}) == pytest.approx((0.8 + 0.2) / 2)


def test_frames_gain_at_a_ceiling_is_not_interpretable_and_so_inconclusive():
    """When the unmerged workload already processes every frame, a gain of 0 says nothing about the claim:
    the estimate is flagged (like a model at chance) and the claim reads inconclusive, never 'does not'."""
    from repshare.claims import judge
    from repshare.gemel.claims import CLAIMS
    from repshare.gemel.study import FrameResult, frames_ceiling
    from repshare.stats import Estimate

    claim = next(c for c in CLAIMS if c.key == "gemel.more_frames")
    zero = Estimate(0.0, 0.0, 0.0, 3, "trials", "decisions", note="simulated")
    full = FrameResult("unmerged", 10, processed=900, frames=900, processed_per_model={}, frames_per_model=300,
                       loads=0, load_ms=0.0)
    short = FrameResult("unmerged", 10, processed=700, frames=900, processed_per_model={}, frames_per_model=300,
                        loads=0, load_ms=0.0)
    assert judge(claim, zero).verdict == "does not"  # a real measurement of no gain
    capped = frames_ceiling(zero, full)
    assert not capped.interpretable and "every frame" in capped.note
    assert judge(claim, capped).verdict == "inconclusive"
    assert frames_ceiling(zero, short) is zero  # frames were dropped: the gain is a measurement


def test_query_accuracy_gain_at_the_frames_ceiling_is_inconclusive_on_either_side_of_the_range():
    """The 1-thread run measured +0.05 % [-0.02, 0.13] (does not), the 2-thread run had no merge (not tested):
    with every frame already processed neither can speak to the claim, and both now read inconclusive."""
    from repshare.claims import judge
    from repshare.gemel.claims import CLAIMS
    from repshare.gemel.study import FrameResult, frames_ceiling, query_gain_at_ceiling
    from repshare.stats import Estimate

    claim = next(c for c in CLAIMS if c.key == "gemel.query_accuracy")
    small = Estimate(0.0546, -0.021, 0.126, 400, "images", "bootstrap")
    inside = Estimate(10.0, 5.0, 15.0, 400, "images", "bootstrap")
    frames = Estimate(0.0, 0.0, 0.0, 3, "trials", "decisions")
    full = FrameResult("unmerged", 10, processed=900, frames=900, processed_per_model={}, frames_per_model=300,
                       loads=0, load_ms=0.0)
    assert judge(claim, small).verdict == "does not" and judge(claim, inside).verdict == "holds"
    capped = frames_ceiling(frames, full)
    for gain in (small, inside):
        at = query_gain_at_ceiling(gain, capped)
        assert not at.interpretable and "ceiling" in at.note and judge(claim, at).verdict == "inconclusive"
        assert query_gain_at_ceiling(gain, frames) is gain  # frames were measured: the gain is evidence
