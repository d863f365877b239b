"""Real mode's cost on this machine: each stage's wall time and peak resident memory at n real-size images.

Issue 28: `cka` at the real preset's defaults must stay under 6 GB resident at n = 200, and the
`real_cpu` preset must finish the whole chain for n = 200 in under 20 minutes on 2 cores. This script
makes n random JPEGs (500 x 375, the typical ImageNet val size) in a flat folder with a ``val.txt``,
composes the preset with random-init weights (published ones cannot be downloaded here; the cost is
the same), then runs every stage entry point in ``repshare.stages.STAGES`` order, as ``dvc repro``
does, each in its own process, and prints its seconds and peak RSS (``os.wait4``: that process
alone). Stages that do not apply to the real workload are skipped by definition (seconds each).

    python benchmarks/bench_real_mode.py --preset real_cpu --n 200          # the whole chain
    python benchmarks/bench_real_mode.py --preset real --n 200 --stages prepare,cka \\
        --set capture.n_samples=200                                         # cka at the real defaults
    python benchmarks/bench_real_mode.py --preset real_cpu --n 200 --train 300 --select 100
                                        # with training images: Gemel and MEEdge run too

Extra ``--set key=value`` overrides go to compose. Output: one line per stage, then a JSON summary
(``--out FILE`` too). Exit status 1 when a stage fails.
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

ROOT = Path(__file__).resolve().parents[1]


def make_images(folder: Path, n: int, seed: int = 0) -> Path:
    """n smooth random JPEGs (2 classes of the standard order) and a ``val.txt`` naming them."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    lines = []
    for k in range(n):
        small = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)  # upsampled: JPEG-like content, fast to write
        name = f"ILSVRC2012_val_{k + 1:08d}.JPEG"
        Image.fromarray(small).resize((500, 375), Image.BILINEAR).save(folder / name, quality=90)
        lines.append(f"{name} {k % 2}")
    (folder.parent / "val.txt").write_text("\n".join(lines) + "\n")
    return folder.parent / "val.txt"


def make_train_images(folder: Path, n: int, seed: int = 1) -> Path:
    """n training JPEGs (500 x 375) in two class folders named by wnid (the layout of ImageNet's train)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for k in range(n):
        d = folder / ("n01440764", "n01443537")[k % 2]
        d.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
        Image.fromarray(small).resize((500, 375), Image.BILINEAR).save(d / f"train_{k:06d}.JPEG", quality=90)
    return folder


def run_stage(name: str, cwd: Path, env: dict) -> tuple[int, float, float, str]:
    """(exit status, seconds, peak RSS in MiB, stderr tail) of ``python pipelines/<name>.py`` in ``cwd``."""
    t0 = time.perf_counter()
    with open(cwd / f"{name}.log", "w") as log:
        proc = subprocess.Popen([sys.executable, str(ROOT / "pipelines" / f"{name}.py")], cwd=cwd, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    tail = (cwd / f"{name}.log").read_text().strip().splitlines()[-1:] or [""]
    return os.waitstatus_to_exitcode(status), seconds, usage.ru_maxrss / 1024, tail[0][:200]


def main() -> int:
    from repshare.stages import STAGES

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="real_cpu")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--stages", default=",".join(STAGES), help="comma-separated, in this order")
    ap.add_argument("--train", type=int, default=0, help="training images (data.train_root); 0: none")
    ap.add_argument("--select", type=int, default=0, help="of those, the select split (data.n_select)")
    ap.add_argument("--set", action="append", default=[], help="an extra compose override key=value")
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temporary one)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_real_"))
    work.mkdir(parents=True, exist_ok=True)
    val_txt = make_images(work / "imagenet" / "val", args.n)
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT / "src")}
    overrides = [f"experiment={args.preset}", f"data.root={work / 'imagenet' / 'val'}", f"data.val_txt={val_txt}",
                 "model.classifier.weights=random", "model.detector.weights=random", "logger=none",
                 f"paths.data_dir={work / 'data'}", f"paths.results_dir={work / 'results'}", *args.set]
    if args.train:
        train = make_train_images(work / "imagenet" / "train", args.train)
        overrides += [f"data.train_root={train}", f"data.n_select={args.select}"]
    subprocess.run([sys.executable, str(ROOT / "pipelines" / "compose.py"), *overrides], cwd=work, env=env,
                   check=True, stdout=subprocess.DEVNULL)
    rows, failed = [], False
    for name in args.stages.split(","):
        code, seconds, rss, tail = run_stage(name, work, env)
        rows.append({"stage": name, "exit": code, "seconds": round(seconds, 1), "peak_rss_mib": round(rss)})
        print(f"{name:24s} exit {code}  {seconds:7.1f} s  peak RSS {rss:7.0f} MiB" + (f"  {tail}" if code else ""),
              flush=True)
        if code:
            failed = True
            break
    summary = {"preset": args.preset, "n": args.n, "train": args.train, "select": args.select, "overrides": args.set, "threads": os.environ.get("OMP_NUM_THREADS"),
               "cpus": os.cpu_count(), "machine": platform.machine(), "processor": platform.processor(),
               "total_seconds": round(sum(r["seconds"] for r in rows), 1),
               "max_peak_rss_mib": max((r["peak_rss_mib"] for r in rows), default=0), "stages": rows}
    print(json.dumps(summary, indent=1))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
