"""MEEdge part 1 as plain computations: train and profile the branch zoo, self-/twin-merge the
survivors, recover them with few-shot KD (and the same KD on the unmerged branches, the control).
Plain values in (branches, cached arrays, numbers), rows and per-image correctness out; no config
object and no paths (the stages in ``repshare.stages`` do the wiring).

Every decision (survival, the merge rule's fraction, twin pairs) reads the ``select`` images;
every reported accuracy is measured on the ``val`` (report) images.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
import torch

from repshare.multiexit.cost import Latency
from repshare.multiexit.features import FeatureCache
from repshare.multiexit.kd import few_shot_index, recover
from repshare.multiexit.measure import RuleSweep
from repshare.multiexit.merge import (
    candidate_pairs, mergeable_layers, select_by_accuracy, self_merge, traverse_fractions, twin_layers, twin_merge,
)
from repshare.multiexit.profile import count_params, latency_to_exit
from repshare.multiexit.train import train_branches
from repshare.multiexit.zoo import Branch, BranchSpec

log = logging.getLogger("repshare")
CURVE_FRACTIONS = (0.0, 0.1, 0.2, 1 / 3, 5 / 12, 0.5, 0.75, 1.0)  # the self- vs twin-merge sweep
BYTES_PER_PARAM = 4  # float32 weights
SPLITS = ("select", "val")


class Sets:
    """The select and val (report) images of each exit, as float32 tensors, and per-image correctness.

    Merging changes only a branch's FC part, so :meth:`correct` with ``fc_only`` runs a branch's conv +
    pool part once per image set and every merged variant only its FC layers on it.
    """

    def __init__(self, select: FeatureCache, val: FeatureCache, exits: Sequence[int]):
        self.x = {s: {e: torch.from_numpy(np.array(c.features[e], dtype=np.float32)) for e in exits}
                  for s, c in (("select", select), ("val", val))}
        self.y = {"select": torch.as_tensor(np.asarray(select.labels)), "val": torch.as_tensor(np.asarray(val.labels))}
        self.pooled: dict[tuple[str, str], torch.Tensor] = {}

    @torch.inference_mode()
    def correct(self, split: str, b: torch.nn.Module, fc_only: bool = False) -> np.ndarray:
        """Per-image correctness (0/1 as float32) of ``b`` on ``split`` at its exit. ``fc_only``: reuse the
        conv + pool output computed for a branch of the same id (valid when only the FC part differs)."""
        x, key = self.x[split][b.spec.exit], (split, b.spec.id)
        pooled = self.pooled.get(key) if fc_only else None
        if pooled is None:
            pooled = torch.cat([b.eval().features(x[a:a + 500]) for a in range(0, len(x), 500)])
            if fc_only:
                self.pooled[key] = pooled
        return (b.eval().head(pooled).argmax(1) == self.y[split]).numpy().astype(np.float32)

    def both(self, b: torch.nn.Module, fc_only: bool = False) -> dict[str, np.ndarray]:
        return {s: self.correct(s, b, fc_only) for s in SPLITS}


def top1(correct: np.ndarray) -> float:
    return float(np.mean(correct, dtype=np.float64))


# --------------------------------------------------------------------------- zoo (branches stage)
@dataclass(frozen=True)
class TrainSettings:
    epochs: float
    batch_size: int
    lr: float
    weight_decay: float = 0.0


def train_zoo(specs: Sequence[BranchSpec], shapes: dict[int, tuple[int, int, int]], num_classes: int,
              train: FeatureCache, fit: np.ndarray, ts: TrainSettings, seed: int,
              device: str | torch.device = "cpu") -> tuple[dict[str, Branch], dict[str, dict]]:
    """Train every zoo branch on the cached features of its exit (rows ``fit``): all branches of one
    exit on the same batches (independent graphs and optimisers). Returns (branches, train info)."""
    branches: dict[str, Branch] = {}
    info: dict[str, dict] = {}
    t0, cpu0 = time.perf_counter(), time.process_time()
    for e in sorted({s.exit for s in specs}):
        mine = [s for s in specs if s.exit == e]
        torch.manual_seed(seed * 1000 + e)
        built = [Branch(s, shapes[e], num_classes) for s in mine]
        x = torch.from_numpy(np.ascontiguousarray(train.features[e][fit]))  # cache dtype, converted per batch
        res = train_branches(built, x, train.labels[fit], epochs=ts.epochs, batch_size=ts.batch_size, lr=ts.lr,
                             weight_decay=ts.weight_decay, seed=seed + e, device=device)
        for s, b, r in zip(mine, built, res):
            branches[s.id] = b.cpu().eval()
            info[s.id] = {"steps": r.steps, "final_loss": r.final_loss}
        log.info("branches: exit %d: %d branches trained, %d steps, %.1fs wall, %.1fs cpu so far", e, len(mine),
                 res[0].steps, time.perf_counter() - t0, time.process_time() - cpu0)
    return branches, info


def profile_zoo(specs: Sequence[BranchSpec], branches: dict[str, Branch], sets: Sets, stage_latency_s: Sequence[float],
                latency: Latency) -> tuple[list[dict], dict[str, dict[str, np.ndarray]]]:
    """One profile row per branch (params, FLOPs, latency, latency to its exit, select and val top-1;
    survival fields unset) and each branch's per-image correctness on select and val."""
    from repshare.models.flops import count_flops

    rows, correct = [], {}
    for s in specs:
        b = branches[s.id]
        feat1 = sets.x["val"][s.exit][:1]
        flops = count_flops(b, feat1)
        t = latency(b, feat1, flops)
        correct[s.id] = sets.both(b)
        row = {
            "id": s.id, "exit": s.exit, "structure": s.structure, "conv": s.conv, "kernel": s.kernel,
            "n_conv": s.n_conv, "fc_widths": list(s.fc_widths), "params": count_params(b), "flops": flops,
            "branch_latency_s": t.median_s, "latency_to_exit_s": latency_to_exit(stage_latency_s, s.exit, t.median_s),
            "accuracy": top1(correct[s.id]["val"]), "accuracy_select": top1(correct[s.id]["select"]),
            "survived": False, "drop_reason": None, "merged_params": None, "acc_merged": None, "acc_recovered": None,
        }
        if latency.source == "measured":
            row["branch_latency_spread_s"] = t.spread_s
        rows.append(row)
    return rows, correct


