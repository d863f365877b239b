"""DVC stage ``branches`` (MEEdge part 1a): exit-feature cache, branch zoo, profiles, survival.

Runs the frozen classifier once over ``multiexit.features.n_train`` train images (a seeded random
sample; its last ``n_holdout`` never train a branch, the merge stage selects on them) and the val
split, caching every exit's feature map on disk (``results/multiexit/features``). Every zoo
branch trains on the cached maps of its exit; each gets params, FLOPs, batch-1 latency (branch
alone and backbone-to-exit + branch) and val accuracy; survival drops the slow and the dominated.
Writes ``results/multiexit/zoo/`` (zoo.json, every trained branch, the accuracy-vs-latency figure).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from repshare.multiexit.features import FeatureCache, check_exits, exit_shapes, extract_features, open_cache
from repshare.multiexit.profile import (
    backbone_latency, count_flops, count_params, full_latency, head_params, latency_to_exit, measure_latency,
)
from repshare.multiexit.survival import survival
from repshare.multiexit.train import accuracy, train_branches
from repshare.multiexit.zoo import Branch, BranchSpec, spec_from_dict, spec_to_dict, zoo_specs

log = logging.getLogger("repshare")


# --------------------------------------------------------------------------- paths and loading (shared by the part-1 stages)
def out_root(cfg: DictConfig) -> Path:
    return Path(cfg.paths.results_dir) / "multiexit"


def features_dir(cfg: DictConfig) -> Path:
    return out_root(cfg) / "features"


def zoo_dir(cfg: DictConfig) -> Path:
    return out_root(cfg) / "zoo"


def device_of(cfg: DictConfig) -> torch.device:
    from repshare.models.load import resolve_device

    return resolve_device(cfg.multiexit.device)


def fit_rows(cfg: DictConfig, n_train: int) -> tuple[np.ndarray, np.ndarray]:
    """(branch-training rows, held-out rows) of the cached train set."""
    n_hold = int(cfg.multiexit.features.n_holdout)
    return np.arange(n_train - n_hold), np.arange(n_train - n_hold, n_train)


def open_caches(cfg: DictConfig, exits: list[int]) -> tuple[FeatureCache, FeatureCache]:
    return open_cache(features_dir(cfg) / "train", exits), open_cache(features_dir(cfg) / "val", exits)


def build_from(spec_doc: dict, shapes: dict, num_classes: int) -> Branch:
    spec = spec_from_dict(spec_doc)
    return Branch(spec, shapes[str(spec.exit)] if str(spec.exit) in shapes else shapes[spec.exit], num_classes)


def load_trained(path: Path, branch: torch.nn.Module) -> torch.nn.Module:
    from repshare.models.checkpoint import load_state_file
    from repshare.multiexit.merge import branch_from_state

    return branch_from_state(branch, load_state_file(path)).eval()


def save_branch(branch: torch.nn.Module, path: Path, meta: dict[str, Any] | None = None) -> Path:
    from safetensors.torch import save_file

    from repshare.utils.io import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in branch.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={k: str(v) for k, v in (meta or {}).items()})
    return path


def zoo_from_cfg(cfg: DictConfig, shapes: dict[int, tuple[int, int, int]]) -> tuple[list[BranchSpec], list[dict]]:
    z = cfg.multiexit.zoo
    convs = [(c.type, c.kernel, c.n) for c in z.convs]
    return zoo_specs(list(cfg.multiexit.exits), convs, [list(f) for f in z.fcs], int(z.pool), shapes, z.unfit)


def metrics_dir(cfg: DictConfig) -> Path:
    """RunLog provenance and DVC metrics live here (cache: false), never inside a hashed output."""
    return Path(cfg.paths.results_dir) / "metrics"


def write_plot_csv(cfg: DictConfig, name: str, rows: list[dict]) -> Path:
    import csv
    import io

    from repshare.utils.io import write_text

    buf = io.StringIO()
    keys = list(rows[0]) if rows else ["empty"]
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return write_text(Path(cfg.paths.results_dir) / "plots" / f"{name}.csv", buf.getvalue())


def sample_rows(n_total: int, n: int, seed: int, what: str) -> np.ndarray:
    if n > n_total:
        raise ValueError(f"{what}={n} but the split has only {n_total} images")
    return np.sort(np.random.default_rng(seed).choice(n_total, size=n, replace=False))


# --------------------------------------------------------------------------- the stage
def run(cfg: DictConfig) -> dict:
    from repshare.data.shards import load_split, prepared_dir
    from repshare.models.load import load_classifier
    from repshare.multiexit.zoo_figures import fig_acc_vs_latency
    from repshare.utils.io import atomic_dir, write_json
    from repshare.utils.runlog import RunLog

    t_start = time.perf_counter()
    mc = cfg.multiexit
    model, pre = load_classifier(cfg)
    exits = check_exits(model, list(mc.exits))
    device = device_of(cfg)
    train = load_split(prepared_dir(cfg), "train")
    val = load_split(prepared_dir(cfg), "val")
    shapes = exit_shapes(model, pre, train.images.shape[1:3], exits)
    specs, skipped = zoo_from_cfg(cfg, shapes)  # bad zoo entries fail here, before anything is written
    n_train = int(mc.features.n_train)
    rows = sample_rows(len(train), n_train, int(cfg.seed), "multiexit.features.n_train")
    # Shuffle the sample so the held-out tail is random too (sorted rows read the shards in order).
    rows = rows[np.random.default_rng(int(cfg.seed) + 1).permutation(len(rows))]
    n_val = len(val) if mc.features.n_val is None else min(int(mc.features.n_val), len(val))
    num_classes = int(cfg.model.classifier.num_classes)
    fit, hold = fit_rows(cfg, n_train)

    with atomic_dir(features_dir(cfg)) as ftmp, atomic_dir(zoo_dir(cfg)) as ztmp, RunLog(cfg, "branches", metrics_dir(cfg)) as runlog:
        t0 = time.perf_counter()
        kw = dict(batch_size=int(mc.features.batch_size), dtype=mc.features.dtype, device=device)
        tr = extract_features(model, pre, train.images[rows], train.labels[rows], exits, folder=ftmp / "train", **kw)
        va = extract_features(model, pre, val.images[:n_val], val.labels[:n_val], exits, folder=ftmp / "val", **kw)
        cache_s = time.perf_counter() - t0
        final_acc = float((np.asarray(va.logits).argmax(1) == va.labels).mean())
        log.info("branches: cached %d train + %d val images at exits %s in %.1fs", len(tr), len(va), exits, cache_s)

        # Train: all branches of one exit on the same batches (independent graphs and optimisers).
        t0, cpu0 = time.perf_counter(), time.process_time()
        branches: dict[str, Branch] = {}
        train_info: dict[str, dict] = {}
        for e in exits:
            mine = [s for s in specs if s.exit == e]
            if not mine:
                continue
            torch.manual_seed(int(cfg.seed) * 1000 + e)
            built = [Branch(s, shapes[e], num_classes) for s in mine]
            x = torch.from_numpy(np.ascontiguousarray(tr.features[e][fit]))  # cache dtype, converted per batch
            res = train_branches(built, x, tr.labels[fit], epochs=float(mc.train.epochs),
                                 batch_size=int(mc.train.batch_size), lr=float(mc.train.lr),
                                 weight_decay=float(mc.train.weight_decay), seed=int(cfg.seed) + e, device=device)
            for s, b, r in zip(mine, built, res):
                branches[s.id] = b.cpu().eval()
                train_info[s.id] = {"steps": r.steps, "final_loss": r.final_loss, "seconds": r.seconds}
            log.info("branches: exit %d: %d branches trained, %d steps, %.1fs wall, %.1fs cpu so far", e, len(mine),
                     res[0].steps, time.perf_counter() - t0, time.process_time() - cpu0)
        train_s = time.perf_counter() - t0

        # Profile on the machine that runs the stage, at batch 1.
        t0 = time.perf_counter()
        x1 = pre(torch.from_numpy(val.images[:1]).permute(0, 3, 1, 2).contiguous())
        model_cpu = model.cpu().eval()
        stage_s, head_s = backbone_latency(model_cpu, x1, int(mc.latency.repeats), int(mc.latency.warmup))
        full_s = full_latency(stage_s, head_s)
        profiles = []
        for s in specs:
            b = branches[s.id]
            feat1 = va.tensor(s.exit, slice(0, 1))
            lat = measure_latency(b, feat1, int(mc.latency.repeats), int(mc.latency.warmup))
            acc_val = accuracy(b, va.features[s.exit], va.labels)
            profiles.append({
                "id": s.id, "exit": s.exit, "structure": s.structure, "conv": s.conv, "kernel": s.kernel,
                "n_conv": s.n_conv, "fc_widths": list(s.fc_widths), "params": count_params(b),
                "flops": count_flops(b, feat1), "branch_latency_s": lat,
                "latency_to_exit_s": latency_to_exit(stage_s, s.exit, lat), "accuracy": acc_val,
                "survived": False, "drop_reason": None, "merged_params": None, "acc_merged": None,
                "acc_recovered": None,
            })
        for p, (ok, why) in zip(profiles, survival(profiles, full_s, mc.survival.scope)):
            p["survived"], p["drop_reason"] = ok, why
        profile_s = time.perf_counter() - t0

        for s in specs:
            save_branch(branches[s.id], ztmp / "branches" / f"{s.id}.safetensors", {"id": s.id})
        backbone = {
            "stage_latency_s": stage_s, "head_latency_s": head_s, "final_accuracy": final_acc,
            "backbone_params": count_params(model_cpu) - head_params(model_cpu), "head_params": head_params(model_cpu),
            "exits": exits,
        }
        survivors = [p for p in profiles if p["survived"]]
        doc = {
            "backbone": backbone,
            "full_latency_s": full_s,
            "exit_shapes": {str(e): list(v) for e, v in shapes.items()},
            "num_classes": num_classes,
            "specs": {s.id: spec_to_dict(s) for s in specs},
            "branches": profiles,
            "skipped": skipped,
            "train": train_info,
            "n_train_cached": n_train, "n_fit": len(fit), "n_holdout": len(hold), "n_val": n_val,
            "survival_scope": mc.survival.scope,
            "latency_note": "seconds per image at batch 1 (median of repeats) on the machine that ran the stage",
        }
        write_json(ztmp / "zoo.json", doc)
        figs = fig_acc_vs_latency(profiles, full_s, ztmp / "acc_vs_latency")
        runlog.log_table("zoo", [{k: (str(v) if isinstance(v, list) else v) for k, v in p.items()} for p in profiles])
        runlog.summary(n_branches=len(profiles), n_survived=len(survivors), n_skipped=len(skipped),
                       final_accuracy=final_acc, best_branch_accuracy=max(p["accuracy"] for p in profiles),
                       cache_seconds=round(cache_s, 2), train_seconds=round(train_s, 2),
                       profile_seconds=round(profile_s, 2), seconds=round(time.perf_counter() - t_start, 2))
        for f in figs:
            if f.suffix == ".png":
                runlog.log_image("acc_vs_latency", f)
    write_json(metrics_dir(cfg) / "multiexit_branches.json", {
        "n_branches": len(profiles), "n_survived": len(survivors), "final_accuracy": final_acc,
        "best_branch_accuracy": max(p["accuracy"] for p in profiles),
        "mean_survivor_accuracy": float(np.mean([p["accuracy"] for p in survivors])) if survivors else None})
    write_plot_csv(cfg, "multiexit_zoo", [{"latency_ms": round(p["latency_to_exit_s"] * 1e3, 4), "accuracy": p["accuracy"],
                                           "exit": p["exit"], "survived": int(p["survived"]), "id": p["id"]} for p in profiles])
    log.info("branches: %d trained (%d skipped), %d survived; cache %.1fs, train %.1fs, profile %.1fs",
             len(profiles), len(skipped), len(survivors), cache_s, train_s, profile_s)
    return doc
