"""Run logging: a local JSON + CSV record of every run (always), plus W&B (offline by default).

W&B never touches the network unless the config says ``logger.wandb_mode: online``; tests and CI
set ``WANDB_MODE=disabled``. Offline runs land in ``<logger.dir>/wandb/offline-run-*`` and are
uploaded later, only when asked, with ``wandb sync`` (docs/wandb.md).

What an offline run holds, so it can be trusted without uploading it:

- the composed config, three ways: passed to ``wandb.init`` (``wandb sync`` uploads it as the run's
  config), logged as a ``config`` table, and written as ``files/composed_config.yaml``. Offline,
  W&B itself writes no ``config.yaml`` locally (Lightning #20571 / wandb #9646);
- ``files/summary.csv`` (metric, value), written when the run finishes: W&B writes no readable
  ``wandb-summary.json`` offline (lightning-hydra-template #290);
- the stage's tables and figures as W&B tables and images (e.g. ``compare``'s comparison table,
  ``analyze``'s correlation figures).

One run per W&B "job": a DVC stage (one process) gets one run per stage; a sweep job runs every
stage in one process and gets **one run for the whole job** (:func:`job_run`), whose keys are
prefixed with the stage (``analyze/r_same_S``), finished with ``wandb.finish()`` when the job ends,
so the next job of a multirun never logs into it (wandb #1314). Training's Lightning logger logs into
the same run (:func:`lightning_logger`).
"""

from __future__ import annotations

import atexit
import csv
import math
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from repshare.utils.io import atomic_path, write_json
from repshare.utils.record import provenance

_stage_started: float | None = None  # set by the stage runner when a stage begins
_job: _WandbRun | None = None  # the sweep job's run while a job is running (job_run)
_open: list[_WandbRun] = []  # runs not finished yet (finish_open_runs, at the latest when the process exits)

CONFIG_FILE = "composed_config.yaml"
SUMMARY_FILE = "summary.csv"


def start_stage_clock() -> None:
    """Mark the start of a stage, so its record times the whole stage and not only the part after the
    ``RunLog`` is opened (most stages open it at the end, around their outputs)."""
    global _stage_started
    _stage_started = time.time()


os.environ.setdefault("WANDB_SILENT", "true")


def wandb_mode(cfg: DictConfig) -> str:
    # The environment wins so tests/CI can force W&B off whatever the config says; an exported
    # WANDB_MODE=online therefore uploads, and `repshare.stage.notice_wandb_upload` says so at start-up.
    # Lightning's WandbLogger(offline=True) exports WANDB_MODE=dryrun, W&B's old name for offline.
    mode = os.environ.get("WANDB_MODE") or cfg.logger.wandb_mode
    return "offline" if mode == "dryrun" else mode


def flat_config(cfg: DictConfig) -> list[tuple[str, str]]:
    """The resolved config as (dotted key, value) rows, lists kept whole: the ``config`` table."""
    rows: list[tuple[str, str]] = []

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, Mapping) and node:
            for k, v in node.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        else:
            rows.append((prefix, "null" if node is None else str(node)))

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return rows


def summary_rows(summary: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The scalar entries of a W&B summary, sorted by key (W&B's own ``_``-keys and media left out)."""
    rows = []
    for k in sorted(summary.keys()):
        v = summary[k]
        if k.startswith("_") or isinstance(v, bool) or not isinstance(v, (int, float, str)):
            continue
        rows.append((k, "nan" if isinstance(v, float) and math.isnan(v) else v))
    return rows


class _WandbRun:
    """One W&B run with the local files that make it readable offline; finished exactly once."""

    def __init__(self, cfg: DictConfig, *, job_type: str, name: str, group: str):
        import wandb

        finish_open_runs()  # an earlier stage's run in this process: finished with its summary first
        Path(cfg.logger.dir).mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=cfg.logger.project,
            entity=cfg.logger.entity,
            dir=cfg.logger.dir,
            mode=wandb_mode(cfg),
            job_type=job_type,
            group=group,
            tags=[str(cfg.experiment_name)],
            name=name,
            config=OmegaConf.to_container(cfg, resolve=True),
            reinit="finish_previous",  # never log into a run some earlier code left open
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
        )
        self.folder = Path(self.run.dir)  # <logger.dir>/wandb/offline-run-<time>-<id>/files
        self.finished = False
        self.failed = False  # set when what logs into it fails (exit code 1 when finished at exit)
        _open.append(self)
        atexit.unregister(finish_open_runs)  # atexit runs last-in first: ours now comes before W&B's,
        atexit.register(finish_open_runs)  # registered by wandb.init just now
        config_yaml = self.folder / CONFIG_FILE
        config_yaml.write_text(OmegaConf.to_yaml(cfg, resolve=True))
        self.run.save(str(config_yaml), base_path=str(self.folder), policy="now")  # uploaded by `wandb sync`
        self.run.log({"config": wandb.Table(columns=["key", "value"], data=[list(r) for r in flat_config(cfg)])})

    def finish(self, exit_code: int = 0) -> None:
        """Write ``files/summary.csv`` from the run's summary, then ``wandb.finish`` (once)."""
        if self.finished:
            return
        self.finished = True
        with atomic_path(self.folder / SUMMARY_FILE) as tmp, open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["metric", "value"])
            w.writerows(summary_rows(self.run.summary))
        self.run.save(str(self.folder / SUMMARY_FILE), base_path=str(self.folder), policy="now")
        self.run.finish(exit_code=exit_code)
        if self in _open:
            _open.remove(self)


