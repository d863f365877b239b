"""Correlation of merged-model accuracy with candidate predictors (pure numpy/scipy/pandas).

Definitions used throughout (stated once here, referred to by the report):

* ``S``      = linear CKA between detector stage ``i`` and classifier stage ``j``
               (``cka["cross_stage"][i][j]``; the diagonal is the same-stage CKA).
* ``params`` = ``params_offloaded``: parameters of the classifier layers that the merged model no
               longer needs because the detector's representation is shared (the paper's #Params).
* ``size``   = ``size``: number of elements of the shared representation (the paper's "Size").
* ``flops``  = ``flops_offloaded``: FLOPs of the classifier layers replaced by the shared detector
               layers, i.e. the computation the merged model saves (the paper's FLOPs).
* kinds: ``same`` = pairs with i == j, ``cross`` = pairs with i != j, ``all`` = every pair pooled.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

METRICS: tuple[str, ...] = ("S", "params", "size", "flops")
KINDS: tuple[str, ...] = ("same", "cross", "all")
COLUMNS: tuple[str, ...] = (
    "i", "j", "kind", "acc", "acc_top5", "S", "params", "bytes", "size", "flops", "flops_shared",
    "memory_saved_frac",
)


def _num(v: Any) -> float:
    """A JSON value as float; None/missing -> nan."""
    try:
        return float(v) if v is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def pair_table(cka: dict, pairs: dict) -> pd.DataFrame:
    """One row per merged (detector stage i, classifier stage j) pair, with S = cross_stage[i][j].

    Raises ValueError naming the pair when (i, j) falls outside the CKA matrix or a pair has no acc.
    """
    if "cross_stage" not in cka:
        raise ValueError("cka.json has no 'cross_stage' matrix")
    if "pairs" not in pairs or not pairs["pairs"]:
        raise ValueError("pairs.json has no 'pairs' list (or it is empty)")
    S = np.asarray(cka["cross_stage"], dtype=float)
    if S.ndim != 2:
        raise ValueError(f"cka cross_stage must be a 2-D matrix, got shape {S.shape}")
    rows = []
    for p in pairs["pairs"]:
        i, j = int(p["i"]), int(p["j"])
        if not (0 <= i < S.shape[0] and 0 <= j < S.shape[1]):
            raise ValueError(f"pair (i={i}, j={j}) lies outside the CKA matrix of shape {S.shape}")
        if p.get("acc") is None:
            raise ValueError(f"pair (i={i}, j={j}) has no 'acc'")
        rows.append({
            "i": i,
            "j": j,
            "kind": p.get("kind") or ("same" if i == j else "cross"),
            "acc": _num(p["acc"]),
            "acc_top5": _num(p.get("acc_top5")),
            "S": float(S[i, j]),
            "params": _num(p.get("params_offloaded")),
            "bytes": _num(p.get("bytes_offloaded")),
            "size": _num(p.get("size")),
            "flops": _num(p.get("flops_offloaded")),
            "flops_shared": _num(p.get("flops_shared")),
            "memory_saved_frac": _num(p.get("memory_saved_frac")),
        })
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    bad = set(df["kind"]) - {"same", "cross"}
    if bad:
        raise ValueError(f"pair kind must be 'same' or 'cross', got {sorted(bad)}")
    return df.sort_values(["i", "j"], kind="stable").reset_index(drop=True)


def _nan_result(n: int, reason: str) -> dict[str, Any]:
    nan = math.nan
    return {"r": nan, "abs_r": nan, "p": nan, "rho": nan, "rho_p": nan, "ci_low": nan, "ci_high": nan,
            "n": n, "reason": reason}


def finite_pairs(x, y, x_name: str, y_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Flatten to float arrays of equal length and drop the pairs where either value is not finite."""
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"{x_name} and {y_name} differ in length: {x.size} vs {y.size}")
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def correlate(x: Sequence[float], y: Sequence[float], n_bootstrap: int = 2000, ci: float = 0.95,
              seed: int = 0) -> dict[str, Any]:
    """Pearson r (+ two-sided p), Spearman rho (+ p) and a bootstrap percentile CI of Pearson r.

    Non-finite (x, y) pairs are dropped. Fewer than 3 points or a constant input gives nan values
    with ``reason`` set instead of raising. Bootstrap resamples in which either variable is constant
    are skipped; the CI is the (1-ci)/2 and (1+ci)/2 percentiles of the remaining r values.
    """
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci={ci!r} must be in (0, 1)")
    x, y = finite_pairs(x, y, "x", "y")
    n = int(x.size)
    if n < 3:
        return _nan_result(n, f"need at least 3 finite points, got {n}")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        which = "x" if np.ptp(x) == 0 else "y"
        return _nan_result(n, f"{which} is constant (correlation undefined)")
    r, p = stats.pearsonr(x, y)
    rho, rho_p = stats.spearmanr(x, y)
    lo = hi = math.nan
    if n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, n, size=(n_bootstrap, n))
        xb, yb = x[idx], y[idx]
        xc = xb - xb.mean(axis=1, keepdims=True)
        yc = yb - yb.mean(axis=1, keepdims=True)
        den = np.sqrt((xc * xc).sum(axis=1) * (yc * yc).sum(axis=1))
        ok = den > 0
        if ok.any():
            rb = np.clip((xc * yc).sum(axis=1)[ok] / den[ok], -1.0, 1.0)
            lo, hi = (float(v) for v in np.percentile(rb, [50 * (1 - ci), 50 * (1 + ci)]))
    return {"r": float(r), "abs_r": abs(float(r)), "p": float(p), "rho": float(rho), "rho_p": float(rho_p),
            "ci_low": lo, "ci_high": hi, "n": n, "reason": ""}


