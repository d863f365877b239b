"""The quantities MEEdge part 1's claims are judged on (:mod:`repshare.multiexit.claims`), each an
:class:`repshare.stats.Estimate` with its interval, from per-image correctness.

Accuracy differences are paired per image (every branch reads the same images), so the interval is
a percentile bootstrap over the report (val) images of a per-image column
(:func:`repshare.stats.bootstrap_interval`). Where several KD seeds ran, a branch's per-image
correctness is the mean over seeds before the bootstrap. The self/twin memory ratio depends on the
merge rule's choices, which are made on the select images: its interval is a bootstrap of those
choices over the select images (the rule re-run on each resample), so a ratio that a few select
images could move reads as uncertain.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from repshare.stats import Estimate, above_chance, bootstrap_interval, bootstrap_samples, mean_of, percentile_bounds


@dataclass(frozen=True)
class Boot:
    n_boot: int = 2000
    seed: int = 0
    level: float = 0.95


def mean_difference_per_image(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> np.ndarray:
    """Per image: mean over branches of (a_k - b_k) (each (n_images,), values in [0, 1])."""
    if not a or len(a) != len(b):
        raise ValueError(f"need matching non-empty branch lists, got {len(a)} and {len(b)}")
    return np.mean([np.asarray(x, float) - np.asarray(y, float) for x, y in zip(a, b)], axis=0)


def paired_difference(a: Sequence[np.ndarray], b: Sequence[np.ndarray], boot: Boot, note: str) -> Estimate:
    """Mean top-1 of branches ``a`` minus that of ``b`` (paired by branch and image), bootstrap over images."""
    d = mean_difference_per_image(a, b)
    return bootstrap_interval(mean_of, [d], boot.n_boot, boot.level, boot.seed, "images", note)


def _counts(idx: np.ndarray, n: int) -> np.ndarray:
    """(B, n) resample index rows -> (B, n) counts of each image in each resample."""
    counts = np.zeros((idx.shape[0], n), dtype=np.float64)
    np.add.at(counts, (np.repeat(np.arange(idx.shape[0]), idx.shape[1]), idx.ravel()), 1.0)
    return counts


def rule_choice(acc: np.ndarray) -> np.ndarray:
    """Index of the merge rule's choice per row of ``acc`` (rows x fractions in ascending order):
    the most accurate fraction, ties to the larger one (as :func:`repshare.multiexit.merge.select_by_accuracy`)."""
    acc = np.atleast_2d(acc)
    return acc.shape[1] - 1 - np.argmax(acc[:, ::-1], axis=1)


@dataclass(frozen=True)
class RuleSweep:
    """One merge decision: per candidate fraction (ascending), the per-image correctness on the select
    images and the parameters that fraction saves."""

    select_correct: np.ndarray  # (n_fractions, n_select)
    params_saved: np.ndarray  # (n_fractions,)


def saved_ratio(numerator: Sequence[RuleSweep], denominator: Sequence[RuleSweep], boot: Boot, note: str) -> Estimate:
    """sum(params saved by the ``numerator`` decisions) / sum(by the ``denominator`` decisions), each decision
    taken by the rule on the select images; interval = the rule re-run on bootstrap resamples of them."""
    sweeps = [*numerator, *denominator]
    if not numerator or not denominator:
        raise ValueError("the saved-parameter ratio needs decisions on both sides")
    n = sweeps[0].select_correct.shape[1]
    if any(s.select_correct.shape[1] != n for s in sweeps):
        raise ValueError("every decision must be scored on the same select images")

    def ratio(counts: np.ndarray) -> np.ndarray:  # counts (B, n) -> ratio per resample
        saved = [s.params_saved[rule_choice(counts @ s.select_correct.T.astype(float))] for s in sweeps]
        num = np.sum(saved[: len(numerator)], axis=0).astype(float)
        den = np.sum(saved[len(numerator):], axis=0).astype(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)

    value = float(ratio(np.ones((1, n)))[0])
    if boot.n_boot <= 0 or n < 2:
        return Estimate(value, np.nan, np.nan, n, "images", "bootstrap", boot.level, note)
    samples = bootstrap_samples(lambda idx: ratio(_counts(idx, n)), [np.arange(n)], boot.n_boot, boot.seed)
    lo, hi = percentile_bounds(samples, boot.level)
    return Estimate(value, lo, hi, n, "images", "bootstrap", boot.level, note)


def reach_fraction(fractions: Sequence[float], recovered: Sequence[np.ndarray], original: Sequence[np.ndarray],
                   boot: Boot, note: str) -> Estimate:
    """Mean over branches of the largest merged fraction whose recovered top-1 reaches the original's
    (0 if none), bootstrap over images. ``recovered[k]`` (n_fractions, n_images), ``original[k]`` (n_images,)."""
    fr = np.asarray(fractions, float)
    if not recovered or len(recovered) != len(original):
        raise ValueError("need one recovered table per original branch")
    n = len(original[0])

    def stat(counts: np.ndarray) -> np.ndarray:
        per_branch = []
        for rec, orig in zip(recovered, original):
            acc_rec = counts @ np.asarray(rec, float).T  # (B, n_fractions), counts not normalised: same scale
            acc_orig = counts @ np.asarray(orig, float)  # (B,)
            ok = acc_rec >= acc_orig[:, None] - 1e-9
            per_branch.append(np.where(ok, fr[None, :], 0.0).max(axis=1))
        return np.mean(per_branch, axis=0)

    value = float(stat(np.ones((1, n)))[0])
    if boot.n_boot <= 0 or n < 2:
        return Estimate(value, np.nan, np.nan, n, "images", "bootstrap", boot.level, note)
    lo, hi = percentile_bounds(bootstrap_samples(lambda idx: stat(_counts(idx, n)), [np.arange(n)], boot.n_boot,
                                                 boot.seed), boot.level)
    return Estimate(value, lo, hi, n, "images", "bootstrap", boot.level, note)


def heterogeneous_choice(select_acc: Mapping[str, float], exit_of: Mapping[str, int],
                         structure_of: Mapping[str, str]) -> tuple[dict[int, str], dict[int, str]]:
    """({exit: best branch there}, {exit: branch of the best single structure}) chosen on select accuracy.

    Heterogeneous: each exit keeps its own most accurate structure. Homogeneous: one structure at every
    exit (only structures trained at every exit qualify), the one with the best mean accuracy over exits.
    Ties go to the first id in sorted order, so the choice does not depend on dict order.
    """
    exits = sorted(set(exit_of.values()))
    hetero = {e: max(sorted(i for i in exit_of if exit_of[i] == e), key=lambda i: select_acc[i]) for e in exits}
    by_structure: dict[str, dict[int, str]] = {}
    for i in sorted(exit_of):
        by_structure.setdefault(structure_of[i], {})[exit_of[i]] = i
    full = {s: m for s, m in by_structure.items() if set(m) == set(exits)}
    if not full:
        return hetero, {}
    best = max(sorted(full), key=lambda s: np.mean([select_acc[full[s][e]] for e in exits]))
    return hetero, full[best]


def chance_note(models: Mapping[str, tuple[int, int]], num_classes: int) -> str | None:
    """A note if any model's top-1 (correct, images) is not above chance 1/num_classes (one-sided Wilson bound)."""
    for name, (k, n) in models.items():
        if not above_chance(int(k), int(n), 1.0 / num_classes):
            return f"{name} at chance: top-1 {k}/{n} is not above 1/{num_classes}"
    return None


