"""MEEdge part 1 stages end to end on the smoke preset (random-init classifier), and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from repshare.comparison import read_rows, read_section
from repshare.config import ConfigError, compose, validate_config


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Smoke data and an untrained classifier (the stages only need its weights file)."""
    from repshare.stages.prepare import run as prepare
    from repshare.models.checkpoint import save_model
    from repshare.models.classifier import build_classifier

    root = tmp_path_factory.mktemp("me")
    cfg = compose(["experiment=smoke"])
    with open_dict(cfg):
        cfg.paths.data_dir = str(root / "data")
        cfg.paths.results_dir = str(root / "results")
        cfg.logger.dir = str(root / "results" / "wandb")
    prepare(cfg)
    torch.manual_seed(0)
    model = build_classifier("efficientnet_b0", num_classes=cfg.model.classifier.num_classes)
    save_model(model, Path(cfg.paths.results_dir) / "models" / "classifier", {"arch": "efficientnet_b0"})
    from safetensors.torch import save_file

    for other in ("detector", "classifier_color"):  # the workload's weight bytes are kd_recover's denominator
        (Path(cfg.paths.results_dir) / "models" / other).mkdir(parents=True)
        save_file({"w": torch.zeros(10)}, str(Path(cfg.paths.results_dir) / "models" / other / "model.safetensors"))
    return cfg


def with_(cfg, **kv):
    cfg = cfg.copy()
    with open_dict(cfg):
        for k, v in kv.items():
            node = cfg
            *path, last = k.split(".")
            for p in path:
                node = node[p]
            node[last] = v
    return validate_config(cfg)


def run_part1(cfg):
    from repshare.stages import branches, kd_recover, self_merge

    return branches.run(cfg), self_merge.run(cfg), kd_recover.run(cfg)


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def elsewhere(cfg, name: str):
    """``cfg`` writing to a fresh results folder that shares the trained classifier."""
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.paths.results_dir = str(Path(cfg.paths.results_dir).parent / name)
    models = Path(cfg.paths.results_dir) / "models"
    models.mkdir(parents=True)
    for m in ("classifier", "detector", "classifier_color"):
        (models / m).symlink_to(Path(prepared_results(cfg)) / "models" / m)
    return cfg


def prepared_results(cfg) -> Path:
    return Path(cfg.paths.data_dir).parent / "results"


@pytest.mark.slow
def test_part1_stages_end_to_end(prepared):
    from repshare.claims import judge
    from repshare.multiexit.claims import CLAIMS, QUANTITIES
    from repshare.multiexit.store import Part1, load_branch, read_correct, read_profiles

    # every exit keeps a branch with a hidden layer, so merging and recovery always have work
    cfg = with_(prepared, **{"multiexit.survival.scope": "per_exit", "multiexit.zoo.fcs": [[16]]})
    doc, merge, kd = run_part1(cfg)
    paths = Part1(Path(cfg.paths.results_dir))
    assert len(doc["branches"]) == 6 * 2 - 1  # dw3 does not fit exit 6's 2x2 map
    assert doc["skipped"] and "too large" in doc["skipped"][0]["reason"]
    # decisions read the prepared select split (capped by multiexit.features.n_select)
    f = cfg.multiexit.features
    assert doc["select_source"] == "select split" and doc["n_select"] == min(cfg.data.n_select, f.n_select)
    assert doc["n_fit"] == f.n_train - f.n_holdout
    for p in doc["branches"]:
        assert (p["drop_reason"] is None) == p["survived"]
        assert p["latency_to_exit_s"] > p["branch_latency_s"] > 0
        # the cost model: call overhead + FLOPs / rate, so the same FLOPs give the same latency
        assert p["branch_latency_s"] == pytest.approx(5e-5 + p["flops"] / 4.5e9)
    prof = read_profiles(cfg.paths.results_dir)
    assert len(prof["backbone"]["stage_latency_s"]) == 8 and prof["backbone"]["exits"] == [1, 2, 3, 4, 5, 6]
    merged = [b for b in prof["branches"] if b["merged_params"] is not None]
    assert merged and all(b["survived"] and b["merged_params"] < b["params"] for b in merged)
    # profiles' accuracies are the row means of the per-image correctness tables
    for split, key, suffix in (("val", "accuracy", ""), ("select", "accuracy_select", ""),
                               ("val", "acc_recovered", "+recovered"), ("select", "acc_merged_select", "+merged")):
        ids, table = read_correct(cfg.paths.results_dir, split)
        for b in merged:
            assert float(table[ids.index(b["id"] + suffix)].mean()) == pytest.approx(b[key], abs=1e-6)
    for b in merged:
        for suffix in ("", ".merged", ".recovered"):
            assert (paths.report_dir / "branches" / f"{b['id']}{suffix}.safetensors").is_file()
    rows = read_rows(paths.report_dir / "comparison_rows.json")
    assert [r.bytes_saved > 0 for r in rows] == [True, True, False]  # merge, merge + KD, the control
    assert rows[1].retrain_images == rows[2].retrain_images > 0 and rows[0].retrain_images == 0
    section = read_section(paths.report_dir / "section.json")
    assert section.method == "meedge" and all(c.passed for c in section.sanity)
    assert {c.quantity for c in CLAIMS} <= set(section.measurements) <= set(QUANTITIES)
    # the smoke classifier is untrained: every verdict-relevant estimate is flagged, so no verdict can flip
    assert all(not e.interpretable and "at chance" in e.note for e in section.measurements.values())
    assert all(judge(c, section.measurements[c.quantity]).verdict == "inconclusive" for c in CLAIMS)
    for f in section.figures:
        assert (paths.report_dir / f.path).is_file()
    index = json.loads((paths.report_dir / "branches" / "index.json").read_text())["branches"]
    e = index[merged[0]["id"]]
    b = load_branch(paths.report_dir / "branches" / e["files"]["recovered"], e["spec"], e["in_shape"],
                    e["num_classes"], "kd_recover")
    assert b(torch.zeros(2, *e["in_shape"])).shape == (2, e["num_classes"])

    # Same inputs, same seed: byte-identical outputs (provenance and durations live in *_run.json only).
    again = elsewhere(cfg, "again")
    run_part1(again)
    for sub in ("branches", "self_merge", "kd_recover"):
        assert files_of(Path(cfg.paths.results_dir) / sub) == files_of(Path(again.paths.results_dir) / sub), sub

    # A corrupt input stops the next consuming stage with one line naming the file and the stage to rerun.
    from repshare.stages import kd_recover, self_merge
    from repshare.utils.artifacts import ArtifactError

    sel = Path(again.paths.results_dir) / "branches" / "features" / "select" / "exit3.npy"
    intact = sel.read_bytes()
    sel.write_bytes(intact[:-100])
    with pytest.raises(ArtifactError, match=r"select/exit3\.npy is corrupt.*rerun the branches stage"):
        self_merge.run(again)
    sel.write_bytes(intact)
    f = Path(again.paths.results_dir) / "self_merge" / "branches" / f"{merged[0]['id']}.merged.safetensors"
    f.write_bytes(f.read_bytes()[:-5])
    with pytest.raises(ArtifactError, match=r"merged\.safetensors is corrupt.*rerun the self_merge stage"):
        kd_recover.run(again)


