"""Joint retraining of every workload model that holds a shared layer (Lightning).

One module owns all the models (tied parameters included); each step takes one batch from every
model's own task and minimises ``sum_i w_i * loss_i`` with the reference's weights
``w_i = min((target_i / acc_i) ** alpha, max_weight)`` (a model far below its target pulls
harder). SGD with momentum and weight decay as the reference, over each parameter once.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from effdet import DetBenchTrain
from torch import nn

from repshare.data.shards import Split
from repshare.gemel.merge import unique_parameters
from repshare.gemel.models import Member
from repshare.models.classifier import augment_batch
from repshare.models.detector import to_effdet_target
from repshare.models.fast_depthwise import fast_depthwise_grad


@dataclass(frozen=True)
class RetrainSettings:
    """One trial's joint retraining (config ``gemel``: steps, batch_size, lr, momentum, ...)."""

    steps: int
    batch_size: int
    lr: float
    momentum: float = 0.9
    weight_decay: float = 5e-4
    freeze_bn: bool = True
    fast_depthwise_grad: bool = True
    accelerator: str = "cpu"  # Lightning accelerator (trainer.accelerator)
    deterministic: bool = True


def loss_weights(acc: dict[str, float], target: dict[str, float], alpha: float = 0.75,
                 max_weight: float = 10.0) -> dict[str, float]:
    """The reference's task weights (``joint_trainer.update_weight_tasks``); acc 0 gets max_weight."""
    out = {}
    for name, a in acc.items():
        out[name] = max_weight if a <= 0 else min(math.pow(target[name] / a, alpha), max_weight)
    return out


class JointModule(pl.LightningModule):
    def __init__(self, models: dict[str, nn.Module], tasks: dict[str, str], preprocess: dict[str, nn.Module],
                 weights: dict[str, float], lr: float, momentum: float = 0.9, weight_decay: float = 5e-4,
                 augment: bool = True, freeze_bn: bool = True):
        super().__init__()
        self.freeze_bn = freeze_bn
        self.models = nn.ModuleDict(models)
        self.pre = nn.ModuleDict(preprocess)
        self.tasks, self.weights = dict(tasks), dict(weights)
        self.benches = nn.ModuleDict({n: DetBenchTrain(m, create_labeler=True)
                                      for n, m in models.items() if tasks[n] == "detection"})
        self.lr, self.momentum, self.weight_decay, self.augment = lr, momentum, weight_decay, augment

    def on_train_epoch_start(self) -> None:
        # Lightning keeps each submodule's mode; set it here. With a few small batches per trial,
        # BatchNorm running statistics would be re-estimated from noise: freeze them (affine still trains).
        for m in self.models.values():
            m.train()
            if self.freeze_bn:
                for mod in m.modules():
                    if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                        mod.eval()

    def task_loss(self, name: str, batch) -> torch.Tensor:
        x, y = batch
        if self.tasks[name] == "classification":
            if self.augment:
                x = augment_batch(x)
            return F.cross_entropy(self.models[name](self.pre[name](x)), y)
        size = self.models[name].config.image_size[0]
        scale = size / x.shape[-1]
        t = dict(y)
        if scale != 1.0:  # boxes are in the prepared image's pixels
            t["bbox"] = torch.where(t["bbox"] >= 0, t["bbox"] * scale, t["bbox"])
        return self.benches[name](self.pre[name](x), to_effdet_target(t, size, x.shape[0]))["loss"]

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        total = 0.0
        for name, b in batch.items():
            loss = self.task_loss(name, b)
            self.log(f"train/loss_{name}", loss)
            total = total + self.weights[name] * loss
        self.log("train/loss", total)
        return total

    def configure_optimizers(self):
        params = unique_parameters(self.models.values())  # a shared tensor once
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)


def retrain(models: dict[str, nn.Module], members: dict[str, Member], train: Split, weights: dict[str, float],
            hp: RetrainSettings, seed: int) -> float:
    """Joint retraining of ``models`` for ``hp.steps`` steps; batches and augmentations depend on ``seed``
    only. Returns the seconds it took (a duration for the run record, never a science value)."""
    from pytorch_lightning.utilities import CombinedLoader
    from torch.utils.data import DataLoader

    from repshare.data.datamodule import SplitDataset, with_label

    if hp.steps == 0:
        return 0.0
    t0 = time.time()
    loaders = {}
    for k, name in enumerate(models):
        m = members[name]
        ds = (SplitDataset(with_label(train, m.label), "cls") if m.spec.task == "classification"
              else SplitDataset(train, "det"))
        loaders[name] = DataLoader(ds, batch_size=hp.batch_size, shuffle=True, drop_last=True,
                                   generator=torch.Generator().manual_seed(seed * 1000 + k))
    for m in models.values():
        m.train()  # loaded in eval mode; JointModule freezes BatchNorm again at epoch start
    module = JointModule(models, {n: members[n].spec.task for n in models}, {n: members[n].pre for n in models},
                         weights, hp.lr, hp.momentum, hp.weight_decay, freeze_bn=hp.freeze_bn)
    trainer = pl.Trainer(accelerator=hp.accelerator, devices=1, max_epochs=1, limit_train_batches=hp.steps,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, deterministic=hp.deterministic)
    # The augmentation draws from torch's global generator: seed it from ``seed`` alone (and restore it after),
    # so the same seed gives the same batches and augmentations whatever ran before (the control relies on it).
    with torch.random.fork_rng(devices=[]), fast_depthwise_grad(module, hp.fast_depthwise_grad):
        torch.manual_seed(seed)
        trainer.fit(module, train_dataloaders=CombinedLoader(loaders, "max_size_cycle"))
    for m in models.values():
        m.eval()
    return time.time() - t0
