"""Fixed-size batches over an in-memory (N, H, W, 3) uint8 split, shared by CKA capture and merged evaluation."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch


def batch_bounds(n: int, batch_size: int, min_batch: int = 1) -> list[tuple[int, int]]:
    """(start, stop) of consecutive batches of ``batch_size`` over ``n`` items.

    A last batch smaller than ``min_batch`` joins the one before it, because the unbiased CKA
    estimator needs at least 4 examples per batch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if batch_size < min_batch:
        raise ValueError(f"batch_size={batch_size} is below the minimum {min_batch} for the estimator")
    edges = list(range(0, n, batch_size)) + [n]
    if len(edges) > 2 and edges[-1] - edges[-2] < min_batch:
        del edges[-2]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def to_chw(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 array -> contiguous (B, 3, H, W) uint8 tensor."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()


def iter_batches(images: np.ndarray, batch_size: int, min_batch: int = 1) -> Iterator[torch.Tensor]:
    """(B, 3, H, W) uint8 image batches; see :func:`batch_bounds` for the tail rule."""
    for a, b in batch_bounds(len(images), batch_size, min_batch):
        yield to_chw(images[a:b])


def labelled_batches(images: np.ndarray, labels: np.ndarray, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(images, int64 labels) batches, all held (evaluation reuses them for every merged pair)."""
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    return [(to_chw(images[a:b]), torch.from_numpy(labels[a:b]).long())
            for a, b in batch_bounds(len(labels), batch_size)]
