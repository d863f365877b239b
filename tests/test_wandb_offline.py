"""W&B offline runs a user can trust, read back from disk (W&B stays offline; nothing is uploaded):

- a multirun gets one run per job, each finished (exit record), none shared (wandb #1314);
- each run folder holds the composed config (``files/composed_config.yaml``, the ``config`` table, and
  in the run record that ``wandb sync`` uploads: Lightning #20571), the stage's tables and figures
  (``compare``'s comparison table), and ``files/summary.csv`` (lightning-hydra-template #290);
- a failed job's run is finished with exit code 1 and still has its summary;
- training's Lightning logger logs into the job's run, or into its own run with the config.

The run's transaction log is parsed with tests/wandb_records.py; every expected value comes from the
job's own local files (its config, its stage records, its comparison CSV), not from W&B.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from omegaconf import open_dict

from wandb_records import run_log

pytest.importorskip("wandb")

TESTS = Path(__file__).resolve().parent


def flush() -> None:
    """Stop W&B's core process, which writes the run logs behind this (still running) process."""
    import wandb

    wandb.teardown()


def offline_runs(logger_dir: Path) -> list[Path]:
    return sorted((logger_dir / "wandb").glob("offline-run-*"))


def read_summary(run: Path) -> dict[str, str]:
    with open(run / "files" / "summary.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["metric", "value"]
    return dict(rows[1:])


def table_rows(run: Path, key: str) -> list[list]:
    """The rows of the W&B table logged under ``key`` (its JSON file under files/media/table/)."""
    (path,) = (run / "files" / "media" / "table").glob(f"{key}_*.table.json")
    doc = json.loads(path.read_text())
    return doc["data"], doc["columns"]


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # were anything to upload, it would fail here


@pytest.fixture
def cfg(smoke_cfg, tmp_path):
    with open_dict(smoke_cfg):
        smoke_cfg.logger.wandb_mode = "offline"
    return smoke_cfg


@pytest.mark.slow
def test_multirun_gives_one_finished_run_per_job_with_config_tables_and_summary(tmp_path):
    """Two jobs in one process (Hydra's basic launcher runs them one after the other: the case where a run
    left open would swallow the next job's logging)."""
    (tmp_path / "wandb_test_stages.py").write_text(textwrap.dedent("""
        from pathlib import Path
        from comparison_fixtures import tiny_png, write_fixture_results
        from repshare.utils.runlog import RunLog

        def fixtures(cfg):  # every method's results, as the comparison and dashboard tests use them
            write_fixture_results(Path(cfg.paths.results_dir))

        def figure(cfg):
            out = Path(cfg.paths.results_dir) / "extra"
            with RunLog(cfg, "figure", out) as log:
                log.log_image("curve", tiny_png(out / "curve.png", "a curve"))
                log.log({"loss": 1.0 / (1 + cfg.seed)}, step=0)
                log.summary(seed_echo=int(cfg.seed))
    """))
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_BASE_URL": "http://127.0.0.1:9", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "REPSHARE_SWEEP_STAGES": "wandb_test_stages:fixtures,repshare.stages.compare:run,wandb_test_stages:figure"}
    sweep = tmp_path / "multirun"
    proc = subprocess.run([sys.executable, "-m", "repshare.sweep", "-m", "experiment=smoke", "seed=0,1",
                           "logger.wandb_mode=offline", f"hydra.sweep.dir={sweep}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ids = set()
    for seed in (0, 1):
        job = sweep / str(seed)
        (run,) = offline_runs(job / "results" / "wandb")  # one run for the whole job
        rec = run_log(run)
        ids.add(rec["run"].run_id)
        assert rec["exit_code"] == 0  # finished, not left open for the next job
        assert rec["run"].job_type == "sweep_job"
        # the config, as `wandb sync` uploads it and as a readable file: this job's, not the other's
        assert rec["config"]["seed"] == seed and rec["config"]["paths"]["results_dir"] == str(job / "results")
        composed = yaml.safe_load((run / "files" / "composed_config.yaml").read_text())
        assert composed["seed"] == seed and composed["paths"]["results_dir"] == str(job / "results")
        assert {"composed_config.yaml", "summary.csv"} <= rec["files"]  # saved for upload
        config_rows, columns = table_rows(run, "config")
        assert columns == ["key", "value"] and ["seed", str(seed)] in config_rows
        assert ["paths.results_dir", str(job / "results")] in config_rows
        # the comparison table: the same rows as the comparison stage's own CSV
        rows, columns = table_rows(run, "compare/comparison")
        with open(job / "results" / "compare" / "comparison.csv", newline="") as f:
            local = list(csv.DictReader(f))
        assert len(rows) == len(local) > 0 and sorted(columns) == sorted(local[0])
        assert [r[columns.index("Setting")] for r in rows] == [r["Setting"] for r in local]
        assert list((run / "files" / "media" / "images" / "figure").glob("curve_*.png"))
        # the summary CSV: every number the stages recorded locally, under the stage's name
        summary = read_summary(run)
        stage_metrics = json.loads((job / "results" / "metrics" / "compare_run.json").read_text())["metrics"]
        numbers = {k: v for k, v in stage_metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        assert numbers and all(float(summary[f"compare/{k}"]) == pytest.approx(v) for k, v in numbers.items())
        assert float(summary["figure/seed_echo"]) == seed and float(summary["figure/loss"]) == 1.0 / (1 + seed)
        assert {"figure/loss", "figure/step"} <= rec["history_keys"]
    assert len(ids) == 2


def test_a_failed_job_finishes_its_run_with_exit_code_1_and_keeps_its_summary(cfg, offline, tmp_path):
    from repshare.utils.runlog import RunLog, job_run

    with pytest.raises(RuntimeError, match="boom"):
        with job_run(cfg):
            with RunLog(cfg, "first", tmp_path / "out") as log:
                log.summary(accuracy=0.75)
            raise RuntimeError("boom")
    flush()
    (run,) = offline_runs(Path(cfg.logger.dir))
    assert run_log(run)["exit_code"] == 1
    assert read_summary(run) == {"first/accuracy": "0.75"}
    assert json.loads((tmp_path / "out" / "first_run.json").read_text())["metrics"] == {"accuracy": 0.75}


def _fit_toy(logger, fail: bool = False) -> list[float]:
    """Two optimiser steps of a one-weight model; the losses it logged (a failing step raises)."""
    import pytorch_lightning as pl
    import torch

    losses: list[float] = []

    class Toy(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def training_step(self, batch, _):
            if fail:
                raise RuntimeError("diverged")
            loss = ((self.w * batch[0] - 2.0) ** 2).mean()
            self.log("loss", loss, on_step=True, on_epoch=False)
            losses.append(float(loss))
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(2, 1)), batch_size=1)
    trainer = pl.Trainer(max_epochs=1, logger=[logger], log_every_n_steps=1, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(Toy(), data)
    return losses


def test_training_logs_into_the_job_run(cfg, offline):
    from repshare.utils.runlog import job_run, lightning_logger

    with job_run(cfg):
        losses = _fit_toy(lightning_logger(cfg, "toy"))
    flush()
    (run,) = offline_runs(Path(cfg.logger.dir))  # Lightning opened no run of its own
    assert float(read_summary(run)["train_toy-loss"]) == pytest.approx(losses[-1])
    assert run_log(run)["exit_code"] == 0


def test_training_outside_a_sweep_gets_its_own_run_with_the_config(cfg, offline):
    from repshare.utils.runlog import finish_open_runs, lightning_logger

    losses = _fit_toy(lightning_logger(cfg, "toy"))
    with pytest.raises(RuntimeError, match="diverged"):
        _fit_toy(lightning_logger(cfg, "bad"), fail=True)  # opening it finishes the first run, with its summary
    finish_open_runs()  # what the process exit does
    flush()
    runs = {rec["run"].job_type: rec | {"folder": r} for r in offline_runs(Path(cfg.logger.dir)) if (rec := run_log(r))}
    assert sorted(runs) == ["train_bad", "train_toy"]
    good, bad = runs["train_toy"], runs["train_bad"]
    assert good["exit_code"] == 0 and bad["exit_code"] == 1
    assert good["config"]["seed"] == cfg.seed and good["config"]["experiment_name"] == "smoke"
    assert float(read_summary(good["folder"])["loss"]) == pytest.approx(losses[-1])


def test_a_table_with_empty_and_mixed_cells_is_logged(cfg, offline, tmp_path):
    """The compare stage's table has empty cells in numeric columns ("" where a method has no retraining
    time); W&B tables hold one type per column, which once crashed the stage in offline mode."""
    from repshare.utils.runlog import RunLog

    rows = [{"method": "a", "seconds": 1.5, "note": 3}, {"method": "b", "seconds": "", "note": "text"},
            {"method": "c", "seconds": None, "note": 4}]
    with RunLog(cfg, "compare", tmp_path / "metrics") as log:
        log.log_table("comparison", rows)
    flush()
    (run,) = offline_runs(Path(cfg.logger.dir))
    data, columns = table_rows(run, "comparison")
    assert columns == ["method", "seconds", "note"]
    assert data == [["a", 1.5, "3"], ["b", None, "text"], ["c", None, "4"]]  # empty -> null; mixed -> text