def guarded(est: Estimate, note: str | None) -> Estimate:
    """``est`` marked not interpretable when ``note`` (a chance finding) is set."""
    if note is None:
        return est
    return est.with_note(f"{est.note}; {note}" if est.note else note, interpretable=False)


# --------------------------------------------------------------------------- part 1's measurements
@dataclass
class KDCorrect:
    """Val correctness the KD claims need: per branch id, the original, the recovered at the rule's
    fraction and its control (same KD, no merge); per curve branch, recovered per fraction and the control."""

    original: dict[str, np.ndarray]
    rule_recovered: dict[str, np.ndarray]
    rule_control: dict[str, np.ndarray]
    curve_fractions: list[float]
    curve_recovered: dict[str, np.ndarray]  # id -> (n_fractions, n_images), fractions ascending
    curve_control: dict[str, np.ndarray]


def kd_measurements(c: KDCorrect, boot: Boot) -> dict[str, Estimate]:
    """The few-shot KD quantities (Fig. 9(c), Sec. 3.5.1/4.4.2) with bootstrap intervals over val images."""
    out: dict[str, Estimate] = {}
    rule = sorted(c.rule_recovered)
    if rule:
        out["meedge.rule_kd_minus_control_top1"] = paired_difference(
            [c.rule_recovered[i] for i in rule], [c.rule_control[i] for i in rule], boot,
            f"{len(rule)} merged survivors: self-merged at the rule + few-shot KD minus the same KD without merging")
    curve = sorted(c.curve_recovered)
    if curve:
        for end, k in (("few", 0), ("many", -1)):
            f = c.curve_fractions[k]
            rec = [c.curve_recovered[i][k] for i in curve]
            out[f"meedge.kd_{end}_pairs_minus_control_top1"] = paired_difference(
                rec, [c.curve_control[i] for i in curve], boot,
                f"{len(curve)} curve branches merged at {f:.3g} of their pairs + KD, minus the same KD without merging")
            out[f"meedge.kd_{end}_pairs_minus_original_top1"] = paired_difference(
                rec, [c.original[i] for i in curve], boot,
                f"{len(curve)} curve branches merged at {f:.3g} of their pairs + KD, minus the trained branch")
        out["meedge.kd_reach_fraction"] = reach_fraction(
            c.curve_fractions, [c.curve_recovered[i] for i in curve], [c.original[i] for i in curve], boot,
            f"mean over {len(curve)} curve branches of the largest fraction whose recovery reaches the trained "
            "branch's top-1 (0 if none)")
    return out


