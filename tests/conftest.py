"""Shared test fixtures. Tests never touch the network: W&B is disabled, DVC telemetry off."""

from __future__ import annotations

import os

os.environ["WANDB_MODE"] = "disabled"
os.environ["DVC_NO_ANALYTICS"] = "1"

import pytest
import torch
from omegaconf import DictConfig, open_dict

from repshare.config import compose

torch.set_num_threads(2)


@pytest.fixture
def smoke_cfg(tmp_path) -> DictConfig:
    """The smoke preset with every path under a fresh temporary folder."""
    cfg = compose(["experiment=smoke"])
    with open_dict(cfg):
        cfg.paths.data_dir = str(tmp_path / "data")
        cfg.paths.results_dir = str(tmp_path / "results")
        cfg.logger.dir = str(tmp_path / "results" / "wandb")
    return cfg