def finish_open_runs() -> None:
    """Finish every run still open (a training stage's Lightning run): summary.csv, then wandb.finish.
    Called at the latest when the process exits, before W&B's own exit hook would finish it bare."""
    for r in list(_open):
        r.finish(exit_code=1 if r.failed else 0)


@contextmanager
def job_run(cfg: DictConfig, name: str | None = None) -> Iterator[Any]:
    """One W&B run for a whole sweep job: every ``RunLog`` and the Lightning logger inside log into it.
    Finished when the job ends (exit code 1 if it raised). Yields the run, or None when W&B is off."""
    global _job
    if wandb_mode(cfg) == "disabled":
        yield None
        return
    if _job is not None:
        raise RuntimeError("a W&B job run is already open (job_run does not nest)")
    _job = _WandbRun(cfg, job_type="sweep_job", group=str(cfg.experiment_name),
                     name=name or f"{cfg.experiment_name}-seed{cfg.seed}")
    try:
        yield _job.run
    except BaseException:
        _job.finish(exit_code=1)
        raise
    else:
        _job.finish()
    finally:
        _job = None


def lightning_logger(cfg: DictConfig, name: str, group: str | None = None):
    """Lightning's WandbLogger for training model ``name``, or None when W&B is off.

    Inside a sweep job it logs into the job's run (keys prefixed ``train_<name>-``); otherwise into a
    run of its own that carries the composed config and is finished by :func:`finish_open_runs`, at
    the latest when the process exits (Lightning's own logger passes no config to W&B and never
    finishes the run)."""
    if wandb_mode(cfg) == "disabled":
        return None
    from pytorch_lightning.loggers import WandbLogger

    class Logger(WandbLogger):  # remembers a failed fit, so the run finishes with exit code 1
        def finalize(self, status: str) -> None:
            super().finalize(status)
            if status == "failed":
                owner.failed = True

    if _job is not None:
        owner = _job
        return Logger(experiment=_job.run, prefix=f"train_{name}")
    owner = _WandbRun(cfg, job_type=f"train_{name}", group=group or str(cfg.experiment_name),
                      name=f"{cfg.experiment_name}-train_{name}-seed{cfg.seed}")
    return Logger(experiment=owner.run)  # finished by finish_open_runs (at the latest at exit)


def table_cells(rows: list[dict[str, Any]], cols: list[str]) -> list[list[Any]]:
    """Rows as W&B table cells: a W&B column holds one type, so an empty cell ("" or None) becomes None
    and a column that mixes numbers and text is written as text."""

    def empty(v: Any) -> bool:
        return v is None or v == ""

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    mixed = {c for c in cols if len({number(r.get(c)) for r in rows if not empty(r.get(c))}) > 1}
    return [[None if empty(r.get(c)) else str(r.get(c)) if c in mixed else r.get(c) for c in cols] for r in rows]


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
        self._own: _WandbRun | None = None
        self.wandb = None  # the W&B run this stage logs into (its own, or the sweep job's)
        self.prefix = ""
        if wandb_mode(cfg) == "disabled":
            return
        if _job is not None:  # inside a sweep job: the job's run, keys under this stage's name
            self.wandb, self.prefix = _job.run, f"{stage}/"
            self.wandb.define_metric(f"{stage}/step")
            self.wandb.define_metric(f"{stage}/*", step_metric=f"{stage}/step")
        else:
            self._own = _WandbRun(cfg, job_type=stage, group=group or str(cfg.experiment_name),
                                  name=f"{cfg.experiment_name}-{stage}-seed{cfg.seed}")
            self.wandb = self._own.run

    def _keys(self, row: Mapping[str, Any]) -> dict[str, Any]:
        return {f"{self.prefix}{k}": v for k, v in row.items()}

    def log(self, row: dict[str, Any], step: int | None = None) -> None:
        self.history.append({"step": step, **row})
        if self.wandb is not None:
            if self.prefix:  # a shared run: each stage has its own step axis (W&B's must only grow)
                self.wandb.log(self._keys(row if step is None else {**row, "step": step}))
            else:
                self.wandb.log(row, step=step)

    def summary(self, **metrics: Any) -> None:
        self.metrics.update(metrics)
        if self.wandb is not None:
            self.wandb.summary.update(self._keys(metrics))

    def log_image(self, key: str, path: str | Path) -> None:
        if self.wandb is not None:
            import wandb

            self.wandb.log({f"{self.prefix}{key}": wandb.Image(str(path))})

    def log_table(self, key: str, rows: list[dict[str, Any]]) -> None:
        if self.wandb is not None and rows:
            import wandb

            cols = list(rows[0])
            self.wandb.log({f"{self.prefix}{key}": wandb.Table(columns=cols, data=table_cells(rows, cols))})

    def close(self) -> None:
        """Write ``run.json`` (metrics + provenance) and ``history.csv``, then finish the stage's own W&B run
        (a sweep job's run stays open for the next stage)."""
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
        self._finish(0)

    def _finish(self, exit_code: int) -> None:
        if self._own is not None:
            self._own.finish(exit_code)
            self._own = None
        self.wandb = None

    def __enter__(self) -> "RunLog":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._finish(1)
