"""Aggregate a Hydra multirun: mean, std and t-based 95% CI of every metric across jobs (seeds).

    python -m repshare.aggregate multirun/<date>/<time> [--ci 0.95]

Reads ``<sweep>/<job>/results/metrics.json`` for every job folder, writes ``<sweep>/aggregate.json``
(per metric: n, mean, std (ddof=1), sem, ci_low, ci_high, values, plus the job list) and
``<sweep>/aggregate.csv`` (one row per metric). CI = mean +- t_{(1+ci)/2, n-1} * std / sqrt(n);
with one job std and the CI are null.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from repshare.utils.io import atomic_path, read_json, write_json

METRICS_REL = Path("results") / "metrics.json"


def find_jobs(sweep_dir: str | Path) -> list[Path]:
    """Job folders of a sweep that hold results/metrics.json, sorted by job number/name."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep folder {sweep_dir} does not exist")
    jobs = [p for p in sweep_dir.iterdir() if p.is_dir() and (p / METRICS_REL).is_file()]
    return sorted(jobs, key=lambda p: (0, int(p.name)) if p.name.isdigit() else (1, p.name))


def summarize(values: Sequence[float], ci: float = 0.95) -> dict[str, Any]:
    """n, mean, std (ddof=1), sem and the t-based CI of the finite ``values``."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    n = int(v.size)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "sem": None, "ci_low": None, "ci_high": None}
    mean = float(v.mean())
    if n == 1:
        return {"n": 1, "mean": mean, "std": None, "sem": None, "ci_low": None, "ci_high": None}
    std = float(v.std(ddof=1))
    sem = std / math.sqrt(n)
    half = float(stats.t.ppf(0.5 * (1 + ci), n - 1)) * sem
    return {"n": n, "mean": mean, "std": std, "sem": sem, "ci_low": mean - half, "ci_high": mean + half}


def aggregate_metrics(per_job: Mapping[str, Mapping[str, Any]], ci: float = 0.95) -> dict[str, dict[str, Any]]:
    """Per numeric key (bools and nested values skipped): summarize its values across jobs."""
    keys: list[str] = []
    for m in per_job.values():
        keys += [k for k, v in m.items() if k not in keys and isinstance(v, (int, float)) and not isinstance(v, bool)]
    out = {}
    for k in keys:
        vals = [per_job[j].get(k) for j in per_job]
        nums = [float(v) for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)]
        out[k] = {**summarize(nums, ci), "values": [v if isinstance(v, (int, float)) else None for v in vals]}
    return out


def aggregate_sweep(sweep_dir: str | Path, ci: float = 0.95) -> dict[str, Any]:
    """Read every job's metrics.json, write aggregate.json and aggregate.csv into ``sweep_dir``."""
    sweep_dir = Path(sweep_dir)
    jobs = find_jobs(sweep_dir)
    if not jobs:
        raise FileNotFoundError(f"no job folder under {sweep_dir} has {METRICS_REL}")
    per_job = {p.name: read_json(p / METRICS_REL) for p in jobs}
    agg = aggregate_metrics(per_job, ci)
    result = {"sweep": str(sweep_dir), "ci": ci, "jobs": list(per_job), "metrics": agg}
    write_json(sweep_dir / "aggregate.json", result)
    rows = [{"metric": k, **{c: v for c, v in s.items() if c != "values"}} for k, s in agg.items()]
    with atomic_path(sweep_dir / "aggregate.csv") as tmp:
        pd.DataFrame(rows, columns=["metric", "n", "mean", "std", "sem", "ci_low", "ci_high"]).to_csv(tmp, index=False)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep_dir")
    ap.add_argument("--ci", type=float, default=0.95)
    args = ap.parse_args(argv)
    try:
        res = aggregate_sweep(args.sweep_dir, args.ci)
    except (FileNotFoundError, ValueError) as err:
        print(f"error [aggregate]: {err}", file=sys.stderr)
        return 2
    for k in ("r_same_S", "r_cross_S", "r_params", "r_size", "r_flops", "collapse_threshold"):
        s = res["metrics"].get(k)
        if s and s["mean"] is not None:
            ci = "" if s["ci_low"] is None else f"  CI [{s['ci_low']:.3f}, {s['ci_high']:.3f}]"
            print(f"{k:20s} mean {s['mean']:.3f} (n={s['n']}){ci}")
    print(f"wrote {Path(args.sweep_dir) / 'aggregate.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
