"""Gemel's measured quantities on the report split, each an :class:`repshare.stats.Estimate`.

Accuracies and query accuracies get paired percentile-bootstrap intervals over the report images
(every model and every workload -- unmerged, merged, control -- on the same resamples, drawn by
:func:`repshare.stats.bootstrap_samples` with one seed). Memory saved and frames processed are exact
given the merge decisions; their interval is the decision sensitivity (every fragile decision
flipped, :func:`repshare.gemel.study.sensitivity_sets`), ``over="trials"``.

**Query accuracy** (the slides' "per-workload query accuracy" is not defined there, and the reference
code stops at per-model throughput, ``scheduler.py``'s fraction of frames processed): a query is one
model on its stream; a frame it skips gets no answer, so its query accuracy is its accuracy on the
report split times the fraction of its frames processed. The workload's query accuracy is the mean
over its queries, at one memory budget (the reference's 50 % level, ``gemel.sim.claim_budget_fraction``).
The gain compares Gemel's merged workload against the **control** (the same retraining without
merging; same memory as unmerged, so the same frames), so that accuracy the retraining adds is not
credited to merging; the gain over the original unmerged models is shown beside it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from repshare.gemel.models import Member
from repshare.gemel.outcomes import ClassifierOutcome, Outcome, counts_from_indices
from repshare.stats import Estimate, above_chance, bootstrap_samples, lower_bound, percentile_bounds

# A detector "at chance": its mAP's one-sided 95 % lower bound is below one mAP point. Boxes that are not
# localised score ~1e-4 on the shapes (the smoke preset's untrained detector: 4e-5), never 0 exactly.
DETECTOR_CHANCE_MAP = 0.01


def replicates(outcome: Outcome, n_boot: int, seed: int) -> np.ndarray:
    """The outcome's accuracy on ``n_boot`` resamples of its images (same seed, same resamples)."""
    return bootstrap_samples(lambda idx: outcome.metric(counts_from_indices(idx, outcome.n)), [np.arange(outcome.n)],
                             n_boot, seed)


def point(outcome: Outcome) -> float:
    return float(outcome.metric(np.ones((1, outcome.n)))[0])


def from_replicates(value: float, reps: np.ndarray, n: int, note: str = "") -> Estimate:
    lo, hi = percentile_bounds(reps)
    return Estimate(value, lo, hi, n, "images", "bootstrap", note=note)


def at_chance(outcomes: Mapping[str, Outcome], members: Mapping[str, Member], reps: Mapping[str, np.ndarray]) -> list[str]:
    """Models whose unmerged report accuracy is indistinguishable from chance: a classifier's top-1 not above
    1/classes (one-sided Wilson bound), a detector's mAP lower bound below DETECTOR_CHANCE_MAP."""
    out = []
    for name, o in outcomes.items():
        if isinstance(o, ClassifierOutcome):
            if not above_chance(int(o.correct.sum()), o.n, 1.0 / max(1, members[name].num_classes)):
                out.append(f"{name} (top-1 {point(o):.3f}, chance {1.0 / members[name].num_classes:.3f})")
        else:
            r = reps[name]
            lb = lower_bound(lambda lv: Estimate(point(o), *percentile_bounds(r, lv), o.n, "images", "bootstrap", lv))
            if not lb > DETECTOR_CHANCE_MAP:
                out.append(f"{name} (mAP {point(o):.4f}, lower bound {lb:.4f} <= {DETECTOR_CHANCE_MAP})")
    return out


def query_accuracy(acc: Mapping[str, np.ndarray | float], processed: Mapping[str, float]) -> np.ndarray | float:
    """Mean over the queries of accuracy x fraction of frames processed (see the module docstring)."""
    return sum(np.asarray(acc[n]) * processed[n] for n in acc) / len(acc)


def gain_pct(acc_a: Mapping[str, Outcome], frac_a: Mapping[str, float], acc_b: Mapping[str, Outcome],
             frac_b: Mapping[str, float], reps_a: Mapping[str, np.ndarray], reps_b: Mapping[str, np.ndarray],
             n: int, note: str = "") -> Estimate:
    """100 x (query accuracy of a / of b - 1), paired over the report images (replicates on the same resamples)."""
    qa_a = query_accuracy({k: point(v) for k, v in acc_a.items()}, frac_a)
    qa_b = query_accuracy({k: point(v) for k, v in acc_b.items()}, frac_b)
    value = 100.0 * (qa_a / qa_b - 1.0) if qa_b > 0 else math.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        reps = 100.0 * (query_accuracy(reps_a, frac_a) / query_accuracy(reps_b, frac_b) - 1.0)
    return from_replicates(value, reps, n, note)


def difference(a: Outcome, b: Outcome, reps_a: np.ndarray, reps_b: np.ndarray, note: str = "") -> Estimate:
    """accuracy(a) - accuracy(b) on the same images, paired."""
    return from_replicates(point(a) - point(b), reps_a - reps_b, a.n, note)


def decision_interval(value: float, low: float, high: float, trials: int, note: str) -> Estimate:
    """An exact quantity whose interval is the decision sensitivity (robust .. optimistic merges)."""
    return Estimate(value, min(low, value), max(high, value), trials, "trials", "decisions", note=note)
