"""Run logging: a local JSON + CSV record of every run (always), plus W&B (offline by default).

W&B never touches the network unless the config says ``logger.wandb_mode: online``; tests and CI
set ``WANDB_MODE=disabled``. Offline runs land in ``logger.dir`` and can be uploaded later with
``wandb sync``.
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from repshare.utils.io import atomic_path, write_json
from repshare.utils.record import provenance

_stage_started: float | None = None  # set by the stage runner when a stage begins


def start_stage_clock() -> None:
    """Mark the start of a stage, so its record times the whole stage and not only the part after the
    ``RunLog`` is opened (most stages open it at the end, around their outputs)."""
    global _stage_started
    _stage_started = time.time()

os.environ.setdefault("WANDB_SILENT", "true")


def wandb_mode(cfg: DictConfig) -> str:
    # The environment wins so tests/CI can force W&B off whatever the config says; an exported
    # WANDB_MODE=online therefore uploads, and `repshare.stage.notice_wandb_upload` says so at start-up.
    return os.environ.get("WANDB_MODE") or cfg.logger.wandb_mode


class RunLog:
    """One run of one stage: accumulates metrics, mirrors them to W&B, writes a local record."""

    def __init__(self, cfg: DictConfig, stage: str, out_dir: str | Path, group: str | None = None):
        # group: the method this stage belongs to (one W&B group per method, one job type per
        # stage, so `wandb sync` gives a browsable project); None = the experiment name.
        self.cfg = cfg
        self.stage = stage
        self.out_dir = Path(out_dir)
        self.metrics: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []
        self.started = _stage_started if _stage_started is not None else time.time()
        self.wandb = None
        mode = wandb_mode(cfg)
        if mode != "disabled":
            import wandb

            Path(cfg.logger.dir).mkdir(parents=True, exist_ok=True)
            self.wandb = wandb.init(
                project=cfg.logger.project,
                entity=cfg.logger.entity,
                dir=cfg.logger.dir,
                mode=mode,
                job_type=stage,
                group=group or cfg.experiment_name,
                tags=[str(cfg.experiment_name)],
                name=f"{cfg.experiment_name}-{stage}-seed{cfg.seed}",
                config=OmegaConf.to_container(cfg, resolve=True),
                reinit="finish_previous",
                settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
            )

    def log(self, row: dict[str, Any], step: int | None = None) -> None:
        self.history.append({"step": step, **row})
        if self.wandb is not None:
            self.wandb.log(row, step=step)

    def summary(self, **metrics: Any) -> None:
        self.metrics.update(metrics)
        if self.wandb is not None:
            self.wandb.summary.update(metrics)

    def log_image(self, key: str, path: str | Path) -> None:
        if self.wandb is not None:
            import wandb

            self.wandb.log({key: wandb.Image(str(path))})

    def log_table(self, key: str, rows: list[dict[str, Any]]) -> None:
        if self.wandb is not None and rows:
            import wandb

            cols = list(rows[0])
            self.wandb.log({key: wandb.Table(columns=cols, data=[[r[c] for c in cols] for r in rows])})

    def close(self) -> None:
        """Write ``run.json`` (metrics + provenance) and ``history.csv``, then finish W&B."""
        record = {
            "metrics": self.metrics,
            "seconds": round(time.time() - self.started, 2),
            **provenance(self.cfg, self.stage),
        }
        write_json(self.out_dir / f"{self.stage}_run.json", record)
        if self.history:
            keys: list[str] = []
            for row in self.history:
                keys += [k for k in row if k not in keys]
            with atomic_path(self.out_dir / f"{self.stage}_history.csv") as tmp, open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=keys)
                w.writeheader()
                w.writerows(self.history)
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None

    def __enter__(self) -> "RunLog":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif self.wandb is not None:
            self.wandb.finish(exit_code=1)
