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
from repshare.sweep_failures import FailureSummary, record_failure, summary_lines
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
    """Real `python -m repshare.sweep -m` with joblib; a stand-in stage writes metrics.json. Job 3 (seed=-1)
    fails validation: the sweep still finishes the others, keeps their results, names it, exits 2."""
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
        [sys.executable, "-m", "repshare.sweep", "-m", "experiment=smoke", "seed=0,1,2,-1", "hydra/launcher=local",
         f"hydra.sweep.dir={sweep}"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    errs = [ln for ln in proc.stderr.splitlines() if ln.startswith("error [repshare.sweep]")]
    assert len(errs) == 2, proc.stderr[-2000:]
    assert errs[0] == "error [repshare.sweep]: 1 of 4 jobs failed; the other jobs' results are kept in " + str(sweep)
    assert errs[1].startswith("error [repshare.sweep]: job 3 (experiment=smoke seed=-1): config value seed=-1 is invalid")
    res = aggregate_sweep(sweep)
    assert res["jobs"] == ["0", "1", "2"]
    assert res["metrics"]["r_same_S"]["mean"] == pytest.approx(0.91)
    (failed,) = res["failed"]
    assert failed["job"] == "3" and failed["overrides"] == ["experiment=smoke", "seed=-1"]
    assert failed["error"].startswith("config value seed=-1 is invalid") and errs[1].endswith(failed["error"])
    assert OmegaConf.load(sweep / "1" / ".hydra" / "overrides.yaml")  # Hydra's own record per job
    # The aggregate command: the good jobs aggregated, the bad one named, exit 2.
    proc = subprocess.run([sys.executable, "-m", "repshare.aggregate", str(sweep)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "r_same_S" in proc.stdout and "(n=3)" in proc.stdout
    assert [ln for ln in proc.stderr.splitlines() if ln.startswith("error [aggregate]")][1:] == [
        f"error [aggregate]: job 3 (experiment=smoke seed=-1): {failed['error']}"]


STANDIN = """
from pathlib import Path
from repshare.utils.io import write_json

def stage(cfg):
    write_json(Path(cfg.paths.results_dir) / "metrics.json", {"r_same_S": 0.5 + cfg.data.n_val / 1000})
"""


def sweep_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    (tmp_path / "standin_mod.py").write_text(STANDIN)
    return {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "REPSHARE_SWEEP_STAGES": "standin_mod:stage", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", **extra}


@pytest.mark.slow
def test_bad_job_in_a_basic_sweep_is_one_line_and_exit_2(tmp_path):
    """Hydra's basic launcher runs the jobs in this process: job 1's bad value must not stop job 2."""
    sweep = tmp_path / "multirun"
    proc = subprocess.run(
        [sys.executable, "-m", "repshare.sweep", "-m", "experiment=smoke", "data.n_val=48,-3,64",
         f"hydra.sweep.dir={sweep}"], cwd=tmp_path, env=sweep_env(tmp_path), capture_output=True, text=True,
        timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.splitlines()[-1].startswith("error [repshare.sweep]: job 1 (experiment=smoke data.n_val=-3): "
                                                   "config value data.n_val=-3 is invalid")
    assert "1 of 3 jobs failed" in proc.stderr
    kept = {j: json.loads((sweep / j / "results" / "metrics.json").read_text())["r_same_S"] for j in ("0", "2")}
    assert kept == {"0": pytest.approx(0.548), "2": pytest.approx(0.564)}
    assert not (sweep / "1" / "results" / "metrics.json").exists()


def test_single_run_with_env_resolver_is_one_line_without_the_secret(tmp_path):
    secret = "s3cret-value-123"
    proc = subprocess.run(
        [sys.executable, "-m", "repshare.sweep", "experiment=smoke", "report.title='${oc.env:MY_SECRET_TOKEN}'",
         f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, env=sweep_env(tmp_path, MY_SECRET_TOKEN=secret),
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    errs = [ln for ln in proc.stderr.splitlines() if ln.startswith("error [")]
    assert len(errs) == 1 and "report.title" in errs[0] and "oc.env" in errs[0]
    found = [p for p in (tmp_path / "run").rglob("*") if p.is_file() and secret in p.read_text(errors="ignore")]
    assert secret not in proc.stderr + proc.stdout and not found
    assert not (tmp_path / "run" / "results").exists()


def test_job_config_refuses_bad_seed_and_resolvers_and_names_bugs(smoke_cfg, tmp_path):
    from omegaconf import open_dict

    from repshare.config import ConfigError
    from repshare.sweep import job_error_line

    with open_dict(smoke_cfg):
        smoke_cfg.seed = -1
    with pytest.raises(ConfigError, match=r"seed=-1 is invalid"):
        job_config(smoke_cfg, tmp_path)
    with open_dict(smoke_cfg):
        smoke_cfg.seed, smoke_cfg.report.title = 0, "${oc.env:HOME}"
    with pytest.raises(ConfigError, match=r"report.title .*oc.env"):
        job_config(smoke_cfg, tmp_path)
    assert job_error_line(ConfigError("config value x=1 is invalid")) == ("config value x=1 is invalid", False)
    line, bug = job_error_line(TypeError("unsupported operand\nmore"))
    assert bug and line.startswith("TypeError: unsupported operand (unexpected")


# ----------------------------------------------------------------------------- failure records, on fake folders
def fake_job(sweep: Path, job: str, overrides: list[str], metrics: dict | None = None, error: str | None = None):
    (sweep / job / ".hydra").mkdir(parents=True, exist_ok=True)
    (sweep / job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if metrics is not None:
        write_json(sweep / job / "results" / "metrics.json", metrics)
    if error is not None:
        record_failure(sweep / job, int(job), overrides, error)


def test_failure_summary_and_aggregate_on_fake_sweep(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    fake_job(sweep, "0", ["seed=0"], {"r_same_S": 0.5})
    fake_job(sweep, "1", ["seed=1"], {"r_same_S": 99.0}, error="boom in compare")  # partial: metrics, then failed
    fake_job(sweep, "2", ["seed=2"], {"r_same_S": 0.7})
    fake_job(sweep, "3", ["seed=3"])  # killed: neither metrics nor a record
    fake_job(sweep, "10", ["seed=10"], error="bad value")
    assert summary_lines(sweep) == [
        f"error [repshare.sweep]: 2 of 5 jobs failed; the other jobs' results are kept in {sweep}",
        "error [repshare.sweep]: job 1 (seed=1): boom in compare",
        "error [repshare.sweep]: job 10 (seed=10): bad value"]
    res = aggregate_sweep(sweep)
    assert res["jobs"] == ["0", "2"] and res["metrics"]["r_same_S"]["mean"] == pytest.approx(0.6)
    assert [(f["job"], f["overrides"]) for f in res["failed"]] == [("1", ["seed=1"]), ("3", ["seed=3"]),
                                                                    ("10", ["seed=10"])]
    assert "killed" in res["failed"][1]["error"]
    assert aggregate_main([str(sweep)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "error [aggregate]: 3 job(s) left out, 2 aggregated" and len(err) == 4
    # The callback: exit 2 after the summary; at the start of a new sweep into the folder, old records go.
    cfg = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}})
    with pytest.raises(SystemExit) as stop:
        FailureSummary().on_multirun_end(cfg)
    assert stop.value.code == 2
    FailureSummary().on_multirun_start(cfg)
    assert summary_lines(sweep) == [] and (sweep / "0" / "results" / "metrics.json").is_file()
    FailureSummary().on_multirun_end(cfg)  # nothing failed: returns
