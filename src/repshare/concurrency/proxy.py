"""A reduced accuracy proxy: brief training of a generated network on small images.

The paper trains 100 CIFAR-10 epochs (300 on Flower-102); we train a few hundred steps on the
embedded shapes images resized to 32 px. The accuracy is a proxy to place beside the score, not a
reproduction of Tables V-VI.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import networkx as nx
import numpy as np
import torch
import torch.nn.functional as F

from repshare.concurrency.network import DagNetwork, NetSpec, count_params


@dataclass(frozen=True)
class ProxyTraining:
    steps: int = 200
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    n_eval: int = 500


def to_tensor_images(images: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, size, size) in [-1, 1] (antialiased resize when smaller)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x


def train_proxy(dag: nx.DiGraph, spec: NetSpec, train_x: torch.Tensor, train_y: torch.Tensor,
                val_x: torch.Tensor, val_y: torch.Tensor, cfg: ProxyTraining, seed: int) -> dict:
    """Train the DAG's network for ``cfg.steps`` AdamW steps; top-1 on the validation images."""
    if cfg.steps < 1 or cfg.batch_size < 1:
        raise ValueError(f"proxy steps={cfg.steps!r} and batch_size={cfg.batch_size!r} must be >= 1")
    torch.manual_seed(seed)
    net = DagNetwork(dag, spec, seed)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    started = time.time()
    net.train()
    for _ in range(cfg.steps):
        idx = torch.randint(0, len(train_x), (cfg.batch_size,), generator=gen)
        loss = F.cross_entropy(net(train_x[idx]), train_y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    seconds = time.time() - started
    net.eval()
    n = min(cfg.n_eval, len(val_x))
    correct = 0
    with torch.no_grad():
        for a in range(0, n, 256):
            b = min(a + 256, n)
            correct += int((net(val_x[a:b]).argmax(1) == val_y[a:b]).sum())
    return {"top1": correct / n, "params": count_params(net), "train_seconds": seconds, "final_loss": float(loss.detach())}
