"""Config groups ``train`` (conf/train/default.yaml: optimiser and schedule per workload model),
``trainer`` (conf/trainer/*.yaml: ``pytorch_lightning.Trainer`` arguments) and ``logger``
(conf/logger/*.yaml: W&B)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from repshare.config.limits import MAX_BATCH, MAX_COUNT, MAX_EPOCHS, MAX_STEPS, MAX_WORKERS
from repshare.config.rules import (Check, Identifier, Interval, IntRange, NonEmpty, OneOf, OrNull, Positive, Table)

TRAINERS = ("pytorch_lightning.Trainer", "lightning.pytorch.Trainer")
ACCELERATORS = ("cpu", "gpu", "auto")  # what repshare.training.fit maps to a device
PRECISIONS = ("32-true", "32", "16-mixed", "bf16-mixed", "64-true", "16-true", "bf16-true")


@dataclass
class OptimConfig:
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_epochs: float
    label_smoothing: float
    augment: bool
    num_workers: int
    limit_train_batches: Optional[float]  # int = batches per epoch, float = fraction
    fast_depthwise_grad: bool  # small-map depthwise weight gradient (repshare.models.fast_depthwise)
    # Optional keys (conf/ may leave them out; the schema holds their only value, see schema.py):
    checkpoint_every_n_steps: int = 0  # resume state also every N optimiser steps (0: at epoch ends only)
    validate_every_epoch: bool = True  # Lightning's validation at each epoch end (the stage evaluates anyway)


@dataclass
class TrainConfig:
    classifier: OptimConfig
    detector: OptimConfig
    classifier_color: OptimConfig


@dataclass
class TrainerConfig:
    """Keyword arguments of ``pytorch_lightning.Trainer`` that the presets set."""

    _target_: str
    accelerator: str
    devices: Any
    precision: str
    deterministic: bool
    enable_progress_bar: bool
    log_every_n_steps: int
    fast_dev_run: bool
    num_sanity_val_steps: int
    enable_model_summary: bool


@dataclass
class LoggerConfig:
    wandb_mode: str  # offline | online | disabled
    project: str
    entity: Optional[str]
    dir: str


def _batches(value, root) -> str | None:
    if value <= 0:
        return "must be > 0 (a fraction <= 1 of the batches, or a number of batches) or null; 0 would train on nothing"
    if value > 1 and not float(value).is_integer():
        return "above 1 it is a number of batches and must be a whole number"
    return None if value <= MAX_COUNT else f"must be at most {MAX_COUNT} batches"


def _devices(value, root) -> str | None:
    ok = value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 64) or (
        isinstance(value, list) and value and all(isinstance(v, int) and 0 <= v < 64 for v in value))
    return None if ok else "must be a device count in 1..64, a list of device indices, or auto"


TARGETS = {"trainer._target_": TRAINERS}
RULES: Table = [
    ("train.*.epochs", IntRange(1, MAX_EPOCHS)),
    ("train.*.batch_size", IntRange(1, MAX_BATCH)),
    ("train.*.lr", Positive()),
    ("train.*.weight_decay", Interval(0)),
    ("train.*.warmup_epochs", Interval(0, MAX_EPOCHS)),
    ("train.*.label_smoothing", Interval(0, 1, open_high=True)),
    ("train.*.num_workers", IntRange(0, MAX_WORKERS)),
    ("train.*.limit_train_batches", OrNull(Check(_batches))),
    ("train.*.checkpoint_every_n_steps", IntRange(0, MAX_STEPS)),
    ("trainer.accelerator", OneOf(*ACCELERATORS)),
    ("trainer.devices", Check(_devices)),
    ("trainer.precision", OneOf(*PRECISIONS)),
    ("trainer.log_every_n_steps", IntRange(1, MAX_STEPS)),
    ("trainer.num_sanity_val_steps", IntRange(-1, MAX_STEPS)),
    ("logger.wandb_mode", OneOf("offline", "online", "disabled")),
    ("logger.project", Identifier()),
    ("logger.entity", OrNull(Identifier())),
    ("logger.dir", NonEmpty()),
]
