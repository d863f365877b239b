"""Fixed-size batches over an (N, H, W, 3) uint8 split (in memory or read from shards), shared by CKA capture and merged evaluation."""

from __future__ import annotations

from collections.abc import Sequence

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


class LabelledBatches(Sequence):
    """(images (B, 3, H, W) uint8, int64 labels) batches, each read when indexed.

    Nothing is held: with a lazily read split (``load_split(lazy=True)``) a pass over the batches
    holds one batch of images, however many images there are, and later passes read them again.
    Slicing gives the batches' sub-sequence.
    """

    def __init__(self, images, labels: np.ndarray, bounds: list[tuple[int, int]]):
        self.images, self.labels, self.bounds = images, labels, bounds

    def __len__(self) -> int:
        return len(self.bounds)

    def __getitem__(self, k):
        if isinstance(k, slice):
            return LabelledBatches(self.images, self.labels, self.bounds[k])
        a, b = self.bounds[k]
        return to_chw(self.images[a:b]), torch.from_numpy(np.asarray(self.labels[a:b])).long()


def labelled_batches(images, labels: np.ndarray, batch_size: int, name: str = "batch_size") -> LabelledBatches:
    """Consecutive (images, labels) batches of ``batch_size`` over an (N, H, W, 3) uint8 array-like."""
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    return LabelledBatches(images, labels, batch_bounds(len(labels), batch_size, name=name))
