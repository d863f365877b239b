"""The paper's baselines (section 4.1) on the same frozen backbone and the same cached features:

* ``single_exit``  - the original model, no branch;
* ``one_fc``       - "multi-exit inference ... as all branches consist of one FC layer": a pooled
                     single-FC branch on every exit;
* ``spinn``        - SPINN-like: six exits at equal divisions of the backbone's FLOPs (SPINN's
                     15 %, 30 %, ..., 90 %), snapped to the nearest stage boundary (duplicates
                     dropped: EfficientNet has only six exits), identical conv + FC branches;
* ``branchynet``   - BranchyNet-like: two hand-placed early branches (conv + FC) at fixed exits.

Branches are built by part 1's zoo and trained/profiled by part 1's ``train``/``profile`` code;
this module only says *which* branches each baseline has.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

BASELINES = ("single_exit", "one_fc", "spinn", "branchynet")
BASELINE_LABELS = {
    "single_exit": "single-exit",
    "one_fc": "multi-exit, one FC",
    "spinn": "SPINN-like",
    "branchynet": "BranchyNet-like",
}
SPINN_FRACTIONS = (0.15, 0.30, 0.45, 0.60, 0.75, 0.90)


@dataclass(frozen=True)
class BaselineSettings:
    """The ``placement.baselines`` settings: whether and how the baselines' branches are trained, and
    their structures."""

    train: bool = True  # False: only the single-exit baseline (needs no training)
    reuse_zoo: bool = True  # a baseline branch part 1's zoo already trained (same spec) is reused
    seeds: tuple[int, ...] = (0,)  # baseline branches trained per seed -> mean accuracy
    pool: int = 4
    exits: tuple[int, ...] = (1, 2, 3, 4, 5, 6)  # the backbone's exits (set from part 1's profiles)
    spinn_fractions: tuple[float, ...] = SPINN_FRACTIONS
    spinn_conv: str = "dws"
    spinn_kernel: int = 3
    branchynet_exits: tuple[int, ...] = (2, 4)
    branchynet_conv: str = "dws"
    branchynet_kernel: int = 3
    branchynet_n_conv: int = 1
    branchynet_fc: tuple[int, ...] = (128,)

    def check(self, where: str = "placement.baselines") -> None:
        """One ValueError naming the first bad key."""
        def bad(key: str, value: object, why: str) -> None:
            raise ValueError(f"{where}.{key}={value!r} {why}")

        if not self.seeds or not all(isinstance(s, int) and s >= 0 for s in self.seeds):
            bad("seeds", list(self.seeds), "must be a non-empty list of integers >= 0")
        if len(set(self.seeds)) != len(self.seeds):
            bad("seeds", list(self.seeds), "lists a seed twice")
        if not isinstance(self.pool, int) or self.pool < 1:
            bad("pool", self.pool, "must be an integer >= 1")
        if not self.spinn_fractions or not all(0 < f < 1 for f in self.spinn_fractions):
            bad("spinn_fractions", list(self.spinn_fractions), "must be a non-empty list of fractions in (0, 1)")
        if not self.branchynet_exits or len(set(self.branchynet_exits)) != len(self.branchynet_exits):
            bad("branchynet_exits", list(self.branchynet_exits), "must be a non-empty list without repeats")
        if not all(isinstance(w, int) and w >= 1 for w in self.branchynet_fc):
            bad("branchynet_fc", list(self.branchynet_fc), "must be FC widths >= 1")
        for key in ("spinn_kernel", "branchynet_kernel"):
            k = getattr(self, key)
            if not isinstance(k, int) or k < 1 or k % 2 == 0:
                bad(key, k, "must be an odd integer >= 1")
        if not isinstance(self.branchynet_n_conv, int) or not 0 <= self.branchynet_n_conv <= 3:
            bad("branchynet_n_conv", self.branchynet_n_conv, "must be an integer in 0..3")


def spinn_exits(cum_flops_at_exit: Mapping[int, float], total_flops: float,
                fractions: Sequence[float] = SPINN_FRACTIONS) -> list[int]:
    """Exits nearest to each FLOP fraction of the whole backbone (ties: the earlier exit)."""
    if not cum_flops_at_exit:
        raise ValueError("no exits to place SPINN branches on")
    if not total_flops > 0:
        raise ValueError(f"total FLOPs {total_flops!r} must be > 0")
    out: list[int] = []
    for f in fractions:
        if not 0 < f < 1:
            raise ValueError(f"SPINN FLOP fraction {f!r} must be in (0, 1)")
        target = f * total_flops
        e = min(sorted(cum_flops_at_exit), key=lambda k: (abs(cum_flops_at_exit[k] - target), k))
        if e not in out:
            out.append(e)
    return sorted(out)


def baseline_specs(name: str, cfg: BaselineSettings, spinn_at: Sequence[int] = ()) -> list:
    """The zoo specs (part 1's ``BranchSpec``) of one baseline."""
    from repshare.multiexit.zoo import BranchSpec

    if name not in BASELINES:
        raise ValueError(f"baseline {name!r} is unknown; choose one of {', '.join(BASELINES)}")
    if name == "single_exit":
        return []
    if name == "one_fc":
        return [BranchSpec(int(e), "none", None, 0, (), cfg.pool) for e in cfg.exits]
    if name == "spinn":
        if not spinn_at:
            raise ValueError("SPINN-like baseline needs its exits (spinn_exits)")
        return [BranchSpec(int(e), cfg.spinn_conv, cfg.spinn_kernel, 1, (), cfg.pool) for e in spinn_at]
    bad = [e for e in cfg.branchynet_exits if e not in cfg.exits]
    if bad:
        raise ValueError(f"BranchyNet-like exit {bad[0]!r} is not one of the exits {list(cfg.exits)}")
    return [BranchSpec(int(e), cfg.branchynet_conv, cfg.branchynet_kernel, cfg.branchynet_n_conv,
                       tuple(cfg.branchynet_fc), cfg.pool) for e in cfg.branchynet_exits]


def fit_to_maps(specs: Sequence, shapes: Mapping[int, Sequence[int]]) -> tuple[list, list[str]]:
    """Replace a conv whose kernel is larger than its exit's feature map (e.g. 3x3 on EfficientNet's
    2x2 exit 6 at 64 px) by no conv (FC only), as the zoo cannot run it there; say which."""
    from repshare.multiexit.zoo import check_spec

    out, notes = [], []
    for s in specs:
        try:
            check_spec(s, shapes[s.exit])
        except ValueError as err:
            if "too large" not in str(err):
                raise
            s = replace(s, conv="none", kernel=None, n_conv=0)
            notes.append(f"exit {s.exit}: {err}; the baseline branch there is FC only")
        out.append(s)
    return out, notes


def zoo_baseline_rows(zoo_doc: Mapping, epochs: float) -> dict[str, dict]:
    """Every branch part 1's zoo trained (survivor or not), by spec id, as baseline profile rows
    (a baseline spec part 1 already trained on the same exit and data is not trained twice). Their
    per-image correctness is in part 1's correctness files under the same id."""
    n_fit = int(zoo_doc.get("n_fit", 0))
    return {b["id"]: {"id": b["id"], "exit": int(b["exit"]), "structure": b.get("structure", ""),
                      "params": int(b["params"]), "flops": int(b.get("flops", 0)),
                      "branch_latency_s": float(b["branch_latency_s"]), "score_id": b["id"],
                      "images_seen": int(n_fit * epochs), "reused_from_zoo": True}
            for b in zoo_doc.get("branches", [])}


# (module, one image's features, its FLOPs) -> a timing with ``median_s`` and ``spread_s`` (0 for a cost
# model): part 1's :class:`repshare.multiexit.cost.Latency`
LatencyFn = Callable[[Any, Any, int], Any]


@dataclass(frozen=True)
class BaselineData:
    """What training the baselines' branches needs: part 1's cached exit features of its branch
    training rows and of the ``select`` and ``val`` images, the training hyper-parameters and the
    latency model (the same as part 1's: ``latency(module, x1, flops)``)."""

    train_feats: Mapping[int, np.ndarray]  # exit -> the cached train split (memory-mapped is fine)
    train_rows: np.ndarray  # the rows of it that train branches (part 1's branch training pool)
    train_labels: np.ndarray  # labels of those rows
    eval_feats: Mapping[str, Mapping[int, np.ndarray]]  # split -> exit -> features
    eval_labels: Mapping[str, np.ndarray]  # split -> labels
    num_classes: int
    epochs: float
    batch_size: int
    lr: float
    latency: LatencyFn
    weight_decay: float = 0.0


@dataclass
class Baselines:
    rows: dict[str, list[dict]]  # baseline -> branch profile rows (sorted by exit)
    correct: dict[str, tuple[list[str], np.ndarray]]  # split -> (score ids, per-image correctness) of trained ones
    info: dict
    notes: list[str]
    train_seconds: float = 0.0  # provenance only


def baseline_profiles(settings: BaselineSettings, stage_flops: Sequence[int], shapes: Mapping[int, Sequence[int]],
                      zoo_rows: Mapping[str, dict], load: Callable[[], BaselineData]) -> Baselines:
    """Each baseline's branch rows and, for branches trained here, their per-image correctness on
    every evaluation split (the mean over ``settings.seeds``).

    ``stage_flops``: FLOPs of the backbone's stem and each block stage (SPINN's exits sit at equal FLOP
    divisions); ``shapes``: each exit's (C, H, W); ``zoo_rows``: part 1's trained branches by spec id
    (reused, with their correctness in part 1's files); ``load`` gives the training data, called only if
    some baseline branch is not in the zoo. ``settings.train`` False: the single-exit baseline only."""
    if not settings.train:
        return Baselines({"single_exit": []}, {}, {"images_seen": 0}, [
            "baselines.train is false: only the single-exit baseline (one-FC, SPINN-like and BranchyNet-like were "
            "not run)"])
    t0 = time.perf_counter()
    exits = list(settings.exits)
    cum = np.cumsum(stage_flops)
    at = spinn_exits({e: float(cum[e]) for e in exits}, float(cum[-1]), list(settings.spinn_fractions))
    info: dict = {"images_seen": 0, "stage_flops": [int(f) for f in stage_flops], "spinn_exits": at}
    shapes = {int(e): tuple(int(v) for v in shapes[e]) for e in exits}
    zoo_rows = dict(zoo_rows) if settings.reuse_zoo else {}
    out: dict[str, list[dict]] = {"single_exit": []}
    ids: list[str] = []
    correct: dict[str, list[np.ndarray]] = {}
    data: BaselineData | None = None
    fit_notes: list[str] = []
    reused = 0
    for name in ("one_fc", "spinn", "branchynet"):
        specs, why = fit_to_maps(baseline_specs(name, settings, at), shapes)
        fit_notes += [f"{BASELINE_LABELS[name]}: {w}" for w in why]
        rows = [dict(zoo_rows[s.id]) for s in specs if s.id in zoo_rows]
        reused += len(rows)
        todo = [s for s in specs if s.id not in zoo_rows]
        if todo and data is None:
            data = load()
            correct = {split: [] for split in data.eval_feats}
        per_seed = [train_baseline_branches(todo, data, shapes, seed=int(seed)) for seed in
                    (settings.seeds if todo else [])]
        for k, (row, _) in enumerate(per_seed[0] if per_seed else []):
            row = dict(row, score_id=f"{row['id']}@placement", reused_from_zoo=False)
            if row["score_id"] not in ids:  # a spec two baselines share scores once (same seed, same result)
                ids.append(row["score_id"])
                for split in correct:
                    correct[split].append(np.mean([ps[k][1][split] for ps in per_seed], axis=0))
            info["images_seen"] += int(sum(ps[k][0]["images_seen"] for ps in per_seed))
            rows.append(row)
        out[name] = sorted(rows, key=lambda r: r["exit"])
    info["n_fit"] = int(len(data.train_labels)) if data is not None else 0
    info["reused_from_zoo"] = reused
    info["notes"] = fit_notes
    trained = (f"the other {len(ids)} trained here by part 1's train_branches on part 1's cached features "
               f"({info['n_fit']} images, {data.epochs} epochs, seeds {list(settings.seeds)})" if data is not None
               else "none trained here")
    notes = [f"baselines: {reused} branches are specs part 1's zoo had trained, reused with part 1's per-image "
             f"correctness; {trained}; SPINN-like exits at FLOP fractions {list(settings.spinn_fractions)} snapped "
             f"to stage boundaries -> exits {at}"] + fit_notes
    mats = {split: (list(ids), np.asarray(v, dtype=np.float32).reshape(len(ids), -1)) for split, v in correct.items()}
    return Baselines(out, mats, info, notes, time.perf_counter() - t0)


def train_baseline_branches(specs: Sequence, data: BaselineData, shapes: Mapping[int, Sequence[int]],
                            seed: int = 0) -> list[tuple[dict, dict[str, np.ndarray]]]:
    """Train the baselines' branches with part 1's code; per branch a profile row and its per-image
    correctness (float32 0/1) on every evaluation split.

    Branches of one exit train together on the same batches (part 1's ``train_branches``: equal to
    training each alone with the same seed)."""
    import torch

    from repshare.models.flops import count_flops
    from repshare.multiexit.profile import count_params
    from repshare.multiexit.train import predict, train_branches
    from repshare.multiexit.zoo import build_branch

    out: list[tuple[dict, dict[str, np.ndarray]]] = []
    by_exit: dict[int, list] = {}
    for s in specs:
        by_exit.setdefault(s.exit, []).append(s)
    for e, group in sorted(by_exit.items()):
        if e not in data.train_feats or any(e not in f for f in data.eval_feats.values()):
            raise ValueError(f"baseline branch at exit {e} but the feature cache has exits {sorted(data.train_feats)}")
        torch.manual_seed(seed)
        branches = [build_branch(s, shapes[e], data.num_classes) for s in group]
        x = np.ascontiguousarray(data.train_feats[e][data.train_rows])  # only exits with something to train
        res = train_branches(branches, x, data.train_labels, epochs=data.epochs,
                             batch_size=data.batch_size, lr=data.lr, weight_decay=data.weight_decay, seed=seed)
        x1 = torch.from_numpy(np.array(x[:1], dtype=np.float32))  # one image, writable
        for s, b, r in zip(group, branches, res):
            b.eval()
            flops = count_flops(b, x1)
            timing = data.latency(b, x1, flops)
            correct = {split: (predict(b, feats[e]).argmax(1).numpy() == np.asarray(data.eval_labels[split]))
                       .astype(np.float32) for split, feats in data.eval_feats.items()}
            row = {"id": s.id, "exit": e, "structure": s.structure, "params": count_params(b), "flops": flops,
                   "branch_latency_s": float(timing.median_s), "images_seen": r.images_seen}
            if timing.spread_s:
                row["branch_latency_spread_s"] = float(timing.spread_s)
            out.append((row, correct))
    return out
