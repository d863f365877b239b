"""Train and evaluate branches on cached exit features (the backbone never runs here).

``train_branch`` trains one branch; ``train_branches`` trains several branches of the same exit
on the same batches at once: their graphs and Adam states are independent, so the result equals
training each alone with the same seed, but every batch is read (and converted from the cache's
float16) once instead of once per branch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

Array = np.ndarray | torch.Tensor
LossFn = Callable[[int, torch.Tensor, Mapping[str, torch.Tensor]], torch.Tensor]


@dataclass
class TrainResult:
    steps: int
    seconds: float
    final_loss: float  # mean loss over the last epoch
    images_seen: int


def _rows(arr: Array, index: np.ndarray) -> torch.Tensor:
    if isinstance(arr, torch.Tensor):
        return arr[torch.from_numpy(index)].float()
    return torch.from_numpy(np.ascontiguousarray(arr[index])).float()


def _check_data(features: Array, labels: Array) -> int:
    n = len(labels)
    if len(features) != n:
        raise ValueError(f"{len(features)} feature rows but {n} labels")
    if n == 0:
        raise ValueError("no training examples")
    return n


def cross_entropy(_: int, logits: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    return F.cross_entropy(logits, batch["labels"])


def train_branches(
    branches: Sequence[nn.Module],
    features: Array,
    labels: Array,
    *,
    epochs: float = 5,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    loss_fn: LossFn = cross_entropy,
    extra: Mapping[str, Array] | None = None,
    params: Sequence[Sequence[nn.Parameter]] | None = None,
    after_step: Callable[[], None] | None = None,
) -> list[TrainResult]:
    """Adam on (features, labels); ``extra`` arrays (e.g. teacher logits) are batched alongside.

    ``epochs`` may be fractional (steps = ceil(epochs * N / batch_size)). ``loss_fn(k, logits,
    batch)`` gives branch k's loss; ``params`` (per branch) restricts what the optimiser updates;
    ``after_step`` runs after every optimiser step (KD's proximal step on shared weights).
    """
    if not branches:
        raise ValueError("no branches to train")
    if epochs <= 0 or batch_size < 1 or lr <= 0:
        raise ValueError(f"epochs={epochs!r}, batch_size={batch_size!r}, lr={lr!r} must all be > 0")
    n = _check_data(features, labels)
    extra = dict(extra or {})
    for k, v in extra.items():
        if len(v) != n:
            raise ValueError(f"extra array {k!r} has {len(v)} rows, expected {n}")
    device = torch.device(device)
    labels_t = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    gen = np.random.default_rng(seed)
    torch.manual_seed(seed)
    opts = []
    for k, b in enumerate(branches):
        b.to(device).train()
        ps = list(params[k]) if params is not None else [p for p in b.parameters() if p.requires_grad]
        opts.append(torch.optim.Adam(ps, lr=lr, weight_decay=weight_decay) if ps else None)
    bs = min(batch_size, n)
    steps = max(1, int(np.ceil(epochs * n / bs)))
    t0, step, last_losses = time.perf_counter(), 0, [[] for _ in branches]
    per_epoch = int(np.ceil(n / bs))
    while step < steps:
        perm = gen.permutation(n)
        for s in range(0, n, bs):
            if step >= steps:
                break
            idx = np.sort(perm[s : s + bs])
            x = _rows(features, idx).to(device)
            batch = {"labels": labels_t[idx].to(device), **{k: _rows(v, idx).to(device) for k, v in extra.items()}}
            for k, (b, opt) in enumerate(zip(branches, opts)):
                if opt is None:
                    continue
                loss = loss_fn(k, b(x), batch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if steps - step <= per_epoch:
                    last_losses[k].append(float(loss.detach()))
            if after_step is not None:
                after_step()
            step += 1
    seconds = time.perf_counter() - t0
    for b in branches:
        b.eval()
    return [TrainResult(steps, seconds / len(branches), float(np.mean(ll)) if ll else float("nan"), steps * bs)
            for ll in last_losses]


def train_branch(branch: nn.Module, features: Array, labels: Array, **kw) -> TrainResult:
    """Train one branch on cached exit features with cross-entropy (Adam; see train_branches)."""
    return train_branches([branch], features, labels, **kw)[0]


@torch.inference_mode()
def predict(branch: nn.Module, features: Array, batch_size: int = 500, device: str | torch.device = "cpu") -> torch.Tensor:
    """Logits of ``branch`` on every row of ``features`` (eval mode)."""
    branch = branch.to(device).eval()
    n = len(features)
    outs = [branch(_rows(features, np.arange(a, min(a + batch_size, n))).to(device)).float().cpu()
            for a in range(0, n, batch_size)]
    return torch.cat(outs) if outs else torch.empty(0)


def accuracy(branch: nn.Module, features: Array, labels: Array, batch_size: int = 500,
             device: str | torch.device = "cpu") -> float:
    """Top-1 accuracy of ``branch`` on (features, labels)."""
    n = _check_data(features, labels)
    pred = predict(branch, features, batch_size, device).argmax(1)
    return float((pred == torch.as_tensor(np.asarray(labels))).sum()) / n
