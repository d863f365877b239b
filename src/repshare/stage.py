"""Thin wiring shared by the DVC stage entry points in ``pipelines/``.

A stage reads the composed config from ``params.yaml`` (DVC's Hydra integration writes it on
``dvc exp run``; a composed copy is committed so plain ``dvc repro`` works), validates all of it
(not only its own keys, so a bad value anywhere stops the first stage that reruns), seeds everything,
runs one pure function from the library, and turns any error a user can fix into one line naming the
key, file or value, with exit status 2. ``REPSHARE_TRACEBACK=1`` shows the full traceback instead.
"""

from __future__ import annotations

import errno
import logging
import os
import pickle
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from repshare.config import ConfigError, validate_config
from repshare.utils.runlog import start_stage_clock

PARAMS_FILE = Path("params.yaml")
EXIT_USER_ERROR = 2
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
    """Load a composed config file (with limits: repshare.config_guard), apply dotlist overrides, refuse
    resolvers and environment secrets in it, validate it against the schema."""
    import yaml

    from repshare.config_guard import forbid_env_secrets, forbid_resolvers, read_params

    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"missing {path}: compose it with `python pipelines/compose.py [overrides]` or `dvc exp run`"
        )
    try:
        cfg = read_params(path)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path} is not valid YAML{where}: {problem}; fix it or recompose it with "
                          "`python pipelines/compose.py`") from None
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{path} does not hold a config mapping; recompose it with `python pipelines/compose.py`")
    if overrides:
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise ConfigError(f"argument {bad[0]!r} is not a key=value override")
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))
    forbid_resolvers(cfg, str(path))  # before validate_config resolves them
    forbid_env_secrets(cfg, source=str(path))  # `dvc exp run -S` resolved them before writing the file
    cfg = validate_config(cfg)
    check_seed(cfg.seed)
    return cfg


def check_seed(seed: int) -> None:
    """numpy's own message for a seed out of range would not name the key."""
    if not 0 <= int(seed) < 2**32:
        raise ConfigError(f"config value seed={seed} is invalid: must be in [0, 2**32 - 1]")


def seed_everything(seed: int) -> None:
    """What ``pytorch_lightning.seed_everything(seed, workers=True)`` does, without importing
    Lightning: that import alone costs ~8 s of CPU in every stage that never trains."""
    import random

    check_seed(seed)  # before the imports: a refused seed costs no torch import
    import numpy as np
    import torch

    os.environ["PL_GLOBAL_SEED"] = str(seed)
    os.environ["PL_SEED_WORKERS"] = "1"  # Lightning's dataloaders seed their workers from this
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    torch.use_deterministic_algorithms(True, warn_only=True)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0].strip() if text else type(err).__name__


