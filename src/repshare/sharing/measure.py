"""The quantities the paper's claims name (:mod:`repshare.sharing.claims`), measured with intervals.

All on the paper's setting (``resample`` adapter, ``per_model`` input) on the report split: the
pair table of that cell and its per-image top-1 hits. Each estimate is a percentile bootstrap over
pairs and report images (:func:`repshare.sharing.correlation.two_way_samples`), ``over="pairs"``.

Chance guard: when the unmerged classifier is not above chance (one-sided Wilson bound), the detector
learned no measurable detection (mAP@.5 below ``MIN_DETECTOR_MAP50``; its metrics carry no interval),
or no merge of a subset is above chance (Bonferroni over the subset's pairs), the subset's estimates
are marked not interpretable: a correlation of noise must not carry a verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from repshare.sharing.correlation import Resampled, abs_r, abs_r_gap, hinge_fit, hinge_grid, two_way_samples
from repshare.stats import Estimate, above_chance, percentile_bounds

MIN_DETECTOR_MAP50 = 0.01  # below this mAP@.5 the detector has learned no measurable detection (no interval exists)
CONTROLS = ("params", "size", "flops")


@dataclass(frozen=True)
class Chance:
    """What the chance guard needs: the unmerged models' results and the number of classes."""

    num_classes: int
    baseline_correct: int  # top-1 hits of the unmerged classifier on the report images
    n_images: int
    detector_map50: float | None  # None: unknown (then not used)

    def models_note(self) -> str:
        """'' when both models learned their task; else why the merges' numbers mean nothing."""
        chance = 1.0 / self.num_classes
        why = []
        if not above_chance(self.baseline_correct, self.n_images, chance):
            why.append(f"the unmerged classifier is at chance (top-1 {self.baseline_correct}/{self.n_images} not "
                       f"above 1/{self.num_classes} by a one-sided 95 % Wilson bound)")
        if self.detector_map50 is not None and not self.detector_map50 >= MIN_DETECTOR_MAP50:
            why.append(f"the detector learned no detection (mAP@.5 {self.detector_map50:.4f} < {MIN_DETECTOR_MAP50})")
        return "; ".join(why)

    def merges_note(self, correct: np.ndarray, n: int) -> str:
        """'' unless no merge of the subset is above chance (Bonferroni over its merges)."""
        chance, m = 1.0 / self.num_classes, max(1, len(correct))
        if any(above_chance(int(k), n, chance, alpha=0.05 / m) for k in correct):
            return ""
        return f"no merge of the subset is above chance (1/{self.num_classes}; {m} merges, {n} images each)"


def _estimate(point: float, samples: np.ndarray, n: int, level: float, note: str) -> Estimate:
    lo, hi = percentile_bounds(samples, level) if samples.size else (math.nan, math.nan)
    return Estimate(point, lo, hi, n, "pairs", "bootstrap", level, note)


def guarded(est: Estimate, note: str) -> Estimate:
    return est.with_note(f"{note}; {est.note}", interpretable=False) if note else est


def measurements(ref: pd.DataFrame, res: Resampled, chance: Chance, level: float, seed: int,
                 n_boot: int) -> dict[str, Estimate]:
    """Every quantity of the claims registry (keys ``cka.*``) from the paper's-setting cell.

    ``ref``: that cell's rows (columns kind, S, params, size, flops, acc, pos); ``res``: its
    per-image-resampled accuracies. Pair resampling uses ``seed``; ``res`` was drawn with another.
    """
    out: dict[str, Estimate] = {}
    models = chance.models_note()
    how = f"bootstrap over pairs and {res.n_images} report images ({n_boot} resamples)"
    for kind, key in (("same", "cka.abs_r_same"), ("cross", "cka.abs_r_cross"), ("all", "cka.abs_r_all")):
        sub = ref if kind == "all" else ref[ref["kind"] == kind]
        if len(sub) < 3:
            continue
        pos, s = sub["pos"].to_numpy(), sub["S"].to_numpy(float)
        subset = chance.merges_note(np.rint(res.acc[pos] * res.n_images), res.n_images)
        note = "; ".join(x for x in (models, subset) if x)
        point, samples = two_way_samples(abs_r, res, pos, [s], seed)
        out[key] = guarded(_estimate(point, samples, len(sub), level, f"|r| of {kind}-stage pairs, {how}"), note)
        if kind != "same":
            continue
        for metric in CONTROLS:  # the paper's controls, on its own (same-stage) subset
            x = sub[metric].to_numpy(float)
            point, samples = two_way_samples(abs_r, res, pos, [x], seed)
            out[f"cka.abs_r_{metric}_same"] = guarded(_estimate(point, samples, len(sub), level,
                                                                f"|r| with {metric}, same-stage pairs, {how}"), note)
            point, samples = two_way_samples(abs_r_gap, res, pos, [s, x], seed)
            out[f"cka.gap_{metric}_same"] = guarded(_estimate(point, samples, len(sub), level,
                                                              f"|r_S| - |r_{metric}| on the same resampled pairs "
                                                              f"and images, {how}"), note)
        grid = hinge_grid(s)
        fit_note = f"least-squares hinge fit, breakpoint on a {len(grid)}-point grid over the observed S, {how}"
        point_fit = hinge_fit(res.acc[pos], s, grid)
        _, s_samples = two_way_samples(lambda a, sb: hinge_fit(a, sb, grid)[0], res, pos, [s], seed)
        _, a_samples = two_way_samples(lambda a, sb: hinge_fit(a, sb, grid)[1], res, pos, [s], seed)
        out["cka.s_prime"] = guarded(_estimate(float(point_fit[0][0]), s_samples, len(sub), level, fit_note), note)
        out["cka.acc_below_s_prime"] = guarded(
            _estimate(float(point_fit[1][0]), a_samples, len(sub), level,
                      f"accuracy of the hinge's flat part (chance = {1 / chance.num_classes:.3f}), {fit_note}"), note)
    return out
