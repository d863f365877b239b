"""Resumable Lightning training: a fingerprint of the config that made a checkpoint, the persisted
``results/train_state/<model>/`` folder, and the callback that writes ``last.ckpt`` (with every RNG and
the loader's shuffling state) atomically, so an interrupted run resumes to bitwise-identical weights and a
checkpoint from another config is never resumed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from repshare.utils.io import atomic_path, write_text

log = logging.getLogger(__name__)


def fingerprint(*parts: Any) -> str:
    blob = json.dumps([OmegaConf.to_container(p, resolve=True) if isinstance(p, DictConfig) else p for p in parts],
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


LAST = "last.ckpt"
FINGERPRINT = "fingerprint.txt"
PENDING_FINGERPRINT: dict[Path, str] = {}  # state folder -> fingerprint written with its first checkpoint


def state_dir(cfg: DictConfig, name: str, fp: str) -> tuple[Path, Path | None]:
    """The checkpoint folder, and ``last.ckpt`` to resume from if it belongs to this config and is readable.

    Nothing is written here: the fingerprint goes in with the first checkpoint (``ResumeState``), so a run that
    fails before it leaves the persisted folder as it was (DVC would otherwise see a change and retrain).
    """
    d = Path(cfg.paths.results_dir) / "train_state" / name
    stamp, last = d / FINGERPRINT, d / LAST
    if d.exists() and any(d.iterdir()):
        if not stamp.is_file() or stamp.read_text().strip() != fp or not last.is_file():
            clear_state(d)  # made by another config, or no checkpoint to go with it: not resumable
        elif (why := unreadable_checkpoint(last)) is not None:
            log.warning("ignoring the corrupt resume state %s (%s); %s training starts from scratch", last, why, name)
            clear_state(d)
    for tmp in d.glob(f".{LAST}.*.tmp"):  # a checkpoint write cut short by a kill
        tmp.unlink(missing_ok=True)
    d.mkdir(parents=True, exist_ok=True)
    PENDING_FINGERPRINT[d.resolve()] = fp
    if last.is_file():
        log.info("%s: resuming the interrupted training from %s", name, last)
    return d, (last if last.is_file() else None)


def clear_state(d: Path) -> None:
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True, exist_ok=True)


def unreadable_checkpoint(path: Path) -> str | None:
    """Why ``path`` cannot be resumed from (truncated, not a checkpoint, holds code), or None if it can."""
    import pickle

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)  # never unpickle arbitrary objects
    except pickle.UnpicklingError:
        return "it holds Python objects other than tensors and plain values"
    except Exception as err:  # truncated zip, empty file, text: anything torch cannot read
        return f"unreadable: {str(err).splitlines()[0][:120] if str(err) else type(err).__name__}"
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "loops" not in ckpt:
        return "not a Lightning checkpoint"
    return None


def rng_states(trainer: pl.Trainer) -> dict[str, Any]:
    """Global RNGs and the train loader's shuffling generator, as tensors and plain values (weights_only-safe)."""
    import random

    import numpy as np

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    gen = getattr(trainer.train_dataloader, "generator", None)
    return {"torch": torch.get_rng_state(), "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "python": [version, list(py_state), py_gauss], "loader": None if gen is None else gen.get_state()}


def _setrng_states(trainer: pl.Trainer, states: dict[str, Any]) -> None:
    import random

    import numpy as np

    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, py_state, py_gauss = states["python"]
    random.setstate((version, tuple(py_state), py_gauss))
    gen = getattr(trainer.train_dataloader, "generator", None)
    if gen is not None and states.get("loader") is not None:
        gen.set_state(states["loader"])
        # The uninterrupted run creates epoch e+1's loader iterator (one draw of its base seed from this
        # generator) before shuffling; Lightning created the resumed run's iterator before this restore,
        # so make that same draw here to shuffle exactly as the uninterrupted run does.
        torch.empty((), dtype=torch.int64).random_(generator=gen)


class ResumeState(pl.Callback):
    """Writes ``last.ckpt`` at every epoch end (and every ``every_n_steps`` optimiser steps), atomically, with
    the config fingerprint beside it; restores the RNG and shuffling state with it, so a run resumed from an
    epoch end ends with the same weights as an uninterrupted one (CPU, deterministic)."""

    def __init__(self, dirpath: Path, fp: str | None, every_n_steps: int = 0):
        self.dirpath, self.fp, self.every_n_steps = Path(dirpath), fp, int(every_n_steps or 0)
        self._restore: dict[str, Any] | None = None
        self._trainer: pl.Trainer | None = None

    @property
    def state_key(self) -> str:
        return "ResumeState"

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng_states(self._trainer)} if self._trainer is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restore = state_dict.get("rng")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._restore is not None:
            _setrng_states(trainer, self._restore)
            self._restore = None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self.save(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.save(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not (self.dirpath / LAST).is_file():
            clear_state(self.dirpath)  # failed before the first checkpoint: leave the persisted folder as it was

    def save(self, trainer: pl.Trainer) -> None:
        if trainer.fast_dev_run or trainer.sanity_checking:
            return
        last = self.dirpath / LAST
        with atomic_path(last) as tmp:  # a kill mid-write never leaves a truncated last.ckpt
            trainer.save_checkpoint(tmp, weights_only=False)  # the whole state: optimiser, loops, RNG
        if self.fp is not None:
            write_text(self.dirpath / FINGERPRINT, self.fp + "\n")
