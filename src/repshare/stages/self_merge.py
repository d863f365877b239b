"""DVC stage ``self_merge`` (MEEdge part 1b): neuron-level self-merge of every surviving branch,
and twin-merge of same-shape branch pairs as the paper's comparison (Fig. 7(2)).

The number of merged pairs follows the paper's rule: traverse from ``multiexit.merge.range[0]`` to
``range[1]`` of the candidate pairs and keep the most accurate, where "accurate" is measured on
the held-out part of the cached train set (never trained on); val accuracies are reported only.
Writes ``results/multiexit/merge/`` (merge.json, merged branches, the self-vs-twin figure).
"""

from __future__ import annotations

import logging
import time
from itertools import combinations
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from repshare.multiexit.merge import (
    candidate_pairs, mergeable_layers, select_by_accuracy, self_merge, traverse_fractions, twin_layers, twin_merge,
)
from repshare.multiexit.profile import count_params
from repshare.stages.branches import (
    build_from, fit_rows, load_trained, metrics_dir, open_caches, out_root, save_branch, write_plot_csv, zoo_dir,
)
from repshare.utils.io import read_json

log = logging.getLogger("repshare")
CURVE_FRACTIONS = (0.0, 0.1, 0.2, 1 / 3, 5 / 12, 0.5, 0.75, 1.0)
BYTES_PER_PARAM = 4  # float32 weights


def merge_dir(cfg: DictConfig) -> Path:
    return out_root(cfg) / "merge"


def load_zoo(cfg: DictConfig) -> dict:
    path = zoo_dir(cfg) / "zoo.json"
    if not path.is_file():
        raise FileNotFoundError(f"missing {path}: run the branches stage first")
    return read_json(path)


def zoo_branch(cfg: DictConfig, zoo: dict, bid: str) -> torch.nn.Module:
    b = build_from(zoo["specs"][bid], zoo["exit_shapes"], zoo["num_classes"])
    return load_trained(zoo_dir(cfg) / "branches" / f"{bid}.safetensors", b)


class Eval:
    """Accuracy on the held-out and val features of each exit (loaded once).

    Merging changes only a branch's FC part, so each branch's conv + pool output is computed once
    per image set and every merged variant runs only its FC layers on it.
    """

    def __init__(self, cfg: DictConfig, zoo: dict, exits: list[int]):
        tr, va = open_caches(cfg, exits)
        _, hold = fit_rows(cfg, len(tr))
        self.sets = {"hold": {e: (torch.from_numpy(np.ascontiguousarray(tr.features[e][hold])), tr.labels[hold]) for e in exits},
                     "val": {e: (torch.from_numpy(np.array(va.features[e])), va.labels) for e in exits}}
        self._pooled: dict[tuple[str, str], torch.Tensor] = {}

    def _acc(self, which: str, b: torch.nn.Module) -> float:
        x, y = self.sets[which][b.spec.exit]
        key = (which, b.spec.id)
        if key not in self._pooled:
            with torch.inference_mode():
                self._pooled[key] = torch.cat([b.eval().features(x[a:a + 500].float()) for a in range(0, len(x), 500)])
        with torch.inference_mode():
            pred = b.eval().head(self._pooled[key]).argmax(1)
        return float((pred == torch.as_tensor(y)).float().mean())

    def holdout(self, b: torch.nn.Module) -> float:
        return self._acc("hold", b)

    def valacc(self, b: torch.nn.Module) -> float:
        return self._acc("val", b)


def rule_self_merge(b: torch.nn.Module, lo: float, hi: float, max_evals: int, ev: Eval, include_output: bool):
    """(merged branch, MergeResult, selection trace) by the 1/3..1/2 rule on the held-out set."""
    cands = candidate_pairs(b, include_output)
    n_max = max(len(c) for c in cands.values())
    best, trace = select_by_accuracy(traverse_fractions(n_max, lo, hi, max_evals),
                                     lambda f: ev.holdout(self_merge(b, f, cands)[0]))
    merged, res = self_merge(b, best, cands)
    return merged, res, trace, cands


