"""Training-step time of the workload's models with oneDNN's depthwise weight gradient vs the
small-map matrix-product gradient (``repshare.models.fast_depthwise``), measured in one run.

Steps alternate between the two (ABAB...), so drifts in machine speed hit both alike; the ratio
of the medians is the speed-up. The gradients of one step are compared too (max relative difference).
Usage:
    python benchmarks/bench_depthwise_grad.py [--steps 6] [--out results/benchmarks/depthwise_grad.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def _classifier_case():
    from repshare.models.classifier import build_classifier

    model = build_classifier("efficientnet_b0", num_classes=8).train()
    x, y = torch.randn(64, 3, 64, 64), torch.randint(0, 8, (64,))
    return "classifier B0, 64 px, batch 64", model, lambda: F.cross_entropy(model(x), y)


def _detector_case():
    from repshare.models.detector import build_detector

    model = build_detector("efficientdet_d0", num_classes=8, image_size=128).train()
    x = torch.randn(16, 3, 128, 128)
    # the backbone + BiFPN + heads forward; a sum of every output as the loss exercises every conv
    return "detector D0 (backbone+BiFPN+heads), 128 px, batch 16", model, \
        lambda: sum(o.float().pow(2).mean() for outs in model(x) for o in outs)


def measure(name, model, loss_fn, steps: int) -> dict:
    from repshare.models.fast_depthwise import fast_depthwise_grad

    opt = torch.optim.AdamW(model.parameters(), 1e-4)

    def step(fast: bool) -> float:
        t = time.perf_counter()
        with fast_depthwise_grad(model, fast):
            opt.zero_grad(set_to_none=True)
            loss_fn().backward()
        dt = time.perf_counter() - t
        opt.zero_grad(set_to_none=True)  # no update: both variants see the same weights
        return dt

    step(False), step(True)  # warm-up
    base, fast = [], []
    for _ in range(steps):
        base.append(step(False))
        fast.append(step(True))
    grads = {}
    for flag in (False, True):
        with fast_depthwise_grad(model, flag) as n_swapped:
            opt.zero_grad(set_to_none=True)
            torch.manual_seed(0)  # the same dropout / drop-path masks for both
            loss_fn().backward()
        grads[flag] = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    rel = max(((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item() for a, b in zip(grads[True], grads[False]))
    out = {"case": name, "depthwise_convs": n_swapped, "onednn_s": statistics.median(base),
           "fast_s": statistics.median(fast), "max_rel_grad_diff": rel}
    out["speedup"] = out["onednn_s"] / out["fast_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--out", default="results/benchmarks/depthwise_grad.json")
    args = ap.parse_args()
    torch.manual_seed(0)
    rows = [measure(*case(), args.steps) for case in (_classifier_case, _detector_case)]
    for r in rows:
        print(f"{r['case']}: forward+backward {r['onednn_s']:.3f} s (oneDNN) vs {r['fast_s']:.3f} s "
              f"(small-map gradient), speed-up {r['speedup']:.2f}x, {r['depthwise_convs']} depthwise convs, "
              f"max relative gradient difference {r['max_rel_grad_diff']:.1e}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": rows, "threads": torch.get_num_threads(),
                                          "machine": platform.processor() or platform.machine(),
                                          "torch": torch.__version__}, indent=2))


if __name__ == "__main__":
    main()
