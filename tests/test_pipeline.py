"""The whole pipeline on the smoke preset, in process, and the DVC stage wiring."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from repshare.sweep import STAGES, run_pipeline

ROOT = Path(__file__).resolve().parents[1]


def test_dvc_stages_point_at_existing_entry_points_and_deps():
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    produced = set()
    for name, stage in spec["stages"].items():
        script = stage["cmd"].split()[1]
        assert (ROOT / script).is_file(), (name, script)
        for dep in stage.get("deps", []):
            # A dependency is either in the repository or produced by an earlier stage.
            assert (ROOT / dep).exists() or dep in produced, (name, dep)
        for out in stage.get("outs", []) + stage.get("metrics", []) + stage.get("plots", []):
            produced.add(out if isinstance(out, str) else next(iter(out)))


def test_python_bytecode_does_not_change_code_dependencies():
    """__pycache__ beside src/ code must not make `dvc status` report the code as modified."""
    dvc = Path(sys.executable).with_name("dvc")
    paths = ["src/repshare/data/__pycache__/shapes.cpython-311.pyc", "src/repshare/cka.pyc"]
    out = subprocess.run([str(dvc), "check-ignore", *paths], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == paths
    kept = subprocess.run([str(dvc), "check-ignore", "src/repshare/cka.py"], cwd=ROOT, capture_output=True, text=True)
    assert kept.returncode == 1 and not kept.stdout.strip()


def test_every_stage_entry_point_is_a_sweep_stage():
    from repshare.stages import STAGES as ALL_STAGES

    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    assert list(spec["stages"]) == list(ALL_STAGES)
    # The sweep runs them all in order but `validate`: each job validates its own config first.
    assert list(STAGES) == [f"repshare.stages.{n}:run" for n in ALL_STAGES if n != "validate"]


def result_bytes(cfg) -> dict[str, bytes]:
    """Every file a run leaves, but provenance (``*_run.json``), W&B logs and Lightning's resume state."""
    out = {}
    for root in (Path(cfg.paths.data_dir), Path(cfg.paths.results_dir)):
        for f in sorted(root.rglob("*")):
            rel = f.relative_to(root)
            if f.is_file() and not f.name.endswith("_run.json") and rel.parts[0] not in ("wandb", "train_state"):
                out[f"{root.name}/{rel}"] = f.read_bytes()
    return out


@pytest.mark.slow
def test_smoke_pipeline_end_to_end_and_twice_the_same_bytes(smoke_cfg, tmp_path):
    """prepare -> train -> every method -> compare -> report, as `dvc repro` runs them; then the whole
    pipeline again from scratch (same seed, same threads) into another folder: every result file is
    byte-identical outside the provenance files, verdicts included."""
    run_pipeline(smoke_cfg)
    results = Path(smoke_cfg.paths.results_dir)
    cka = json.loads((results / "cka" / "cka.json").read_text())
    assert len(cka["cross_stage"]) == 8 and len(cka["cross_stage"][0]) == 8
    pairs = json.loads((results / "evaluate_merged" / "pairs.json").read_text())
    assert len(pairs["pairs"]) == 64
    metrics = json.loads((results / "metrics.json").read_text())
    assert "r_same_S" in metrics and "classifier_top1" in metrics
    html = (results / "report" / "index.html").read_text()
    assert "data:image/png;base64," in html
    for fig in ("fig3_abs_r", "fig4_acc_vs_s"):
        assert (results / "figures" / f"{fig}.png").stat().st_size > 1000
        assert (results / "figures" / f"{fig}.pdf").stat().st_size > 1000
    for plot in ("cka_same_stage.csv", "acc_vs_cka.csv", "abs_r.csv"):
        assert (results / "plots" / plot).is_file()
    # Provenance: every stage's run log (beside the DVC outputs, never inside them) records config and versions.
    assert "provenance" not in pairs and "seconds" not in pairs
    run = json.loads((results / "metrics" / "evaluate_merged_run.json").read_text())
    assert run["config"]["experiment_name"] == "smoke" and "torch" in run["versions"]

    again = smoke_cfg.copy()
    again.paths.data_dir, again.paths.results_dir = str(tmp_path / "again" / "data"), str(tmp_path / "again" / "results")
    again.logger.dir = str(tmp_path / "again" / "results" / "wandb")
    run_pipeline(again)
    # The dashboard prints the config, whose paths name each run's own folder: the one legitimate difference.
    first = {k: v.replace(str(tmp_path).encode(), b"<run>") for k, v in result_bytes(smoke_cfg).items()}
    second = {k: v.replace(str(tmp_path / "again").encode(), b"<run>") for k, v in result_bytes(again).items()}
    assert len(first) > 100 and "results/compare/verdicts.json" in first
    assert sorted(first) == sorted(second)
    differ = sorted(k for k in first if first[k] != second[k] and k != "results/report/checksums.json")
    assert not differ, f"{len(differ)} files differ between two runs from scratch: {differ[:10]}"


def test_stage_entry_point_exits_nonzero_when_an_input_is_missing(tmp_path):
    params = tmp_path / "params.yaml"
    text = (ROOT / "params.yaml").read_text()
    text = text.replace("results_dir: results", f"results_dir: {tmp_path / 'results'}")
    text = text.replace("data_dir: data", f"data_dir: {tmp_path / 'data'}")
    params.write_text(text)
    proc = subprocess.run([sys.executable, str(ROOT / "pipelines" / "cka.py"), "--params", str(params)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode != 0
    assert "prepare" in proc.stderr or "manifest" in proc.stderr
    assert not (tmp_path / "results" / "cka").exists()  # nothing half-written
