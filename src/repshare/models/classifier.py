"""timm classifier (EfficientNet by default; any timm model with a stage-wise walk) and its Lightning module."""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import timm
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from repshare.features.stages import stage_layout, verify_stage_walk
from repshare.models.checkpoint import load_into
from repshare.models.preprocess import Preprocess
from repshare.models.weights import fetch_guard, resolve_weights, timm_weights


def build_classifier(arch: str = "efficientnet_b0", num_classes: int = 1000, pretrained: bool = False,
                     checkpoint_path: str | None = None, drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                     weights: str | None = None, key: str = "model.classifier", **_: Any) -> nn.Module:
    """A timm classifier. ``weights`` (random | pretrained | checkpoint) says what to load, see
    ``repshare.models.weights``; ``trained`` is resolved to a checkpoint by ``repshare.models.load`` and
    means a fresh initialisation here. ``checkpoint_path`` (safetensors or torch weights) wins over
    ``pretrained``."""
    if not timm.is_model(arch):
        raise ValueError(f"{key}.arch={arch!r} is not a timm model name")
    source = resolve_weights(weights, pretrained, checkpoint_path, key)
    kwargs = dict(num_classes=num_classes, drop_rate=drop_rate, drop_path_rate=drop_path_rate)
    if source == "pretrained":
        url, cached = timm_weights(arch)
        with fetch_guard(key, f"{key}.arch={arch!r}", url, cached):
            model = timm.create_model(arch, pretrained=True, **kwargs)
    else:
        model = timm.create_model(arch, pretrained=False, **kwargs)
    try:  # stage-wise capture, CKA and merging need a stem + stages walk (EfficientNet: checked by structure)
        if stage_layout(model).family != "efficientnet":
            verify_stage_walk(model)
    except ValueError as err:
        raise ValueError(f"{key}.arch={arch!r}: {err}") from None
    if source == "checkpoint":
        load_into(model, checkpoint_path, f"classifier {arch} with {num_classes} classes")
    return model


def zero_init_residual_branches(model: nn.Module) -> nn.Module:
    """Start every residual block as the identity and the head at zero logits.

    EfficientNet trained from scratch on a few thousand small images barely moves for hundreds of
    steps with timm's TF-style init (measured here: val top-1 near chance after 150 steps); zeroing
    the last BatchNorm scale of each residual branch (Goyal et al. 2017) and the classifier makes
    early training much faster. Only used when training from scratch, never on loaded weights.
    """
    from timm.models._efficientnet_blocks import DepthwiseSeparableConv, InvertedResidual

    for m in model.modules():
        if isinstance(m, InvertedResidual) and m.has_skip:
            nn.init.zeros_(m.bn3.weight)
        elif isinstance(m, DepthwiseSeparableConv) and m.has_skip:
            nn.init.zeros_(m.bn2.weight)
    head = model.get_classifier()
    if isinstance(head, nn.Linear):
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
    return model


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / max(1, warmup)
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def augment_batch(x: torch.Tensor, gen: torch.Generator | None = None, max_shift: float = 0.1) -> torch.Tensor:
    """Label-preserving batch augmentation for the shapes: horizontal flip and a random shift."""
    b = x.shape[0]
    flip = torch.rand(b, generator=gen) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    s = x.shape[-1]
    m = int(round(max_shift * s))
    if m > 0:
        dx, dy = (torch.randint(-m, m + 1, (2,), generator=gen)).tolist()
        x = torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
    return x


class ClassifierModule(pl.LightningModule):
    def __init__(self, model: nn.Module, preprocess: Preprocess, num_classes: int, lr: float = 3e-3,
                 weight_decay: float = 0.05, warmup_epochs: float = 0.5, epochs: int = 10,
                 label_smoothing: float = 0.0, augment: bool = True):
        super().__init__()
        self.model, self.preprocess = model, preprocess
        self.lr, self.weight_decay, self.warmup_epochs, self.epochs = lr, weight_decay, warmup_epochs, epochs
        self.label_smoothing, self.augment = label_smoothing, augment
        self.val_top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_top5 = MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.preprocess(x))

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        if self.augment:
            x = augment_batch(x)
        loss = F.cross_entropy(self(x), y, label_smoothing=self.label_smoothing)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.val_top1(logits, y)
        self.val_top5(logits, y)
        self.log("val/loss", F.cross_entropy(logits, y))
        self.log("val/top1", self.val_top1, prog_bar=True)
        self.log("val/top5", self.val_top5)

    test_step = validation_step

    def configure_optimizers(self):
        decay = [p for n, p in self.model.named_parameters() if p.ndim > 1]
        no_decay = [p for n, p in self.model.named_parameters() if p.ndim <= 1]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": self.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=self.lr)
        total = int(self.trainer.estimated_stepping_batches)
        steps_per_epoch = max(1, total // max(1, self.epochs))
        warmup = int(self.warmup_epochs * steps_per_epoch)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, total, warmup))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
