"""Run every benchmark once and print its ratios (``make bench``).

Each script measures its own ratios inside one run (so machine speed cancels out) and writes a
JSON record under results/benchmarks/. Benchmarks are not tests: they are never run by CI.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "results" / "benchmarks"
BENCHES = {
    "bench_cka.py": ["--out", str(OUT / "cka.json")],
    "bench_torch_cka_sweep.py": ["--out", str(OUT / "torch_cka_sweep.json")],
    "bench_all_pairs.py": ["--out", str(OUT / "all_pairs.json")],
    "bench_lstsq_memory.py": ["--out", str(OUT / "lstsq_memory.json")],
    "bench_placement.py": ["--out", str(OUT / "placement.json")],
    "bench_gemel.py": ["--out", str(OUT / "gemel.json")],
    "bench_concurrency.py": ["--out", str(OUT / "concurrency.json")],
    "bench_branch_cache.py": ["--out", str(OUT / "branch_cache.json")],
    "bench_depthwise_grad.py": ["--out", str(OUT / "depthwise_grad.json")],
}


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    failed = []
    for script, args in BENCHES.items():
        print(f"\n=== {script} ===", flush=True)
        rc = subprocess.call([sys.executable, str(HERE / script), *args])
        if rc:
            failed.append(script)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