# --------------------------------------------------------------------------- self-/twin-merge (self_merge stage)
@dataclass(frozen=True)
class MergeRule:
    lo: float
    hi: float
    max_evals: int
    include_output: bool = False


@dataclass
class RuleMerge:
    """The rule's result for one branch: the merged branch, its MergeResult, and the sweep it chose from."""

    merged: torch.nn.Module
    result: Any  # repshare.multiexit.merge.MergeResult
    sweep: RuleSweep
    fractions: list[float]
    candidates: dict


def rule_self_merge(b: torch.nn.Module, rule: MergeRule, sets: Sets, include_output: bool | None = None) -> RuleMerge:
    """Self-merge by the paper's rule: traverse lo..hi of the candidate pairs, keep the fraction most
    accurate on the select images (ties: the larger fraction)."""
    cands = candidate_pairs(b, rule.include_output if include_output is None else include_output)
    fractions = traverse_fractions(max(len(c) for c in cands.values()), rule.lo, rule.hi, rule.max_evals)
    sweep = {f: self_merge(b, f, cands) for f in fractions}
    correct = {f: sets.correct("select", m, fc_only=True) for f, (m, _) in sweep.items()}
    best, _ = select_by_accuracy(fractions, lambda f: top1(correct[f]))
    merged, res = sweep[best]
    return RuleMerge(merged, res, RuleSweep(np.stack([correct[f] for f in fractions]),
                                            np.array([sweep[f][1].params_saved for f in fractions])), fractions, cands)


