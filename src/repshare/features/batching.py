"""Fixed-size batches over an in-memory (N, H, W, 3) uint8 split, shared by CKA capture and merged evaluation."""

from __future__ import annotations

import numpy as np
import torch


def batch_bounds(n: int, batch_size: int, min_batch: int = 1, name: str = "batch_size") -> list[tuple[int, int]]:
    """(start, stop) of consecutive batches of ``batch_size`` over ``n`` items.

    A last batch smaller than ``min_batch`` joins the one before it, because the unbiased CKA
    estimator needs at least 4 examples per batch. ``name`` is the config key errors report.
    """
    if batch_size < 1:
        raise ValueError(f"{name} must be >= 1, got {batch_size}")
    if batch_size < min_batch:
        raise ValueError(f"{name}={batch_size} is below the minimum {min_batch} examples per batch for the estimator")
    edges = list(range(0, n, batch_size)) + [n]
    if len(edges) > 2 and edges[-1] - edges[-2] < min_batch:
        del edges[-2]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def to_chw(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 array -> contiguous (B, 3, H, W) uint8 tensor."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()


def labelled_batches(images: np.ndarray, labels: np.ndarray, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(images, int64 labels) batches, all held (evaluation reuses them for every merged pair)."""
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    return [(to_chw(images[a:b]), torch.from_numpy(labels[a:b]).long())
            for a, b in batch_bounds(len(labels), batch_size)]