def select_kind(df: pd.DataFrame, kind: str) -> pd.DataFrame:
    if kind == "all":
        return df
    if kind not in ("same", "cross"):
        raise ValueError(f"kind={kind!r} must be one of same, cross, all")
    return df[df["kind"] == kind]


def correlation_table(df: pd.DataFrame, metrics: Sequence[str] = METRICS, kinds: Sequence[str] = KINDS,
                      target: str = "acc", n_bootstrap: int = 2000, ci: float = 0.95,
                      seed: int = 0) -> list[dict[str, Any]]:
    """correlate(df[metric], df[target]) for every (metric, kind); one dict per row."""
    rows = []
    for metric in metrics:
        if metric not in df.columns:
            raise ValueError(f"metric {metric!r} is not a column of the pair table ({', '.join(df.columns)})")
        for kind in kinds:
            sub = select_kind(df, kind)
            res = correlate(sub[metric].to_numpy(), sub[target].to_numpy(), n_bootstrap, ci, seed)
            rows.append({"metric": metric, "kind": kind, "target": target, **res})
    return rows


def find_row(rows: Sequence[dict], metric: str, kind: str) -> dict[str, Any] | None:
    for r in rows:
        if r["metric"] == metric and r["kind"] == kind:
            return r
    return None


def collapse_threshold(S: Sequence[float], acc: Sequence[float], drop: float = 0.5) -> dict[str, Any]:
    """Similarity S' below which merged accuracy collapses.

    A pair is *collapsed* when ``acc < drop * max(acc)``. S' is the smallest S value such that
    every pair with ``S >= S'`` is not collapsed (scan distinct S values from the top down and stop
    at the first value held by a collapsed pair). Returned with:

    * ``acc_threshold`` = drop * max(acc); ``n_collapsed`` / ``frac_collapsed`` over all pairs;
    * ``n_below`` and ``frac_collapsed_below``: pairs with S < S' and the fraction of them collapsed
      (1.0 = a clean step; by construction no pair with S >= S' is collapsed);
    * ``s_boundary``: midpoint between S' and the highest S of a collapsed pair (nan if none).

    No collapsed pair: S' = min(S) and ``reason`` says so. Top-S pair collapsed: S' = nan.
    """
    if not 0.0 < drop <= 1.0:
        raise ValueError(f"drop={drop!r} must be in (0, 1]")
    s, a = finite_pairs(S, acc, "S", "acc")
    if s.size == 0:
        raise ValueError("collapse_threshold needs at least one finite (S, acc) pair")
    thr = drop * float(a.max())
    collapsed = a < thr
    out: dict[str, Any] = {"drop": drop, "acc_threshold": thr, "n": int(s.size),
                           "n_collapsed": int(collapsed.sum()), "frac_collapsed": float(collapsed.mean())}
    if not collapsed.any():
        return {**out, "s_prime": float(s.min()), "s_boundary": math.nan, "n_below": 0,
                "frac_collapsed_below": math.nan, "reason": "no pair collapsed"}
    s_prime = math.nan
    for v in np.unique(s)[::-1]:
        if collapsed[s == v].any():
            break
        s_prime = float(v)
    top_collapsed = float(s[collapsed].max())
    if math.isnan(s_prime):
        return {**out, "s_prime": math.nan, "s_boundary": math.nan, "n_below": int(s.size),
                "frac_collapsed_below": float(collapsed.mean()), "reason": "the most similar pair collapsed"}
    below = s < s_prime
    return {**out, "s_prime": s_prime, "s_boundary": 0.5 * (s_prime + top_collapsed),
            "n_below": int(below.sum()), "frac_collapsed_below": float(collapsed[below].mean()), "reason": ""}


