"""Gemel's accept/reject rule, made so that noise in the evaluation images cannot decide it.

Gemel keeps a merge when every retrained model reaches ``target x`` its unmerged accuracy. Measured
on a sample of images, ``after - target x unmerged`` (the *margin*) carries sampling noise: on 200
images one image is 0.5 points, and the same trial was accepted on one machine and rejected on
another. The rule here:

- the margin of each model is measured on the ``select`` split (never on the report split), paired:
  the merged and the unmerged model see the same images, and a bootstrap over those images
  (:func:`repshare.stats.bootstrap_samples`, the same resamples for both) gives its distribution;
- a trial is **accepted** only if, for every retrained model, the one-sided ``1 - alpha`` lower bound
  of the margin is >= 0: the data show that the model meets its target, not merely that the point
  estimate happens to land above it. A model exactly at its target is rejected (in 1 - alpha of
  samples), on every machine, instead of flipping with the images drawn;
- a decision is **robust** when the two-sided 95 % interval of the deciding margins excludes 0
  (accepted: every model's interval above 0; rejected: some model's interval below 0); otherwise it
  is **fragile**: another sample of images could have gone the other way. Fragile decisions give the
  memory saved its interval (:mod:`repshare.gemel.study`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from repshare.gemel.outcomes import Outcome, counts_from_indices
from repshare.stats import Estimate, bootstrap_samples, lower_bound, percentile_bounds

ROBUST_LEVEL = 0.95


@dataclass(frozen=True)
class ModelDecision:
    model: str
    n: int  # decision images
    unmerged: float  # accuracy on them before any merge
    after: float  # after tying and retraining
    target: float  # target fraction
    margin: float  # after - target x unmerged
    lower: float  # one-sided (1 - alpha) lower bound of the margin
    lo: float  # two-sided ROBUST_LEVEL interval of the margin
    hi: float
    se: float  # bootstrap standard error of the margin

    @property
    def passed(self) -> bool:
        return self.lower >= 0.0

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class Decision:
    models: tuple[ModelDecision, ...]
    alpha: float

    @property
    def accepted(self) -> bool:
        return all(m.passed for m in self.models)

    @property
    def robust(self) -> bool:
        if self.accepted:
            return all(m.lo > 0.0 for m in self.models)
        return any(m.hi < 0.0 for m in self.models)


def margin_samples(after: Outcome, unmerged: Outcome, target: float, n_boot: int, seed: int) -> tuple[float, np.ndarray]:
    """(margin on the images, its ``n_boot`` paired bootstrap replicates)."""
    if after.n != unmerged.n:
        raise ValueError(f"paired outcomes differ in images: {after.n} vs {unmerged.n}")
    n = after.n

    def margin(idx: np.ndarray) -> np.ndarray:
        counts = counts_from_indices(idx, n)
        return after.metric(counts) - target * unmerged.metric(counts)

    point = float(margin(np.arange(n)[None, :])[0])
    return point, bootstrap_samples(margin, [np.arange(n)], n_boot, seed)


def decide_model(name: str, after: Outcome, unmerged: Outcome, target: float, alpha: float, n_boot: int,
                 seed: int) -> ModelDecision:
    point, reps = margin_samples(after, unmerged, target, n_boot, seed)

    def interval(level: float) -> Estimate:
        lo, hi = percentile_bounds(reps, level)
        return Estimate(point, lo, hi, after.n, "images", "bootstrap", level)

    two = interval(ROBUST_LEVEL)
    ones = np.ones((1, after.n))
    return ModelDecision(name, after.n, float(unmerged.metric(ones)[0]), float(after.metric(ones)[0]), target,
                         point, lower_bound(interval, alpha), two.lo, two.hi, float(np.nanstd(reps, ddof=1)))


def decide(after: Mapping[str, Outcome], unmerged: Mapping[str, Outcome], target: float, alpha: float = 0.05,
           n_boot: int = 1000, seed: int = 0) -> Decision:
    """The rule in the module docstring, for every model in ``after`` (each against its unmerged outcome on
    the same images; each model its own resamples, seeded ``seed + k``)."""
    return Decision(tuple(decide_model(name, out, unmerged[name], target, alpha, n_boot, seed + k)
                          for k, (name, out) in enumerate(after.items())), alpha)


def meets_target_on_report(merged: Mapping[str, float], unmerged: Mapping[str, float], target: float) -> dict[str, bool]:
    """Per model: does the merged workload keep ``target x`` the unmerged accuracy on the report split
    (point values; a check shown beside the results, never a decision)."""
    return {n: bool(merged[n] >= target * unmerged[n]) for n in merged}
