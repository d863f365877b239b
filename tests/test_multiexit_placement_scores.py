"""MEEdge part 2: scoring fixed placements per image (decided on select, reported on val), the
intervals over images, the settings' checks, and the study's honesty (choices on select, chance
guard, sanity checks apart from claims). Truth: hand-computed values, the mAE definition in
``mae.py`` on the other split's accuracies, brute force."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from repshare.multiexit.mae import accuracy_at, mae_anytime, shown_weights
from repshare.multiexit.placement import HEAD, Backbone, make_problem, synthetic_candidates
from repshare.multiexit.placement_scores import (
    FINAL,
    Bootstrap,
    Scores,
    answer_at,
    image_scores,
    trace_scores,
    worst_mean_difference,
)
from repshare.multiexit.simulate import simulate_elastic

BB = Backbone({1: 1.0, 2: 2.0}, 3.0, 0.8)
TABLE = [
    {"id": "a", "exit": 1, "branch_latency_s": 0.5, "accuracy": 0.6, "params": 100, "score_id": "a"},
    {"id": "b", "exit": 1, "branch_latency_s": 0.1, "accuracy": 0.3, "params": 10, "score_id": "b"},
    {"id": "c", "exit": 2, "branch_latency_s": 0.2, "accuracy": 0.7, "params": 1000, "score_id": "c"},
]


# --------------------------------------------------------------------------- answer weights
def test_shown_weights_hand_computed():
    # exits done at 1 and 2, head at 3, T = 4: each answers for a quarter of the horizon
    assert shown_weights([1.0, 2.0, 3.0], [0.5, 0.4, 0.9], 4.0) == pytest.approx([0.25, 0.25, 0.25])
    # best so far: the 0.4 exit never answers, the 0.5 one keeps answering until the head
    assert shown_weights([1.0, 2.0, 3.0], [0.5, 0.4, 0.9], 4.0, return_best=True) == pytest.approx([0.5, 0, 0.25])
    # an exit past the horizon never answers
    assert shown_weights([1.0, 5.0], [0.5, 0.9], 4.0) == pytest.approx([0.75, 0.0])


def test_answer_weights_reproduce_every_objective_on_random_placements():
    rng = np.random.default_rng(3)
    for s in range(12):
        rows, bb = synthetic_candidates(9, s)
        kw = dict(max_per_exit=None, return_best=bool(s % 2))
        if s % 3 == 0:
            p = make_problem(rows, bb, 1.4 * bb.final_time_s, objective="weighted",
                             cdf=lambda t: 1 - math.exp(-t / 0.004), **kw)
        elif s % 3 == 1:
            p = make_problem(rows, bb, 1.4 * bb.final_time_s, objective="finite", deadline=0.7 * bb.final_time_s, **kw)
        else:
            p = make_problem(rows, bb, 1.4 * bb.final_time_s, **kw)
        for _ in range(10):
            sel = list(rng.choice(p.n, size=int(rng.integers(0, 6)), replace=False))
            who, w = p.answer_weights(sel)
            accs = [bb.final_accuracy if k == HEAD else p.accuracy[k] for k in who]
            assert float(w @ accs) == pytest.approx(p.value_reference(sel), abs=1e-12)


# --------------------------------------------------------------------------- per-image scores
def scores_for(accs: dict[str, float], n: int, seed: int, split: str = "val") -> Scores:
    """Per-image 0/1 correctness whose row means are exactly the given accuracies (n multiple of 100)."""
    rng = np.random.default_rng(seed)
    ids = list(accs)
    rows = []
    for k in ids:
        r = np.zeros(n)
        r[: int(round(accs[k] * n))] = 1
        rows.append(rng.permutation(r))
    return Scores(split, tuple(ids), np.array(rows))


def test_image_scores_average_to_the_mae_on_the_other_split():
    """Chosen with select accuracies, scored with val's: the mean per-image score is the mAE of the
    same placement computed by mae.py with val's accuracies (last exit answers: the weights do not
    depend on accuracies)."""
    val_acc = {FINAL: 0.9, "a": 0.2, "b": 0.5, "c": 0.4}
    val = scores_for(val_acc, 200, 0)
    p = make_problem(TABLE, BB, 4.0, max_per_exit=None)
    for sel in ([], [0], [1, 2], [0, 1, 2]):
        x = image_scores(p, sel, ["a", "b", "c"], val)
        times, _ = p.profile(sel)
        order = [p.ids[i] for i in p.answer_weights(sel)[0][:-1]]
        want = mae_anytime(times, [val_acc[i] for i in order] + [val_acc[FINAL]], 4.0)
        assert x.mean() == pytest.approx(want, abs=1e-12)
        assert x.shape == (200,) and x.min() >= 0 and x.max() <= 1


def test_best_so_far_answers_are_decided_on_select():
    # select says b (0.3) is worse than a (0.6): with best-so-far, b never answers after a, whatever val says
    p = make_problem(TABLE, BB, 4.0, max_per_exit=None, return_best=True)
    val = scores_for({FINAL: 0.9, "a": 0.1, "b": 0.95, "c": 0.4}, 100, 1)
    x = image_scores(p, [0, 1], ["a", "b", "c"], val)
    # b at 1.1 (answers until a at 1.6), then a (select 0.6 > 0.3) until the head at 3.6, the head to 4
    assert x.mean() == pytest.approx((0.95 * 0.5 + 0.1 * 2.0 + 0.9 * 0.4) / 4)
    assert answer_at(p, [0, 1], 1.2) == 1 and answer_at(p, [0, 1], 2.0) == 0 and answer_at(p, [0, 1], 0.5) is None


def test_trace_scores_are_the_time_average_of_the_phases_on_val():
    val_acc = {FINAL: 0.9, "a": 0.2, "b": 0.5, "c": 0.4}
    val = scores_for(val_acc, 100, 2)
    p = make_problem(TABLE, BB, 4.0, max_per_exit=None)
    res = simulate_elastic(p, [(0.0, 5000.0), (1.0, 50.0)], 2.0, lambda M: [0, 1, 2] if M > 1000 else [1],
                           rate_bps=8 * 4440 / 0.5)  # the first transfer (4440 B) takes 0.5 s
    assert len(res.phases) == 4  # nothing for 0.5 s, a+b+c, b kept while the request goes out, b
    pv = make_problem([dict(r, accuracy=val_acc[r["id"]]) for r in TABLE], replace(BB, final_accuracy=0.9), 4.0,
                      max_per_exit=None)
    pos = {c: i for i, c in enumerate(p.ids)}
    want = sum((ph.t1 - ph.t0) * pv.value([pos[c] for c in ph.selected]) for ph in res.phases) / 2.0
    assert trace_scores(p, res, ["a", "b", "c"], val).mean() == pytest.approx(want, abs=1e-12)


def test_scores_reject_bad_tables():
    with pytest.raises(ValueError, match="shape"):
        Scores("val", ("a", "b"), np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Scores("val", ("a",), np.full((1, 4), 2.0))
    with pytest.raises(ValueError, match="twice"):
        Scores("val", ("a", "a"), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="'z'.*val split"):
        Scores("val", ("a",), np.zeros((1, 4))).row("z")


# --------------------------------------------------------------------------- intervals over images
def test_gain_interval_point_value_and_width():
    rng = np.random.default_rng(0)
    a = (rng.random(2000) < 0.6).astype(float)
    b = (rng.random(2000) < 0.5).astype(float)
    est = Bootstrap(400, 0).gain(a, b)
    assert est.value == pytest.approx(100 * (a.mean() / b.mean() - 1))
    assert est.lo < est.value < est.hi and est.over == "images" and est.n == 2000
    # the delta-method standard error of a ratio of two independent means, for scale
    se = 100 * (a.mean() / b.mean()) * math.sqrt(a.var() / a.mean() ** 2 / 2000 + b.var() / b.mean() ** 2 / 2000)
    assert (est.hi - est.lo) / (2 * 1.96 * se) == pytest.approx(1.0, abs=0.25)


def test_worst_mean_difference_by_hand():
    diff = np.array([[1.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 1.0]])
    stat = worst_mean_difference(diff)
    assert stat(np.arange(4)[None, :]) == pytest.approx([-0.5])  # column means 0.5, -0.5, 0.5
    assert stat(np.array([[1, 1, 2, 2]])) == pytest.approx([0.0])  # column means 0.5, 0, 0.5


# --------------------------------------------------------------------------- settings (issue 24: one line naming the key)
@pytest.mark.parametrize("doc, key", [
    ({"variants": []}, "placement.variants"), ({"horizon_factors": []}, "placement.horizon_factors"),
    ({"budget_fractions": []}, "placement.budget_fractions"), ({"budget_fractions": [0.0]}, "placement.budget_fractions"),
    ({"variant": "m9"}, "placement.variant"), ({"variants": ["m5", "m9"]}, "placement.variants"),
    ({"mc_seeds": [0, 0]}, "placement.mc_seeds"), ({"horizon_factor": 1.0}, "placement.horizon_factor"),
    ({"horizon_factors": [1.5, -2]}, "placement.horizon_factors"), ({"node_budget": 0}, "placement.node_budget"),
    ({"n_bootstrap": -1}, "placement.n_bootstrap"), ({"bytes_per_param": 0}, "placement.bytes_per_param"),
    ({"candidates": "all"}, "placement.candidates"), ({"nodes": 3}, "placement.nodes"),
    ({"simulation": {"trace_fractions": [1.0]}}, "placement.simulation.trace_fractions"),
    ({"simulation": {"rate_mbps": 0}}, "placement.simulation.rate_mbps"),
    ({"baselines": {"seeds": []}}, "placement.baselines.seeds"),
    ({"baselines": {"spinn_fractions": [1.5]}}, "placement.baselines.spinn_fractions"),
])
def test_settings_refuse_bad_values_naming_the_key(doc, key):
    from repshare.multiexit.placement_settings import PlacementSettings

    with pytest.raises(ValueError) as err:
        PlacementSettings.from_mapping(doc)
    msg = str(err.value)
    assert msg.startswith(key) and "\n" not in msg


def test_settings_accept_the_shipped_presets():
    from omegaconf import OmegaConf

    from repshare.config import compose
    from repshare.multiexit.placement_settings import PlacementSettings

    for preset in ([], ["experiment=smoke"]):
        s = PlacementSettings.from_mapping(OmegaConf.to_container(compose(preset).placement, resolve=True))
        assert s.variant in s.variants and s.budget_fractions


# --------------------------------------------------------------------------- the study
def study_inputs(seed: int, val_shift: float = 0.0, chance: bool = False):
    """10 synthetic candidates plus SPINN-like and one-FC baselines; select and val correctness with
    the given accuracies exactly (val: select's + a per-candidate shift, to make the splits disagree)."""
    rows, bb = synthetic_candidates(10, seed)
    rng = np.random.default_rng(seed)
    for r in rows:
        r["score_id"] = r["id"]
    base = {"single_exit": [],
            "spinn": [{"id": f"s{e}", "exit": e, "branch_latency_s": 1e-4, "params": 2500, "score_id": f"s{e}"}
                      for e in (2, 4, 6)],
            "one_fc": [{"id": f"f{e}", "exit": e, "branch_latency_s": 2e-5, "params": 400, "score_id": f"f{e}"}
                       for e in range(1, 7)]}
    sel_acc = {FINAL: 0.9} | {r["id"]: round(float(r["accuracy"]), 2) for r in rows}
    sel_acc |= {f"s{e}": 0.3 + 0.1 * e for e in (2, 4, 6)} | {f"f{e}": 0.2 + 0.08 * e for e in range(1, 7)}
    val_acc = {k: float(np.clip(round(v + val_shift * rng.uniform(-1, 1), 2), 0, 1)) for k, v in sel_acc.items()}
    if chance:
        val_acc = {k: 0.12 for k in val_acc}
    return rows, bb, base, scores_for(sel_acc, 200, seed, "select"), scores_for(val_acc, 300, seed + 1), sel_acc, val_acc


def small_settings(**kw):
    from repshare.multiexit.placement_settings import PlacementSettings

    return PlacementSettings(variants=("m0", "m5", "m6", "m7"), mc_seeds=(0,), budget_fractions=(0.2, 0.5, 1.0),
                             horizon_factors=(1.5, 2.0), node_budget=300, n_bootstrap=60, **kw)


def test_placement_is_chosen_on_select_and_reported_on_val():
    from repshare.multiexit.placement import place
    from repshare.multiexit.placement_study import run_study

    rows, bb, base, select, val, sel_acc, val_acc = study_inputs(1, val_shift=0.3)
    s = small_settings()
    st = run_study(rows, bb, base, select, val, s, seed=0, num_classes=8)
    # the same search on a problem built from the select accuracies alone
    ps = make_problem([dict(r, accuracy=sel_acc[r["id"]]) for r in rows], replace(bb, final_accuracy=0.9),
                      1.5 * bb.final_time_s)
    want = place(ps, "m7", float(sum(ps.bytes)), node_budget=300)
    assert st.sweep.full.indices == want.indices
    # reported with val's accuracies: the mAE definition on val for that very placement
    pv = make_problem([dict(r, accuracy=val_acc[r["id"]]) for r in rows], replace(bb, final_accuracy=val_acc[FINAL]),
                      1.5 * bb.final_time_s)
    assert st.metrics["mae_meedge"] == pytest.approx(pv.value(want.indices), abs=1e-12)
    assert st.metrics["mae_single_exit"] == pytest.approx(pv.value([]), abs=1e-12)
    # the gain over single-exit is the mAE gain at T = 2 x t_single (MEEdge's head done by then here)
    t_end = ps.answers(want.indices)[1][-1]
    assert t_end <= 2 * bb.final_time_s
    p2 = replace(pv, horizon=2 * bb.final_time_s)
    gain = st.measurements["meedge_placement.gain_vs_single_pct"]
    assert gain.value == pytest.approx(100 * (p2.value(want.indices) / p2.value([]) - 1), abs=1e-9)
    assert gain.lo < gain.value < gain.hi and gain.interpretable
    # the best static model of the trace is the best on select
    statics = {k: v.mean_value for k, v in st.sim["anytime"].items() if k.startswith("MEEdge static (placed")}
    assert st.sim["anytime"][st.static_best].mean_value == pytest.approx(max(statics.values()))


def test_measurements_match_the_registry_and_sanity_checks_stay_apart():
    from repshare.claims import Claim, SanityCheck, judge
    from repshare.multiexit.placement_claims import CLAIMS, QUANTITIES
    from repshare.multiexit.placement_study import run_study

    st = run_study(*study_inputs(2)[:5], small_settings(), seed=0, num_classes=8)
    assert set(st.measurements) <= set(QUANTITIES)
    assert set(QUANTITIES) - set(st.measurements) == set()  # every claim of this topic is measured here
    assert all(isinstance(c, SanityCheck) and c.passed for c in st.sanity)
    assert not {c.key for c in st.sanity} & set(QUANTITIES)
    assert all(isinstance(c, Claim) for c in CLAIMS)
    for c in CLAIMS:
        assert judge(c, st.measurements[c.quantity]).verdict in ("holds", "does not", "inconclusive")


def test_chance_guard_makes_every_measurement_not_interpretable():
    from repshare.claims import judge
    from repshare.multiexit.placement_claims import CLAIMS
    from repshare.multiexit.placement_study import run_study

    st = run_study(*study_inputs(3, chance=True)[:5], small_settings(), seed=0, num_classes=8)
    assert st.measurements and all(not e.interpretable and "chance" in e.note for e in st.measurements.values())
    assert {judge(c, st.measurements[c.quantity]).verdict for c in CLAIMS} == {"inconclusive"}


def test_finite_time_margin_by_brute_force():
    """Against accuracy_at on a fine grid of deadlines with val's accuracies (last exit answers)."""
    from repshare.multiexit.placement_study import run_study

    rows, bb, base, select, val, sel_acc, val_acc = study_inputs(4)
    st = run_study(rows, bb, base, select, val, small_settings(), seed=0, num_classes=8)

    def val_curve(problem, sel, ids):
        who, times, _ = problem.answers(list(sel))
        return times, [val_acc[FINAL if k == HEAD else ids[k]] for k in who]

    me = val_curve(st.problem, st.sweep.full.indices, [r["score_id"] for r in st.rows])
    curves = {n: (b.problem.answers(list(b.selected))[1], val_curve(b.problem, b.selected, b.score_ids))
              for n, b in st.baselines.items() if n != "single_exit"}
    worst = math.inf
    for d in np.linspace(1e-6, st.horizon_s, 4000):
        sel_best = max(curves, key=lambda n: accuracy_at(curves[n][0], [sel_acc[FINAL if k == HEAD else
                       st.baselines[n].score_ids[k]] for k in st.baselines[n].problem.answers(
                       list(st.baselines[n].selected))[0]], d))
        if any(t <= d for t in me[0]) or any(t <= d for n in curves for t in curves[n][0]):
            worst = min(worst, accuracy_at(*me, d) - accuracy_at(*curves[sel_best][1], d))
    assert st.measurements["meedge_placement.finite_worst_margin"].value == pytest.approx(worst, abs=1e-12)


def test_identical_models_are_no_comparison():
    """Zero gain between two identical models must not read as 'better' (0 is the edge of > 0)."""
    from repshare.claims import judge
    from repshare.multiexit.placement_claims import CLAIMS
    from repshare.multiexit.placement_study import run_study

    rows, bb, base, sel, val, *_ = study_inputs(5)
    st = run_study([], bb, {"single_exit": []}, sel, val, small_settings(), seed=0, num_classes=8)
    e = st.measurements["meedge_placement.elastic_gain_vs_static_pct"]
    assert e.value == pytest.approx(0, abs=1e-9) and not e.interpretable and "identically" in e.note
    elastic = next(c for c in CLAIMS if c.quantity == "meedge_placement.elastic_gain_vs_static_pct")
    assert judge(elastic, e).verdict == "inconclusive"
    # no candidate: MEEdge is single-exit, so the single-exit claim does not hold (a real, not a missing, result)
    single = next(c for c in CLAIMS if c.quantity == "meedge_placement.gain_vs_single_pct")
    assert judge(single, st.measurements[single.quantity]).verdict == "does not"
