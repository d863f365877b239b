"""Thin wiring shared by the DVC stage entry points in ``pipelines/``.

A stage reads the composed config from ``params.yaml`` (DVC's Hydra integration writes it on
``dvc exp run``; a composed copy is committed so plain ``dvc repro`` works), validates it, seeds
everything, runs one pure function from the library, and turns any error into one clear line and
a non-zero exit status.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from repshare.config import ConfigError, validate_config

PARAMS_FILE = Path("params.yaml")
log = logging.getLogger("repshare")


def quiet_third_party() -> None:
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)


def load_params(path: str | Path = PARAMS_FILE, overrides: list[str] | None = None) -> DictConfig:
    """Load a composed config file, apply dotlist overrides, validate it against the schema."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"missing {path}: compose it with `python pipelines/compose.py [overrides]` or `dvc exp run`"
        )
    cfg = OmegaConf.load(path)
    if overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))
    return validate_config(cfg)


def seed_everything(seed: int) -> None:
    import pytorch_lightning as pl
    import torch

    pl.seed_everything(seed, workers=True, verbose=False)
    torch.use_deterministic_algorithms(True, warn_only=True)


def run_stage(fn: Callable[[DictConfig], object], argv: list[str] | None = None) -> None:
    """Entry point body: ``python pipelines/<stage>.py [--params FILE] [key=value ...]``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    quiet_third_party()
    args = list(sys.argv[1:] if argv is None else argv)
    params = PARAMS_FILE
    if args[:1] == ["--params"] and len(args) >= 2:
        params, args = Path(args[1]), args[2:]
    try:
        cfg = load_params(params, args)
        seed_everything(cfg.seed)
        fn(cfg)
    except (ConfigError, FileNotFoundError, ValueError, KeyError, RuntimeError) as err:
        name = getattr(fn, "__module__", "stage")
        print(f"error [{name}]: {err}", file=sys.stderr)
        sys.exit(2)
