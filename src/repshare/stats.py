"""The project's one statistics module: every interval a verdict or a report shows comes from here.

An :class:`Estimate` is a measured quantity with its interval and what the interval is over
(images, pairs, graphs, model seeds, or nothing: an exact count). Constructors:

- :func:`t_interval`: mean of a few values (model seeds, method seeds) with a Student-t interval;
- :func:`bootstrap_interval`: any vectorised statistic of per-item columns (per-image correctness,
  per-pair metrics), percentile bootstrap over the items;
- :func:`proportion_interval`: a proportion (top-1 accuracy) with the Wilson score interval;
- :func:`exact`: a deterministic quantity (bytes counted from a file): the interval is the value.

A one-sided bound at level ``1 - a`` is the matching end of the two-sided interval at level
``1 - 2a`` (:func:`lower_bound`); decisions that must not be made by noise use it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from scipy import stats as _sp

LEVEL = 0.95
OVER = ("images", "pairs", "graphs", "seeds", "trials", "budgets", "exact")


@dataclass(frozen=True)
class Estimate:
    """A measured quantity: point value, interval [lo, hi] at ``level``, and what it is over."""

    value: float
    lo: float
    hi: float
    n: int  # items behind the interval (images, pairs, seeds, ...); 1 for an exact value
    over: str  # one of OVER
    method: str  # "t" | "bootstrap" | "wilson" | "exact"
    level: float = LEVEL
    note: str = ""  # how it was measured, in a few words
    interpretable: bool = True  # False: the data cannot carry a verdict (e.g. a model at chance)

    def __post_init__(self) -> None:
        if self.over not in OVER:
            raise ValueError(f"Estimate.over={self.over!r} is not one of {', '.join(OVER)}")

    @property
    def has_interval(self) -> bool:
        return math.isfinite(self.lo) and math.isfinite(self.hi)

    def with_note(self, note: str, interpretable: bool | None = None) -> Estimate:
        return replace(self, note=note, interpretable=self.interpretable if interpretable is None else interpretable)

    def scaled(self, factor: float) -> Estimate:
        """The same estimate in other units (e.g. a fraction as a percentage)."""
        lo, hi = sorted((self.lo * factor, self.hi * factor))
        return replace(self, value=self.value * factor, lo=lo, hi=hi)

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Estimate:
        def num(key: str) -> float:
            v = doc.get(key)
            if v is None:
                return math.nan
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"estimate field {key!r} must be a number or null, got {v!r}")
            return float(v)

        unknown = set(doc) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise ValueError(f"estimate has unknown field {sorted(unknown)[0]!r}")
        for key in ("value", "n", "over", "method"):
            if key not in doc:
                raise ValueError(f"estimate lacks field {key!r}")
        return cls(value=num("value"), lo=num("lo"), hi=num("hi"), n=int(doc["n"]), over=str(doc["over"]),
                   method=str(doc["method"]), level=float(doc.get("level", LEVEL)), note=str(doc.get("note", "")),
                   interpretable=bool(doc.get("interpretable", True)))

    def text(self, digits: int = 3, unit: str = "") -> str:
        """'0.912 [0.880, 0.940] (1000 images)' -- the form every page and note uses."""
        u = f" {unit}" if unit else ""
        if not math.isfinite(self.value):
            return "n/a"
        if self.method == "exact":
            return f"{self.value:.{digits}f}{u} (exact)"
        if not self.has_interval:
            return f"{self.value:.{digits}f}{u} (no interval, n = {self.n} {self.over})"
        return f"{self.value:.{digits}f}{u} [{self.lo:.{digits}f}, {self.hi:.{digits}f}] ({self.n} {self.over})"


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level {level!r} must be in (0, 1)")


def exact(value: float, note: str = "") -> Estimate:
    """A deterministic quantity: no sampling, so the interval is the value itself."""
    v = float(value)
    return Estimate(v, v, v, 1, "exact", "exact", note=note)


def t_interval(values: Sequence[float], level: float = LEVEL, over: str = "seeds", note: str = "") -> Estimate:
    """Mean of the finite ``values`` with a Student-t interval (NaN bounds below 2 values; a zero
    spread gives a zero-width interval)."""
    _check_level(level)
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if v.size == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, over, "t", level, note)
    m = float(v.mean())
    if v.size < 2:
        return Estimate(m, math.nan, math.nan, 1, over, "t", level, note)
    sd = float(v.std(ddof=1))
    if sd == 0.0:
        return Estimate(m, m, m, int(v.size), over, "t", level, note)
    half = float(_sp.t.ppf(0.5 + level / 2, v.size - 1)) * sd / math.sqrt(v.size)
    return Estimate(m, m - half, m + half, int(v.size), over, "t", level, note)


def percentile_bounds(samples: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The (1 - level)/2 and (1 + level)/2 percentiles of the finite samples (NaN if none)."""
    _check_level(level)
    s = np.asarray(samples, dtype=float)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return math.nan, math.nan
    lo, hi = np.percentile(s, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def bootstrap_samples(statistic: Callable[..., np.ndarray], columns: Sequence[np.ndarray], n_boot: int,
                      seed: int) -> np.ndarray:
    """``statistic`` on ``n_boot`` resamples of the rows (items) of ``columns``.

    ``statistic`` is vectorised: it receives each column indexed to shape (B, n) (one resample per
    row) and returns B values. Every column is resampled with the same indices (paired).
    """
    cols = [np.asarray(c) for c in columns]
    n = len(cols[0])
    if any(len(c) != n for c in cols):
        raise ValueError(f"bootstrap columns differ in length: {[len(c) for c in cols]}")
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    return np.asarray(statistic(*[c[idx] for c in cols]), dtype=float)


def bootstrap_interval(statistic: Callable[..., np.ndarray], columns: Sequence[np.ndarray], n_boot: int = 2000,
                       level: float = LEVEL, seed: int = 0, over: str = "images", note: str = "") -> Estimate:
    """Point value of ``statistic`` on all items and its percentile-bootstrap interval over items."""
    _check_level(level)
    cols = [np.asarray(c) for c in columns]
    n = len(cols[0]) if cols else 0
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, over, "bootstrap", level, note)
    value = float(np.asarray(statistic(*[c[None, :] for c in cols]), dtype=float)[0])
    if n_boot <= 0 or n < 2:
        return Estimate(value, math.nan, math.nan, n, over, "bootstrap", level, note)
    lo, hi = percentile_bounds(bootstrap_samples(statistic, cols, n_boot, seed), level)
    return Estimate(value, lo, hi, n, over, "bootstrap", level, note)


