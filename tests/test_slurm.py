"""A real SLURM cluster: munged + slurmctld + slurmd on localhost (scripts/local-slurm), driven through
hydra-submitit-launcher's ``hydra/launcher=slurm`` exactly as on a cluster's login node.

- the two-job smoke sweep (seeds 0 and 1): each job's results, then ``python -m repshare.aggregate``;
- a job killed by ``scancel`` in the middle of training: the sweep reports it, the rerun of the same
  command resubmits it, training resumes from its checkpoint and ends with the same weights as the
  uninterrupted job of the first sweep (same config and seed).

The stages are a short real subset (``REPSHARE_SWEEP_STAGES``: prepare, train_classifier) plus a
two-line stage that copies the classifier's metrics into ``results/metrics.json``, the file the
aggregate reads (the full pipeline writes it in ``analyze``, minutes later). Skipped, with the
reason, only where SLURM cannot be installed or started (not root, no apt-get); a daemon that does
not start fails the test naming it. Every wait has a timeout.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs the cluster extra: pip install -e '.[cluster]'")

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "local-slurm"
EPOCHS = 3  # a few short epochs: the kill lands after the first epoch's checkpoint, before the last
SWEEP_S = 240  # each sweep command's limit (seconds)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory) -> dict[str, str]:
    """Environment for SLURM commands pointed at a fresh one-node cluster; stops it afterwards."""
    inst = subprocess.run(["bash", str(SCRIPT), "install"], capture_output=True, text=True, timeout=1200)
    if inst.returncode == 3:
        pytest.skip(inst.stderr.strip().splitlines()[-1])
    assert inst.returncode == 0, f"scripts/local-slurm install failed: {inst.stderr[-2000:]}"
    folder = tmp_path_factory.mktemp("slurm")
    start = subprocess.run(["bash", str(SCRIPT), "start", str(folder)], capture_output=True, text=True, timeout=300)
    if start.returncode == 3:
        pytest.skip(start.stderr.strip().splitlines()[-1])
    env = {**os.environ, "SLURM_CONF": str(folder / "slurm.conf"),
           "PATH": f"{folder / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    try:
        assert start.returncode == 0, f"the local SLURM cluster did not start:\n{start.stderr[-3000:]}"
        yield env
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(folder)], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def job_env(slurm, tmp_path_factory) -> dict[str, str]:
    """The sweep's environment: the cluster, W&B off, and the stage subset (inherited by the jobs)."""
    from repshare.stages import stage_spec

    extra = tmp_path_factory.mktemp("stages")
    (extra / "slurm_test_stages.py").write_text(textwrap.dedent("""
        from pathlib import Path
        from repshare.utils.io import read_json, write_json

        def model_metrics(cfg):  # what analyze would write last: the numbers the aggregate reads
            m = read_json(Path(cfg.paths.results_dir) / "metrics" / "classifier.json")
            write_json(Path(cfg.paths.results_dir) / "metrics.json", {"classifier_top1": m["top1"]})
    """))
    stages = [stage_spec("prepare"), stage_spec("train_classifier"), "slurm_test_stages:model_metrics"]
    return {**slurm, "WANDB_MODE": "disabled", "REPSHARE_SWEEP_STAGES": ",".join(stages),
            "PYTHONPATH": os.pathsep.join(p for p in (str(extra), os.environ.get("PYTHONPATH")) if p)}


def sweep_cmd(sweep_dir: Path, seeds: str) -> list[str]:
    return [sys.executable, "-m", "repshare.sweep", "-m", "experiment=smoke", f"seed={seeds}",
            f"train.classifier.epochs={EPOCHS}", "hydra/launcher=slurm", "hydra.launcher.partition=local",
            "hydra.launcher.cpus_per_task=1", "hydra.launcher.gpus_per_node=0", "hydra.launcher.mem_gb=1",
            "hydra.launcher.timeout_min=10", f"hydra.sweep.dir={sweep_dir}"]


def jobs_table(env: dict[str, str]) -> dict[str, str]:
    """slurmctld's own view: job id -> state, for every job of this cluster (finished ones included)."""
    out = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i|%T"], env=env, capture_output=True, text=True,
                         timeout=30, check=True).stdout
    return dict(line.split("|") for line in out.split())


