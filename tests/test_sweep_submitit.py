"""Sweeps beyond one machine: the submitit launchers (local executor run for real, SLURM's sbatch
script checked with a stand-in srun), and one clear error for an unknown or unusable launcher."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from repshare.config import CONF_DIR, ConfigError
from repshare.launchers import check_launcher, known_launchers, requested_launcher

pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs the cluster extra: pip install -e '.[cluster]'")


def hydra_launcher_cfg(name: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=[f"hydra/launcher={name}"], return_hydra_config=True).hydra.launcher


def test_requested_and_known_launchers():
    assert requested_launcher(["-m", "seed=0,1", "hydra/launcher=submitit_local"]) == "submitit_local"
    assert requested_launcher(["seed=0"]) is None
    assert {"basic", "local", "slurm", "submitit_local"} <= set(known_launchers())


def test_unknown_launcher_is_one_clear_error():
    with pytest.raises(ConfigError, match=r"hydra/launcher='nope' is unknown; choose one of: basic, .*submitit_local"):
        check_launcher(["-m", "hydra/launcher=nope"])


def test_slurm_without_srun_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun here
    with pytest.raises(ConfigError, match="needs SLURM .*submitit_local"):
        check_launcher(["hydra/launcher=slurm"])


def test_sweep_entry_point_exits_2_on_unknown_launcher(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "repshare.sweep", "-m", "hydra/launcher=nope"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "hydra/launcher='nope' is unknown" in lines[0]


def test_slurm_config_makes_a_valid_sbatch_script(monkeypatch, tmp_path):
    """The launcher's own parameter mapping on our slurm.yaml, then submitit's sbatch text."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    check_launcher(["hydra/launcher=slurm"])  # srun found: accepted

    node = hydra_launcher_cfg("slurm")
    assert node._target_.endswith("SlurmLauncher")
    params = OmegaConf.to_container(node, resolve=False)
    params.pop("_target_")
    params["submitit_folder"] = str(tmp_path / "sub")
    params["name"] = "repshare"
    # as SlurmLauncher.launch does it
    executor = submitit.AutoExecutor(cluster="slurm", folder=params.pop("submitit_folder"),
                                     slurm_max_num_timeout=params.pop("max_num_timeout"))
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    text = executor._executor._make_submission_file_text("python -m repshare.sweep", "uid")
    for line in ("#SBATCH --gpus-per-node=1", "#SBATCH --cpus-per-task=8", "#SBATCH --time=240",
                 "#SBATCH --mem=32GB", 'test -n "$WANDB_MODE" || export WANDB_MODE=offline',
                 'test -z "$SLURM_CPUS_PER_TASK" || export OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK'):
        assert line in text, line
    assert "--partition" not in text  # site-specific: unset unless overridden


@pytest.mark.slow
def test_two_job_smoke_sweep_through_submitit_local(tmp_path):
    """`python -m repshare.sweep -m ... hydra/launcher=submitit_local`: two jobs, each a separate process
    started and collected by submitit (the cluster code path); stand-in stages keep it fast."""
    from repshare.aggregate import aggregate_sweep

    (tmp_path / "standin_stages.py").write_text(textwrap.dedent("""
        import os
        from pathlib import Path
        from repshare.utils.io import write_json

        def stage(cfg):
            import torch
            write_json(Path(cfg.paths.results_dir) / "metrics.json",
                       {"r_same_S": 0.5 + 0.25 * cfg.seed, "pid": os.getpid(), "threads": torch.get_num_threads()})
    """))
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "REPSHARE_SWEEP_STAGES": "standin_stages:stage", "WANDB_MODE": "disabled"}
    env.pop("OMP_NUM_THREADS", None)  # the jobs must get one thread each without it (repshare.launchers)
    sweep = tmp_path / "multirun"
    proc = subprocess.run(
        [sys.executable, "-m", "repshare.sweep", "-m", "experiment=smoke", "seed=0,1",
         "hydra/launcher=submitit_local", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = aggregate_sweep(sweep)
    assert res["jobs"] == ["0", "1"]
    assert res["metrics"]["r_same_S"]["values"] == [0.5, 0.75]
    # each job ran in its own process, through submitit (its pickles and logs are kept per job)
    import json

    records = [json.loads((sweep / j / "results" / "metrics.json").read_text()) for j in ("0", "1")]
    pids = {r["pid"] for r in records}
    assert len(pids) == 2 and os.getpid() not in pids
    assert [r["threads"] for r in records] == [1, 1]  # not one thread per core each: 2 jobs on 2 cores
    assert "validated against ConfigStore schema" not in proc.stderr  # no Hydra deprecation warning
    logs = list((sweep / ".submitit").glob("*/*_log.out"))
    assert len(logs) == 2 and all("Job completed successfully" in p.read_text() for p in logs)


def test_job_threads_follow_the_launchers_allocation():
    from repshare.launchers import job_threads

    assert job_threads({"cpus_per_task": 4}, {"OMP_NUM_THREADS": "2"}) == 2  # set by the user, joblib or setup
    assert job_threads({"cpus_per_task": 4}, {"OMP_NUM_THREADS": "", "SLURM_CPUS_PER_TASK": "3"}) == 3
    assert job_threads({"cpus_per_task": 4}, {"SUBMITIT_EXECUTOR": "local"}) == 4
    assert job_threads({"cpus_per_task": None}, {"SUBMITIT_EXECUTOR": "local"}) == 1  # all jobs start at once
    assert job_threads({"n_jobs": 2}, {}) is None  # a plain run or Hydra's basic launcher: torch's default
    with pytest.raises(ConfigError, match="OMP_NUM_THREADS='x' must be a whole number"):
        job_threads(None, {"OMP_NUM_THREADS": "x"})
    with pytest.raises(ConfigError, match=r"hydra.launcher.cpus_per_task=0 must be >= 1"):
        job_threads({"cpus_per_task": 0}, {})


@pytest.mark.slow
def test_submitit_sweep_with_a_bad_job_names_it_and_exits_2(tmp_path):
    """A job whose config is refused (data.n_val=-3) comes back through submitit as a result, not an exception:
    the other job's results are kept, the summary names the bad job, its overrides and its error; exit 2."""
    (tmp_path / "standin_fail.py").write_text(textwrap.dedent("""
        from pathlib import Path
        from repshare.utils.io import write_json

        def stage(cfg):
            write_json(Path(cfg.paths.results_dir) / "metrics.json", {"r_same_S": cfg.data.n_val / 100})
    """))
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "REPSHARE_SWEEP_STAGES": "standin_fail:stage", "WANDB_MODE": "disabled"}
    sweep = tmp_path / "multirun"
    proc = subprocess.run(
        [sys.executable, "-m", "repshare.sweep", "-m", "experiment=smoke", "data.n_val=48,-3",
         "hydra/launcher=submitit_local", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    head, job = proc.stderr.strip().splitlines()[-2:]
    assert head == f"error [repshare.sweep]: 1 of 2 jobs failed; the other jobs' results are kept in {sweep}"
    assert job.startswith("error [repshare.sweep]: job 1 (experiment=smoke data.n_val=-3): config value "
                          "data.n_val=-3 is invalid")
    assert (sweep / "0" / "results" / "metrics.json").read_text().count("0.48") == 1
    assert not (sweep / "1" / "results").exists()