def mean_of(x: np.ndarray) -> np.ndarray:
    """Vectorised statistic: the mean of each resample (for :func:`bootstrap_interval`)."""
    return np.asarray(x, dtype=float).mean(axis=-1)


def mean_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Vectorised statistic: mean(a) - mean(b) per resample (paired items)."""
    return np.asarray(a, dtype=float).mean(axis=-1) - np.asarray(b, dtype=float).mean(axis=-1)


def mean_ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Vectorised statistic: mean(a) / mean(b) per resample (NaN where mean(b) is 0)."""
    num = np.asarray(a, dtype=float).mean(axis=-1)
    den = np.asarray(b, dtype=float).mean(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def pearson_r(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Vectorised statistic: Pearson r per resample (NaN where either variable is constant)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    xc = x - x.mean(axis=-1, keepdims=True)
    yc = y - y.mean(axis=-1, keepdims=True)
    den = np.sqrt((xc * xc).sum(axis=-1) * (yc * yc).sum(axis=-1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, np.clip((xc * yc).sum(axis=-1) / np.where(den > 0, den, 1.0), -1.0, 1.0), np.nan)


def proportion_interval(successes: int, n: int, level: float = LEVEL, note: str = "") -> Estimate:
    """A proportion k / n over ``n`` items with the Wilson score interval."""
    _check_level(level)
    if n <= 0:
        return Estimate(math.nan, math.nan, math.nan, 0, "images", "wilson", level, note)
    if not 0 <= successes <= n:
        raise ValueError(f"successes={successes} must be in 0..{n}")
    p = successes / n
    z = float(_sp.norm.ppf(0.5 + level / 2))
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return Estimate(p, max(0.0, centre - half), min(1.0, centre + half), n, "images", "wilson", level, note)


def lower_bound(estimate_fn: Callable[[float], Estimate], alpha: float = 0.05) -> float:
    """One-sided ``1 - alpha`` lower bound: the lower end of the two-sided ``1 - 2 alpha`` interval."""
    if not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha={alpha!r} must be in (0, 0.5)")
    return estimate_fn(1.0 - 2.0 * alpha).lo


def seeds_with_run(seeds: Estimate, run: Estimate | None) -> Estimate:
    """The estimate a verdict uses when a seed study ran: the mean over seeds, its interval widened to
    cover this run's own interval. A t-interval over seeds holds the variation between models, not the
    sampling of images or graphs inside a run; a quantity that does not vary with the model seed (the
    concurrency study draws its graphs from its own seed) has a zero-width interval over seeds. So the
    study may widen the uncertainty one run shows, never narrow it: with it a verdict can only move
    towards inconclusive."""
    if run is None or not run.has_interval or not seeds.has_interval:
        return seeds
    lo, hi = min(seeds.lo, run.lo), max(seeds.hi, run.hi)
    if (lo, hi) == (seeds.lo, seeds.hi) and run.interpretable:
        return seeds
    return replace(seeds, lo=lo, hi=hi, interpretable=seeds.interpretable and run.interpretable,
                   note=f"{seeds.note}; interval widened to this run's [{run.lo:.4g}, {run.hi:.4g}]")


def above_chance(successes: int, n: int, chance: float, alpha: float = 0.05) -> bool:
    """Whether a top-1 accuracy of k / n is above ``chance`` by a one-sided Wilson bound at 1 - alpha."""
    if n <= 0:
        return False
    return lower_bound(lambda lv: proportion_interval(successes, n, lv), alpha) > chance
