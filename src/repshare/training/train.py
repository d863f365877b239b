"""The ``train_classifier`` and ``train_detector`` stages (Lightning), or their skip in real mode.

An interrupted run resumes from ``results/train_state/<model>/last.ckpt``; a fingerprint of the
config that made the checkpoint is stored beside it, so a checkpoint from another config is never
resumed. After a completed run the state is cleared and the model is written as safetensors to
``results/models/<model>/`` with its config, and the metrics to ``results/metrics/<model>.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import CSVLogger, WandbLogger

from repshare.data.datamodule import PreparedDataModule, with_label
from repshare.data.shards import load_split, prepared_dir
from repshare.models.checkpoint import load_into, save_model
from repshare.models.classifier import ClassifierModule, build_classifier, zero_init_residual_branches
from repshare.models.detector import DetectorModule, build_detector, init_backbone_from_classifier
from repshare.models.fast_depthwise import fast_depthwise_grad
from repshare.models.load import (classifier_kwargs, classifier_preprocess, detector_kwargs, detector_preprocess,
                                  model_dir, model_kwargs, resolve_device, trained_weights, weights_source)
from repshare.training.evaluate import evaluate_classifier, evaluate_detector
from repshare.utils.io import atomic_path, write_json, write_text
from repshare.utils.record import provenance
from repshare.utils.runlog import wandb_mode

log = logging.getLogger(__name__)


def fingerprint(*parts: Any) -> str:
    blob = json.dumps([OmegaConf.to_container(p, resolve=True) if isinstance(p, DictConfig) else p for p in parts],
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


LAST = "last.ckpt"
FINGERPRINT = "fingerprint.txt"
_PENDING_FINGERPRINT: dict[Path, str] = {}  # state folder -> fingerprint written with its first checkpoint


def state_dir(cfg: DictConfig, name: str, fp: str) -> tuple[Path, Path | None]:
    """The checkpoint folder, and ``last.ckpt`` to resume from if it belongs to this config and is readable.

    Nothing is written here: the fingerprint goes in with the first checkpoint (``ResumeState``), so a run that
    fails before it leaves the persisted folder as it was (DVC would otherwise see a change and retrain).
    """
    d = Path(cfg.paths.results_dir) / "train_state" / name
    stamp, last = d / FINGERPRINT, d / LAST
    if d.exists() and any(d.iterdir()):
        if not stamp.is_file() or stamp.read_text().strip() != fp or not last.is_file():
            _clear(d)  # made by another config, or no checkpoint to go with it: not resumable
        elif (why := unreadable_checkpoint(last)) is not None:
            log.warning("ignoring the corrupt resume state %s (%s); %s training starts from scratch", last, why, name)
            _clear(d)
    for tmp in d.glob(f".{LAST}.*.tmp"):  # a checkpoint write cut short by a kill
        tmp.unlink(missing_ok=True)
    d.mkdir(parents=True, exist_ok=True)
    _PENDING_FINGERPRINT[d.resolve()] = fp
    if last.is_file():
        log.info("%s: resuming the interrupted training from %s", name, last)
    return d, (last if last.is_file() else None)


def _clear(d: Path) -> None:
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


def _rng_states(trainer: pl.Trainer) -> dict[str, Any]:
    """Global RNGs and the train loader's shuffling generator, as tensors and plain values (weights_only-safe)."""
    import random

    import numpy as np

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    gen = getattr(trainer.train_dataloader, "generator", None)
    return {"torch": torch.get_rng_state(), "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "python": [version, list(py_state), py_gauss], "loader": None if gen is None else gen.get_state()}


def _set_rng_states(trainer: pl.Trainer, states: dict[str, Any]) -> None:
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
        return {"rng": _rng_states(self._trainer)} if self._trainer is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restore = state_dict.get("rng")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._restore is not None:
            _set_rng_states(trainer, self._restore)
            self._restore = None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self.save(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.save(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not (self.dirpath / LAST).is_file():
            _clear(self.dirpath)  # failed before the first checkpoint: leave the persisted folder as it was

    def save(self, trainer: pl.Trainer) -> None:
        if trainer.fast_dev_run or trainer.sanity_checking:
            return
        last = self.dirpath / LAST
        with atomic_path(last) as tmp:  # a kill mid-write never leaves a truncated last.ckpt
            trainer.save_checkpoint(tmp, weights_only=False)  # the whole state: optimiser, loops, RNG
        if self.fp is not None:
            write_text(self.dirpath / FINGERPRINT, self.fp + "\n")


def make_trainer(cfg: DictConfig, name: str, epochs: int, ckpt_dir: Path, opt: DictConfig) -> pl.Trainer:
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    kwargs.pop("_target_", None)
    if not opt.get("validate_every_epoch", True):
        kwargs["limit_val_batches"] = 0  # the stage's own evaluation after training is the result
    loggers: list = [CSVLogger(str(ckpt_dir), name="logs")]
    if wandb_mode(cfg) != "disabled":
        Path(cfg.logger.dir).mkdir(parents=True, exist_ok=True)
        loggers.append(WandbLogger(project=cfg.logger.project, entity=cfg.logger.entity, save_dir=cfg.logger.dir,
                                   offline=wandb_mode(cfg) == "offline", name=f"{cfg.experiment_name}-{name}",
                                   group=cfg.experiment_name, job_type=f"train_{name}"))
    ltb = opt.limit_train_batches
    ltb = 1.0 if ltb is None else (int(ltb) if ltb > 1 else float(ltb))  # >1: a number of batches
    # Lightning's ModelCheckpoint(save_top_k=0, save_last=True) never writes last.ckpt: our own callback does.
    resume = ResumeState(ckpt_dir, _PENDING_FINGERPRINT.get(Path(ckpt_dir).resolve()),
                         opt.get("checkpoint_every_n_steps", 0) or 0)
    return pl.Trainer(max_epochs=epochs, logger=loggers, callbacks=[resume], default_root_dir=str(ckpt_dir),
                      enable_checkpointing=False, limit_train_batches=ltb, **kwargs)


def finish(cfg: DictConfig, name: str, model, model_cfg: DictConfig, metrics: dict, ckpt_dir: Path | None) -> dict:
    out = model_dir(cfg, name)
    # model.json holds only what made the weights (deterministic): same weights, same DVC hash downstream.
    save_model(model, out, {"model": OmegaConf.to_container(model_cfg, resolve=True)})
    metrics_dir = Path(cfg.paths.results_dir) / "metrics"
    write_json(metrics_dir / f"{name}.json", metrics)
    # Provenance (time, machine, commit) in a cache: false file beside the metrics that no stage depends on.
    write_json(metrics_dir / f"{name}_run.json", {"metrics": metrics, "seconds": metrics.get("seconds"),
                                                   **provenance(cfg, f"train_{name}")})
    if ckpt_dir is not None:
        _clear(ckpt_dir)  # done: nothing to resume (an empty folder, as DVC recorded it)
        _PENDING_FINGERPRINT.pop(Path(ckpt_dir).resolve(), None)
    log.info("%s: %s", name, metrics)
    return metrics


def train_classifier(cfg: DictConfig, name: str = "classifier") -> dict:
    """Train workload classifier ``name`` (builder cfg.model.<name>, optimiser cfg.train.<name>; its label and
    optional warm start come from its workload entry, see ``classifier_spec``)."""
    c, opt = cfg.model[name], cfg.train[name]
    label, init_from = classifier_spec(cfg, name)
    val = with_label(load_split(prepared_dir(cfg), "val"), label)
    device = resolve_device({"gpu": "cuda", "auto": "auto"}.get(cfg.trainer.accelerator, "cpu"))
    if weights_source(cfg, name) != "trained":
        # Real mode: published or user weights; nothing to train, only evaluate.
        model = build_classifier(**model_kwargs(cfg, name, use_trained=False)).eval()
        pre = classifier_preprocess(cfg, model, name)
        metrics = evaluate_classifier(model, pre, val, c.num_classes, opt.batch_size, device)
        Path(cfg.paths.results_dir, "train_state", name).mkdir(parents=True, exist_ok=True)
        return finish(cfg, name, model, c, {**metrics, "trained": False}, None)

    t0 = time.time()
    extra = [] if name == "classifier" else [label, init_from]  # the first classifier's fingerprint is unchanged
    fp = fingerprint(cfg.seed, cfg.data, c, opt, cfg.trainer, *extra)
    ckpt_dir, resume = state_dir(cfg, name, fp)
    model = zero_init_residual_branches(build_classifier(**model_kwargs(cfg, name, use_trained=False)))
    if init_from:
        # Warm start (as Gemel's per-camera queries are fine-tuned from common weights): the body of a
        # trained workload classifier, and a zero head (the new label's classes mean something else).
        load_into(model, trained_weights(cfg, init_from), f"{name} (initialised from {init_from})")
        zero_init_head(model)
    pre = classifier_preprocess(cfg, model, name)
    module = ClassifierModule(model, pre, c.num_classes, opt.lr, opt.weight_decay, opt.warmup_epochs, opt.epochs,
                              opt.label_smoothing, opt.augment)
    dm = PreparedDataModule(prepared_dir(cfg), opt.batch_size, opt.num_workers, "cls", cfg.seed, label=label)
    trainer = make_trainer(cfg, name, opt.epochs, ckpt_dir, opt)
    if resume:
        log.info("resuming %s training from %s", name, resume)
    with fast_depthwise_grad(model, opt.get("fast_depthwise_grad", True)):
        trainer.fit(module, datamodule=dm, ckpt_path=str(resume) if resume else None)
    if cfg.trainer.fast_dev_run:
        return {}
    metrics = evaluate_classifier(model.eval(), pre, val, c.num_classes, 250, device)
    metrics.update(epochs=opt.epochs, n_train=len(dm.train_set), images_seen=trainer.global_step * opt.batch_size,
                   seconds=round(time.time() - t0, 1), trained=True,
                   **({"label": label, "init_from": init_from} if extra else {}))
    return finish(cfg, name, model, c, metrics, ckpt_dir)


def classifier_spec(cfg: DictConfig, name: str) -> tuple[str, str | None]:
    """(label, init_from) of workload classifier ``name``; the first classifier needs no workload entry."""
    entry = next((m for m in cfg.workload.models if m.name == name), None)
    if entry is None:
        if name == "classifier":
            return "labels", None
        raise ValueError(f"{name!r} is not a model of workload {cfg.workload.name!r} (workload.models)")
    if entry.task != "classification" or name not in cfg.model or name not in cfg.train:
        raise ValueError(f"workload model {name!r} is not a classifier with model.{name} and train.{name} configs")
    return str(entry.get("label", "labels")), entry.get("init_from")


def zero_init_head(model) -> None:
    head = model.get_classifier()
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)


def train_detector(cfg: DictConfig) -> dict:
    d, opt = cfg.model.detector, cfg.train.detector
    val = load_split(prepared_dir(cfg), "val")
    device = resolve_device({"gpu": "cuda", "auto": "auto"}.get(cfg.trainer.accelerator, "cpu"))
    pre = detector_preprocess(cfg)
    if weights_source(cfg, "detector") != "trained":
        model = build_detector(**detector_kwargs(cfg, use_trained=False)).eval()
        metrics = evaluate_detector(model, pre, val, opt.batch_size, device) if len(val.box_classes) else {}
        Path(cfg.paths.results_dir, "train_state", "detector").mkdir(parents=True, exist_ok=True)
        return finish(cfg, "detector", model, d, {**metrics, "trained": False}, None)

    t0 = time.time()
    fp = fingerprint(cfg.seed, cfg.data, d, opt, cfg.trainer, cfg.model.classifier, cfg.train.classifier)
    ckpt_dir, resume = state_dir(cfg, "detector", fp)
    model = build_detector(**detector_kwargs(cfg, use_trained=False))
    copied = 0
    if d.init_backbone_from_classifier:
        # As EfficientDet was made: the backbone starts from the trained classifier's weights.
        classifier = build_classifier(**classifier_kwargs(cfg, use_trained=True))
        copied = init_backbone_from_classifier(model, classifier)
        log.info("detector backbone initialised from the classifier (%d tensors)", copied)
    module = DetectorModule(model, pre, opt.lr, opt.weight_decay, opt.warmup_epochs, opt.epochs)
    dm = PreparedDataModule(prepared_dir(cfg), opt.batch_size, opt.num_workers, "det", cfg.seed)
    trainer = make_trainer(cfg, "detector", opt.epochs, ckpt_dir, opt)
    with fast_depthwise_grad(model, opt.get("fast_depthwise_grad", True)):
        trainer.fit(module, datamodule=dm, ckpt_path=str(resume) if resume else None)
    if cfg.trainer.fast_dev_run:
        return {}
    metrics = evaluate_detector(model.eval(), pre, val, 50, device)
    metrics.update(epochs=opt.epochs, n_train=len(dm.train_set), images_seen=trainer.global_step * opt.batch_size,
                   seconds=round(time.time() - t0, 1), trained=True, backbone_tensors_from_classifier=copied)
    return finish(cfg, "detector", model, d, metrics, ckpt_dir)
