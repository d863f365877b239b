"""Choosing the sharing point (pair and adapter) under a memory budget from label-free signals.

A *candidate* is one merge (adapter, detector stage i, classifier stage j) with the bytes it frees
on the device (the classifier's off-loaded stages minus the adapter's own parameters) and its
predictor values. ``choose`` keeps the candidates that free at least the budget and takes the one
with the best predictor value; it reads only ``bytes_saved``, the predictor column and (with an
accuracy floor) ``agree``, never ``acc``. Ties (a predictor such as #params or CKA gives every
adapter of a pair the same value) are scored as a uniform random pick among the tied candidates:
their mean true accuracy. ``budget_sweep`` compares each predictor's choice with the oracle (the
feasible candidate of highest true accuracy, which needs labels): regret = oracle - chosen.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

# predictor -> direction (+1: higher predicts higher accuracy, -1: lower does)
PREDICTORS: dict[str, int] = {
    "cka": +1,  # linear CKA of the pair under the protocol
    "agreement": +1,  # fraction of unlabelled images where the merge predicts the unmerged class
    "cka_x_agreement": +1,  # product of the two (label-free combination)
    "params": -1,  # fewer off-loaded classifier parameters = shallower cut
    "size": +1,  # larger shared representation
    "flops": -1,  # fewer off-loaded FLOPs
}
LABEL_FREE_PREDICTORS = tuple(PREDICTORS)  # none of them reads a label of the evaluated task


def check_budget(budget: float, classifier_bytes: float) -> float:
    if not isinstance(budget, (int, float)) or isinstance(budget, bool) or not math.isfinite(budget):
        raise ValueError(f"memory budget {budget!r} must be a finite number of bytes")
    if budget < 0:
        raise ValueError(f"memory budget {budget!r} bytes is negative")
    if budget > classifier_bytes:
        raise ValueError(f"memory budget {budget!r} bytes exceeds the classifier's {classifier_bytes} bytes")
    return float(budget)


def predictor_value(c: Mapping[str, Any], predictor: str) -> float:
    if predictor not in PREDICTORS:
        raise ValueError(f"unknown predictor {predictor!r}: expected one of {', '.join(PREDICTORS)}")
    if predictor == "cka_x_agreement":
        return max(float(c["cka"]), 0.0) * float(c["agreement"])
    return float(c[predictor])


def choose(candidates: Sequence[Mapping[str, Any]], budget: float, predictor: str,
           floor: float | None = None) -> list[Mapping[str, Any]]:
    """The candidates (ties included) a predictor picks under ``budget`` bytes; [] when none is feasible.

    ``floor``: the minimum *predicted* relative accuracy, i.e. agreement with the unmerged
    classifier (label-free); candidates below it are not eligible.
    """
    sign = PREDICTORS.get(predictor)
    if sign is None:
        raise ValueError(f"unknown predictor {predictor!r}: expected one of {', '.join(PREDICTORS)}")
    if floor is not None and not 0.0 <= floor <= 1.0:
        raise ValueError(f"accuracy floor {floor!r} must be in [0, 1]")
    ok = [c for c in candidates if float(c["bytes_saved"]) >= budget
          and (floor is None or float(c["agreement"]) >= floor)]
    scored = [(sign * predictor_value(c, predictor), c) for c in ok]
    scored = [(v, c) for v, c in scored if math.isfinite(v)]
    if not scored:
        return []
    best = max(v for v, _ in scored)
    return [c for v, c in scored if v == best]


def oracle(candidates: Sequence[Mapping[str, Any]], budget: float) -> Mapping[str, Any] | None:
    """The feasible candidate of highest true accuracy (uses labels: the reference, never a choice)."""
    ok = [c for c in candidates if float(c["bytes_saved"]) >= budget]
    return max(ok, key=lambda c: float(c["acc"])) if ok else None


def budget_sweep(candidates: Sequence[Mapping[str, Any]], budgets: Sequence[float], classifier_bytes: float,
                 predictors: Sequence[str] = tuple(PREDICTORS), floor: float | None = None) -> list[dict[str, Any]]:
    """One row per (budget, predictor): the choice, its true accuracy, the oracle's, the regret."""
    if not candidates:
        raise ValueError("budget search needs at least one candidate merge")
    for p in predictors:
        if p not in PREDICTORS:
            raise ValueError(f"unknown predictor {p!r}: expected one of {', '.join(PREDICTORS)}")
    rows = []
    for b in budgets:
        b = check_budget(b, classifier_bytes)
        best = oracle(candidates, b)
        for p in predictors:
            picked = choose(candidates, b, p, floor)
            row: dict[str, Any] = {"budget_bytes": b, "budget_frac": b / classifier_bytes, "predictor": p,
                                   "feasible": bool(picked) and best is not None, "n_tied": len(picked)}
            if picked and best is not None:
                acc = sum(float(c["acc"]) for c in picked) / len(picked)
                first = picked[0]
                row.update(chosen=[_name(c) for c in picked][:5], chosen_acc=acc,
                           chosen_bytes=sum(float(c["bytes_saved"]) for c in picked) / len(picked),
                           adapter=first.get("adapter"), i=first.get("i"), j=first.get("j"),
                           oracle=_name(best), oracle_acc=float(best["acc"]), regret=float(best["acc"]) - acc)
            else:
                row.update(chosen=[], chosen_acc=math.nan, chosen_bytes=math.nan, adapter=None, i=None, j=None,
                           oracle=None if best is None else _name(best),
                           oracle_acc=math.nan if best is None else float(best["acc"]), regret=math.nan)
            rows.append(row)
    return rows


def regret_table(sweep: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Mean and max regret per predictor over the budgets where it found a feasible choice."""
    out = []
    for p in dict.fromkeys(r["predictor"] for r in sweep):
        rs = [r for r in sweep if r["predictor"] == p and r["feasible"]]
        reg = [float(r["regret"]) for r in rs]
        out.append({"predictor": p, "budgets": len(rs),
                    "mean_regret": sum(reg) / len(reg) if reg else math.nan,
                    "max_regret": max(reg) if reg else math.nan,
                    "mean_chosen_acc": sum(float(r["chosen_acc"]) for r in rs) / len(rs) if rs else math.nan,
                    "mean_oracle_acc": sum(float(r["oracle_acc"]) for r in rs) / len(rs) if rs else math.nan})
    return out


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points (bytes_saved, acc) not dominated by another with more bytes saved and higher accuracy."""
    front, best = [], -math.inf
    for b, a in sorted(points, key=lambda t: (-t[0], -t[1])):
        if a > best:
            front.append((b, a))
            best = a
    return sorted(front)


def _name(c: Mapping[str, Any]) -> str:
    return f"{c.get('adapter', '?')} ({c.get('i', '?')},{c.get('j', '?')})"