def hetero_measurement(profiles: Sequence[dict], val_correct: Mapping[str, np.ndarray],
                       boot: Boot) -> tuple[Estimate, list[str]] | None:
    """Heterogeneous (each exit its own best structure) minus homogeneous (one structure at every exit)
    branches: mean val top-1 over exits, both chosen on select top-1, and the branches compared
    (None if no structure spans every exit)."""
    hetero, homo = heterogeneous_choice({p["id"]: p["accuracy_select"] for p in profiles},
                                        {p["id"]: p["exit"] for p in profiles}, {p["id"]: p["structure"] for p in profiles})
    if not homo:
        return None
    exits = sorted(hetero)
    structure = next(p["structure"] for p in profiles if p["id"] == homo[exits[0]])
    est = paired_difference([val_correct[hetero[e]] for e in exits], [val_correct[homo[e]] for e in exits], boot,
                            f"per-exit best structures vs {structure} at all {len(exits)} exits (chosen on select); "
                            "mean val top-1 over exits")
    return est, sorted({*hetero.values(), *homo.values()})


def guard_chance(ms: Mapping[str, Estimate], behind: Mapping[str, Sequence[str]], val_correct: Mapping[str, np.ndarray],
                 num_classes: int) -> dict[str, Estimate]:
    """Each estimate marked not interpretable when the classifier (``val_correct["final"]``) or a branch
    behind it (``behind[key]``: ids) is not above chance on the val images."""
    def count(i: str) -> tuple[int, int]:
        return int(round(float(np.sum(val_correct[i])))), len(val_correct[i])

    out = {}
    for key, est in ms.items():
        models = {"the classifier (final exit)": count("final"), **{f"branch {i}": count(i) for i in behind.get(key, ())}}
        out[key] = guarded(est, chance_note(models, num_classes))
    return out


def part1_measurements(zoo: dict, merge: dict, val: Mapping[str, np.ndarray], c: KDCorrect, curve_ids: Sequence[str],
                       boot: Boot) -> dict[str, Estimate]:
    """Every part-1 quantity: the twin comparison's two (measured by self_merge, in merge.json), the KD ones,
    the heterogeneity one; each marked not interpretable when a model behind it is at chance.
    ``val``: val correctness of ``final`` and every zoo branch (zoo's correct_val.npz)."""
    ms = {k: Estimate.from_dict(v) for k, v in merge["measurements"].items()}
    ms.update(kd_measurements(c, boot))
    twins = [i for t in merge["twin"] for i in (t["a"], t["b"])]
    behind: dict[str, Sequence[str]] = {k: curve_ids for k in ms if k.startswith("meedge.kd_")}
    behind.update({"meedge.self_twin_saved_ratio": twins, "meedge.self_minus_twin_top1": twins,
                   "meedge.rule_kd_minus_control_top1": sorted(c.rule_recovered)})
    hetero = hetero_measurement(zoo["branches"], val, boot)
    if hetero is not None:
        ms["meedge.hetero_minus_homo_top1"], behind["meedge.hetero_minus_homo_top1"] = hetero
    return guard_chance(dict(sorted(ms.items())), behind, val, int(zoo["num_classes"]))
