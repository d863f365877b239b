"""Correlation of merged-model accuracy with candidate predictors, with intervals over pairs AND images.

Definitions used throughout (stated once here, referred to by the report):

* ``S``      = CKA between detector stage ``i`` and classifier stage ``j`` under the merge's input
               protocol (``cka["cross_stage"][i][j]``; the diagonal is the same-stage CKA).
* ``params`` = ``params_offloaded``: parameters of the classifier layers that the merged model no
               longer needs because the detector's representation is shared (the paper's #Params).
* ``size``   = number of elements of the shared representation (the paper's "Size").
* ``flops``  = ``flops_offloaded``: FLOPs of the classifier layers replaced by the shared detector
               layers, i.e. the computation the merged model saves (the paper's FLOPs).
* ``agree``  = fraction of report images on which the merge predicts the unmerged classifier's class
               (label-free); ``S_x_agree`` = max(S, 0) x agree.
* kinds: ``same`` = pairs with i == j, ``cross`` = pairs with i != j, ``all`` = every pair pooled.

A merge's accuracy is a mean over report images, so an interval of r must carry both sources of
noise: each bootstrap replicate resamples the images (one resample for every merge: they were scored
on the same images) and, independently, the pairs (:func:`two_way_samples`). The per-image top-1 hits
come from ``evaluate_merged`` (``correct.npy``). CKA S is taken as fixed (its own sampling over
images is not resampled). Statistics and percentile bounds are those of :mod:`repshare.stats`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sp

from repshare.stats import bootstrap_samples, pearson_r, percentile_bounds

METRICS: tuple[str, ...] = ("S", "params", "size", "flops")
MERGE_METRICS: tuple[str, ...] = ("S", "agree", "S_x_agree", "params", "size", "flops")
KINDS: tuple[str, ...] = ("same", "cross", "all")


def _num(v: Any) -> float:
    """A JSON value as float; None/missing -> nan."""
    try:
        return float(v) if v is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def merge_table(merges: dict, cka_by_protocol: dict[str, dict]) -> pd.DataFrame:
    """One row per (protocol, adapter, i, j) of ``merges.json`` with S from that protocol's CKA.

    ``acc`` is each merge's top-1 on all the report images it was scored on (``n``: every
    ``sharing.n_eval`` image for the paper's setting, the first ``n_variants`` for the others);
    ``acc_common`` is on the first ``n_variants`` images, which every merge shares (paired comparisons
    of adapters). ``row`` is the merge's row in ``correct.npy``.
    """
    if not merges.get("merges"):
        raise ValueError("merges.json has no 'merges' list (or it is empty)")
    rows = []
    for k, m in enumerate(merges["merges"]):
        p = m["protocol"]
        if p not in cka_by_protocol:
            raise ValueError(f"merge of protocol {p!r} but no CKA for that protocol (results/cka/{p}/cka.json)")
        S = np.asarray(cka_by_protocol[p]["cross_stage"], dtype=float)
        i, j = int(m["i"]), int(m["j"])
        if not (0 <= i < S.shape[0] and 0 <= j < S.shape[1]):
            raise ValueError(f"merge (i={i}, j={j}) lies outside the {p} CKA matrix of shape {S.shape}")
        s, agree = float(S[i, j]), _num(m.get("agree"))
        rows.append({
            "protocol": p, "adapter": m["adapter"], "i": i, "j": j, "kind": "same" if i == j else "cross",
            "row": k, "acc": _num(m["acc"]), "n": int(m["n"]), "acc_common": _num(m.get("acc_variants")),
            "n_common": int(m.get("n_variants") or m["n"]), "acc_top5": _num(m.get("acc_top5")), "S": s,
            "agree": agree, "S_x_agree": max(s, 0.0) * agree, "params": _num(m.get("params_offloaded")),
            "bytes_offloaded": _num(m["bytes_offloaded"]), "bytes_saved": _num(m["bytes_saved"]),
            "adapter_bytes": _num(m["adapter_bytes"]), "size": _num(m.get("size")),
            "flops": _num(m.get("flops_offloaded")), "flops_shared": _num(m.get("flops_shared")),
            "adapter_flops": _num(m.get("adapter_flops")), "labels_used": bool(m.get("labels_used")),
            "fit_flops": _num(m.get("fit_flops")), "fit_images": int(m.get("fit_images") or 0),
        })
    return pd.DataFrame(rows).sort_values(["protocol", "adapter", "i", "j"], kind="stable").reset_index(drop=True)


def select_kind(df: pd.DataFrame, kind: str) -> pd.DataFrame:
    if kind == "all":
        return df
    if kind not in ("same", "cross"):
        raise ValueError(f"kind={kind!r} must be one of same, cross, all")
    return df[df["kind"] == kind]


# --------------------------------------------------------------------------- resampling
@dataclass
class Resampled:
    """Accuracies of a set of merges and their image-bootstrap replicates (one row per replicate)."""

    acc: np.ndarray  # (P,) top-1 of each merge on all its images
    boot: np.ndarray  # (B, P) top-1 of each merge on each resample of the images (the same resample for all)
    n_images: int


def resample_images(hits: np.ndarray, n_boot: int, seed: int) -> Resampled:
    """``hits``: (P, N) top-1 hits (0/1) of P merges on the same N images."""
    hits = np.asarray(hits, dtype=float)
    if hits.ndim != 2 or hits.shape[1] == 0:
        raise ValueError(f"per-image hits must be a (merges, images) matrix, got shape {hits.shape}")
    if ((hits != 0) & (hits != 1)).any():
        raise ValueError("per-image hits must be 0 or 1 (a merge was not scored on every image of its cell)")
    n = hits.shape[1]

    def accuracies(idx: np.ndarray) -> np.ndarray:  # idx (B, N) image indices -> (B, P) accuracies
        b = idx.shape[0]  # how often each image is drawn in each resample, then one product for every merge
        counts = np.bincount((np.arange(b)[:, None] * n + idx).ravel(), minlength=b * n).reshape(b, n)
        return counts @ hits.T / n

    boot = bootstrap_samples(accuracies, [np.arange(n)], n_boot, seed) if n_boot > 0 else np.zeros((0, len(hits)))
    return Resampled(hits.mean(axis=1), boot, n)


def two_way_samples(statistic: Callable[..., np.ndarray], res: Resampled, pos: np.ndarray,
                    columns: Sequence[np.ndarray], seed: int) -> tuple[float, np.ndarray]:
    """(point value, bootstrap replicates) of ``statistic(acc, *columns)`` over pairs and images.

    ``pos``: each pair's position in ``res``; ``columns``: per-pair values (S, #Params, ...). Replicate
    b takes the image resample b of ``res`` and its own resample of the pairs (paired across columns).
    """
    pos = np.asarray(pos)
    point = float(np.asarray(statistic(res.acc[pos][None], *[np.asarray(c)[None] for c in columns]))[0])
    n_boot = res.boot.shape[0]
    if n_boot == 0 or len(pos) < 2:
        return point, np.zeros(0)

    def stat(pb: np.ndarray, *cols: np.ndarray) -> np.ndarray:
        return statistic(np.take_along_axis(res.boot, pb, axis=1), *cols)

    return point, bootstrap_samples(stat, [pos, *columns], n_boot, seed)


def abs_r(acc: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Vectorised |Pearson r| of accuracy with a predictor (NaN where either is constant)."""
    return np.abs(pearson_r(x, acc))


