"""Stages that do not apply to the workload / data are skipped by definition (issue 28): the rule, what a
skipped stage writes (checked against dvc.yaml and read back by the compare stage's own readers), that
it decides before loading anything, and real mode's `dvc repro` running through on small real-layout data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from omegaconf import open_dict
from PIL import Image

from repshare.comparison.compare import load_method_rows, load_sections
from repshare.config import compose
from repshare.data.shards import write_manifest
from repshare.stage_scope import NEEDS, skip_reason, write_skipped

REPO = Path(__file__).resolve().parents[1]


def _cfg(tmp_path, *overrides: str):
    cfg = compose(list(overrides))
    with open_dict(cfg):
        cfg.paths.data_dir, cfg.paths.results_dir = str(tmp_path / "data"), str(tmp_path / "results")
        cfg.logger.wandb_mode = "disabled"
    return cfg


def _manifest(cfg, splits: tuple[str, ...]) -> None:
    from repshare.data.shards import prepared_dir

    write_manifest(prepared_dir(cfg), {s: {"n": 0, "shards": []} for s in splits}, {"source": "test"})


def test_declared_outputs_are_dvc_yaml_outputs():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, needs in NEEDS.items():
        declared = set()
        for kind in ("outs", "metrics", "plots"):
            for o in stages[name].get(kind, []):
                rel = next(iter(o)) if isinstance(o, dict) else o
                declared.add(rel.removeprefix("results/"))
        assert set(needs.outputs) == declared, name


def test_the_embedded_default_skips_nothing(tmp_path):
    cfg = _cfg(tmp_path)
    # before prepare ran nothing is skipped on a guess: the stage names its missing input itself
    assert {name: skip_reason(name, cfg) for name in NEEDS} == dict.fromkeys(NEEDS)
    _manifest(cfg, ("train", "select", "val"))
    assert {name: skip_reason(name, cfg) for name in NEEDS} == dict.fromkeys(NEEDS)
    assert skip_reason("cka", cfg) is None and skip_reason("compare", cfg) is None  # never skippable


def test_real_mode_skips_what_cannot_exist_and_says_why(tmp_path):
    cfg = _cfg(tmp_path, "experiment=real", "data.root=/nowhere")
    _manifest(cfg, ("val", "calib"))
    assert cfg.workload.name == "real" and [m.name for m in cfg.workload.models] == ["classifier", "detector"]
    colour = skip_reason("train_classifier_color", cfg)
    assert "'classifier_color'" in colour and "workload 'real'" in colour
    for name in ("gemel", "branches", "self_merge", "kd_recover", "placement"):
        why = skip_reason(name, cfg)
        assert "'train' split" in why and "data=imagenet has only val, calib" in why and "data.train_root" in why, name
    # the concurrency score needs no data; only its accuracy proxy trains (off in the real presets)
    assert skip_reason("concurrency", cfg) is None
    with open_dict(cfg):
        cfg.concurrency.proxy.archs_per_generator = 1
    assert "concurrency.proxy.archs_per_generator=0" in skip_reason("concurrency", cfg)
    # the same stages run when the data has a train split (data.train_root)
    _manifest(cfg, ("train", "val"))
    assert skip_reason("gemel", cfg) is None and skip_reason("train_classifier_color", cfg) is not None


def test_a_skipped_stage_writes_every_output_and_compare_reads_its_section(tmp_path):
    cfg = _cfg(tmp_path, "experiment=real", "data.root=/nowhere")
    results = Path(cfg.paths.results_dir)
    for name in NEEDS:
        write_skipped(name, cfg, f"reason of {name}")
        for rel in NEEDS[name].outputs:
            assert (results / rel).exists(), (name, rel)
    assert json.loads((results / "metrics" / "gemel.json").read_text()) == {"skipped": 1, "reason": "reason of gemel"}
    assert json.loads((results / "models" / "classifier_color" / "skipped.json").read_text())["stage"] == \
        "train_classifier_color"
    run_log = json.loads((results / "metrics" / "classifier_color_run.json").read_text())
    assert run_log["metrics"]["skipped"] == 1 and "seconds" in run_log
    # The compare stage's own readers (checksums verified) accept them: empty rows, a section saying why.
    folders = {"gemel": "gemel", "meedge": "kd_recover", "meedge_placement": "placement", "concurrency": "concurrency"}
    sections, problems = load_sections(results, folders)
    assert not problems and set(sections) == set(folders)
    assert "skipped because reason of kd_recover" in sections["meedge"].summary
    assert not sections["gemel"].measurements and not sections["gemel"].sanity
    rows, row_problems = load_method_rows(results, {m: f for m, f in folders.items() if m != "concurrency"})
    assert rows == [] and not row_problems


def test_a_stage_decides_before_loading_any_input(tmp_path):
    """No model file, no features, no train split: a skipped stage must not reach for any of them."""
    import importlib

    cfg = _cfg(tmp_path, "experiment=real", "data.root=/nowhere", "concurrency.proxy.archs_per_generator=1")
    _manifest(cfg, ("val",))
    for name in NEEDS:
        out = importlib.import_module(f"repshare.stages.{name}").run(cfg)
        assert out["skipped"] == 1, name


def _jpegs(folder: Path, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for wnid in ("n01440764", "n01443537"):  # the first two classes of the standard ILSVRC2012 order
        (folder / wnid).mkdir(parents=True)
        for k in range(n // 2):
            Image.fromarray(rng.integers(0, 255, (48, 56, 3), dtype=np.uint8)).save(folder / wnid / f"{k}.JPEG")


def _dvc(root: Path, env: dict, *cmds: list[str]) -> str:
    out = ""
    for cmd in cmds:
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, (cmd, proc.stdout[-3000:] + proc.stderr[-3000:])
        out += proc.stdout + proc.stderr
    return out


@pytest.mark.slow
def test_dvc_repro_in_real_mode_runs_every_method_once_training_images_are_given(tmp_path):
    """`dvc repro` (what `make run` does) with the real preset on ImageNet-layout JPEGs and random-init
    weights of the real architectures. Without training images: exit 0, the stages that need them skipped
    with their reason, the concurrency score run (it needs no data), the chance guard on the dashboard.
    Then the user adds ``data.train_root`` and ``data.n_select`` and reruns: every method runs (Gemel with
    the unmerged detector's detections as its targets, MEEdge's branches on the classifier), and each
    method's dashboard page shows its results."""
    root = tmp_path / "repo"
    for d in ("src", "conf", "pipelines"):
        shutil.copytree(REPO / d, root / d, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*.tmp"))
    (root / ".dvc").mkdir()
    shutil.copy(REPO / ".dvc" / "config", root / ".dvc" / "config")
    for f in (".dvcignore", ".gitignore", "dvc.yaml"):
        shutil.copy(REPO / f, root / f)
    for d in ("results", "data"):
        (root / d).mkdir()
        if (REPO / d / ".gitignore").is_file():
            shutil.copy(REPO / d / ".gitignore", root / d / ".gitignore")
    _jpegs(tmp_path / "val", 24, 0)
    _jpegs(tmp_path / "train", 40, 1)
    env = {**os.environ, "PYTHONPATH": str(root / "src"), "DVC_NO_ANALYTICS": "1", "WANDB_MODE": "disabled",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    compose_args = ["experiment=real", "trainer=cpu", "capture.device=cpu", "sharing.device=cpu",
                    f"data.root={tmp_path / 'val'}", "data.calibration_images=8", "data.image_size=32",
                    "model.classifier.input_size=32", "model.classifier.weights=random",
                    "model.detector.weights=random", "model.detector.image_size=128", "logger=none",
                    "capture.n_samples=16", "sharing.n_calibration=8", "concurrency.trace_archs=[resnet18]",
                    "concurrency.graphs_per_generator=2", "concurrency.staging_samples=4"]
    log = _dvc(root, env, [sys.executable, "pipelines/compose.py", *compose_args], ["git", "init", "-q"],
               ["git", "add", "-A"], ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init"],
               ["dvc", "repro"])
    for name in ("train_classifier_color", "gemel", "branches", "self_merge", "kd_recover", "placement"):
        assert f"{name}: skipped: " in log, name
    assert "concurrency: skipped" not in log
    results = root / "results"
    verdicts = {p["paper"]: p["verdict"] for p in json.loads((results / "compare" / "verdicts.json").read_text())["papers"]}
    assert verdicts["gemel"] == verdicts["meedge"] == "not tested" != verdicts["concurrency"]
    assert verdicts["cka"] == "inconclusive"  # random weights: at chance, so nothing can hold or fail
    claims = json.loads((results / "compare" / "claims.json").read_text())["claims"]
    cka = [c for c in claims if c["key"].startswith("cka.") and c["primary"]]
    assert cka and all(c["verdict"] == "inconclusive" for c in cka)
    page = (results / "report" / "cka_sharing.html").read_text()
    assert "Not interpretable: the unmerged classifier is at chance" in page
    assert "Workload &#39;real&#39;: classifier, detector" in (results / "report" / "index.html").read_text()
    assert json.loads((results / "metrics" / "detector.json").read_text())["not_measured"].startswith("data=imagenet")
    traced = (results / "concurrency" / "workload.csv").read_text()
    assert all(a in traced for a in ("tf_efficientnet_b0", "tf_efficientdet_d0", "resnet18"))

    train_args = [f"data.train_root={tmp_path / 'train'}", "data.n_select=12", "gemel.steps=2", "gemel.batch_size=2",
                  "gemel.max_iterations=1", "gemel.n_report=8", "gemel.decision.n_weights=4",
                  "gemel.decision.n_boot=100", "gemel.teacher_score=0.0", "multiexit.features.n_train=20",
                  "multiexit.features.batch_size=8"]
    log = _dvc(root, env, [sys.executable, "pipelines/compose.py", *compose_args, *train_args], ["dvc", "repro"])
    for name in ("concurrency", "gemel", "branches", "self_merge", "kd_recover", "placement"):
        assert f"{name}: skipped" not in log and f"Running stage '{name}'" in log, name
    manifest = json.loads((root / "data" / "prepared" / "manifest.json").read_text())["splits"]
    assert {k: manifest[k]["n"] for k in ("train", "select", "val", "calib")} == {"train": 28, "select": 12, "val": 16,
                                                                                  "calib": 8}
    gemel = json.loads((results / "metrics" / "gemel.json").read_text())
    assert gemel["tried"] == 1 and "skipped" not in gemel
    assert "unmerged detector" in (results / "report" / "gemel.html").read_text()
    zoo = json.loads((results / "branches" / "zoo" / "zoo.json").read_text())
    assert zoo["num_classes"] == 1000 and zoo["n_select"] == 12 and zoo["select_source"] == "select split"
    verdicts = {p["paper"]: p["verdict"] for p in json.loads((results / "compare" / "verdicts.json").read_text())["papers"]}
    assert "not tested" not in (verdicts["gemel"], verdicts["meedge"])
