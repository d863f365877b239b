"""Speed-up over PyPI ``torch_cka`` across batch sizes and input resolutions, beside its FLOP bound.

Same stored activations for both tools (random-init EfficientNet-B0 pair, all 8x8 stage pairs).
On a CPU both tools spend their time in BLAS gram products, so the measured speed-up tracks the
ratio of FLOPs the two algorithms need (``flop_counts`` in bench_cka.py). Usage:
    python benchmarks/bench_torch_cka_sweep.py [--batches 50 100 200] [--sizes 32 64] [--n 300]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cka import bench_cka_only, build_models, flop_counts, image_batches, stage_acts  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, nargs="+", default=[50, 100, 200])
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    p.add_argument("--n", type=int, default=400, help="examples per setting (whole batches)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="write the JSON record here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from repshare.models.preprocess import Preprocess

    dev = torch.device(args.device)
    cls, bb = build_models()
    cls.to(dev)
    bb.to(dev)
    rows = []
    print(f"torch_cka comparison ({dev}, {args.threads} thread(s), {platform.processor() or platform.machine()})")
    print(f"{'size':>5}{'batch':>7}{'n':>6}{'ours s':>9}{'torch_cka s':>13}{'speed-up':>10}{'FLOP ratio':>12}{'max|diff|':>11}")
    for size in args.sizes:
        pre = Preprocess(size).to(dev)
        for batch in args.batches:
            batches = list(image_batches(args.n - args.n % batch or batch, batch, size))
            acts_d = stage_acts(bb, pre, batches, dev)
            acts_c = stage_acts(cls, pre, batches, dev)
            bench_cka_only([a[:1] for a in acts_d], [a[:1] for a in acts_c], dev)  # warm-up
            t_ours, ours, t_ref, ref = bench_cka_only(acts_d, acts_c, dev)
            f_ours, f_ref = flop_counts(acts_d, acts_c)
            row = {"size": size, "batch": batch, "n": batch * len(batches), "ours_s": t_ours, "torch_cka_s": t_ref,
                   "speedup": t_ref / t_ours, "flop_ratio": f_ref / f_ours,
                   "max_abs_diff": float(abs(ours - ref).max())}
            rows.append(row)
            print(f"{size:>5}{batch:>7}{row['n']:>6}{t_ours:>9.3f}{t_ref:>13.3f}{row['speedup']:>10.1f}"
                  f"{row['flop_ratio']:>12.1f}{row['max_abs_diff']:>11.1e}")
    if args.out:
        from repshare.utils.io import write_json

        write_json(args.out, {"config": vars(args), "machine": platform.platform(), "torch": torch.__version__,
                              "device": str(dev), "rows": rows})
        print(f"wrote {args.out}")


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    main()