@pytest.mark.slow
def test_part1_without_merges_or_select_split_still_reports(prepared):
    """Data without a select split: the held-out train images decide. FC-less branches only: nothing
    merges, and the section and rows say so."""
    from repshare.stages.prepare import run as prepare

    cfg = with_(elsewhere(prepared, "plain"), **{"multiexit.zoo.fcs": [[]], "data.n_select": 0,
                                                 "sharing.calibration_split": "train"})  # no select split
    with open_dict(cfg):
        cfg.paths.data_dir = str(Path(cfg.paths.results_dir).parent / "data_plain")
    prepare(cfg)
    doc, merge, kd = run_part1(cfg)
    f = cfg.multiexit.features
    assert doc["select_source"] == "train holdout" and doc["n_select"] == f.n_holdout == 16
    assert doc["n_fit"] == f.n_train - f.n_holdout
    assert not [r for r in merge["branches"] if r["merged"]] and kd["recovered"] == []
    root = Path(cfg.paths.results_dir) / "kd_recover"
    assert read_rows(root / "comparison_rows.json") == []
    section = read_section(root / "section.json")
    assert "meedge.rule_kd_minus_control_top1" not in section.measurements


@pytest.mark.parametrize("key,value,match", [
    ("multiexit.exits", [1, 7], "exit index 7 out of range"),
    ("multiexit.zoo.unfit", "error", "too large"),
])
def test_bad_input_fails_before_writing(prepared, key, value, match):
    from repshare.stages import branches

    cfg = with_(prepared, **{key: value})
    with open_dict(cfg):
        cfg.paths.results_dir = str(Path(prepared.paths.results_dir).parent / f"bad_{key}")
        (Path(cfg.paths.results_dir) / "models").mkdir(parents=True)
        (Path(cfg.paths.results_dir) / "models" / "classifier").symlink_to(
            Path(prepared.paths.results_dir) / "models" / "classifier")
    with pytest.raises(ValueError, match=match):
        branches.run(cfg)
    assert not (Path(cfg.paths.results_dir) / "branches").exists()


@pytest.mark.parametrize("override,match", [
    ("multiexit.kd.fraction=0", "multiexit.kd.fraction"),
    ("multiexit.kd.fraction=1.2", "multiexit.kd.fraction"),
    ("multiexit.merge.range=[0.2,0.7]", "multiexit.merge.range"),
    ("multiexit.exits=[0,2]", "multiexit.exits"),
    ("multiexit.zoo.convs=[{type: conv3d, kernel: 3, n: 1}]", "conv3d"),
    ("multiexit.zoo.convs=[{type: dw, kernel: 4, n: 1}]", "kernel"),
    ("multiexit.features.n_holdout=5000", "n_holdout"),
    ("multiexit.survival.scope=everywhere", "survival.scope"),
    ("multiexit.kd.curve_fractions=[]", "multiexit.kd.curve_fractions"),
    ("multiexit.kd.seeds=[]", "multiexit.kd.seeds"),
    ("multiexit.latency.warmup=-1", "multiexit.latency.warmup"),
    ("multiexit.latency.source=wallclock", "multiexit.latency.source"),
    ("multiexit.latency.flops_per_s=0", "multiexit.latency.flops_per_s"),
    ("multiexit.n_bootstrap=3", "multiexit.n_bootstrap"),
    ("multiexit.features.n_select=0", "multiexit.features.n_select"),
])
def test_bad_config_names_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        compose(["experiment=smoke", override])


def test_decisions_need_images_of_their_own():
    """No select split and no held-out train images: refused at compose, naming the key."""
    with pytest.raises(ConfigError, match="multiexit.features.n_holdout=0 .*no select split"):
        compose(["data.n_select=0", "sharing.calibration_split=train"])
