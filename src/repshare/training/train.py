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
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, WandbLogger

from repshare.data.datamodule import PreparedDataModule
from repshare.data.shards import load_split, prepared_dir
from repshare.models.checkpoint import save_model
from repshare.models.classifier import ClassifierModule, build_classifier, zero_init_residual_branches
from repshare.models.detector import DetectorModule, build_detector, init_backbone_from_classifier
from repshare.models.load import (classifier_kwargs, classifier_preprocess, detector_kwargs, detector_preprocess,
                                  model_dir, resolve_device)
from repshare.training.evaluate import evaluate_classifier, evaluate_detector
from repshare.utils.io import write_json
from repshare.utils.record import provenance
from repshare.utils.runlog import wandb_mode

log = logging.getLogger(__name__)


def fingerprint(*parts: Any) -> str:
    blob = json.dumps([OmegaConf.to_container(p, resolve=True) if isinstance(p, DictConfig) else p for p in parts],
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def state_dir(cfg: DictConfig, name: str, fp: str) -> tuple[Path, Path | None]:
    """The checkpoint folder, and ``last.ckpt`` to resume from if it belongs to this config."""
    d = Path(cfg.paths.results_dir) / "train_state" / name
    stamp = d / "fingerprint.txt"
    if d.exists() and (not stamp.is_file() or stamp.read_text().strip() != fp):
        shutil.rmtree(d)  # made by another config: not resumable
    d.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fp + "\n")
    last = d / "last.ckpt"
    return d, (last if last.is_file() else None)


def make_trainer(cfg: DictConfig, name: str, epochs: int, ckpt_dir: Path, opt: DictConfig) -> pl.Trainer:
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    kwargs.pop("_target_", None)
    loggers: list = [CSVLogger(str(ckpt_dir), name="logs")]
    if wandb_mode(cfg) != "disabled":
        Path(cfg.logger.dir).mkdir(parents=True, exist_ok=True)
        loggers.append(WandbLogger(project=cfg.logger.project, entity=cfg.logger.entity, save_dir=cfg.logger.dir,
                                   offline=wandb_mode(cfg) == "offline", name=f"{cfg.experiment_name}-{name}",
                                   group=cfg.experiment_name, job_type=f"train_{name}"))
    ltb = opt.limit_train_batches
    ltb = 1.0 if ltb is None else (int(ltb) if ltb > 1 else float(ltb))  # >1: a number of batches
    ckpt = ModelCheckpoint(dirpath=str(ckpt_dir), save_last=True, save_top_k=0, every_n_epochs=1)
    return pl.Trainer(max_epochs=epochs, logger=loggers, callbacks=[ckpt], default_root_dir=str(ckpt_dir),
                      limit_train_batches=ltb, **kwargs)


def finish(cfg: DictConfig, name: str, model, model_cfg: DictConfig, metrics: dict, ckpt_dir: Path | None) -> dict:
    out = model_dir(cfg, name)
    save_model(model, out, {"model": OmegaConf.to_container(model_cfg, resolve=True),
                            "provenance": provenance(cfg, f"train_{name}")})
    write_json(Path(cfg.paths.results_dir) / "metrics" / f"{name}.json", metrics)
    if ckpt_dir is not None:
        shutil.rmtree(ckpt_dir, ignore_errors=True)  # done: nothing to resume
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    log.info("%s: %s", name, metrics)
    return metrics


def train_classifier(cfg: DictConfig) -> dict:
    c, opt = cfg.model.classifier, cfg.train.classifier
    val = load_split(prepared_dir(cfg), "val")
    device = resolve_device("cuda" if cfg.trainer.accelerator == "gpu" else "cpu")
    if c.pretrained or c.checkpoint_path:
        # Real mode: published or user weights; nothing to train, only evaluate.
        model = build_classifier(**classifier_kwargs(cfg, use_trained=False)).eval()
        pre = classifier_preprocess(cfg, model)
        metrics = evaluate_classifier(model, pre, val, c.num_classes, opt.batch_size, device)
        Path(cfg.paths.results_dir, "train_state", "classifier").mkdir(parents=True, exist_ok=True)
        return finish(cfg, "classifier", model, c, {**metrics, "trained": False}, None)

    t0 = time.time()
    fp = fingerprint(cfg.seed, cfg.data, c, opt, cfg.trainer)
    ckpt_dir, resume = state_dir(cfg, "classifier", fp)
    model = zero_init_residual_branches(build_classifier(**classifier_kwargs(cfg, use_trained=False)))
    pre = classifier_preprocess(cfg, model)
    module = ClassifierModule(model, pre, c.num_classes, opt.lr, opt.weight_decay, opt.warmup_epochs, opt.epochs,
                              opt.label_smoothing, opt.augment)
    dm = PreparedDataModule(prepared_dir(cfg), opt.batch_size, opt.num_workers, "cls", cfg.seed)
    trainer = make_trainer(cfg, "classifier", opt.epochs, ckpt_dir, opt)
    if resume:
        log.info("resuming classifier training from %s", resume)
    trainer.fit(module, datamodule=dm, ckpt_path=str(resume) if resume else None)
    if cfg.trainer.fast_dev_run:
        return {}
    metrics = evaluate_classifier(model.eval(), pre, val, c.num_classes, 250, device)
    metrics.update(epochs=opt.epochs, n_train=len(dm.train_set), images_seen=trainer.global_step * opt.batch_size,
                   seconds=round(time.time() - t0, 1), trained=True)
    return finish(cfg, "classifier", model, c, metrics, ckpt_dir)


def train_detector(cfg: DictConfig) -> dict:
    d, opt = cfg.model.detector, cfg.train.detector
    val = load_split(prepared_dir(cfg), "val")
    device = resolve_device("cuda" if cfg.trainer.accelerator == "gpu" else "cpu")
    pre = detector_preprocess(cfg)
    if d.pretrained or d.checkpoint_path:
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
    trainer.fit(module, datamodule=dm, ckpt_path=str(resume) if resume else None)
    if cfg.trainer.fast_dev_run:
        return {}
    metrics = evaluate_detector(model.eval(), pre, val, 50, device)
    metrics.update(epochs=opt.epochs, n_train=len(dm.train_set), images_seen=trainer.global_step * opt.batch_size,
                   seconds=round(time.time() - t0, 1), trained=True, backbone_tensors_from_classifier=copied)
    return finish(cfg, "detector", model, d, metrics, ckpt_dir)