def twin_candidates(zoo: dict, k: int) -> list[tuple[str, str]]:
    """Up to ``k`` same-shape branch pairs (same exit, FC widths, pool; with a hidden layer), survivors
    first, then by summed val accuracy; each branch in at most one pair."""
    prof = {p["id"]: p for p in zoo["branches"]}
    groups: dict[tuple, list[str]] = {}
    for bid, s in zoo["specs"].items():
        if s["fc_widths"]:
            groups.setdefault((s["exit"], tuple(s["fc_widths"]), s["pool"]), []).append(bid)
    pairs = [p for ids in groups.values() for p in combinations(sorted(ids), 2)]
    pairs.sort(key=lambda ab: (-(prof[ab[0]]["survived"] + prof[ab[1]]["survived"]),
                               -(prof[ab[0]]["accuracy"] + prof[ab[1]]["accuracy"]), ab))
    used, out = set(), []
    for a, b in pairs:
        if len(out) >= k:
            break
        if a in used or b in used:
            continue
        out.append((a, b))
        used.update((a, b))
    return out


def run(cfg: DictConfig) -> dict:
    from repshare.multiexit.zoo_figures import fig_self_vs_twin
    from repshare.utils.io import atomic_dir, write_json
    from repshare.utils.runlog import RunLog

    t_start = time.perf_counter()
    mc = cfg.multiexit.merge
    lo, hi = float(mc.range[0]), float(mc.range[1])
    traverse_fractions(1, lo, hi)  # validates the range before anything is written
    zoo = load_zoo(cfg)
    survivors = [p for p in zoo["branches"] if p["survived"]]
    twins = twin_candidates(zoo, int(mc.twin_pairs))
    exits = sorted({p["exit"] for p in survivors} | {zoo["specs"][i]["exit"] for ab in twins for i in ab})
    ev = Eval(cfg, zoo, exits) if exits else None

    merged_rows, merged_branches = [], {}
    for p in survivors:
        b = zoo_branch(cfg, zoo, p["id"])
        if not mergeable_layers(b, bool(mc.include_output)):
            merged_rows.append({"id": p["id"], "merged": False, "reason": "no hidden FC layer to merge"})
            continue
        merged, res, trace, _ = rule_self_merge(b, lo, hi, int(mc.max_evals), ev, bool(mc.include_output))
        merged_branches[p["id"]] = merged
        merged_rows.append({
            "id": p["id"], "merged": True, "exit": p["exit"], "structure": p["structure"],
            "fraction": res.fraction, "n_pairs": res.n_pairs, "candidates": sum(res.candidates.values()),
            "pairs_per_layer": {str(k): v for k, v in res.pairs.items()}, "params": count_params(b),
            "params_saved": res.params_saved, "merged_params": count_params(merged),
            "accuracy": p["accuracy"], "acc_merged": ev.valacc(merged), "holdout_trace": trace,
            "acc_holdout_original": ev.holdout(b),
        })

    # Twin-merge comparison on the same branches: self-merge each alone vs twin-merge the pair.
    twin_rows, curves = [], []
    for a_id, b_id in twins:
        a, b = zoo_branch(cfg, zoo, a_id), zoo_branch(cfg, zoo, b_id)
        if not twin_layers(a, b):
            continue
        sa, ra, _, ca = rule_self_merge(a, lo, hi, int(mc.max_evals), ev, False)
        sb, rb, _, cb = rule_self_merge(b, lo, hi, int(mc.max_evals), ev, False)
        n_twin = min(a.fc[k].out_features for k in twin_layers(a, b))
        tf, _ = select_by_accuracy(traverse_fractions(n_twin, lo, hi, int(mc.max_evals)),
                                   lambda f: np.mean([ev.holdout(m) for m in twin_merge(a, b, f)[:2]]))
        ta, tb, rt = twin_merge(a, b, tf)
        acc0 = (ev.valacc(a), ev.valacc(b))
        row = {
            "pair": f"{a_id} + {b_id}", "a": a_id, "b": b_id, "params_both": count_params(a) + count_params(b),
            "acc_original": list(acc0),
            "self_params_saved": ra.params_saved + rb.params_saved, "self_acc": [ev.valacc(sa), ev.valacc(sb)],
            "self_fraction": [ra.fraction, rb.fraction],
            "twin_params_saved": rt.params_saved, "twin_acc": [ev.valacc(ta), ev.valacc(tb)], "twin_fraction": tf,
        }
        twin_rows.append(row)
        kb = BYTES_PER_PARAM / 1024
        self_pts, twin_pts = [], []
        for f in CURVE_FRACTIONS:
            ma, ra_f = self_merge(a, f, ca)
            mb, rb_f = self_merge(b, f, cb)
            self_pts.append(((ra_f.params_saved + rb_f.params_saved) * kb, float(np.mean([ev.valacc(ma), ev.valacc(mb)]))))
            xa, xb, rt_f = twin_merge(a, b, f)
            twin_pts.append((rt_f.params_saved * kb, float(np.mean([ev.valacc(xa), ev.valacc(xb)]))))
        curves.append({"pair": row["pair"], "self": self_pts, "twin": twin_pts,
                       "self_rule": (row["self_params_saved"] * kb, float(np.mean(row["self_acc"]))),
                       "twin_rule": (row["twin_params_saved"] * kb, float(np.mean(row["twin_acc"])))})

    doc = {"range": [lo, hi], "include_output": bool(mc.include_output), "branches": merged_rows,
           "twin": twin_rows, "curves": curves, "curve_fractions": list(CURVE_FRACTIONS),
           "selection": "held-out train images (never trained on); accuracies reported on val"}
    with atomic_dir(merge_dir(cfg)) as tmp, RunLog(cfg, "self_merge", metrics_dir(cfg)) as runlog:
        for bid, m in merged_branches.items():
            save_branch(m, tmp / "branches" / f"{bid}.merged.safetensors", {"id": bid})
        write_json(tmp / "merge.json", doc)
        if curves:
            for f in fig_self_vs_twin(curves, tmp / "self_vs_twin"):
                if f.suffix == ".png":
                    runlog.log_image("self_vs_twin", f)
        done = [r for r in merged_rows if r["merged"]]
        runlog.log_table("self_merge", [{k: v for k, v in r.items() if not isinstance(v, (list, dict))} for r in done])
        runlog.summary(n_merged=len(done), params_saved=sum(r["params_saved"] for r in done),
                       mean_acc=float(np.mean([r["accuracy"] for r in done])) if done else None,
                       mean_acc_merged=float(np.mean([r["acc_merged"] for r in done])) if done else None,
                       seconds=round(time.perf_counter() - t_start, 2))
    done = [r for r in merged_rows if r["merged"]]
    write_json(metrics_dir(cfg) / "multiexit_self_merge.json", {
        "n_merged": len(done), "params_saved": sum(r["params_saved"] for r in done),
        "mean_acc": float(np.mean([r["accuracy"] for r in done])) if done else None,
        "mean_acc_merged": float(np.mean([r["acc_merged"] for r in done])) if done else None,
        "twin_pairs": len(twin_rows)})
    write_plot_csv(cfg, "multiexit_self_vs_twin", [
        {"pair": c["pair"], "method": m, "kb_saved": round(kb, 3), "accuracy": acc}
        for c in curves for m in ("self", "twin") for kb, acc in c[m]])
    log.info("self_merge: %d of %d survivors merged, %d twin pairs, %.1fs", len(merged_branches), len(survivors),
             len(twin_rows), time.perf_counter() - t_start)
    return doc
