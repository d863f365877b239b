"""Peak memory of the streamed closed-form adapter fit (moments + lstsq, all 64 pairs) as the
calibration set grows 4x (goal: ratio <= 1.2, i.e. flat).

Each size runs in a fresh subprocess (random-init EfficientNet-B0 classifier and backbone; images
generated batch by batch, so nothing of size n is ever held); the parent compares their peak RSS.
Usage:
    python benchmarks/bench_lstsq_memory.py [--n 400] [--factor 4] [--size 32] [--out results/benchmarks/lstsq_memory.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path


def child(n: int, size: int, batch: int) -> None:
    import resource

    import timm
    import torch

    from repshare.models.preprocess import Preprocess
    from repshare.sharing.fit import fit_label_free
    from repshare.sharing.merged import stage_shapes

    torch.set_num_threads(1)
    torch.manual_seed(0)
    cls = timm.create_model("efficientnet_b0", num_classes=8).eval()
    torch.manual_seed(1)
    bb = timm.create_model("efficientnet_b0", features_only=True, out_indices=(2, 3, 4)).eval()
    pre_c, pre_d = Preprocess(size), Preprocess(2 * size)

    def images():
        g = torch.Generator().manual_seed(0)
        for start in range(0, n, batch):
            yield torch.randint(0, 256, (min(batch, n - start), 3, size, size), dtype=torch.uint8, generator=g)

    x1 = torch.zeros(1, 3, size, size, dtype=torch.uint8)
    src, dst = stage_shapes(bb, pre_d(x1)), stage_shapes(cls, pre_c(x1))
    pairs = [(i, j) for i in range(len(src)) for j in range(len(dst))]
    t0 = time.perf_counter()
    fitted, info = fit_label_free(bb, pre_d, cls, pre_c, images(), pairs, src, dst, ["moments", "lstsq"])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    print(json.dumps({"n": n, "peak_mib": peak, "seconds": time.perf_counter() - t0, "adapters": len(fitted),
                      "rows_pair_0_0": info["rows_per_pair"]["0,0"]}))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--factor", type=int, default=4)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--child", type=int, default=None)
    args = ap.parse_args()
    if args.child is not None:
        child(args.child, args.size, args.batch)
        return 0
    runs = []
    for n in (args.n, args.factor * args.n):
        out = subprocess.run([sys.executable, __file__, "--child", str(n), "--size", str(args.size), "--batch", str(args.batch)],
                             capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if out.returncode:
            print(out.stderr, file=sys.stderr)
            return 1
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"n={n}: peak {runs[-1]['peak_mib']:.0f} MiB, fit {runs[-1]['seconds']:.1f} s", flush=True)
    ratio = runs[1]["peak_mib"] / runs[0]["peak_mib"]
    print(f"peak memory ratio ({args.factor}x images): {ratio:.3f} (goal <= 1.2)")
    record = {"runs": runs, "ratio": ratio, "goal": 1.2, "met": ratio <= 1.2, "machine": platform.machine(),
              "cpus": os.cpu_count()}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
