"""MEEdge part 1 stages end to end on the smoke preset (random-init classifier), and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from repshare.comparison import read_rows, read_section
from repshare.config import ConfigError, compose, validate_config
from repshare.multiexit.profile import read_profiles


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Smoke data and an untrained classifier (the stages only need its weights file)."""
    from repshare.data.prepare import prepare
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


@pytest.mark.slow
def test_part1_stages_end_to_end(prepared):
    from repshare.stages import branches, kd_recover, self_merge

    # every exit keeps a branch with a hidden layer, so merging and recovery always have work
    cfg = with_(prepared, **{"multiexit.survival.scope": "per_exit", "multiexit.zoo.fcs": [[16]]})
    doc = branches.run(cfg)
    root = Path(cfg.paths.results_dir) / "multiexit"
    assert len(doc["branches"]) == 6 * 2 - 1  # dw3 does not fit exit 6's 2x2 map
    assert doc["skipped"] and "too large" in doc["skipped"][0]["reason"]
    for p in doc["branches"]:
        assert (p["drop_reason"] is None) == p["survived"]
        assert p["latency_to_exit_s"] > p["branch_latency_s"] > 0
    self_merge.run(cfg)
    kd_recover.run(cfg)
    prof = read_profiles(root / "profiles.json")
    assert len(prof["backbone"]["stage_latency_s"]) == 8 and prof["backbone"]["exits"] == [1, 2, 3, 4, 5, 6]
    merged = [b for b in prof["branches"] if b["merged_params"] is not None]
    assert merged and all(b["survived"] and b["merged_params"] < b["params"] for b in merged)
    assert all(0.0 <= b["acc_recovered"] <= 1.0 for b in merged)
    for b in merged:
        for suffix in ("", ".merged", ".recovered"):
            assert (root / "branches" / f"{b['id']}{suffix}.safetensors").is_file()
    rows = read_rows(root / "comparison_rows.json")
    assert len(rows) == 2 and rows[0].bytes_saved > 0 and rows[1].labels_used and rows[1].retrain_images > 0
    section = read_section(root / "section.json")
    assert section.method == "meedge" and section.claims
    for f in section.figures:
        assert (root / f.path).is_file()
    assert (root / "kd" / "kd_curve.png").is_file() and (root / "merge" / "self_vs_twin.png").is_file()
    # the recovered branch reloads from its file and gives its saved accuracy's predictions
    from repshare.stages.branches import build_from, load_trained
    from repshare.utils.io import read_json

    index = read_json(root / "branches" / "index.json")["branches"]
    bid = merged[0]["id"]
    e = index[bid]
    b = load_trained(root / "branches" / e["files"]["recovered"],
                     build_from(e["spec"], {e["spec"]["exit"]: e["in_shape"]}, e["num_classes"]))
    assert b(torch.zeros(2, *e["in_shape"])).shape == (2, e["num_classes"])


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
    assert not (Path(cfg.paths.results_dir) / "multiexit").exists()


@pytest.mark.parametrize("override,match", [
    ("multiexit.kd.fraction=0", "multiexit.kd.fraction"),
    ("multiexit.kd.fraction=1.2", "multiexit.kd.fraction"),
    ("multiexit.merge.range=[0.2,0.7]", "multiexit.merge.range"),
    ("multiexit.exits=[0,2]", "multiexit.exits"),
    ("multiexit.zoo.convs=[{type: conv3d, kernel: 3, n: 1}]", "conv3d"),
    ("multiexit.zoo.convs=[{type: dw, kernel: 4, n: 1}]", "kernel"),
    ("multiexit.features.n_holdout=5000", "n_holdout"),
    ("multiexit.survival.scope=everywhere", "survival.scope"),
])
def test_bad_config_names_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        compose(["experiment=smoke", override])