def settled(env: dict[str, str], before: set[str], timeout: float = 60) -> dict[str, str]:
    """States of the jobs submitted since ``before`` once none is pending or running (the result file
    submitit waits for is written a moment before the job ends)."""
    deadline = time.monotonic() + timeout
    while True:
        new = {k: v for k, v in jobs_table(env).items() if k not in before}
        if not any(v in ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING") for v in new.values()):
            return new
        assert time.monotonic() < deadline, f"jobs still not finished after {timeout} s: {new}"
        time.sleep(0.5)


def weights(job: Path) -> dict:
    return load_file(job / "results" / "models" / "classifier" / "model.safetensors")


@pytest.fixture(scope="module")
def two_job_sweep(job_env, tmp_path_factory) -> Path:
    sweep = tmp_path_factory.mktemp("sweep") / "multirun"
    before = set(jobs_table(job_env))
    proc = subprocess.run(sweep_cmd(sweep, "0,1"), cwd=sweep.parent, env=job_env, capture_output=True, text=True,
                          timeout=SWEEP_S)
    assert proc.returncode == 0, proc.stderr[-4000:]
    new = settled(job_env, before)
    assert sorted(new.values()) == ["COMPLETED", "COMPLETED"], new  # two array tasks ran on SLURM
    return sweep


def test_two_job_smoke_sweep_on_slurm_and_its_aggregate(two_job_sweep, job_env):
    sweep = two_job_sweep
    top1 = {}
    for job, seed in (("0", 0), ("1", 1)):
        cfg = (sweep / job / ".hydra" / "overrides.yaml").read_text()
        assert f"seed={seed}" in cfg
        m = json.loads((sweep / job / "results" / "metrics" / "classifier.json").read_text())
        assert m["trained"] is True and m["epochs"] == EPOCHS and m["n"] == 48  # smoke: 48 validation images
        assert 0.0 <= m["top1"] <= m["top5"] <= 1.0
        top1[job] = m["top1"]
        assert (sweep / job / "data" / "prepared" / "manifest.json").is_file()
    w0, w1 = weights(sweep / "0"), weights(sweep / "1")
    assert w0.keys() == w1.keys() and any(not w0[k].equal(w1[k]) for k in w0)  # each job trained with its own seed
    logs = sorted((sweep / ".submitit").glob("*_*/*_log.out"))  # <array id>_<task>/..._log.out
    assert len(logs) == 2 and all("Job completed successfully" in p.read_text() for p in logs)

    proc = subprocess.run([sys.executable, "-m", "repshare.aggregate", str(sweep)], env=job_env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    agg = json.loads((sweep / "aggregate.json").read_text())
    s = agg["metrics"]["classifier_top1"]
    assert agg["jobs"] == ["0", "1"] and s["n"] == 2 and s["values"] == [top1["0"], top1["1"]]
    assert s["mean"] == pytest.approx((top1["0"] + top1["1"]) / 2)
    assert s["std"] == pytest.approx(abs(top1["0"] - top1["1"]) / 2 ** 0.5)  # ddof=1 with two values


def test_job_cancelled_mid_training_resumes_from_its_checkpoint(two_job_sweep, job_env, tmp_path):
    sweep = tmp_path / "multirun"
    job = sweep / "0"
    ckpt = job / "results" / "train_state" / "classifier" / "last.ckpt"
    before = set(jobs_table(job_env))
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(sweep_cmd(sweep, "0"), cwd=tmp_path, env=job_env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + SWEEP_S
            while not ckpt.exists():  # the first epoch's checkpoint: training is under way
                assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
                assert time.monotonic() < deadline, f"no {ckpt} after {SWEEP_S} s"
                time.sleep(0.2)
            running = {k: v for k, v in jobs_table(job_env).items() if k not in before}
            assert list(running.values()) == ["RUNNING"], running
            subprocess.run(["scancel", *running], env=job_env, check=True, timeout=30)
            code = proc.wait(timeout=SWEEP_S)  # submitit sees CANCELLED (sacct) and the sweep fails
        finally:
            if proc.poll() is None:
                proc.kill()
    first = (tmp_path / "first.log").read_text()
    assert code != 0, first[-3000:]  # the sweep reports the lost job (it does not wait for it forever)
    assert settled(job_env, before) == {next(iter(running)): "CANCELLED"}
    assert ckpt.is_file() and not (job / "results" / "metrics" / "classifier.json").exists()  # killed mid-stage

    # The same command again: the job is resubmitted into the same folder and resumes.
    proc = subprocess.run(sweep_cmd(sweep, "0"), cwd=tmp_path, env=job_env, capture_output=True, text=True,
                          timeout=SWEEP_S)
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = (job / "sweep.log").read_text()
    assert re.search(rf"resuming .*training from {re.escape(str(ckpt))}", log), log[-3000:]
    m = json.loads((job / "results" / "metrics" / "classifier.json").read_text())
    ref = json.loads((two_job_sweep / "0" / "results" / "metrics" / "classifier.json").read_text())
    assert m["epochs"] == EPOCHS and m["top1"] == ref["top1"]
    w, w_ref = weights(job), weights(two_job_sweep / "0")  # uninterrupted run, same config and seed
    assert w.keys() == w_ref.keys() and all(w[k].equal(w_ref[k]) for k in w)


@pytest.mark.parametrize("broken", ["munged", "slurmctld"])
def test_a_daemon_that_does_not_start_is_named_and_nothing_hangs(broken, tmp_path):
    """A munged that exits at once, or a slurmctld that never answers: `start` gives up after its wait
    (shortened here to 5 s), names the daemon, exits 4, and leaves no daemon of that folder running."""
    if subprocess.run(["bash", str(SCRIPT), "install"], capture_output=True, timeout=1200).returncode == 3:
        pytest.skip("SLURM is not installed and cannot be installed here")
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / broken).write_text("#!/bin/sh\necho 'fake failure' >&2\nexit 1\n" if broken == "munged"
                               else "#!/bin/sh\nexec sleep 600\n")
    (fake / broken).chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}", "LOCAL_SLURM_WAIT_S": "5"}
    folder = tmp_path / "cluster"
    t0 = time.monotonic()
    proc = subprocess.run(["bash", str(SCRIPT), "start", str(folder)], env=env, capture_output=True, text=True,
                          timeout=120)
    subprocess.run(["bash", str(SCRIPT), "stop", str(folder)], capture_output=True, timeout=120)
    if proc.returncode == 3:
        pytest.skip(proc.stderr.strip().splitlines()[-1])
    assert proc.returncode == 4 and f"{broken} did not start" in proc.stderr, proc.stderr
    assert time.monotonic() - t0 < 60
    pids = [p for p in folder.glob("*.pid*")]
    assert not [p for p in pids if subprocess.run(["kill", "-0", p.read_text().strip()]).returncode == 0]
