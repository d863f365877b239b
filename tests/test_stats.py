"""The statistics module against closed forms and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sp

from repshare import stats


def test_t_interval_matches_the_textbook_formula():
    v = [0.978, 1.011, 0.989]
    e = stats.t_interval(v)
    m = sum(v) / 3
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / 2)
    half = 4.302652729911275 * sd / math.sqrt(3)  # t_{0.975, 2} from a table
    assert e.value == pytest.approx(m)
    assert (e.lo, e.hi) == (pytest.approx(m - half), pytest.approx(m + half))
    assert (e.n, e.over, e.method) == (3, "seeds", "t")


def test_t_interval_edge_cases():
    one = stats.t_interval([2.0])
    assert one.value == 2.0 and not one.has_interval
    flat = stats.t_interval([1.0, 1.0, 1.0])
    assert (flat.lo, flat.hi) == (1.0, 1.0)
    empty = stats.t_interval([math.nan, None])
    assert math.isnan(empty.value) and empty.n == 0


def test_wilson_interval_hand_computed():
    # k = 8, n = 10, z = 1.959964: centre = (0.8 + z^2/20) / (1 + z^2/10), half = z sqrt(0.016 + z^2/400) / (1 + z^2/10)
    z = 1.959963984540054
    den = 1 + z * z / 10
    centre = (0.8 + z * z / 20) / den
    half = z * math.sqrt(0.8 * 0.2 / 10 + z * z / 400) / den
    e = stats.proportion_interval(8, 10)
    assert e.value == 0.8
    assert e.lo == pytest.approx(centre - half) and e.hi == pytest.approx(centre + half)
    assert e.lo == pytest.approx(0.4902, abs=1e-4) and e.hi == pytest.approx(0.9433, abs=1e-4)  # published table values


def test_wilson_bounds_stay_in_unit_interval():
    assert stats.proportion_interval(0, 5).lo == 0.0
    assert stats.proportion_interval(5, 5).hi == 1.0
    with pytest.raises(ValueError):
        stats.proportion_interval(6, 5)


def test_above_chance_is_a_one_sided_bound():
    # 20 of 100 against chance 1/8: the one-sided 95 % Wilson lower bound is ~0.140 > 0.125
    assert stats.above_chance(20, 100, 0.125)
    # 14 of 100: lower bound ~0.093 < 0.125
    assert not stats.above_chance(14, 100, 0.125)
    assert not stats.above_chance(0, 0, 0.1)


def test_bootstrap_of_a_constant_column_is_exact():
    e = stats.bootstrap_interval(stats.mean_of, [np.full(50, 0.7)], n_boot=200)
    assert e.value == pytest.approx(0.7) and e.lo == pytest.approx(0.7) and e.hi == pytest.approx(0.7)


def test_bootstrap_mean_interval_close_to_normal_theory():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=400)
    e = stats.bootstrap_interval(stats.mean_of, [x], n_boot=4000, seed=1)
    se = x.std(ddof=1) / math.sqrt(len(x))
    assert e.value == pytest.approx(x.mean())
    assert e.lo == pytest.approx(x.mean() - 1.96 * se, abs=0.25 * se)
    assert e.hi == pytest.approx(x.mean() + 1.96 * se, abs=0.25 * se)


def test_bootstrap_resamples_columns_together():
    # Paired: a - b is constant 0.1 per item, so every resample's difference is exactly 0.1.
    a = np.linspace(0, 1, 30)
    e = stats.bootstrap_interval(stats.mean_difference, [a + 0.1, a], n_boot=300)
    assert e.lo == pytest.approx(0.1) and e.hi == pytest.approx(0.1)


def test_bootstrap_draws_the_documented_indices():
    x = np.arange(5.0)
    got = stats.bootstrap_samples(stats.mean_of, [x], n_boot=3, seed=7)
    idx = np.random.default_rng(7).integers(0, 5, size=(3, 5))
    assert np.allclose(got, x[idx].mean(axis=1))


def test_pearson_r_statistic_matches_scipy_and_skips_constant_resamples():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=20), rng.normal(size=20)
    r = stats.pearson_r(x[None], y[None])[0]
    assert r == pytest.approx(sp.pearsonr(x, y)[0])
    assert math.isnan(stats.pearson_r(np.ones((1, 4)), np.arange(4.0)[None])[0])


def test_mean_ratio_and_percentiles():
    assert stats.mean_ratio(np.array([[1.0, 3.0]]), np.array([[2.0, 2.0]]))[0] == pytest.approx(1.0)
    assert math.isnan(stats.mean_ratio(np.array([[1.0]]), np.array([[0.0]]))[0])
    lo, hi = stats.percentile_bounds(np.array([np.nan, *range(101)]), 0.9)
    assert (lo, hi) == (pytest.approx(5.0), pytest.approx(95.0))


def test_lower_bound_is_the_end_of_the_wider_interval():
    lb = stats.lower_bound(lambda lv: stats.proportion_interval(80, 100, lv), alpha=0.05)
    assert lb == pytest.approx(stats.proportion_interval(80, 100, 0.90).lo)
    with pytest.raises(ValueError):
        stats.lower_bound(lambda lv: stats.exact(1.0), alpha=0.6)


def test_estimate_round_trips_and_rejects_bad_fields():
    e = stats.t_interval([1.0, 2.0, 4.0], note="three seeds")
    assert stats.Estimate.from_dict(e.to_dict()) == e
    nan = stats.t_interval([1.0])
    doc = nan.to_dict()
    assert doc["lo"] is None  # JSON has no NaN
    assert not stats.Estimate.from_dict(doc).has_interval
    with pytest.raises(ValueError, match="unknown field 'x'"):
        stats.Estimate.from_dict({**e.to_dict(), "x": 1})
    with pytest.raises(ValueError, match="'value'"):
        stats.Estimate.from_dict({"n": 1, "over": "exact", "method": "exact"})
    with pytest.raises(ValueError, match="must be a number"):
        stats.Estimate.from_dict({**e.to_dict(), "lo": "low"})
    with pytest.raises(ValueError, match="over="):
        stats.Estimate(1.0, 1.0, 1.0, 1, "galaxies", "exact")


def test_scaled_and_text():
    e = stats.Estimate(0.5, 0.25, 0.75, 40, "images", "bootstrap").scaled(100)
    assert (e.value, e.lo, e.hi) == (50.0, 25.0, 75.0)
    assert e.text(1, "%") == "50.0 % [25.0, 75.0] (40 images)"
    assert stats.exact(3).text(0) == "3 (exact)"


def test_a_seed_study_widens_a_runs_interval_and_never_narrows_it():
    from repshare.stats import Estimate, seeds_with_run

    run = Estimate(-0.53, -1.14, 0.0532, 8, "graphs", "bootstrap")  # the concurrency claim, one run
    flat = Estimate(-0.53, -0.53, -0.53, 3, "seeds", "t")  # three seeds, the same graphs: zero width
    got = seeds_with_run(flat, run)
    assert (got.value, got.lo, got.hi, got.n, got.over) == (-0.53, -1.14, 0.0532, 3, "seeds")
    assert "widened" in got.note
    wide = Estimate(0.5, -2.0, 2.0, 3, "seeds", "t")
    assert seeds_with_run(wide, run) is wide  # already covers the run's interval
    part = Estimate(0.2, 0.16, 0.22, 3, "seeds", "t")
    assert (seeds_with_run(part, Estimate(0.2, 0.01, 0.32, 8, "pairs", "bootstrap")).lo,
            seeds_with_run(part, Estimate(0.2, 0.01, 0.32, 8, "pairs", "bootstrap")).hi) == (0.01, 0.32)
    assert seeds_with_run(part, None) is part
    blocked = Estimate(0.2, 0.1, 0.3, 8, "pairs", "bootstrap", interpretable=False)
    assert not seeds_with_run(part, blocked).interpretable
