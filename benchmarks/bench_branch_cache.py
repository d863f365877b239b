"""Benchmark: train MEEdge branches on the cached exit features vs through the frozen backbone.

    python benchmarks/bench_branch_cache.py [--n 512] [--branches 4] [--epochs 2] [--exit 3] [--threads 1]

Random-init timm ``efficientnet_b0`` (frozen, eval) at 64 px, ``--branches`` zoo branches at one
exit. Cached: one backbone pass over the images (``extract_features``), then every branch trains
on the cache. Through the backbone: the same ``train_branch`` call, but every batch's features are
recomputed by running the backbone up to the exit (what training without the cache costs). Both
paths see the same batches in the same order, so the trained weights must agree (float32 cache).
Prints both timings, the speed-up, the FLOP-count bound on it, and the largest weight difference.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import timm
import torch

from repshare.features.stages import run_stages, stage_modules
from repshare.models.preprocess import Preprocess
from repshare.multiexit.features import extract_features
from repshare.models.flops import count_flops
from repshare.multiexit.train import train_branch
from repshare.multiexit.zoo import Branch, BranchSpec

SPECS = [("none", None, 0, ()), ("dws", 3, 1, (256, 128)), ("dw", 3, 1, ()), ("dilated", 3, 1, (256, 128)),
         ("spatial", 3, 1, ()), ("none", None, 0, (256, 128))]


class BackboneFeatures:
    """Array-like whose rows are computed by the frozen backbone on demand (no cache)."""

    def __init__(self, model, pre, images: np.ndarray, exit_: int):
        self.model, self.pre, self.images, self.exit = model, pre, images, exit_

    def __len__(self) -> int:
        return len(self.images)

    @torch.inference_mode()
    def __getitem__(self, index) -> np.ndarray:
        x = torch.from_numpy(self.images[index]).permute(0, 3, 1, 2).contiguous()
        return run_stages(self.model, self.pre(x), self.exit)[self.exit].numpy()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--branches", type=int, default=4)
    ap.add_argument("--epochs", type=float, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--exit", type=int, default=3)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = timm.create_model("efficientnet_b0", num_classes=8).eval()
    pre = Preprocess(args.size)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.n, args.size, args.size, 3), dtype=np.uint8)
    labels = rng.integers(0, 8, args.n)
    specs = [BranchSpec(args.exit, c, k, n, fc, 4) for c, k, n, fc in SPECS[: args.branches]]
    kw = dict(epochs=args.epochs, batch_size=args.batch, lr=1e-3, seed=0)

    def fresh(shape):
        out = []
        for k, s in enumerate(specs):
            torch.manual_seed(100 + k)
            out.append(Branch(s, shape, 8))
        return out

    t0 = time.perf_counter()
    cache = extract_features(model, pre, images, labels, [args.exit], batch_size=args.batch, dtype="float32")
    t_extract = time.perf_counter() - t0
    shape = tuple(cache.features[args.exit].shape[1:])
    cached = fresh(shape)
    t0 = time.perf_counter()
    for b in cached:
        train_branch(b, cache.features[args.exit], labels, **kw)
    t_cached = t_extract + time.perf_counter() - t0

    direct = fresh(shape)
    lazy = BackboneFeatures(model, pre, images, args.exit)
    t0 = time.perf_counter()
    for b in direct:
        train_branch(b, lazy, labels, **kw)
    t_direct = time.perf_counter() - t0
    diff = max(float((p - q).detach().abs().max()) for a, b in zip(cached, direct) for p, q in zip(a.parameters(), b.parameters()))

    # FLOP bound: the backbone prefix runs once per image (cache) vs once per image, epoch and branch.
    with torch.no_grad():
        x1 = pre(torch.from_numpy(images[:1]).permute(0, 3, 1, 2).contiguous())
        prefix, x = 0, x1
        for stage in stage_modules(model)[: args.exit + 1]:
            prefix += count_flops(stage, x)
            x = stage(x)
        branch_train = sum(3 * count_flops(b, x) for b in cached)  # forward + ~2x backward per image
    steps_images = args.epochs * args.n
    flops_cached = prefix * args.n + branch_train * steps_images
    flops_direct = prefix * steps_images * len(specs) + branch_train * steps_images
    rec = {
        "n_images": args.n, "branches": len(specs), "epochs": args.epochs, "exit": args.exit,
        "extract_s": round(t_extract, 3), "cached_total_s": round(t_cached, 3), "through_backbone_s": round(t_direct, 3),
        "speedup": round(t_direct / t_cached, 2), "flop_bound_speedup": round(flops_direct / flops_cached, 2),
        "max_weight_diff": diff, "threads": args.threads, "machine": platform.machine(), "cpus": os.cpu_count(),
    }
    print(json.dumps(rec, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rec, indent=2) + "\n")


if __name__ == "__main__":
    main()
