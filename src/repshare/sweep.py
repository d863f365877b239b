"""Hydra multirun entry: the whole pipeline once per job, each job in its own output folder.

    python -m repshare.sweep -m seed=0,1,2 hydra/launcher=local       # joblib, 2 jobs at once
    python -m repshare.sweep experiment=smoke                          # a single run
    python -m repshare.aggregate multirun/<date>/<time>                # mean/std/CI across jobs

Each job validates its config, points ``paths.data_dir``, ``paths.results_dir`` and
``logger.dir`` into the job's Hydra output folder, seeds everything, then runs ``STAGES`` in
process, in order (imported lazily from "module:function" strings). The environment variable
``REPSHARE_SWEEP_STAGES`` (comma-separated "module:function" specs) replaces ``STAGES``, e.g. to
re-run only the analysis on a finished sweep or to test the sweep wiring with stand-in stages.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import hydra
from omegaconf import DictConfig, open_dict

from repshare.config import CONF_DIR, validate_config

log = logging.getLogger("repshare.sweep")

STAGES: tuple[str, ...] = (
    "repshare.data.prepare:prepare",
    "repshare.training:train_classifier",
    "repshare.training:train_detector",
    "repshare.stages.train_classifier_color:run",
    "repshare.features.capture:run_cka",
    "repshare.sharing.evaluate:run_evaluate_merged",
    "repshare.analysis:run_analyze",
    "repshare.stages.concurrency:run",
    "repshare.stages.gemel:run",
    "repshare.stages.branches:run",  # MEEdge part 1
    "repshare.stages.self_merge:run",
    "repshare.stages.kd_recover:run",
    "repshare.stages.placement:run",  # MEEdge part 2 (reads part 1's profiles and feature cache)
    "repshare.stages.compare:run",  # last two: read every method's results
    "repshare.stages.report:run",
)


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
    cfg = validate_config(cfg)
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
    """Seed, then run every stage function on ``cfg`` in order (resolved up front: a typo fails fast)."""
    from repshare.stage import quiet_third_party, seed_everything
    from repshare.utils.runlog import start_stage_clock

    fns = [resolve_stage(s) for s in stages]
    quiet_third_party()
    seed_everything(int(cfg.seed))
    for spec, fn in zip(stages, fns):
        log.info("seed %s: stage %s", cfg.seed, spec if isinstance(spec, str) else fn.__name__)
        start_stage_clock()
        fn(cfg)


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    run_pipeline(job_config(cfg, HydraConfig.get().runtime.output_dir), stages_from_env())


if __name__ == "__main__":
    import sys

    from repshare.config import ConfigError
    from repshare.launchers import check_launcher

    try:  # an unknown launcher or a missing plugin: one line, exit 2 (not Hydra's dump)
        check_launcher(sys.argv[1:])
    except ConfigError as err:
        print(f"error [repshare.sweep]: {err}", file=sys.stderr)
        sys.exit(2)
    main()