def twin_candidates(profiles: Sequence[dict], specs: dict[str, dict], k: int) -> list[tuple[str, str]]:
    """Up to ``k`` same-shape branch pairs (same exit, FC widths, pool; with a hidden layer), survivors
    first, then by summed select top-1; each branch in at most one pair."""
    prof = {p["id"]: p for p in profiles}
    groups: dict[tuple, list[str]] = {}
    for bid, s in specs.items():
        if s["fc_widths"]:
            groups.setdefault((s["exit"], tuple(s["fc_widths"]), s["pool"]), []).append(bid)
    pairs = [p for ids in groups.values() for p in combinations(sorted(ids), 2)]
    pairs.sort(key=lambda ab: (-(prof[ab[0]]["survived"] + prof[ab[1]]["survived"]),
                               -(prof[ab[0]]["accuracy_select"] + prof[ab[1]]["accuracy_select"]), ab))
    used, out = set(), []
    for a, b in pairs:
        if len(out) >= k:
            break
        if a in used or b in used:
            continue
        out.append((a, b))
        used.update((a, b))
    return out


def merge_survivors(survivors: Sequence[dict], load: Callable[[str], Branch], rule: MergeRule,
                    sets: Sets) -> tuple[list[dict], dict[str, torch.nn.Module], dict[str, dict[str, np.ndarray]]]:
    """Self-merge every surviving branch by the rule: (rows, merged branches by id, their correctness)."""
    rows, merged, correct = [], {}, {}
    for p in survivors:
        b = load(p["id"])
        if not mergeable_layers(b, rule.include_output):
            rows.append({"id": p["id"], "merged": False, "reason": "no hidden FC layer to merge"})
            continue
        rm = rule_self_merge(b, rule, sets)
        merged[p["id"]], res = rm.merged, rm.result
        correct[p["id"]] = sets.both(rm.merged, fc_only=True)
        rows.append({
            "id": p["id"], "merged": True, "exit": p["exit"], "structure": p["structure"],
            "fraction": res.fraction, "n_pairs": res.n_pairs, "candidates": sum(res.candidates.values()),
            "pairs_per_layer": {str(k): v for k, v in res.pairs.items()}, "params": count_params(b),
            "params_saved": res.params_saved, "merged_params": count_params(rm.merged),
            "accuracy": p["accuracy"], "accuracy_select": p["accuracy_select"],
            "acc_merged": top1(correct[p["id"]]["val"]), "acc_merged_select": top1(correct[p["id"]]["select"]),
            "select_trace": [[f, top1(c)] for f, c in zip(rm.fractions, rm.sweep.select_correct)],
        })
    return rows, merged, correct


@dataclass
class TwinResult:
    rows: list[dict]
    curves: list[dict]
    self_sweeps: list[RuleSweep]  # both branches of every pair, self-merged by the rule
    twin_sweeps: list[RuleSweep]  # every pair, twin-merged by the rule
    val_self: list[np.ndarray]  # per branch of every pair: val correctness self-merged ...
    val_twin: list[np.ndarray]  # ... and twin-merged (same order)