def abs_r_gap(acc: np.ndarray, s: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Vectorised |r(acc, S)| - |r(acc, X)| on the same resampled pairs."""
    return np.abs(pearson_r(s, acc)) - np.abs(pearson_r(x, acc))


# --------------------------------------------------------------------------- tables of r
def _nan_result(n: int, reason: str) -> dict[str, Any]:
    nan = math.nan
    return {"r": nan, "abs_r": nan, "rho": nan, "ci_low": nan, "ci_high": nan, "n": n, "reason": reason}


def correlate(x: np.ndarray, res: Resampled, pos: np.ndarray, level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Pearson r of accuracy with ``x`` (+ Spearman rho) and its two-way bootstrap percentile interval.

    Pairs with a non-finite ``x`` are dropped; fewer than 3 pairs or a constant input gives NaN
    values with ``reason`` set instead of raising.
    """
    x, pos = np.asarray(x, dtype=float), np.asarray(pos)
    keep = np.isfinite(x)
    x, pos = x[keep], pos[keep]
    acc = res.acc[pos]
    n = int(x.size)
    if n < 3:
        return _nan_result(n, f"need at least 3 pairs, got {n}")
    if np.ptp(x) == 0 or np.ptp(acc) == 0:
        return _nan_result(n, f"{'the predictor' if np.ptp(x) == 0 else 'accuracy'} is constant (r undefined)")
    r, samples = two_way_samples(lambda a, xb: pearson_r(xb, a), res, pos, [x], seed)
    lo, hi = percentile_bounds(samples, level) if samples.size else (math.nan, math.nan)
    return {"r": r, "abs_r": abs(r), "rho": float(sp.spearmanr(x, acc).statistic), "ci_low": lo, "ci_high": hi,
            "n": n, "reason": ""}


def correlation_table(df: pd.DataFrame, res: Resampled, metrics: Sequence[str] = METRICS,
                      kinds: Sequence[str] = KINDS, level: float = 0.95, seed: int = 0) -> list[dict[str, Any]]:
    """``correlate`` for every (metric, kind) of one cell; ``df`` rows sit at ``df['pos']`` in ``res``."""
    rows = []
    for metric in metrics:
        if metric not in df.columns:
            raise ValueError(f"metric {metric!r} is not a column of the merge table ({', '.join(df.columns)})")
        for kind in kinds:
            sub = select_kind(df, kind)
            rows.append({"metric": metric, "kind": kind, "target": "acc",
                         **correlate(sub[metric].to_numpy(float), res, sub["pos"].to_numpy(), level, seed)})
    return rows


def cell_resample(cell: pd.DataFrame, hits: np.ndarray, n_boot: int, seed: int) -> tuple[pd.DataFrame, Resampled]:
    """One (protocol, adapter) cell: its rows with positions, and its merges' image-resampled accuracies."""
    n = int(cell["n"].iloc[0])
    if (cell["n"] != n).any():
        raise ValueError("merges of one (protocol, adapter) cell were scored on different numbers of images")
    cell = cell.assign(pos=np.arange(len(cell)))
    res = resample_images(hits[cell["row"].to_numpy(), :n], n_boot, seed)
    if not np.allclose(res.acc, cell["acc"].to_numpy(float)):
        raise ValueError("correct.npy does not match merges.json (per-image hits vs accuracies): rerun evaluate_merged")
    return cell, res


def merge_correlations(df: pd.DataFrame, hits: np.ndarray, metrics: Sequence[str] = MERGE_METRICS,
                       kinds: Sequence[str] = KINDS, n_boot: int = 2000, level: float = 0.95,
                       seed: int = 0) -> list[dict[str, Any]]:
    """correlation_table per (protocol, adapter), rows tagged with both (image seed ``seed + 1``)."""
    out = []
    for (protocol, adapter), cell in df.groupby(["protocol", "adapter"], sort=False):
        cell, res = cell_resample(cell, hits, n_boot, seed + 1)
        for row in correlation_table(cell, res, metrics, kinds, level, seed):
            out.append({"protocol": protocol, "adapter": adapter, **row})
    return out


def find_row(rows: Sequence[dict], metric: str, kind: str) -> dict[str, Any] | None:
    for r in rows:
        if r["metric"] == metric and r["kind"] == kind:
            return r
    return None


def find_merge_row(rows: Sequence[dict], protocol: str, adapter: str, metric: str, kind: str) -> dict[str, Any] | None:
    for r in rows:
        if (r["protocol"], r["adapter"], r["metric"], r["kind"]) == (protocol, adapter, metric, kind):
            return r
    return None


# --------------------------------------------------------------------------- S' (the paper's threshold)
def hinge_grid(s: np.ndarray, points: int = 201) -> np.ndarray:
    """Candidate breakpoints: evenly spaced over the observed range of S."""
    s = np.asarray(s, dtype=float)
    return np.linspace(float(s.min()), float(s.max()), points)


def hinge_fit(acc: np.ndarray, s: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares hinge ``acc = a + b max(0, S - S')`` (b >= 0) per row; (S', a, b), each (B,).

    The paper's S': accuracy flat (and low) below it, linear in S above it. For each candidate S' of
    ``grid`` the best (a, b) is the closed-form regression on max(0, S - S') (b clipped at 0: a falling
    line is no threshold); S' is the candidate of least squared error (the lowest on ties, so data that
    are linear throughout give the lowest candidate: no threshold inside the data).
    """
    acc, s = np.atleast_2d(np.asarray(acc, dtype=float)), np.atleast_2d(np.asarray(s, dtype=float))
    h = np.maximum(0.0, s[:, None, :] - grid[None, :, None])  # (B, G, k)
    hm = h.mean(-1, keepdims=True)
    am = acc.mean(-1)[:, None, None]
    hc, ac = h - hm, acc[:, None, :] - am
    var, cov = (hc * hc).sum(-1), (hc * ac).sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        b = np.clip(np.where(var > 1e-15, cov / np.where(var > 1e-15, var, 1.0), 0.0), 0.0, None)
    sse = ((ac - b[..., None] * hc) ** 2).sum(-1)
    g = np.argmin(sse, axis=1)
    rows = np.arange(len(g))
    b_best = b[rows, g]
    return grid[g], am[:, 0, 0] - b_best * hm[rows, g, 0], b_best
