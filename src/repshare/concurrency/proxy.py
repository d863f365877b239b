"""A reduced accuracy proxy: brief training of a generated network on small images.

The paper trains 100 CIFAR-10 epochs (300 on Flower-102); we train a few hundred steps on the
embedded shapes images resized to 32 px. The accuracy is a proxy to place beside the score, not a
reproduction of Tables V-VI. Nothing here reads the clock: the rows depend on the seed only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import networkx as nx
import numpy as np
import torch
import torch.nn.functional as F

from repshare.concurrency.network import DagNetwork, NetSpec, count_params
from repshare.concurrency.settings import ProxyTraining  # noqa: F401 (re-exported)




@dataclass(frozen=True)
class ProxyData:
    """Training and evaluation images as float tensors (N, 3, S, S) and int64 labels."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    num_classes: int


def proxy_spec(spec: NetSpec, cfg: ProxyTraining) -> NetSpec:
    """The proxy's (narrower) channel plan on the study's network spec, probabilistic staging."""
    return replace(spec, base_channels=cfg.base_channels, max_channels=cfg.max_channels, staging="probabilistic")


def to_tensor_images(images: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, size, size) in [-1, 1] (antialiased resize when smaller)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x


def proxy_data(train_images: np.ndarray, train_labels: np.ndarray, val_images: np.ndarray, val_labels: np.ndarray,
               image_size: int, num_classes: int) -> ProxyData:
    if len(train_labels) == 0 or len(val_labels) == 0:
        raise ValueError("the accuracy proxy needs training and evaluation images (set concurrency.proxy."
                         "archs_per_generator=0 to skip it)")
    return ProxyData(to_tensor_images(train_images, image_size), torch.from_numpy(np.asarray(train_labels, np.int64)),
                     to_tensor_images(val_images, image_size), torch.from_numpy(np.asarray(val_labels, np.int64)),
                     num_classes)


def train_proxy(dag: nx.DiGraph, spec: NetSpec, data: ProxyData, cfg: ProxyTraining, seed: int) -> dict:
    """Train the DAG's network for ``cfg.steps`` AdamW steps; top-1 on the first ``cfg.n_eval``
    evaluation images (``correct`` of ``n_eval``, for an interval over images)."""
    if cfg.steps < 1 or cfg.batch_size < 1:
        raise ValueError(f"proxy steps={cfg.steps!r} and batch_size={cfg.batch_size!r} must be >= 1")
    torch.manual_seed(seed)
    net = DagNetwork(dag, spec, seed)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(cfg.steps):
        idx = torch.randint(0, len(data.train_x), (cfg.batch_size,), generator=gen)
        loss = F.cross_entropy(net(data.train_x[idx]), data.train_y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    n = min(cfg.n_eval, len(data.val_x))
    correct = 0
    with torch.no_grad():
        for a in range(0, n, 256):
            b = min(a + 256, n)
            correct += int((net(data.val_x[a:b]).argmax(1) == data.val_y[a:b]).sum())
    return {"top1": correct / n, "correct": correct, "n_eval": n, "params": count_params(net),
            "final_loss": float(loss.detach())}
