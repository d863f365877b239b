"""Hydra multirun entry: the whole pipeline once per job, each job in its own output folder.

    python -m repshare.sweep -m seed=0,1,2 hydra/launcher=local       # joblib, 2 jobs at once
    python -m repshare.sweep experiment=smoke                          # a single run
    python -m repshare.aggregate multirun/<date>/<time>                # mean/std/CI across jobs

Each job validates its config, points ``paths.data_dir``, ``paths.results_dir`` and
``logger.dir`` into the job's Hydra output folder, seeds everything, then runs ``STAGES`` in
process, in order (imported lazily from "module:function" strings). The environment variable
``REPSHARE_SWEEP_STAGES`` (comma-separated "module:function" specs) replaces ``STAGES``, e.g. to
re-run only the analysis on a finished sweep or to test the sweep wiring with stand-in stages.

A job that fails (a bad value such as ``data.n_val=-3``, a missing input, a bug) records one line in
``<job dir>/job_error.json`` and returns, so the other jobs run and keep their results; after the last
job the sweep prints one line per failed job (its overrides and its error) and exits with status 2
(``repshare.sweep_failures``). A single run (no ``-m``) prints the line and exits 2 at once.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from repshare.config import CONF_DIR, validate_config
from repshare.config_guard import forbid_env_secrets, forbid_resolvers
from repshare.stages import STAGES as ALL_STAGES, stage_spec

log = logging.getLogger("repshare.sweep")

# Every stage of dvc.yaml in order (repshare.stages.STAGES), but ``validate``: a sweep job validates its own
# config before it starts (job_config).
STAGES: tuple[str, ...] = tuple(stage_spec(n) for n in ALL_STAGES if n != "validate")


def resolve_stage(spec: str | Callable) -> Callable[[DictConfig], object]:
    """'package.module:function' -> the function (callables pass through)."""
    if callable(spec):
        return spec
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"stage spec {spec!r} must look like 'package.module:function'")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"stage {spec!r} cannot be imported: {err}") from None
    if not callable(fn):
        raise ValueError(f"stage {spec!r} is not callable")
    return fn


def job_config(cfg: DictConfig, job_dir: str | Path) -> DictConfig:
    """Validated copy of ``cfg`` whose data, results and W&B folders live under ``job_dir``."""
    forbid_resolvers(cfg, "the sweep's config")  # before validate_config resolves an ${oc.env:...}
    forbid_env_secrets(cfg, source="the sweep's config")
    cfg = validate_config(cfg)
    from repshare.stage import check_seed

    check_seed(cfg.seed)
    job_dir = Path(job_dir).resolve()
    with open_dict(cfg):
        cfg.paths.data_dir = str(job_dir / "data")
        cfg.paths.results_dir = str(job_dir / "results")
        cfg.logger.dir = str(job_dir / "results" / "wandb")
    return cfg


def stages_from_env(default: Sequence[str] = STAGES) -> tuple[str, ...]:
    raw = os.environ.get("REPSHARE_SWEEP_STAGES", "").strip()
    return tuple(s.strip() for s in raw.split(",") if s.strip()) if raw else tuple(default)


def run_pipeline(cfg: DictConfig, stages: Sequence[str | Callable] = STAGES) -> None:
    """Run every stage function on ``cfg`` in order (resolved up front: a typo fails fast), each seeded
    afresh as ``run_stage`` seeds each DVC stage's process: a sweep job and ``dvc repro`` give the same bytes."""
    from repshare.stage import quiet_third_party, seed_everything
    from repshare.utils.runlog import job_run, start_stage_clock

    fns = [resolve_stage(s) for s in stages]
    quiet_third_party()
    with job_run(cfg):  # one W&B run per job (when W&B is on), finished when the job ends
        for spec, fn in zip(stages, fns):
            log.info("seed %s: stage %s", cfg.seed, spec if isinstance(spec, str) else fn.__name__)
            seed_everything(int(cfg.seed))
            start_stage_clock()
            fn(cfg)


def job_error_line(err: Exception) -> tuple[str, bool]:
    """(one line, whether it is a bug): the stage runner's line for an error a user can fix, else the bug's
    type and first line."""
    from repshare.stage import describe_error

    line = describe_error(err)
    if line is not None:
        return line, False
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''} (unexpected; traceback in the job's log)", True


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> dict[str, str] | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from repshare.launchers import limit_job_threads
    from repshare.sweep_failures import EXIT_FAILED_JOBS, clear_failure, record_failure

    limit_job_threads(HydraConfig.get().launcher)  # submitit jobs: their CPU share, not one thread per core each
    hc = HydraConfig.get()
    job_dir = hc.runtime.output_dir
    clear_failure(job_dir)
    try:
        run_pipeline(job_config(cfg, job_dir), stages_from_env())
    except Exception as err:  # noqa: BLE001 - every job error becomes one line; Ctrl-C still stops the sweep
        line, bug = job_error_line(err)
        # Unresolved: an override such as report.title='${oc.env:X}' must not put X's value in the record.
        overrides = [str(o) for o in OmegaConf.to_container(hc.overrides.task, resolve=False)]
        record_failure(job_dir, hc.job.get("num"), overrides, line)
        if hc.mode != RunMode.MULTIRUN:
            if bug or os.environ.get("REPSHARE_TRACEBACK"):
                raise  # a bug in a single run: its traceback, exit 1 (as a stage does)
            print(f"error [repshare.sweep]: {line}", file=sys.stderr)
            sys.exit(EXIT_FAILED_JOBS)
        if bug:
            log.exception("job %s: unexpected error (a bug)", hc.job.get("num"))
        # Returning (not raising) lets the launcher finish the other jobs; FailureSummary reports this one.
        log.error("job %s (%s) failed: %s", hc.job.get("num"), " ".join(overrides), line)
        return {"error": line}
    return None


if __name__ == "__main__":
    from repshare.config import ConfigError
    from repshare.launchers import check_launcher
    from repshare.sweep_failures import CALLBACK_OVERRIDE

    try:  # an unknown launcher or a missing plugin: one line, exit 2 (not Hydra's dump)
        check_launcher(sys.argv[1:])
    except ConfigError as err:
        print(f"error [repshare.sweep]: {err}", file=sys.stderr)
        sys.exit(2)
    sys.argv.append(CALLBACK_OVERRIDE)  # the failed-jobs summary and exit status, in this (launching) process
    main()
