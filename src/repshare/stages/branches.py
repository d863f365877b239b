"""DVC stage ``branches`` (MEEdge part 1a): exit-feature caches, branch zoo, profiles, survival.

Runs the frozen classifier once over ``multiexit.features.n_train`` train images (a seeded random
sample; the last ``n_holdout`` never train a branch), the select images (the prepared ``select``
split, or those held-out train images when the data has none) and the val images, caching every
exit's feature map. Every zoo branch trains on the cached maps of its exit
(:mod:`repshare.multiexit.study`); each gets params, FLOPs, latency (a FLOP cost model by default,
:mod:`repshare.multiexit.cost`) and top-1 on select and val. Survival decides on select. Writes the
caches and the zoo where :mod:`repshare.multiexit.store` says, each with its checksums.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from repshare.stage_scope import skip_reason, write_skipped
from repshare.multiexit.cost import Latency, backbone_timings, cost_model
from repshare.multiexit.features import check_exits, exit_shapes, extract_features
from repshare.multiexit.profile import count_params, full_latency, head_params
from repshare.multiexit.store import BRANCHES_STAGE, Part1, save_branch, write_correct
from repshare.multiexit.study import Sets, TrainSettings, profile_zoo, top1, train_zoo
from repshare.multiexit.survival import survival
from repshare.multiexit.zoo import spec_to_dict, zoo_specs

log = logging.getLogger("repshare")


def sample_rows(n_total: int, n: int, seed: int, what: str) -> np.ndarray:
    if n > n_total:
        raise ValueError(f"{what}={n} but the split has only {n_total} images")
    return np.sort(np.random.default_rng(seed).choice(n_total, size=n, replace=False))


def run(cfg: DictConfig) -> dict:
    if (reason := skip_reason("branches", cfg)) is not None:  # repshare.stage_scope
        return write_skipped("branches", cfg, reason)
    from repshare.data.shards import load_split, prepared_dir, read_manifest
    from repshare.models.load import load_classifier, resolve_device
    from repshare.multiexit.zoo_figures import fig_acc_vs_latency
    from repshare.utils.io import atomic_dir, write_csv, write_json
    from repshare.utils.runlog import RunLog

    t_start = time.perf_counter()
    mc, seed, results = cfg.multiexit, int(cfg.seed), Path(cfg.paths.results_dir)
    paths, metrics_dir = Part1(results), results / "metrics"
    lat = Latency(str(mc.latency.source), cost_model(mc.latency), int(mc.latency.repeats),
                  int(mc.latency.warmup))  # bad latency settings fail here, before anything runs
    model, pre = load_classifier(cfg)
    exits = check_exits(model, list(mc.exits))
    device = resolve_device(mc.device)
    has_select = "select" in read_manifest(prepared_dir(cfg))["splits"]
    train, val = load_split(prepared_dir(cfg), "train"), load_split(prepared_dir(cfg), "val")
    shapes = exit_shapes(model, pre, train.images.shape[1:3], exits)
    z = mc.zoo  # bad zoo entries fail here, before anything is written
    specs, skipped = zoo_specs(exits, [(c.type, c.kernel, c.n) for c in z.convs], [list(f) for f in z.fcs],
                               int(z.pool), shapes, z.unfit)
    n_train, n_hold = int(mc.features.n_train), int(mc.features.n_holdout)
    rows = sample_rows(len(train), n_train, seed, "multiexit.features.n_train")
    # Shuffle the sample so the held-out tail is random too (sorted rows read the shards in order).
    rows = rows[np.random.default_rng(seed + 1).permutation(len(rows))]
    fit = np.arange(n_train - n_hold)
    if has_select:
        sel = load_split(prepared_dir(cfg), "select")
        n_sel = len(sel) if mc.features.n_select is None else min(int(mc.features.n_select), len(sel))
        sel_images, sel_labels, select_source = sel.images[:n_sel], sel.labels[:n_sel], "select split"
    elif n_hold > 0:
        sel_images, sel_labels, select_source = train.images[rows[fit.size:]], train.labels[rows[fit.size:]], "train holdout"
    else:
        raise ValueError("no images to decide on: the prepared data has no 'select' split (set data.n_select > 0 and "
                         "rerun prepare) and multiexit.features.n_holdout is 0")
    n_val = len(val) if mc.features.n_val is None else min(int(mc.features.n_val), len(val))
    num_classes = int(cfg.model.classifier.num_classes)

    with atomic_dir(paths.features_dir, stage=BRANCHES_STAGE) as ftmp, \
            atomic_dir(paths.zoo_dir, stage=BRANCHES_STAGE) as ztmp, RunLog(cfg, "branches", metrics_dir) as runlog:
        t0 = time.perf_counter()
        kw = dict(batch_size=int(mc.features.batch_size), dtype=mc.features.dtype, device=device)
        tr = extract_features(model, pre, train.images[rows], train.labels[rows], exits, folder=ftmp / "train", **kw)
        se = extract_features(model, pre, sel_images, sel_labels, exits, folder=ftmp / "select", **kw)
        va = extract_features(model, pre, val.images[:n_val], val.labels[:n_val], exits, folder=ftmp / "val", **kw)
        cache_s = time.perf_counter() - t0
        final = {s: (np.asarray(c.logits).argmax(1) == c.labels).astype(np.float32) for s, c in (("select", se), ("val", va))}
        log.info("branches: cached %d train + %d select (%s) + %d val images at exits %s in %.1fs",
                 len(tr), len(se), select_source, len(va), exits, cache_s)

        t0 = time.perf_counter()
        ts = TrainSettings(float(mc.train.epochs), int(mc.train.batch_size), float(mc.train.lr),
                           float(mc.train.weight_decay))
        branches, train_info = train_zoo(specs, shapes, num_classes, tr, fit, ts, seed, device)
        train_s = time.perf_counter() - t0

        t0 = time.perf_counter()  # profile at batch 1, on the CPU (the edge device's setting)
        x1 = pre(torch.from_numpy(val.images[:1]).permute(0, 3, 1, 2).contiguous())
        model_cpu = model.cpu().eval()
        stages, head, stage_flops, head_flops = backbone_timings(model_cpu, x1, lat)
        stage_s = [t.median_s for t in stages]
        full_s = full_latency(stage_s, head.median_s)
        profiles, correct = profile_zoo(specs, branches, Sets(se, va, exits), stage_s, lat)
        for p, (ok, why) in zip(profiles, survival(profiles, full_s, mc.survival.scope, accuracy_key="accuracy_select")):
            p["survived"], p["drop_reason"] = ok, why
        profile_s = time.perf_counter() - t0

        for s in specs:
            save_branch(branches[s.id], ztmp / "branches" / f"{s.id}.safetensors", s.id)
        ids = ["final", *(s.id for s in specs)]
        for split in ("select", "val"):
            write_correct(ztmp / f"correct_{split}.npz", ids, np.stack([final[split], *(correct[s.id][split] for s in specs)]))
        backbone = {"stage_latency_s": stage_s, "head_latency_s": head.median_s, "stage_flops": stage_flops,
                    "head_flops": head_flops, "final_accuracy": top1(final["val"]),
                    "final_accuracy_select": top1(final["select"]),
                    "backbone_params": count_params(model_cpu) - head_params(model_cpu),
                    "head_params": head_params(model_cpu), "exits": exits}
        if lat.source == "measured":
            backbone["stage_latency_spread_s"] = [t.spread_s for t in stages]
        survivors = [p for p in profiles if p["survived"]]
        doc = {
            "backbone": backbone, "full_latency_s": full_s, "exit_shapes": {str(e): list(v) for e, v in shapes.items()},
            "num_classes": num_classes, "specs": {s.id: spec_to_dict(s) for s in specs}, "branches": profiles,
            "skipped": skipped, "train": train_info, "n_train_cached": n_train, "n_fit": len(fit), "n_holdout": n_hold,
            "n_select": len(se), "select_source": select_source, "n_val": n_val, "survival_scope": mc.survival.scope,
            "latency_source": lat.source, "cost_model": lat.model.to_dict(),
        }
        write_json(ztmp / "zoo.json", doc)
        figs = fig_acc_vs_latency(profiles, full_s, ztmp / "acc_vs_latency")
        runlog.log_table("zoo", [{k: (str(v) if isinstance(v, list) else v) for k, v in p.items()} for p in profiles])
        runlog.summary(n_branches=len(profiles), n_survived=len(survivors), n_skipped=len(skipped),
                       final_accuracy=backbone["final_accuracy"], best_branch_accuracy=max(p["accuracy"] for p in profiles),
                       cache_seconds=round(cache_s, 2), train_seconds=round(train_s, 2),
                       profile_seconds=round(profile_s, 2), seconds=round(time.perf_counter() - t_start, 2))
        for f in figs:
            if f.suffix == ".png":
                runlog.log_image("acc_vs_latency", f)
    write_json(metrics_dir / "branches.json", {
        "n_branches": len(profiles), "n_survived": len(survivors), "final_accuracy": backbone["final_accuracy"],
        "best_branch_accuracy": max(p["accuracy"] for p in profiles),
        "mean_survivor_accuracy": float(np.mean([p["accuracy"] for p in survivors])) if survivors else None})
    write_csv(results / "plots" / "multiexit_zoo.csv", [
        {"latency_ms": round(p["latency_to_exit_s"] * 1e3, 4), "accuracy": p["accuracy"], "exit": p["exit"],
         "survived": int(p["survived"]), "id": p["id"]} for p in profiles])
    log.info("branches: %d trained (%d skipped), %d survived; cache %.1fs, train %.1fs, profile %.1fs",
             len(profiles), len(skipped), len(survivors), cache_s, train_s, profile_s)
    return doc
