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
    shutil.copytree(root / "data", tmp_path / "data")
    shutil.copytree(root / "results", tmp_path / "results", ignore=shutil.ignore_patterns("wandb"))
    with open_dict(cfg := cfg.copy()):
        cfg.paths.data_dir, cfg.paths.results_dir = str(tmp_path / "data"), str(tmp_path / "results")
        cfg.logger.dir = str(tmp_path / "results" / "wandb")
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
