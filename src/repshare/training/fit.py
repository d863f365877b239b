"""Training of the workload's models with Lightning, resumable (``repshare.training.resume``).

``fit_classifier`` / ``fit_detector`` return the trained (or, in real mode, loaded) model and its
metrics on the val split; the ``train_*`` stages write them (``write_trained``). Real mode trains
nothing: it evaluates the weights it is given.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import CSVLogger

from repshare.data.datamodule import PreparedDataModule, with_label
from repshare.data.shards import load_split, prepared_dir
from repshare.models.checkpoint import load_into, save_model
from repshare.models.classifier import ClassifierModule, build_classifier, zero_init_residual_branches
from repshare.models.detector import DetectorModule, build_detector, init_backbone_from_classifier
from repshare.models.fast_depthwise import fast_depthwise_grad
from repshare.models.load import (classifier_kwargs, classifier_preprocess, detector_kwargs, detector_preprocess,
                                  model_dir, model_kwargs, resolve_device, trained_weights, weights_source)
from repshare.training.evaluate import check_label_shift, evaluate_classifier, evaluate_detector
from repshare.training.resume import PENDING_FINGERPRINT, ResumeState, clear_state, fingerprint, state_dir
from repshare.utils.artifacts import record_checksums
from repshare.utils.io import write_json
from repshare.utils.record import provenance
from repshare.utils.runlog import lightning_logger

log = logging.getLogger(__name__)


def make_trainer(cfg: DictConfig, name: str, epochs: int, ckpt_dir: Path, opt: DictConfig) -> pl.Trainer:
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    kwargs.pop("_target_", None)
    if not opt.get("validate_every_epoch", True):
        kwargs["limit_val_batches"] = 0  # the stage's own evaluation after training is the result
    loggers: list = [CSVLogger(str(ckpt_dir), name="logs")]
    wandb_logger = lightning_logger(cfg, name)  # W&B with the config, finished (repshare.utils.runlog)
    if wandb_logger is not None:
        loggers.append(wandb_logger)
    ltb = opt.limit_train_batches
    ltb = 1.0 if ltb is None else (int(ltb) if ltb > 1 else float(ltb))  # >1: a number of batches
    # Lightning's ModelCheckpoint(save_top_k=0, save_last=True) never writes last.ckpt: our own callback does.
    resume = ResumeState(ckpt_dir, PENDING_FINGERPRINT.get(Path(ckpt_dir).resolve()),
                         opt.get("checkpoint_every_n_steps", 0) or 0)
    return pl.Trainer(max_epochs=epochs, logger=loggers, callbacks=[resume], default_root_dir=str(ckpt_dir),
                      enable_checkpointing=False, limit_train_batches=ltb, **kwargs)


@dataclass
class Trained:
    """A model ready to write: weights, the model config that rebuilds it, metrics, and its resume folder."""

    name: str
    model: torch.nn.Module
    model_cfg: DictConfig
    metrics: dict  # deterministic: what the model scores (no durations)
    seconds: float  # training wall time (provenance only)
    ckpt_dir: Path | None


def write_trained(cfg: DictConfig, t: Trained) -> dict:
    """Write ``results/models/<name>/`` (safetensors + model.json), ``results/metrics/<name>.json`` and the
    provenance ``<name>_run.json``; clear the resume state."""
    out = model_dir(cfg, t.name)
    # model.json and <name>.json hold only what made and scores the weights (deterministic): same weights,
    # same DVC hash downstream. Durations, time and machine go to the cache: false <name>_run.json.
    save_model(t.model, out, {"model": OmegaConf.to_container(t.model_cfg, resolve=True)})
    record_checksums(out, f"train_{t.name}")  # every later reader verifies the weights against it
    metrics_dir = Path(cfg.paths.results_dir) / "metrics"
    write_json(metrics_dir / f"{t.name}.json", t.metrics)
    write_json(metrics_dir / f"{t.name}_run.json", {"metrics": t.metrics, "seconds": t.seconds,
                                                     **provenance(cfg, f"train_{t.name}")})
    if t.ckpt_dir is not None:
        clear_state(t.ckpt_dir)  # done: nothing to resume (an empty folder, as DVC recorded it)
        PENDING_FINGERPRINT.pop(Path(t.ckpt_dir).resolve(), None)
    log.info("%s: %s (%.1f s)", t.name, t.metrics, t.seconds)
    return t.metrics


def fit_classifier(cfg: DictConfig, name: str = "classifier") -> Trained | None:
    """Train workload classifier ``name`` (builder cfg.model.<name>, optimiser cfg.train.<name>; its label and
    optional warm start come from its workload entry, see ``classifier_spec``). None after a fast_dev_run."""
    c, opt = cfg.model[name], cfg.train[name]
    label, init_from = classifier_spec(cfg, name)
    val = with_label(load_split(prepared_dir(cfg), "val"), label)
    device = resolve_device({"gpu": "cuda", "auto": "auto"}.get(cfg.trainer.accelerator, "cpu"))
    if weights_source(cfg, name) != "trained":
        # Real mode: published or user weights; nothing to train, only evaluate.
        model = build_classifier(**model_kwargs(cfg, name, use_trained=False)).eval()
        pre = classifier_preprocess(cfg, model, name)
        metrics = evaluate_classifier(model, pre, val, c.num_classes, opt.batch_size, device, label_check=True)
        check_label_shift(metrics, f"data={cfg.data.name} with model.{name}")
        Path(cfg.paths.results_dir, "train_state", name).mkdir(parents=True, exist_ok=True)
        return Trained(name, model, c, {**metrics, "trained": False}, 0.0, None)

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
        return None
    metrics = evaluate_classifier(model.eval(), pre, val, c.num_classes, 250, device)
    metrics.update(epochs=opt.epochs, n_train=len(dm.train_set), images_seen=trainer.global_step * opt.batch_size,
                   trained=True, **({"label": label, "init_from": init_from} if extra else {}))
    return Trained(name, model, c, metrics, round(time.time() - t0, 1), ckpt_dir)


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


def fit_detector(cfg: DictConfig) -> Trained | None:
    """Train (or, in real mode, load and evaluate) the detector. None after a fast_dev_run."""
    d, opt = cfg.model.detector, cfg.train.detector
    val = load_split(prepared_dir(cfg), "val")
    device = resolve_device({"gpu": "cuda", "auto": "auto"}.get(cfg.trainer.accelerator, "cpu"))
    pre = detector_preprocess(cfg)
    if weights_source(cfg, "detector") != "trained":
        model = build_detector(**detector_kwargs(cfg, use_trained=False)).eval()
        metrics = (evaluate_detector(model, pre, val, opt.batch_size, device) if len(val.box_classes) else
                   {"not_measured": f"data={cfg.data.name} has no boxes: the detector's mAP needs data=coco"})
        metrics["preprocess"] = pre.describe()
        Path(cfg.paths.results_dir, "train_state", "detector").mkdir(parents=True, exist_ok=True)
        return Trained("detector", model, d, {**metrics, "trained": False}, 0.0, None)

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
        return None
    metrics = evaluate_detector(model.eval(), pre, val, 50, device)
    metrics.update(epochs=opt.epochs, n_train=len(dm.train_set), images_seen=trainer.global_step * opt.batch_size,
                   trained=True, backbone_tensors_from_classifier=copied)
    return Trained("detector", model, d, metrics, round(time.time() - t0, 1), ckpt_dir)
