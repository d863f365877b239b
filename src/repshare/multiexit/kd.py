"""Few-shot KD recovery of a self-merged branch (MEEdge 3.5.2, Eq. 2).

    L = a * MSE(y, y_i) + (1 - a) * KL(y_c || y_i) + b * L1(W_s, W_s0)

y the one-hot label, y_i the branch's softmax, y_c the final classifier's softmax (the frozen
model's own head: self-distillation from the last exit only), W_s the shared (merged) weights and
W_s0 their value right after merging. Choices the paper leaves open:

* MSE is summed over classes and averaged over the batch (the Brier score), so it is on the scale
  of the KL term; KL is ``batchmean`` at temperature T (default 1) times T^2.
* L1 is the plain L1 norm (a sum over the shared weights). Being non-smooth at W_s = W_s0 (where
  every shared weight starts, and where autograd's |x| has gradient 0), it is minimised by a
  proximal step after each Adam step on the smooth part: each shared weight's distance to W_s0
  shrinks by lr * b (soft thresholding). With b >= ~1 an Adam step (size ~lr) is undone, so the
  shared weights stay put, as the paper says ("the shared weights will remain unchanged"); with
  b = 0 they train freely. ``freeze_shared`` restores them exactly instead.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from repshare.multiexit.merge import shared_tensors
from repshare.multiexit.train import Array, train_branches


def check_kd(a: float, b: float, temperature: float = 1.0, fraction: float | None = None) -> None:
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"KD weight a={a!r} must be in [0, 1]")
    if b < 0:
        raise ValueError(f"KD weight b={b!r} must be >= 0")
    if temperature <= 0:
        raise ValueError(f"KD temperature {temperature!r} must be > 0")
    if fraction is not None and not 0.0 < fraction <= 1.0:
        raise ValueError(f"few-shot fraction {fraction!r} must be in (0, 1]")


def kd_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_logits: torch.Tensor,
    shared: Sequence[tuple[torch.Tensor, torch.Tensor]] = (),
    shared_init: Sequence[torch.Tensor] = (),
    a: float = 0.5,
    b: float = 1.0,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Eq. 2; ``shared`` = (parameter, row mask) pairs, ``shared_init`` their values right after merging."""
    check_kd(a, b, temperature)
    if len(shared) != len(shared_init):
        raise ValueError(f"{len(shared)} shared tensors but {len(shared_init)} initial values")
    onehot = F.one_hot(labels.long(), logits.shape[1]).to(logits.dtype)
    mse = ((logits.softmax(1) - onehot) ** 2).sum(1).mean()
    t = temperature
    kl = F.kl_div((logits / t).log_softmax(1), (teacher_logits / t).softmax(1), reduction="batchmean") * t * t
    l1 = logits.new_zeros(())
    for (p, mask), p0 in zip(shared, shared_init):
        l1 = l1 + (p - p0)[mask].abs().sum()
    total = a * mse + (1 - a) * kl + b * l1
    return total, {k: float(v.detach()) for k, v in (("mse", mse), ("kl", kl), ("l1", l1), ("total", total))}


@dataclass
class RecoverResult:
    seconds: float
    steps: int
    images_seen: int
    shared_l1: float  # sum |W_s - W_s0| after recovery
    final_loss: float


def recover(
    branch: nn.Module,
    features: Array,
    labels: Array,
    teacher_logits: Array,
    *,
    a: float = 0.5,
    b: float = 1.0,
    temperature: float = 1.0,
    freeze_shared: bool = False,
    epochs: float = 10,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> RecoverResult:
    """Retrain ``branch`` (merged, in place) on a few-shot set with Eq. 2."""
    check_kd(a, b, temperature)
    shared = shared_tensors(branch)
    init = [p.detach().clone() for p, _ in shared]

    def smooth(_: int, logits: torch.Tensor, batch) -> torch.Tensor:
        loss, _ = kd_loss(logits, batch["labels"], batch["teacher"], a=a, b=0.0, temperature=temperature)
        return loss

    @torch.no_grad()
    def prox() -> None:
        for (p, mask), p0 in zip(shared, init):
            if freeze_shared:
                p[mask] = p0[mask]
                continue
            d = p[mask] - p0[mask]
            p[mask] = p0[mask] + d.sign() * (d.abs() - lr * b).clamp_min(0.0)

    t0 = time.perf_counter()
    res = train_branches([branch], features, labels, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                         device=device, loss_fn=smooth, extra={"teacher": teacher_logits}, after_step=prox)[0]
    with torch.no_grad():
        l1 = float(sum((p - p0)[m].abs().sum() for (p, m), p0 in zip(shared, init))) if shared else 0.0
    return RecoverResult(time.perf_counter() - t0, res.steps, res.images_seen, l1, res.final_loss)


def few_shot_index(n: int, fraction: float, seed: int) -> np.ndarray:
    """A seeded random ``fraction`` of range(n) (at least one row)."""
    check_kd(0.5, 0.0, 1.0, fraction)
    k = max(1, int(round(fraction * n)))
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))