def describe_error(err: BaseException) -> str | None:
    """One line for an error a user can fix (bad value, missing/corrupt input, full disk); None for a bug.

    Errors raised inside libraries (Hydra's instantiate, Lightning, the OS) are unwrapped and named here,
    at the stage boundary, so the science modules stay free of CLI concerns.
    """
    from hydra.errors import HydraException, InstantiationException

    if isinstance(err, InstantiationException):
        # instantiate(data) wraps the source's own error (e.g. a missing ImageNet root) in its message.
        cause = err.__cause__ or err.__context__
        inner = describe_error(cause) if cause is not None else None
        return inner or f"could not build the data source (data._target_): {_first_line(err)}"
    if isinstance(err, HydraException):
        return _first_line(err)
    if isinstance(err, ConfigError):
        return _first_line(err)
    try:
        from lightning_fabric.utilities.exceptions import MisconfigurationException
    except ImportError:  # pragma: no cover - Lightning is a dependency
        MisconfigurationException = ()  # type: ignore[assignment]
    if MisconfigurationException and isinstance(err, MisconfigurationException):
        return (f"Lightning rejected the training settings: {_first_line(err)} "
                "(check trainer.* and train.<model>.* in the config)")
    if isinstance(err, OSError):
        name = err.filename or ""
        if err.errno == errno.ENOSPC:
            return (f"no space left on device{f' writing {name}' if name else ''}: free some space or point "
                    "paths.data_dir / paths.results_dir at a larger disk; the previous results are untouched")
        if isinstance(err, FileNotFoundError) and not name:
            return _first_line(err)
        if isinstance(err, (FileExistsError, NotADirectoryError)) and name:
            return (f"{name} is a file where a folder is expected (or its path goes through a file): check "
                    "paths.data_dir, paths.results_dir and the data paths in the config")
        if err.errno == errno.EROFS:
            return (f"read-only file system{f' at {name}' if name else ''}: point paths.data_dir / paths.results_dir "
                    "at a writable folder")
        if err.strerror and name:
            return f"{err.strerror}: {name}"
        return _first_line(err)
    if isinstance(err, pickle.UnpicklingError):
        return f"refused to load a pickled file: {_first_line(err)[:200]}"
    if isinstance(err, IndexError) and "out of bounds" in str(err):
        # e.g. cross_entropy's "Target 7 is out of bounds": a label beyond the model's head.
        return (f"a label is out of range for the model: {_first_line(err)}; check model.<model>.num_classes "
                "against the classes in the prepared data (data.num_classes)")
    if isinstance(err, KeyError):
        return f"missing entry {err.args[0]!r} in an input file or config (the input may be from an older version; rerun its stage)"
    if isinstance(err, (ValueError, RuntimeError)):
        return _first_line(err)
    return None


_ONLINE_NOTICE_SHOWN = False


def notice_wandb_upload(cfg: DictConfig) -> None:
    """Say once per process when a run will upload to W&B, and whether the environment decided it."""
    global _ONLINE_NOTICE_SHOWN
    from repshare.utils.runlog import wandb_mode

    if _ONLINE_NOTICE_SHOWN or wandb_mode(cfg) != "online":
        return
    _ONLINE_NOTICE_SHOWN = True
    env = os.environ.get("WANDB_MODE")
    why = (f"WANDB_MODE={env} in the environment overrides logger.wandb_mode={cfg.logger.wandb_mode}"
           if env and env != cfg.logger.wandb_mode else "logger.wandb_mode=online")
    print(f"note: this run uploads to Weights & Biases ({why}); unset WANDB_MODE or set it to offline to keep "
          "runs local", file=sys.stderr)


def _interrupted(name: str) -> None:
    print(f"error [{name}]: interrupted (Ctrl-C); rerun the stage to continue (training resumes from "
          "results/train_state/<model>/last.ckpt)", file=sys.stderr)
    sys.exit(130)


def run_stage(fn: Callable[[DictConfig], object], argv: list[str] | None = None, *, seed: bool = True) -> None:
    """Entry point body: ``python pipelines/<stage>.py [--params FILE] [key=value ...]``.

    ``seed=False`` for a stage that draws no random numbers (``validate``): seeding imports torch (seconds)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    quiet_third_party()
    args = list(sys.argv[1:] if argv is None else argv)
    params = PARAMS_FILE
    if args[:1] == ["--params"] and len(args) >= 2:
        params, args = Path(args[1]), args[2:]
    name = getattr(fn, "__module__", "stage")
    try:
        cfg = load_params(params, args)
        notice_wandb_upload(cfg)
        if seed:
            seed_everything(cfg.seed)
        start_stage_clock()
        fn(cfg)
    except KeyboardInterrupt:
        _interrupted(name)
    except SystemExit as stop:
        # Lightning turns Ctrl-C into its own sys.exit(1) after a graceful shutdown: report it as ours.
        if isinstance(stop.__context__, KeyboardInterrupt):
            _interrupted(name)
        raise
    except Exception as err:
        line = describe_error(err)
        if line is None or os.environ.get("REPSHARE_TRACEBACK"):
            raise  # a bug, not a bad input: keep the traceback
        print(f"error [{name}]: {line}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