def twin_comparison(pairs: Sequence[tuple[str, str]], load: Callable[[str], Branch], rule: MergeRule,
                    sets: Sets) -> TwinResult:
    """Self-merge each branch of a same-shape pair alone vs twin-merge the pair (Fig. 7(2)), both by the
    1/3-1/2 rule on the select images; accuracies on val; the memory-accuracy curves of both methods."""
    out = TwinResult([], [], [], [], [], [])
    kb = BYTES_PER_PARAM / 1024
    for a_id, b_id in pairs:
        a, b = load(a_id), load(b_id)
        if not twin_layers(a, b):
            continue
        ra, rb = rule_self_merge(a, rule, sets, include_output=False), rule_self_merge(b, rule, sets, include_output=False)
        n_twin = min(a.fc[k].out_features for k in twin_layers(a, b))
        t_fracs = traverse_fractions(n_twin, rule.lo, rule.hi, rule.max_evals)
        t_sweep = {f: twin_merge(a, b, f) for f in t_fracs}
        t_sel = {f: (sets.correct("select", ta, True) + sets.correct("select", tb, True)) / 2
                 for f, (ta, tb, _) in t_sweep.items()}
        tf, _ = select_by_accuracy(t_fracs, lambda f: top1(t_sel[f]))
        ta, tb, rt = t_sweep[tf]
        val = {k: sets.correct("val", m, True) for k, m in (("a", a), ("b", b), ("sa", ra.merged), ("sb", rb.merged),
                                                            ("ta", ta), ("tb", tb))}
        out.self_sweeps += [ra.sweep, rb.sweep]
        out.twin_sweeps.append(RuleSweep(np.stack([t_sel[f] for f in t_fracs]),
                                         np.array([t_sweep[f][2].params_saved for f in t_fracs])))
        out.val_self += [val["sa"], val["sb"]]
        out.val_twin += [val["ta"], val["tb"]]
        row = {
            "pair": f"{a_id} + {b_id}", "a": a_id, "b": b_id, "params_both": count_params(a) + count_params(b),
            "acc_original": [top1(val["a"]), top1(val["b"])],
            "self_params_saved": ra.result.params_saved + rb.result.params_saved,
            "self_acc": [top1(val["sa"]), top1(val["sb"])], "self_fraction": [ra.result.fraction, rb.result.fraction],
            "twin_params_saved": rt.params_saved, "twin_acc": [top1(val["ta"]), top1(val["tb"])], "twin_fraction": tf,
        }
        out.rows.append(row)
        self_pts, twin_pts, equal = [], [], []
        for f in CURVE_FRACTIONS:
            (ma, rfa), (mb, rfb) = self_merge(a, f, ra.candidates), self_merge(b, f, rb.candidates)
            self_pts.append(((rfa.params_saved + rfb.params_saved) * kb,
                             (top1(sets.correct("val", ma, True)) + top1(sets.correct("val", mb, True))) / 2))
            xa, xb, rtf = twin_merge(a, b, f)
            twin_pts.append((rtf.params_saved * kb,
                             (top1(sets.correct("val", xa, True)) + top1(sets.correct("val", xb, True))) / 2))
            # one neuron pair per layer of rounding: round(f * n/2) twice vs round(f * n)
            slack = sum(a.fc[k].in_features + 1 for k in twin_layers(a, b))
            equal.append(abs(rfa.params_saved + rfb.params_saved - rtf.params_saved) <= slack)
        out.curves.append({"pair": row["pair"], "self": self_pts, "twin": twin_pts,
                           "self_rule": (row["self_params_saved"] * kb, float(np.mean(row["self_acc"]))),
                           "twin_rule": (row["twin_params_saved"] * kb, float(np.mean(row["twin_acc"]))),
                           "equal_at_equal_fraction": all(equal)})
    return out


# --------------------------------------------------------------------------- few-shot KD (kd_recover stage)
@dataclass(frozen=True)
class KDSettings:
    a: float
    b: float
    temperature: float
    fraction: float
    freeze_shared: bool
    epochs: float
    batch_size: int
    lr: float


@dataclass
class Recovery:
    """One branch recovered with few-shot KD over seeds: per-seed correctness and records."""

    correct: dict[str, list[np.ndarray]]  # split -> one per seed
    first: torch.nn.Module  # the first seed's branch (saved)
    images_seen: int
    seconds: float
    shared_l1: list[float]

    def mean_correct(self, split: str) -> np.ndarray:
        return np.mean(self.correct[split], axis=0).astype(np.float32)

    def seed_accs(self, split: str = "val") -> list[float]:
        return [top1(c) for c in self.correct[split]]

    def pick(self, seeds: Sequence[int], wanted: Sequence[int]) -> Recovery | None:
        """The runs of ``wanted`` seeds out of a recovery over ``seeds`` (None if one is missing)."""
        if not set(wanted) <= set(seeds):
            return None
        pos = [list(seeds).index(s) for s in wanted]
        return Recovery({k: [v[p] for p in pos] for k, v in self.correct.items()}, self.first, 0, 0.0, [])


