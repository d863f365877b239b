"""mean Accuracy Expectation (MEEdge section 4.1) and the exit-time model it is computed on.

Exit-time model (the paper gives the metric, not the timing; this is the model every number here
uses). One device runs the multi-exit network sequentially on one input:

* the backbone reaches exit ``e`` (after block stage ``e``) at ``backbone_time[e]`` seconds when no
  branch has run yet; the original head finishes at ``final_time``;
* a placed branch runs when the backbone reaches its exit, *blocking* the backbone for its own
  latency, so it delays every later exit (and the final head) by that latency; several branches on
  one exit run fastest first;
* so the branch placed k-th in run order finishes at ``backbone_time[e_k] + sum(latency_1..k)`` and
  the final head at ``final_time + sum(all placed latencies)``.

Anytime inference: the inference is pre-empted at a time drawn uniformly from ``[0, T]`` (T the
horizon, e.g. the latency budget) and returns the *last* exit finished by then (accuracy 0 before
the first), so ``mAE = (1/T) * sum_i a_i * (min(t_{i+1}, T) - t_i)`` over exits with ``t_i < T``
(``t_{k+1} = T``). ``return_best=True`` instead returns the best exit so far (a device that keeps
the most accurate answer). The weighted version replaces ``dt / T`` by ``dF(t) / F(T)`` for a
pre-emption-time CDF ``F``. Finite-time inference: the deadline ``D`` is known, the answer is the
last exit finished by ``D``.

All functions are pure and unit-free (seconds in, seconds out).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np


def exit_finish_times(
    exits: Sequence[int],
    latencies: Sequence[float],
    backbone_time: Mapping[int, float],
    final_time: float,
) -> tuple[list[int], list[float], float]:
    """Run order of the placed branches, their finish times, and the final head's finish time.

    ``exits[k]``/``latencies[k]`` describe placed branch k; returns ``(order, times, t_final)`` where
    ``order`` lists branch positions in run order (exit, then latency, then position).
    """
    order = sorted(range(len(exits)), key=lambda k: (exits[k], latencies[k], k))
    delay = 0.0
    times = []
    for k in order:
        delay += latencies[k]
        times.append(backbone_time[exits[k]] + delay)
    return order, times, final_time + delay


def mae_anytime(times: Sequence[float], accs: Sequence[float], horizon: float, return_best: bool = False) -> float:
    """mAE of exits finishing at ``times`` (ascending) with accuracies ``accs``, pre-empted
    uniformly on ``[0, horizon]``."""
    return mae_weighted(times, accs, horizon, cdf=None, return_best=return_best)


def mae_weighted(
    times: Sequence[float],
    accs: Sequence[float],
    horizon: float,
    cdf: Callable[[float], float] | None = None,
    return_best: bool = False,
) -> float:
    """Accuracy expectation for a pre-emption time with CDF ``cdf`` truncated to ``[0, horizon]``.

    ``cdf=None`` is the uniform case (the paper's mAE). ``times`` must be non-decreasing.
    """
    if not horizon > 0 or not math.isfinite(horizon):
        raise ValueError(f"horizon T={horizon!r} must be a finite number > 0")
    if len(times) != len(accs):
        raise ValueError(f"{len(times)} exit times but {len(accs)} accuracies")
    F = (lambda t: t) if cdf is None else cdf
    f0 = F(0.0)
    total = F(horizon) - f0
    if not total > 0:
        raise ValueError(f"the pre-emption CDF puts no mass on [0, {horizon}]")
    acc_sum = 0.0
    shown = 0.0
    prev_t = -math.inf
    n = len(times)
    for i in range(n):
        t = times[i]
        if t < prev_t:
            raise ValueError(f"exit times must be non-decreasing, got {times[i - 1]} then {t}")
        prev_t = t
        if t >= horizon:
            break
        shown = max(shown, accs[i]) if return_best else accs[i]
        t_next = times[i + 1] if i + 1 < n else horizon
        t_end = min(t_next, horizon)
        if t_end > t:
            acc_sum += shown * (F(t_end) - F(t))
    return acc_sum / total


def shown_weights(times: Sequence[float], accs: Sequence[float], horizon: float,
                  cdf: Callable[[float], float] | None = None, return_best: bool = False) -> np.ndarray:
    """How much of the pre-emption distribution each exit's answer is shown for: ``w[i]`` is the
    probability that exit i (``times`` ascending) is the answer when the inference is pre-empted.

    ``mae_weighted(times, accs, ...) == w @ accs``. Since the weights fix *which* exit answers when,
    the same weights score any other accuracies of those exits (another split, one image's 0/1
    correctness): the mAE of a fixed placement is linear in its exits' accuracies. ``accs`` only
    matter with ``return_best`` (the answer is the most accurate exit so far; ties keep the earlier).
    """
    if not horizon > 0 or not math.isfinite(horizon):
        raise ValueError(f"horizon T={horizon!r} must be a finite number > 0")
    if len(times) != len(accs):
        raise ValueError(f"{len(times)} exit times but {len(accs)} accuracies")
    F = (lambda t: t) if cdf is None else cdf
    total = F(horizon) - F(0.0)
    if not total > 0:
        raise ValueError(f"the pre-emption CDF puts no mass on [0, {horizon}]")
    w = np.zeros(len(times))
    shown, shown_acc = -1, 0.0
    for i, t in enumerate(times):
        if i and t < times[i - 1]:
            raise ValueError(f"exit times must be non-decreasing, got {times[i - 1]} then {t}")
        if t >= horizon:
            break
        if not return_best or accs[i] > shown_acc:
            shown, shown_acc = i, accs[i]
        t_end = min(times[i + 1] if i + 1 < len(times) else horizon, horizon)
        if t_end > t and shown >= 0:
            w[shown] += (F(t_end) - F(t)) / total
    return w


def shown_at(times: Sequence[float], accs: Sequence[float], deadline: float, return_best: bool = False) -> int:
    """Finite-time inference: the index of the exit that answers at ``deadline`` (-1: none finished)."""
    shown, shown_acc = -1, 0.0
    for i, (t, a) in enumerate(zip(times, accs)):
        if t > deadline:
            break
        if not return_best or a > shown_acc:
            shown, shown_acc = i, a
    return shown


def accuracy_at(times: Sequence[float], accs: Sequence[float], deadline: float, return_best: bool = False) -> float:
    """Finite-time inference: the accuracy of the last exit finished by ``deadline`` (0 if none)."""
    out = 0.0
    for t, a in zip(times, accs):
        if t > deadline:
            break
        out = max(out, a) if return_best else a
    return out


def step_profile(times: Sequence[float], accs: Sequence[float], horizon: float,
                 return_best: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(t, accuracy) of the finite-time step curve on ``[0, horizon]`` for plotting (Fig. 7(1))."""
    ts, ys = [0.0], [0.0]
    shown = 0.0
    for t, a in zip(times, accs):
        if t > horizon:
            break
        shown = max(shown, a) if return_best else a
        ts += [t, t]
        ys += [ys[-1], shown]
    ts.append(horizon)
    ys.append(ys[-1])
    return np.asarray(ts), np.asarray(ys)


def truncated_exponential_cdf(scale: float) -> Callable[[float], float]:
    """CDF of an exponential pre-emption time (early pre-emption more likely), via scipy.stats."""
    from scipy import stats

    if not scale > 0:
        raise ValueError(f"exponential scale={scale!r} must be > 0")
    dist = stats.expon(scale=scale)
    return lambda t: float(dist.cdf(t))
