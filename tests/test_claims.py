"""The one verdict rule on hand-made intervals, the paper rule, and registry validation."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from repshare.claims import (
    Claim,
    Judgement,
    RegistryError,
    SanityCheck,
    judge,
    judge_paper,
    paper_verdict,
    validate_registry,
)
from repshare.stats import Estimate, exact

POINT = Claim(key="cka.r_same", paper="cka", statement="|r| same-stage", paper_value="0.94", where="Sec. 4, Fig. 3",
              quantity="r", subset="same-stage pairs", low=0.94, high=0.94, tolerance=0.1, why_tolerance="why",
              unit="")
RANGE = replace(POINT, key="gemel.mem", paper="gemel", quantity="mem", low=17.0, high=86.0, tolerance=0.0, unit="%")
DIRECTION = replace(POINT, key="cka.beats", quantity="diff", low=0.0, high=None, tolerance=0.0)


def est(lo: float, hi: float, value: float | None = None, **kw) -> Estimate:
    return Estimate((lo + hi) / 2 if value is None else value, lo, hi, 100, "images", "bootstrap", **kw)


@pytest.mark.parametrize("lo,hi,want", [
    (0.86, 0.99, "holds"),        # inside [0.84, 1.04]
    (0.84, 1.04, "holds"),        # touching both edges is inside
    (0.50, 0.80, "does not"),     # wholly below
    (1.05, 1.10, "does not"),     # wholly above
    (0.70, 0.90, "inconclusive"),  # straddles 0.84
    (0.20, 1.00, "inconclusive"),  # wide: noise-level evidence
])
def test_point_claim(lo, hi, want):
    assert judge(POINT, est(lo, hi)).verdict == want


@pytest.mark.parametrize("lo,hi,want", [
    (21.1, 38.7, "holds"), (5.0, 12.0, "does not"), (10.0, 30.0, "inconclusive"), (86.0, 90.0, "inconclusive"),
])
def test_range_claim(lo, hi, want):
    assert judge(RANGE, est(lo, hi)).verdict == want


@pytest.mark.parametrize("lo,hi,want", [
    (0.01, 0.3, "holds"), (-0.3, -0.01, "does not"), (-0.1, 0.2, "inconclusive"), (-0.2, 0.0, "inconclusive"),  # touching the edge is not outside
])
def test_direction_claim(lo, hi, want):
    assert judge(DIRECTION, est(lo, hi)).verdict == want


def test_exact_values_and_missing_ones():
    assert judge(RANGE, exact(32.0)).verdict == "holds"
    assert judge(RANGE, exact(0.0)).verdict == "does not"
    assert judge(RANGE, None).verdict == "not tested"
    assert judge(RANGE, exact(math.nan)).verdict == "inconclusive"  # measured, but not a number
    unreadable = Estimate(math.nan, math.nan, math.nan, 3, "images", "t", interpretable=False)
    readable_but_not_interpretable = Estimate(0.9, 0.85, 0.95, 3, "images", "t", interpretable=False)
    assert judge(RANGE, unreadable).verdict == judge(RANGE, readable_but_not_interpretable).verdict == "inconclusive"


def test_no_interval_or_not_interpretable_is_inconclusive():
    no_ci = Estimate(0.95, math.nan, math.nan, 1, "seeds", "t")
    assert judge(POINT, no_ci).verdict == "inconclusive"
    chance = est(0.9, 0.95).with_note("classifier at chance", interpretable=False)
    j = judge(POINT, chance)
    assert j.verdict == "inconclusive" and "not interpretable" in j.reason and "chance" in j.reason


def test_noise_never_flips_between_holds_and_does_not():
    # Any interval that contains a point of the region and a point outside it is inconclusive:
    # sweep intervals of every width around every centre; 'holds' and 'does not' never share a point.
    lo_r, hi_r = POINT.region()
    for c in [x / 100 for x in range(50, 121)]:
        for w in [x / 100 for x in range(0, 40)]:
            v = judge(POINT, est(c - w, c + w)).verdict
            inside = lo_r <= c - w and c + w <= hi_r
            outside = c + w < lo_r or c - w > hi_r
            assert v == ("holds" if inside else "does not" if outside else "inconclusive")


def test_paper_verdict_from_primary_claims_only():
    def j(v: str, primary: bool = True) -> Judgement:
        return Judgement(replace(POINT, primary=primary), v, "", None)

    assert paper_verdict([j("holds"), j("holds"), j("does not", primary=False)]) == "holds"
    assert paper_verdict([j("holds"), j("does not")]) == "partly"
    assert paper_verdict([j("does not"), j("inconclusive")]) == "does not"
    assert paper_verdict([j("holds"), j("not tested")]) == "inconclusive"  # untested primary prevents holds
    assert paper_verdict([j("holds"), j("inconclusive")]) == "inconclusive"
    assert paper_verdict([j("not tested")]) == "not tested"
    assert paper_verdict([j("holds", primary=False)]) == "not tested"
    assert paper_verdict([]) == "not tested"


def test_a_sanity_check_can_never_vote():
    check = SanityCheck("meedge.m6_ge_m5", "m6 >= m5 by construction", True)
    with pytest.raises(TypeError, match="sanity checks never vote"):
        paper_verdict([check])  # type: ignore[list-item]
    with pytest.raises(RegistryError, match="not a Claim"):
        validate_registry([check], {"r": ""}, ["cka"])


def test_judge_paper_uses_its_own_claims():
    res = judge_paper("gemel", [POINT, RANGE], {"mem": est(20, 30), "r": est(0.9, 0.95)})
    assert [j.claim.key for j in res.judgements] == ["gemel.mem"]
    assert res.verdict == "holds"


@pytest.mark.parametrize("bad,match", [
    (replace(POINT, quantity="nope"), "unknown quantity 'nope'"),
    (replace(POINT, tolerance=-0.1), "tolerance -0.1"),
    (replace(POINT, tolerance=math.inf), "tolerance inf"),
    (replace(POINT, where=""), "missing where"),
    (replace(POINT, paper_value=" "), "missing paper_value"),
    (replace(POINT, paper="nature"), "paper 'nature'"),
    (replace(POINT, low=None, high=None), "low and high are both None"),
    (replace(POINT, low=2.0, high=1.0), "low 2.0 > high 1.0"),
])
def test_registry_rejects_bad_entries_naming_them(bad, match):
    with pytest.raises(RegistryError, match=match) as err:
        validate_registry([bad], {"r": "x", "mem": "y"}, ["cka", "gemel"])
    assert "'cka.r_same'" in str(err.value)


def test_registry_rejects_repeated_keys():
    with pytest.raises(RegistryError, match="repeated"):
        validate_registry([POINT, POINT], {"r": ""}, ["cka"])


def test_judgement_row_shows_the_difference_and_region():
    row = judge(RANGE, est(5.0, 12.0, value=8.0)).row()
    assert row["region_text"] == "[17, 86] %"
    assert row["difference"] == "-9"
    assert row["verdict"] == "does not"
    assert row["region"] == [17.0, 86.0]
    assert judge(DIRECTION, est(0.1, 0.2)).row()["region"] == [0.0, None]