class FCPart(torch.nn.Module):
    """A branch's FC part as a module of its own (its forward = :meth:`Branch.head`), so that KD trains
    only the FC layers on the branch's fixed conv + pool features."""

    def __init__(self, branch: Branch):
        super().__init__()
        self.fc = branch.fc  # the same layers: training this trains the branch's FC part in place
        self.run = branch.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)


class FewShot:
    """KD's training pool: the zoo's fit rows of the cached train split, as each branch's conv + pool
    features (computed once per branch: merging and KD never change a branch's conv part), with labels
    and teacher logits."""

    def __init__(self, train: FeatureCache, fit: np.ndarray):
        self.fit, self.tr = fit, train
        self.pooled: dict[str, torch.Tensor] = {}

    @torch.inference_mode()
    def features(self, b: Branch) -> torch.Tensor:
        if b.spec.id not in self.pooled:
            x = self.tr.features[b.spec.exit]
            self.pooled[b.spec.id] = torch.cat([
                b.eval().features(torch.from_numpy(np.asarray(x[self.fit[a:a + 500]], dtype=np.float32)))
                for a in range(0, len(self.fit), 500)])
        return self.pooled[b.spec.id]

    def subset(self, b: Branch, fraction: float, seed: int):
        pick = few_shot_index(len(self.fit), fraction, seed)
        rows = self.fit[pick]
        return self.features(b)[torch.from_numpy(pick)].clone(), self.tr.labels[rows], np.ascontiguousarray(self.tr.logits[rows])


def recover_seeds(branch: Branch, pool: FewShot, sets: Sets, kd: KDSettings, seeds: Sequence[int],
                  device: str | torch.device = "cpu", splits: Sequence[str] = ("val",)) -> Recovery:
    """Few-shot KD (Eq. 2) of a copy of ``branch`` once per seed (the seed picks the subset and the batch
    order), on ``splits``. KD retrains the FC part ("only updates the weights of unshared neurons", Sec.
    3.5.2); the conv part stays as trained. A plain (unmerged) branch has no shared weights: the same
    training is then the control."""
    out = Recovery({s: [] for s in splits}, None, 0, 0.0, [])
    for seed in seeds:
        m = copy.deepcopy(branch).eval()
        x, y, t = pool.subset(m, kd.fraction, int(seed))
        rec = recover(FCPart(m), x, y, t, a=kd.a, b=kd.b, temperature=kd.temperature, freeze_shared=kd.freeze_shared,
                      epochs=kd.epochs, batch_size=kd.batch_size, lr=kd.lr, seed=int(seed), device=device)
        m.cpu().eval()
        for s in splits:
            out.correct[s].append(sets.correct(s, m, fc_only=True))
        out.images_seen += rec.images_seen
        out.seconds += rec.seconds
        out.shared_l1.append(rec.shared_l1)
        out.first = m if out.first is None else out.first
    return out


def kd_curve(branch: Branch, fractions: Sequence[float], include_output: bool, pool: FewShot, sets: Sets,
             kd: KDSettings, seeds: Sequence[int], device: str | torch.device = "cpu") -> tuple[dict[str, Any], list[Recovery]]:
    """Fig. 9(c) for one branch: merge at each fraction of its candidate pairs and recover each:
    (the curve's rows, the recoveries in fraction order)."""
    cands = candidate_pairs(branch, include_output)
    points, recs = [], []
    for f in fractions:
        m, res = self_merge(branch, float(f), cands)
        rec = recover_seeds(m, pool, sets, kd, seeds, device)
        recs.append(rec)
        points.append({"fraction": float(f), "n_pairs": res.n_pairs, "params_saved": res.params_saved,
                       "acc_merged": top1(sets.correct("val", m, fc_only=True)),
                       "acc_recovered": top1(rec.mean_correct("val")),
                       "acc_recovered_seeds": rec.seed_accs()})
    return {"id": branch.spec.id, "candidates": sum(len(c) for c in cands.values()), "points": points}, recs


