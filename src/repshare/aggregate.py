"""Aggregate a Hydra multirun: mean, std and t-based 95% CI of every metric across jobs (seeds).

    python -m repshare.aggregate multirun/<date>/<time> [--ci 0.95]

Reads ``<sweep>/<job>/results/metrics.json`` for every job folder, writes ``<sweep>/aggregate.json``
(per metric: n, mean, std (ddof=1), sem, ci_low, ci_high, values, plus the job list) and
``<sweep>/aggregate.csv`` (one row per metric). CI = mean +- t_{(1+ci)/2, n-1} * std / sqrt(n);
with one job std and the CI are null.

Failed jobs (``<job>/job_error.json``, written by ``repshare.sweep``) and job folders without metrics
(a job that was killed) are left out and named: in ``aggregate.json`` (``failed``: job, overrides, error)
and as one line each on stderr; the exit status is then 2, after the good jobs are aggregated.
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

from repshare.sweep_failures import JOB_ERROR_FILE, failure_line, job_folders, job_sort_key, read_failures
from repshare.utils.io import atomic_path, read_json, write_json

METRICS_REL = Path("results") / "metrics.json"


def find_jobs(sweep_dir: str | Path) -> list[Path]:
    """Job folders of a sweep that hold results/metrics.json and did not fail, sorted by job number/name."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep folder {sweep_dir} does not exist")
    # A job that failed after analyze wrote metrics.json has partial results: not a good job.
    jobs = [p for p in sweep_dir.iterdir()
            if p.is_dir() and (p / METRICS_REL).is_file() and not (p / JOB_ERROR_FILE).is_file()]
    return sorted(jobs, key=job_sort_key)


def failed_jobs(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Every job left out: its failure record, or a job folder Hydra started that has no metrics (killed)."""
    sweep_dir = Path(sweep_dir)
    failures = read_failures(sweep_dir)
    for job in job_folders(sweep_dir):
        if job not in failures and not (job / METRICS_REL).is_file():
            failures[job] = {"overrides": _overrides(job), "error": f"no {METRICS_REL.as_posix()} and no "
                             f"{JOB_ERROR_FILE} (the job was killed or is still running)"}
    out = []
    for job in sorted(failures, key=job_sort_key):
        doc = failures[job]
        out.append({"job": job.relative_to(sweep_dir).as_posix(), "overrides": list(doc.get("overrides") or []),
                    "error": str(doc.get("error", "failed")), "line": failure_line(job, doc, sweep_dir)})
    return out


def _overrides(job: Path) -> list[str]:
    try:
        from omegaconf import OmegaConf

        return [str(o) for o in OmegaConf.to_container(OmegaConf.load(job / ".hydra" / "overrides.yaml"))]
    except Exception:  # noqa: BLE001 - only to name the job better
        return []


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
    failed = failed_jobs(sweep_dir)
    if not jobs:
        why = f" ({len(failed)} failed: {failed[0]['line']})" if failed else ""
        raise FileNotFoundError(f"no job folder under {sweep_dir} has {METRICS_REL}{why}")
    per_job = {p.name: read_json(p / METRICS_REL) for p in jobs}
    agg = aggregate_metrics(per_job, ci)
    result = {"sweep": str(sweep_dir), "ci": ci, "jobs": list(per_job), "metrics": agg,
              "failed": [{k: f[k] for k in ("job", "overrides", "error")} for f in failed]}
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
    for k in ("r_same_S", "r_cross_S", "r_params_same", "r_size_same", "r_flops_same", "s_prime"):
        s = res["metrics"].get(k)
        if s and s["mean"] is not None:
            ci = "" if s["ci_low"] is None else f"  CI [{s['ci_low']:.3f}, {s['ci_high']:.3f}]"
            print(f"{k:20s} mean {s['mean']:.3f} (n={s['n']}){ci}")
    print(f"wrote {Path(args.sweep_dir) / 'aggregate.json'}")
    failed = failed_jobs(args.sweep_dir)
    if failed:
        print(f"error [aggregate]: {len(failed)} job(s) left out, {len(res['jobs'])} aggregated", file=sys.stderr)
        for f in failed:
            print(f"error [aggregate]: {f['line']}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
