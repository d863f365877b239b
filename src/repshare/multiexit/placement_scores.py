"""Per-image scores of fixed multi-exit models, and intervals over images built on them.

A placement is chosen on the ``select`` split; it is reported on ``val``. For a fixed placement the
exit-time model fixes which exit answers when (:meth:`Problem.answer_weights`), so its mAE on any
set of images is the mean over images of ``sum_k w_k * correct_k(image)``: one score per image.
Intervals then come from :mod:`repshare.stats` by resampling images (paired across models).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from repshare.multiexit.mae import shown_at
from repshare.multiexit.placement import HEAD, Problem
from repshare.multiexit.simulate import TraceResult
from repshare.stats import Estimate, bootstrap_interval, mean_of, mean_ratio

FINAL = "final"  # the backbone's own head in part 1's correctness files


@dataclass(frozen=True)
class Scores:
    """Per-image correctness of one split: row ``ids[k]`` of ``correct`` (values in [0, 1]; a row
    averaged over seeds may hold fractions)."""

    split: str
    ids: tuple[str, ...]
    correct: np.ndarray  # (len(ids), n_images)
    index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        arr = np.asarray(self.correct, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[0] != len(self.ids):
            raise ValueError(f"{self.split} correctness: shape {arr.shape} does not match {len(self.ids)} ids")
        if arr.shape[1] == 0:
            raise ValueError(f"{self.split} correctness holds no image")
        if not np.all(np.isfinite(arr)) or arr.min(initial=0.0) < 0 or arr.max(initial=0.0) > 1:
            raise ValueError(f"{self.split} correctness must hold finite values in [0, 1]")
        if len(set(self.ids)) != len(self.ids):
            raise ValueError(f"{self.split} correctness lists an id twice")
        object.__setattr__(self, "correct", arr)
        object.__setattr__(self, "index", {k: i for i, k in enumerate(self.ids)})

    @property
    def n_images(self) -> int:
        return int(self.correct.shape[1])

    def row(self, sid: str) -> np.ndarray:
        if sid not in self.index:
            raise ValueError(f"no per-image correctness for {sid!r} on the {self.split} split (rerun part 1: "
                             "kd_recover writes it)")
        return self.correct[self.index[sid]]

    def accuracy(self, sid: str) -> float:
        return float(self.row(sid).mean())

    def with_rows(self, ids: Sequence[str], correct: np.ndarray) -> Scores:
        """These scores plus more rows (the baselines trained by the placement stage)."""
        if not len(ids):
            return self
        return Scores(self.split, self.ids + tuple(ids), np.vstack([self.correct, np.asarray(correct, dtype=float)]))


def with_accuracies(rows: Sequence[Mapping], scores: Scores, key: str = "accuracy") -> list[dict]:
    """Copies of ``rows`` whose ``key`` is the accuracy of their ``score_id`` on ``scores``."""
    return [dict(r, **{key: scores.accuracy(r["score_id"])}) for r in rows]


def image_scores(problem: Problem, selected: Sequence[int], score_ids: Sequence[str], scores: Scores) -> np.ndarray:
    """Per-image value (mAE, or finite-time correctness) of the placement ``selected`` of ``problem``:
    the answer weights of the placement (decided by ``problem``) applied to ``scores``."""
    who, w = problem.answer_weights(list(selected))
    out = np.zeros(scores.n_images)
    for k, wk in zip(who, w):
        if wk:
            out += wk * scores.row(FINAL if k == HEAD else score_ids[k])
    return out


def trace_scores(problem: Problem, result: TraceResult, score_ids: Sequence[str], scores: Scores) -> np.ndarray:
    """Per-image time-averaged value of a simulated trace (each phase's placement, weighted by its length)."""
    pos = {cid: i for i, cid in enumerate(problem.ids)}
    span = sum(p.t1 - p.t0 for p in result.phases)
    out = np.zeros(scores.n_images)
    for p in result.phases:
        if span > 0 and p.t1 > p.t0:
            out += (p.t1 - p.t0) / span * image_scores(problem, [pos[c] for c in p.selected], score_ids, scores)
    return out


def answer_at(problem: Problem, selected: Sequence[int], deadline: float) -> int | None:
    """Finite-time inference: the candidate (or :data:`HEAD`) that answers at ``deadline``, None if none
    finished. With ``return_best`` the answer is the most accurate so far by ``problem``'s accuracies."""
    who, times, accs = problem.answers(list(selected))
    k = shown_at(times, accs, deadline, problem.return_best)
    return who[k] if k >= 0 else None


# --------------------------------------------------------------------------- intervals over images
def gain_statistic(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Vectorised: how much better mean(a) is than mean(b), in % of mean(b)."""
    return 100.0 * (mean_ratio(a, b) - 1.0)


def ratio_pct_statistic(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Vectorised: mean(a) / mean(b) in %."""
    return 100.0 * mean_ratio(a, b)


@dataclass(frozen=True)
class Bootstrap:
    """Intervals over the report split's images: ``n_boot`` resamples, one seed, level 95 %."""

    n_boot: int
    seed: int
    note: str = ""

    def mean(self, x: np.ndarray, note: str = "") -> Estimate:
        return bootstrap_interval(mean_of, [x], self.n_boot, seed=self.seed, over="images", note=note or self.note)

    def gain(self, a: np.ndarray, b: np.ndarray, note: str = "") -> Estimate:
        """% by which model a's mean score beats model b's, paired over images. Two models that score
        the same on every image (e.g. the same placement) give no comparison: not interpretable."""
        est = bootstrap_interval(gain_statistic, [a, b], self.n_boot, seed=self.seed, over="images",
                                 note=note or self.note)
        return identical_guard(est, bool(np.allclose(a, b, rtol=0.0, atol=1e-12)))

    def ratio_pct(self, a: np.ndarray, b: np.ndarray, note: str = "") -> Estimate:
        return bootstrap_interval(ratio_pct_statistic, [a, b], self.n_boot, seed=self.seed, over="images",
                                  note=note or self.note)

    def of_indices(self, statistic: Callable[[np.ndarray], np.ndarray], n: int, note: str = "",
                   identical: bool = False) -> Estimate:
        """A statistic of resampled image indices (B, n) -> (B,), for statistics of many columns
        (e.g. the worst of several deadlines) without materialising every resampled column at once."""
        est = bootstrap_interval(statistic, [np.arange(n)], self.n_boot, seed=self.seed, over="images",
                                 note=note or self.note)
        return identical_guard(est, identical)


def identical_guard(est: Estimate, identical: bool) -> Estimate:
    """Mark a comparison of two models that answer identically on every image as not interpretable
    (its zero-width interval at 0 would otherwise sit on the edge of every 'better than' region)."""
    if not identical:
        return est
    return est.with_note("the compared models answer identically on every image: nothing to compare; " + est.note,
                         interpretable=False)


def worst_mean_difference(diff: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Statistic for :meth:`Bootstrap.of_indices`: min over columns of the mean of ``diff[:, d]``."""
    diff = np.asarray(diff, dtype=np.float64)

    def stat(idx: np.ndarray) -> np.ndarray:
        idx = np.atleast_2d(idx)
        if diff.shape[1] == 0:
            return np.zeros(idx.shape[0])
        return np.min(np.stack([diff[:, d][idx].mean(axis=-1) for d in range(diff.shape[1])], axis=-1), axis=-1)

    return stat
