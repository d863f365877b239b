"""Joint retraining of every workload model that holds a shared layer (Lightning).

One module owns all the models (tied parameters included); each step takes one batch from every
model's own task and minimises ``sum_i w_i * loss_i`` with the reference's weights
``w_i = min((target_i / acc_i) ** alpha, max_weight)`` (a model far below its target pulls
harder). SGD with momentum and weight decay as the reference, over each parameter once.
"""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from effdet import DetBenchTrain
from torch import nn

from repshare.gemel.merge import unique_parameters
from repshare.models.classifier import augment_batch
from repshare.models.detector import to_effdet_target


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
