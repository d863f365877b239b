"""Sweep wiring and multirun aggregation, on fake job folders and stand-in stages (no training)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from repshare.aggregate import aggregate_sweep, main as aggregate_main, summarize
from repshare.config import compose_raw
from repshare.sweep import STAGES, job_config, resolve_stage, run_pipeline
from repshare.utils.io import write_json

REPO = Path(__file__).resolve().parents[1]


def fake_sweep(root: Path, values: dict[str, dict]) -> Path:
    for job, metrics in values.items():
        write_json(root / job / "results" / "metrics.json", metrics)
    (root / ".hydra").mkdir(parents=True, exist_ok=True)  # sweep-level folder without metrics: ignored
    return root


def test_summarize_hand_computed():
    # values 1, 2, 3: mean 2, sample std 1, sem 1/sqrt(3); t_{0.975, 2} = 4.302652729911275
    s = summarize([1.0, 2.0, 3.0], ci=0.95)
    half = 4.302652729911275 / math.sqrt(3)
    assert s["mean"] == pytest.approx(2.0) and s["std"] == pytest.approx(1.0)
    assert s["ci_low"] == pytest.approx(2.0 - half) and s["ci_high"] == pytest.approx(2.0 + half)
    one = summarize([0.5])
    assert one["mean"] == 0.5 and one["std"] is None and one["ci_low"] is None


def test_aggregate_sweep_on_fake_jobs(tmp_path):
    sweep = fake_sweep(tmp_path / "sweep", {
        "0": {"r_same_S": 0.90, "r_cross_S": 0.5, "detector_map_50": None, "provenance": {"x": 1}},
        "1": {"r_same_S": 0.94, "r_cross_S": 0.7, "detector_map_50": 0.3},
        "2": {"r_same_S": 0.98, "r_cross_S": 0.9, "detector_map_50": 0.5},
    })
    res = aggregate_sweep(sweep)
    assert res["jobs"] == ["0", "1", "2"]
    m = res["metrics"]
    # r_same_S: mean 0.94, std 0.04 -> half width 4.302652729911275 * 0.04 / sqrt(3)
    assert m["r_same_S"]["mean"] == pytest.approx(0.94)
    assert m["r_same_S"]["std"] == pytest.approx(0.04)
    assert m["r_same_S"]["ci_high"] - 0.94 == pytest.approx(4.302652729911275 * 0.04 / math.sqrt(3))
    assert m["r_cross_S"]["std"] == pytest.approx(0.2)
    # a null value is skipped: n = 2, mean 0.4, std sqrt(0.02)
    assert m["detector_map_50"]["n"] == 2 and m["detector_map_50"]["mean"] == pytest.approx(0.4)
    assert m["detector_map_50"]["std"] == pytest.approx(math.sqrt(0.02))
    assert "provenance" not in m
    saved = json.loads((sweep / "aggregate.json").read_text())
    assert saved["metrics"]["r_same_S"]["values"] == [0.90, 0.94, 0.98]
    csv = (sweep / "aggregate.csv").read_text().splitlines()
    assert csv[0] == "metric,n,mean,std,sem,ci_low,ci_high" and len(csv) == 4


def test_aggregate_errors(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="no job folder"):
        aggregate_sweep(fake_sweep(tmp_path / "empty", {}))
    assert aggregate_main([str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_resolve_stage_and_job_config(smoke_cfg, tmp_path):
    assert resolve_stage("os.path:join") is os.path.join
    for bad in ("os.path.join", "os.path:nope", "no_such_module_xyz:f"):
        with pytest.raises(ValueError, match="stage"):
            resolve_stage(bad)
    cfg = job_config(smoke_cfg, tmp_path / "job")
    assert cfg.paths.results_dir == str((tmp_path / "job" / "results").resolve())
    assert cfg.logger.dir.startswith(cfg.paths.results_dir)
    seen = []
    run_pipeline(cfg, [lambda c: seen.append(("a", c.seed)), lambda c: seen.append(("b", c.seed))])
    assert seen == [("a", 0), ("b", 0)]
    assert STAGES[-2:] == ("repshare.stages.compare:run", "repshare.stages.report:run")  # they read every method


def test_local_launcher_composes_to_joblib():
    cfg = compose_raw(["hydra/launcher=local"])  # must not break plain compose either
    assert "seed" in cfg
    from hydra import compose, initialize_config_dir

    from repshare.config import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        full = compose("config", overrides=["hydra/launcher=local"], return_hydra_config=True)
    assert full.hydra.launcher._target_.endswith("JoblibLauncher") and full.hydra.launcher.n_jobs == 2


@pytest.mark.slow
def test_multirun_with_standin_stage(tmp_path):
    """Real `python -m repshare.sweep -m` with joblib; a stand-in stage writes metrics.json."""
    mod = tmp_path / "fake_stage_mod.py"
    mod.write_text(textwrap.dedent("""
        from pathlib import Path
        from repshare.utils.io import write_json

        def stage(cfg):
            write_json(Path(cfg.paths.results_dir) / "metrics.json", {"r_same_S": 0.9 + 0.01 * cfg.seed})
    """))
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "REPSHARE_SWEEP_STAGES": "fake_stage_mod:stage", "WANDB_MODE": "disabled"}
    sweep = tmp_path / "multirun"
    proc = subprocess.run(
        [sys.executable, "-m", "repshare.sweep", "-m", "experiment=smoke", "seed=0,1,2", "hydra/launcher=local",
         f"hydra.sweep.dir={sweep}"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = aggregate_sweep(sweep)
    assert res["jobs"] == ["0", "1", "2"]
    assert res["metrics"]["r_same_S"]["mean"] == pytest.approx(0.91)
    assert OmegaConf.load(sweep / "1" / ".hydra" / "overrides.yaml")  # Hydra's own record per job
