"""Benchmark: all 64 (i, j) pairs at once vs one pair at a time.

    python benchmarks/bench_all_pairs.py [--n 256] [--batch 64] [--size 64] [--det-size 64] [--threads 1]

Random-init timm ``efficientnet_b0`` classifier and a ``features_only`` EfficientNet-B0 detector
backbone stand-in. ``evaluate_all_pairs`` computes the detector prefix once per batch;
``evaluate_pair`` recomputes it for every pair. Prints both timings, the speed-up, the speed-up
FLOP counts allow (the classifier suffixes cannot be shared, so they bound it), and the largest
accuracy difference between the two paths (must be 0).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
import timm

from repshare.features.stages import run_from, run_stages
from repshare.models.preprocess import Preprocess
from repshare.models.flops import count_flops, cumulative, stage_flops
from repshare.sharing.evaluate import evaluate_all_pairs, evaluate_pair


def ideal_speedup(backbone, det_pre, classifier, cls_pre, x1, pairs) -> float:
    """FLOPs of all separate pair runs / FLOPs of the shared run (adapters ignored)."""
    with torch.no_grad():
        det_in, cls_in = det_pre(x1), cls_pre(x1)
        prefix = cumulative(stage_flops(backbone, det_in))
        reps = run_stages(classifier, cls_in)
        suffix = [count_flops(run_from, classifier, reps[j], j) for j in range(len(reps))]
    separate = sum(prefix[i] + suffix[j] for i, j in pairs)
    shared = prefix[max(i for i, _ in pairs)] + sum(suffix[j] for _, j in pairs)
    return separate / shared


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=64, help="classifier input size")
    ap.add_argument("--det-size", type=int, default=128, help="detector input size (embedded config: 128)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--method", default="bilinear")
    ap.add_argument("--out", default=None, help="write the JSON record here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    classifier = timm.create_model("efficientnet_b0", num_classes=8).eval()
    backbone = timm.create_model("efficientnet_b0", features_only=True, out_indices=(2, 3, 4)).eval()
    cls_pre, det_pre = Preprocess(args.size), Preprocess(args.det_size)
    images = torch.randint(0, 256, (args.n, 3, args.size, args.size), dtype=torch.uint8)
    labels = torch.randint(0, 8, (args.n,))
    batches = [(images[s : s + args.batch], labels[s : s + args.batch]) for s in range(0, args.n, args.batch)]
    pairs = [(i, j) for i in range(8) for j in range(8)]

    evaluate_pair(backbone, det_pre, classifier, cls_pre, batches[:1], 0, 0)  # warm-up
    t0 = time.perf_counter()
    together = evaluate_all_pairs(backbone, det_pre, classifier, cls_pre, batches, pairs, args.method)
    t_all = time.perf_counter() - t0
    t0 = time.perf_counter()
    separate = {p: evaluate_pair(backbone, det_pre, classifier, cls_pre, batches, *p, args.method) for p in pairs}
    t_sep = time.perf_counter() - t0

    diff = max(abs(together[p][k] - separate[p][k]) for p in pairs for k in ("acc", "acc_top5"))
    ideal = ideal_speedup(backbone, det_pre, classifier, cls_pre, images[:1], pairs)
    accs = sorted(r["acc"] for r in together.values())
    print(f"{len(pairs)} pairs, {args.n} images, batch {args.batch}, classifier {args.size}px, "
          f"detector {args.det_size}px, {args.threads} thread(s)")
    print(f"evaluate_all_pairs        : {t_all:8.2f} s")
    print(f"sum of evaluate_pair      : {t_sep:8.2f} s")
    print(f"speed-up                  : {t_sep / t_all:8.2f} x  (FLOP bound {ideal:.2f} x)")
    print(f"max |acc difference|      : {diff:.3g}")
    print(f"accuracy range over pairs : {accs[0]:.3f} .. {accs[-1]:.3f}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({
            "n": args.n, "batch": args.batch, "classifier_size": args.size, "detector_size": args.det_size,
            "threads": args.threads, "seconds_all_pairs": t_all, "seconds_separate": t_sep,
            "speedup": t_sep / t_all, "flop_bound": ideal, "max_abs_acc_diff": diff,
            "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
        }, indent=2) + "\n")


if __name__ == "__main__":
    main()