# --------------------------------------------------------------------------- every adapter and protocol (issue 12)
# Label-free predictors beside CKA: ``agree`` = fraction of unlabelled val images on which the merge
# predicts the unmerged classifier's class; ``S_x_agree`` = max(S, 0) * agree.
MERGE_METRICS: tuple[str, ...] = ("S", "agree", "S_x_agree", "params", "size", "flops")


def merge_table(merges: dict, cka_by_protocol: dict[str, dict]) -> pd.DataFrame:
    """One row per (protocol, adapter, i, j) from ``merges.json`` with S from that protocol's CKA.

    ``acc``/``agree`` are taken on the images every merge was scored on (``acc_variants``), so all
    adapters and protocols compare on the same images; ``acc_full`` is each merge's own full score.
    """
    if not merges.get("merges"):
        raise ValueError("merges.json has no 'merges' list (or it is empty)")
    rows = []
    for m in merges["merges"]:
        p = m["protocol"]
        if p not in cka_by_protocol:
            raise ValueError(f"merge of protocol {p!r} but no CKA for that protocol (results/cka/{p}/cka.json)")
        S = np.asarray(cka_by_protocol[p]["cross_stage"], dtype=float)
        i, j = int(m["i"]), int(m["j"])
        if not (0 <= i < S.shape[0] and 0 <= j < S.shape[1]):
            raise ValueError(f"merge (i={i}, j={j}) lies outside the {p} CKA matrix of shape {S.shape}")
        s = float(S[i, j])
        agree = _num(m.get("agree_variants", m.get("agree")))
        rows.append({
            "protocol": p, "adapter": m["adapter"], "i": i, "j": j, "kind": m.get("kind") or ("same" if i == j else "cross"),
            "acc": _num(m.get("acc_variants", m["acc"])), "acc_full": _num(m["acc"]), "n": m.get("n_variants", m.get("n")),
            "n_full": m.get("n"), "S": s, "agree": agree, "S_x_agree": max(s, 0.0) * agree,
            "params": _num(m.get("params_offloaded")), "bytes_offloaded": _num(m["bytes_offloaded"]),
            "bytes_saved": _num(m["bytes_saved"]), "adapter_bytes": _num(m["adapter_bytes"]),
            "size": _num(m.get("size")), "flops": _num(m.get("flops_offloaded")),
            "flops_shared": _num(m.get("flops_shared")), "adapter_flops": _num(m.get("adapter_flops")),
            "labels_used": bool(m.get("labels_used")), "fit_seconds": _num(m.get("fit_seconds")),
            "fit_images": m.get("fit_images"),
        })
    return pd.DataFrame(rows).sort_values(["protocol", "adapter", "i", "j"], kind="stable").reset_index(drop=True)


def merge_correlations(df: pd.DataFrame, metrics: Sequence[str] = MERGE_METRICS, kinds: Sequence[str] = KINDS,
                       n_bootstrap: int = 2000, ci: float = 0.95, seed: int = 0) -> list[dict[str, Any]]:
    """correlation_table per (protocol, adapter), rows tagged with both."""
    out = []
    for (protocol, adapter), sub in df.groupby(["protocol", "adapter"], sort=False):
        for row in correlation_table(sub, metrics, kinds, "acc", n_bootstrap, ci, seed):
            out.append({"protocol": protocol, "adapter": adapter, **row})
    return out


def find_merge_row(rows: Sequence[dict], protocol: str, adapter: str, metric: str, kind: str) -> dict[str, Any] | None:
    for r in rows:
        if (r["protocol"], r["adapter"], r["metric"], r["kind"]) == (protocol, adapter, metric, kind):
            return r
    return None