def profiles_with_recovery(zoo_branches: Sequence[dict], merged: dict[str, dict], recovered: dict[str, Recovery]) -> list[dict]:
    """Every zoo profile with the merged/recovered fields (val and select) where the branch was merged."""
    out = []
    for p in zoo_branches:
        q = dict(p)
        r = merged.get(p["id"])
        q["acc_merged_select"] = q["acc_recovered_select"] = None
        if r is not None and p["id"] in recovered:
            rec = recovered[p["id"]]
            q.update(merged_params=int(r["merged_params"]), acc_merged=float(r["acc_merged"]),
                     acc_merged_select=float(r["acc_merged_select"]), acc_recovered=top1(rec.mean_correct("val")),
                     acc_recovered_select=top1(rec.mean_correct("select")))
        out.append(q)
    return out


def recover_survivors(merged_rows: Sequence[dict], load_merged: Callable[[str], torch.nn.Module],
                      load_original: Callable[[str], torch.nn.Module], pool: FewShot, sets: Sets, kd: KDSettings,
                      seeds: Sequence[int], device: str | torch.device = "cpu"):
    """Few-shot KD of every merged survivor and, as the control, of the same branch unmerged (same subsets,
    seeds and steps): (recovered by id, control by id, one row per branch)."""
    recovered, control, rows = {}, {}, []
    for r in merged_rows:
        rec = recovered[r["id"]] = recover_seeds(load_merged(r["id"]), pool, sets, kd, seeds, device, SPLITS)
        ctl = control[r["id"]] = recover_seeds(load_original(r["id"]), pool, sets, kd, seeds, device)
        rows.append({**{k: r[k] for k in ("id", "exit", "structure", "params", "merged_params", "params_saved",
                                           "n_pairs", "candidates", "fraction", "accuracy", "acc_merged")},
                     "acc_recovered": top1(rec.mean_correct("val")), "acc_recovered_seeds": rec.seed_accs(),
                     "acc_control": top1(ctl.mean_correct("val")), "acc_control_seeds": ctl.seed_accs(),
                     "kd_images": rec.images_seen, "control_images": ctl.images_seen, "shared_l1_after": rec.shared_l1})
    return recovered, control, rows


def kd_curves(curve_ids: Sequence[str], load_original: Callable[[str], Branch], fractions: Sequence[float],
              include_output: bool, pool: FewShot, sets: Sets, kd: KDSettings, seeds: Sequence[int],
              control: dict[str, Recovery], control_seeds: Sequence[int], device: str | torch.device = "cpu"):
    """Fig. 9(c) for each curve branch with its control over the curve's ``seeds`` (taken from ``control``,
    run over ``control_seeds``, when it has them): (curves, recovered val correctness (n_fractions, n)
    by id, control val correctness by id)."""
    curves, rec, ctl = [], {}, {}
    for bid in curve_ids:
        curve, recs = kd_curve(load_original(bid), fractions, include_output, pool, sets, kd, seeds, device)
        c = control[bid].pick(control_seeds, seeds) if bid in control else None
        c = c if c is not None else recover_seeds(load_original(bid), pool, sets, kd, seeds, device)
        rec[bid], ctl[bid] = np.stack([x.mean_correct("val") for x in recs]), c.mean_correct("val")
        curves.append({**curve, "original": top1(sets.correct("val", load_original(bid), fc_only=True)),
                       "control": top1(ctl[bid])})
    return curves, rec, ctl


def modelled_retrain(recoveries: dict[str, Recovery], flops: dict[str, int], flops_per_s: float) -> tuple[float, int]:
    """(seconds by the cost model, images seen) of KD runs: training ~ 3 x the forward FLOPs per image."""
    return (sum(3.0 * flops[i] * r.images_seen / flops_per_s for i, r in recoveries.items()),
            sum(r.images_seen for r in recoveries.values()))
