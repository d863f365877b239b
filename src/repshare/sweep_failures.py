"""Failed jobs of a sweep: one record per job folder, one summary for the whole sweep.

A job that fails writes ``<job dir>/job_error.json`` ({job, overrides, error}: the error as one line)
and returns instead of raising, so Hydra's launchers (joblib, submitit local and SLURM) finish the other
jobs and keep their results. ``FailureSummary`` is a Hydra callback that runs in the launching process
after the last job: it names every failed job, its overrides and its error, and exits with status 2.
``repshare.aggregate`` reads the same records to name the jobs it leaves out.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from repshare.utils.io import read_json, write_json

JOB_ERROR_FILE = "job_error.json"
EXIT_FAILED_JOBS = 2
CALLBACK_OVERRIDE = "++hydra.callbacks.repshare_failures._target_=repshare.sweep_failures.FailureSummary"


def record_failure(job_dir: str | Path, job: Any, overrides: Sequence[str], error: str) -> None:
    write_json(Path(job_dir) / JOB_ERROR_FILE, {"job": job, "overrides": list(overrides), "error": error})


def clear_failure(job_dir: str | Path) -> None:
    (Path(job_dir) / JOB_ERROR_FILE).unlink(missing_ok=True)


def job_sort_key(path: Path) -> tuple[int, int | str]:
    return (0, int(path.name)) if path.name.isdigit() else (1, path.name)


def read_failures(sweep_dir: str | Path) -> dict[Path, dict[str, Any]]:
    """Job folder -> its failure record, for every job of the sweep that failed (job number order)."""
    out = {}
    for rec in sorted(Path(sweep_dir).rglob(JOB_ERROR_FILE), key=lambda p: job_sort_key(p.parent)):
        try:
            doc = read_json(rec)
        except (OSError, ValueError) as err:  # a damaged record still names its job
            doc = {"error": f"unreadable {rec.name}: {err}"}
        out[rec.parent] = doc if isinstance(doc, dict) else {"error": f"malformed {rec.name}"}
    return out


def job_folders(sweep_dir: str | Path) -> list[Path]:
    """Folders Hydra ran a job in (they hold .hydra/overrides.yaml), in job number order."""
    return sorted((p.parent.parent for p in Path(sweep_dir).rglob(".hydra/overrides.yaml")
                   if p.parent.parent != Path(sweep_dir)), key=job_sort_key)


def failure_line(job_dir: Path, doc: dict[str, Any], sweep_dir: str | Path) -> str:
    """'job 1 (data.n_val=-3): <error>' -- the job by its folder under the sweep, its overrides, its error."""
    try:
        name = job_dir.relative_to(sweep_dir).as_posix()
    except ValueError:
        name = str(job_dir)
    overrides = " ".join(str(o) for o in doc.get("overrides") or []) or "no overrides"
    return f"job {name} ({overrides}): {doc.get('error', 'failed')}"


def summary_lines(sweep_dir: str | Path, prog: str = "repshare.sweep") -> list[str]:
    """Lines for stderr naming every failed job; [] when none failed."""
    failures = read_failures(sweep_dir)
    if not failures:
        return []
    n_jobs = max(len(job_folders(sweep_dir)), len(failures))
    kept = "no job succeeded" if len(failures) >= n_jobs else f"the other jobs' results are kept in {sweep_dir}"
    head = f"error [{prog}]: {len(failures)} of {n_jobs} jobs failed; {kept}"
    return [head] + [f"error [{prog}]: {failure_line(d, doc, sweep_dir)}" for d, doc in failures.items()]


class FailureSummary(Callback):
    """Hydra callback (``hydra.callbacks``): clear stale records at the start, summarize and exit 2 at the end."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if sweep_dir.is_dir():  # a previous sweep into the same folder: its records are not this sweep's
            for rec in sweep_dir.rglob(JOB_ERROR_FILE):
                rec.unlink(missing_ok=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        lines = summary_lines(str(config.hydra.sweep.dir))
        if lines:
            sys.stdout.flush()
            print("\n".join(lines), file=sys.stderr, flush=True)
            raise SystemExit(EXIT_FAILED_JOBS)
