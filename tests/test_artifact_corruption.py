"""Corrupting an intermediate file makes the next stage that reads it stop with one line naming the file
(exit status 2 at the command line), before it writes anything: a damaged input never becomes a result.

One smoke pipeline is run once; each case copies its results, damages one file (a flipped byte with the
header intact, or a truncation) and runs the consuming stage in process."""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path

import pytest
from omegaconf import open_dict

from repshare.stage import describe_error
from repshare.sweep import run_pipeline


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    from repshare.config import compose

    root = tmp_path_factory.mktemp("base")
    cfg = compose(["experiment=smoke"])
    with open_dict(cfg):
        cfg.paths.data_dir, cfg.paths.results_dir = str(root / "data"), str(root / "results")
        cfg.logger.dir = str(root / "results" / "wandb")
    run_pipeline(cfg)
    return root, cfg


def copy_of_base(root: Path, cfg, tmp_path: Path):
    """The base run's data and results copied under ``tmp_path``, and its config pointing there."""
    shutil.copytree(root / "data", tmp_path / "data")
    shutil.copytree(root / "results", tmp_path / "results", ignore=shutil.ignore_patterns("wandb"))
    with open_dict(cfg := cfg.copy()):
        cfg.paths.data_dir, cfg.paths.results_dir = str(tmp_path / "data"), str(tmp_path / "results")
        cfg.logger.dir = str(tmp_path / "results" / "wandb")
    return cfg


def flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-7] ^= 0xFF  # in the payload: headers and JSON syntax stay intact
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 2)])


# (consuming stage, the file it reads, the damage, the folder the stage writes)
CASES = [
    ("cka", "models/detector/model.safetensors", flip, "cka"),
    ("evaluate_merged", "models/classifier/model.safetensors", truncate, "evaluate_merged"),
    ("gemel", "models/classifier_color/model.safetensors", flip, "gemel"),
    ("branches", "models/classifier/model.safetensors", flip, "branches"),
    ("analyze", "evaluate_merged/merges.json", flip, "analyze"),
    ("analyze", "evaluate_merged/correct.npy", truncate, "analyze"),
    ("analyze", "cka/per_model/cka.json", truncate, "analyze"),
    ("self_merge", "branches/zoo/zoo.json", flip, "self_merge"),  # features: tests/test_multiexit_store.py
    ("kd_recover", "self_merge/merge.json", flip, "kd_recover"),
    ("placement", "kd_recover/profiles.json", flip, "placement"),
    ("compare", "gemel/comparison_rows.json", flip, "compare"),
    ("compare", "analyze/section.json", truncate, "compare"),
    ("report", "compare/claims.json", flip, "report"),
]


@pytest.mark.slow
@pytest.mark.parametrize("stage, rel, damage, out", CASES, ids=[f"{c[0]}<-{c[1]}" for c in CASES])
def test_a_damaged_input_stops_the_consuming_stage_with_one_line(base, tmp_path, stage, rel, damage, out):
    root, cfg = base
    cfg = copy_of_base(root, cfg, tmp_path)
    target = tmp_path / "results" / rel
    damage(target)
    before = {p: p.read_bytes() for p in (tmp_path / "results" / out).rglob("*") if p.is_file()}
    run = importlib.import_module(f"repshare.stages.{stage}").run
    with pytest.raises(Exception) as caught:
        run(cfg)
    line = describe_error(caught.value)
    assert line is not None, f"{stage} met a damaged {rel} with a bug, not a message: {caught.value!r}"
    assert "\n" not in line and Path(rel).name in line, line
    after = {p: p.read_bytes() for p in (tmp_path / "results" / out).rglob("*") if p.is_file()}
    assert after == before  # nothing of the previous result lost or half-replaced


# ----------------------------------------------------------------------------- kill -9 mid-stage, then rerun
KILLED = ("concurrency", "gemel", "branches", "kd_recover", "report")


def _result_files(results: Path, *roots: Path) -> dict[str, bytes]:
    """Every result file but provenance, W&B and a killed writer's temporary folder (removed at the next
    start), with the run's own folder written as <run>."""
    def text(p: Path) -> bytes:
        data = p.read_bytes()
        for root in roots:
            data = data.replace(str(root).encode(), b"<run>")
        return data

    return {str(p.relative_to(results)): text(p) for p in sorted(results.rglob("*"))
            if p.is_file() and not p.name.endswith("_run.json") and "wandb" not in p.parts and p.name != "checksums.json"
            and not any(part.startswith(".") and part.endswith(".tmp") for part in p.parts)}


@pytest.mark.slow
@pytest.mark.parametrize("stage", KILLED)
def test_kill_9_mid_stage_loses_nothing_and_the_rerun_gives_the_same_result(base, tmp_path, stage):
    """SIGKILL while the stage writes (as soon as its temporary output folder appears: every stage builds
    its outputs in one and swaps it in whole): the previous results stay byte for byte, and the rerun
    leaves no temporary litter and gives the same files as the uninterrupted run."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    from omegaconf import OmegaConf

    root, cfg = base
    cfg = copy_of_base(root, cfg, tmp_path)
    params = tmp_path / "params.yaml"
    OmegaConf.save(cfg, params)
    results = tmp_path / "results"
    before = _result_files(results, tmp_path, root)  # the copied files name the base run's folder
    # The base run's torch threads (its run record): float summation order, and so the bytes, depend on them.
    threads = json.loads((root / "results" / "metrics" / f"{stage}_run.json").read_text())["machine"]["torch_threads"]
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, str(Path(__file__).resolve().parents[1] / "pipelines" / f"{stage}.py"), "--params", str(params)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started = time.monotonic()
    while proc.poll() is None and time.monotonic() - started < 300:
        if any(results.glob(".*.tmp")) or any(results.glob("*/.*.tmp")):  # the stage is writing its outputs
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.002)
    assert proc.wait(timeout=60) == -signal.SIGKILL, f"{stage} finished before the kill: the test did not test"
    assert _result_files(results, tmp_path, root) == before, "a killed stage lost or half-replaced a result"
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert not [p for p in results.rglob(".*") if p.name.endswith((".tmp", ".old"))], "temporary litter after the rerun"
    after = _result_files(results, tmp_path, root)
    assert after == before, sorted(k for k in set(after) | set(before) if after.get(k) != before.get(k))[:10]
