"""What every result carries: the config that made it and the versions of what ran it."""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from importlib import metadata
from typing import Any

from omegaconf import DictConfig, OmegaConf

PACKAGES = (
    "repshare", "torch", "torchvision", "timm", "effdet", "pytorch-lightning", "torchmetrics",
    "hydra-core", "omegaconf", "numpy", "scipy", "dvc", "wandb",
)


def package_versions() -> dict[str, str]:
    out: dict[str, str] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=5
        ).stdout.strip()
    except Exception:
        return None


def machine() -> dict[str, Any]:
    import os

    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def provenance(cfg: DictConfig | dict | None, stage: str) -> dict[str, Any]:
    """The block stored beside every result: stage, time, config, versions, machine, commit."""
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    return {
        "stage": stage,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": sys.argv,
        "git_commit": git_commit(),
        "versions": package_versions(),
        "machine": machine(),
        "config": cfg,
    }
