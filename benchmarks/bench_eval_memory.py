"""Peak memory of merged evaluation at real-mode resolution as the number of images grows 4x.

Issue 11, item 10: merged evaluation peaked at 7.1 GB with 200 images and batch 50. Two causes:
the split was loaded whole (memory grows with n), and each batch ran the 512 px detector prefix on
all its images at once (an MBConv's 6x expansion at 256x256 is ~25 MB per image, several alive at
a time). This benchmark runs ``evaluate_adapters`` (the code path of the evaluate_merged stage)
in a fresh subprocess per setting and prints each one's peak RSS:

- ``eager``: the split loaded whole (``load_split``), whole batches through the models (before);
- ``streamed``: images read batch by batch from the shards (``load_split(lazy=True)``) and every
  forward pass ``--chunk`` images at a time (``sharing.forward_chunk``; after).

Goal: streamed peak at 4n / peak at n <= 1.1 (flat in n), and well below eager. Random-init
EfficientNet-B0 classifier (224 px) and EfficientDet-D0 backbone (512 px); random images stored
at 512 px in shards written by the prepare stage's own writer. Usage:
    python benchmarks/bench_eval_memory.py [--n 50] [--factor 4] [--batch 50] [--chunk 8] [--pairs 8]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_data(root: Path, n: int, size: int, shard_size: int) -> None:
    import numpy as np

    from repshare.data.shards import write_manifest, write_split

    class Data:  # the fields write_split reads
        pass

    rng = np.random.default_rng(0)
    d = Data()
    d.images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    d.labels = rng.integers(0, 1000, n).astype(np.int64)
    d.boxes, d.box_classes = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    d.box_offsets = np.zeros(n + 1, np.int64)
    write_manifest(root, {"val": write_split(root, "val", d, shard_size)}, {"source": "bench_eval_memory"})


def child(root: Path, mode: str, batch: int, chunk: int | None, n_pairs: int) -> None:
    import resource

    import timm
    import torch
    from effdet import create_model

    from repshare.data.shards import load_split
    from repshare.features.batching import labelled_batches
    from repshare.models.preprocess import Preprocess
    from repshare.sharing.adapter import Adapter
    from repshare.sharing.evaluate import evaluate_adapters
    from repshare.sharing.merged import stage_shapes

    torch.set_num_threads(2)
    torch.manual_seed(0)
    cls = timm.create_model("efficientnet_b0", num_classes=1000).eval()
    bb = create_model("tf_efficientdet_d0", pretrained=False, pretrained_backbone=False).backbone.eval()
    pre_c, pre_d = Preprocess(224), Preprocess(512)
    x1 = torch.zeros(1, 3, 512, 512, dtype=torch.uint8)
    src, dst = stage_shapes(bb, pre_d(x1)), stage_shapes(cls, pre_c(x1))
    pairs = [(i, i) for i in range(min(len(src), len(dst)))][:n_pairs]
    adapters = {("resample", i, j): Adapter(src[i], dst[j]) for i, j in pairs}
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB: models and allocator warm-up
    t0 = time.perf_counter()
    split = load_split(root, "val", lazy=(mode == "streamed"))
    batches = labelled_batches(split.images, split.labels, batch)
    res, ref = evaluate_adapters(bb, pre_d, cls, pre_c, batches, adapters, "cpu",
                                 chunk=chunk if mode == "streamed" else None)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"n": len(split.labels), "mode": mode, "peak_mib": round(peak, 1),
                      "peak_over_models_mib": round(peak - base, 1), "seconds": round(time.perf_counter() - t0, 1),
                      "acc": {f"{i},{j}": res[("resample", i, j)]["acc"] for i, j in pairs}, "base_acc": ref["acc"]}))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--factor", type=int, default=4)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--chunk", type=int, default=8)
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--child", nargs=3, metavar=("ROOT", "MODE", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(Path(args.child[0]), args.child[1], args.batch, args.chunk, args.pairs)
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (args.n, args.factor * args.n):
            root = Path(tmp) / f"n{n}"
            write_data(root, n, args.size, shard_size=max(1, n // 4))
            for mode in ("eager", "streamed"):
                out = subprocess.run([sys.executable, __file__, "--child", str(root), mode, str(n),
                                      "--batch", str(args.batch), "--chunk", str(args.chunk),
                                      "--pairs", str(args.pairs)],
                                     check=True, capture_output=True, text=True, env=os.environ)
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                r = rows[-1]
                print(f"n={n:5d} {mode:9s} peak {r['peak_mib']:8.1f} MiB ({r['peak_over_models_mib']:8.1f} over the "
                      f"models)  {r['seconds']:6.1f} s", flush=True)
    get = {(r["n"], r["mode"]): r for r in rows}
    n, m = args.n, args.factor * args.n
    same = all(get[(k, "eager")]["acc"] == get[(k, "streamed")]["acc"] for k in (n, m))
    summary = {
        "streamed_peak_ratio_4n_over_n": round(get[(m, "streamed")]["peak_mib"] / get[(n, "streamed")]["peak_mib"], 3),
        "eager_peak_ratio_4n_over_n": round(get[(m, "eager")]["peak_mib"] / get[(n, "eager")]["peak_mib"], 3),
        "eager_over_streamed_at_4n": round(get[(m, "eager")]["peak_mib"] / get[(m, "streamed")]["peak_mib"], 2),
        "same_accuracies": same,
    }
    print(json.dumps(summary))
    print(f"streamed: peak at {m} / at {n} images = {summary['streamed_peak_ratio_4n_over_n']} (goal <= 1.1); "
          f"eager / streamed at {m} = {summary['eager_over_streamed_at_4n']}; same accuracies: {same}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"rows": rows, "summary": summary, "batch": args.batch, "chunk": args.chunk,
                                        "machine": f"{platform.machine()}, {os.cpu_count()} cores"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
