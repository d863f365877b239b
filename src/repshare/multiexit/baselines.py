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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

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
class BaselineConfig:
    pool: int = 4
    exits: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    spinn_fractions: tuple[float, ...] = SPINN_FRACTIONS
    spinn_conv: str = "dws"
    spinn_kernel: int = 3
    branchynet_exits: tuple[int, ...] = (2, 4)
    branchynet_conv: str = "dws"
    branchynet_kernel: int = 3
    branchynet_n_conv: int = 1
    branchynet_fc: tuple[int, ...] = (128,)


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


def baseline_specs(name: str, cfg: BaselineConfig, spinn_at: Sequence[int] = ()) -> list:
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
    from dataclasses import replace

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


def stage_flops(model, x) -> list[int]:
    """FLOPs of the stem and each block stage for one preprocessed image ``x`` (1, 3, H, W)."""
    import torch

    from repshare.features.stages import stage_modules
    from repshare.multiexit.profile import count_flops

    out = []
    with torch.no_grad():
        for stage in stage_modules(model):
            out.append(count_flops(stage, x))
            x = stage(x)
    return out


def train_baseline_branches(specs: Sequence, train_feats: Mapping[int, np.ndarray], train_labels: np.ndarray,
                            val_feats: Mapping[int, np.ndarray], val_labels: np.ndarray,
                            shapes: Mapping[int, Sequence[int]], num_classes: int, *, epochs: float,
                            batch_size: int, lr: float, weight_decay: float = 0.0, seed: int = 0,
                            latency_repeats: int = 30, latency_warmup: int = 3) -> list[dict]:
    """Train the baselines' branches with part 1's code; one profile row per branch.

    Branches of one exit train together on the same batches (part 1's ``train_branches``: equal to
    training each alone with the same seed)."""
    import torch

    from repshare.multiexit.profile import count_flops, count_params, measure_latency
    from repshare.multiexit.train import accuracy, train_branches
    from repshare.multiexit.zoo import build_branch

    rows: list[dict] = []
    by_exit: dict[int, list] = {}
    for s in specs:
        by_exit.setdefault(s.exit, []).append(s)
    for e, group in sorted(by_exit.items()):
        if e not in train_feats or e not in val_feats:
            raise ValueError(f"baseline branch at exit {e} but the feature cache has exits {sorted(train_feats)}")
        torch.manual_seed(seed)
        branches = [build_branch(s, shapes[e], num_classes) for s in group]
        t0 = time.perf_counter()
        res = train_branches(branches, train_feats[e], train_labels, epochs=epochs, batch_size=batch_size,
                             lr=lr, weight_decay=weight_decay, seed=seed)
        wall = time.perf_counter() - t0
        x1 = torch.from_numpy(np.array(val_feats[e][:1], dtype=np.float32))  # a writable copy of the memmap row
        for s, b, r in zip(group, branches, res):
            b.eval()
            rows.append({
                "id": s.id, "exit": e, "structure": s.structure, "params": count_params(b),
                "flops": count_flops(b, x1), "branch_latency_s": measure_latency(b, x1, latency_repeats, latency_warmup),
                "accuracy": accuracy(b, val_feats[e], val_labels), "train_seconds": wall / len(group),
                "images_seen": r.images_seen,
            })
    return rows
