"""The config tree: presets compose, the schema rejects bad values by name, params.yaml is in sync."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from repshare.config import CONF_DIR, ConfigError, compose, compose_raw, validate_config

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


def test_presets_exist():
    assert {"embedded", "smoke", "gpu", "real"} <= set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_and_validates(preset):
    extra = ["data.root=/data/imagenet/val"] if preset.startswith("real") else []
    cfg = compose([f"experiment={preset}", *extra])
    assert cfg.experiment_name == preset
    assert cfg.model.detector.image_size % 128 == 0


def test_smoke_is_small_and_offline():
    cfg = compose(["experiment=smoke"])
    assert cfg.data.n_train <= 256 and cfg.data.n_val <= 128
    assert cfg.logger.wandb_mode == "disabled"


def test_seed_propagates_to_data():
    cfg = compose(["seed=7"])
    assert cfg.data.seed == 7 and cfg.sharing.channel_seed == 7


@pytest.mark.parametrize(
    "override, key",
    [
        ("data.n_train=abc", "data.n_train"),
        ("+data.n_trian=3", "data.n_trian"),
        ("data.image_size=0", "data.image_size"),
        ("data.difficulty=1.5", "data.difficulty"),
        ("model.detector.image_size=100", "model.detector.image_size"),
        ("cka.kernel=cosine", "cka.kernel"),
        ("sharing.resize_method=lanczos", "sharing.resize_method"),
        ("train.classifier.batch_size=-4", "train.classifier.batch_size"),
    ],
)
def test_bad_values_are_rejected_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        compose([override])


def test_unknown_dataset_name_is_named():
    cfg = compose_raw()
    cfg.data.name = "cifar"
    with pytest.raises(ConfigError, match="cifar"):
        validate_config(cfg)


def test_missing_required_path_is_named():
    with pytest.raises(ConfigError, match="data.root"):
        compose(["data=imagenet"])


def test_committed_params_yaml_matches_conf():
    """params.yaml (read by plain `dvc repro`) must be the composition of conf/ with no overrides."""
    committed = OmegaConf.to_container(OmegaConf.load(ROOT / "params.yaml"))
    assert committed == OmegaConf.to_container(compose_raw(), resolve=True)


def test_stage_entry_point_fails_cleanly_on_bad_params(tmp_path):
    cfg = OmegaConf.to_container(compose_raw(["experiment=smoke"]), resolve=True)
    cfg["data"]["n_val"] = -3
    params = tmp_path / "params.yaml"
    OmegaConf.save(OmegaConf.create(cfg), params)
    code = (
        "import sys; from repshare.stage import run_stage; "
        "run_stage(lambda cfg: print('ran'), ['--params', sys.argv[1]])"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(params)], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "data.n_val" in proc.stderr and "ran" not in proc.stdout


def test_dvc_is_offline_by_config():
    text = (ROOT / ".dvc" / "config").read_text()
    assert "analytics = false" in text and "check_update = false" in text
    assert "[hydra]" in text and "enabled = true" in text
