"""Subsets of a prepared split (every per-image label and box kept), for Gemel's decision and report data."""

from __future__ import annotations

import dataclasses

import numpy as np

from repshare.data.shards import Split


def take(split: Split, idx: np.ndarray) -> Split:
    """The images ``idx`` of ``split`` (boxes re-indexed), every per-image label kept."""
    idx = np.asarray(idx, dtype=np.int64)
    starts, stops = split.box_offsets[idx], split.box_offsets[idx + 1]
    box_idx = np.concatenate([np.arange(a, b) for a, b in zip(starts, stops)]) if len(idx) else np.zeros(0, np.int64)
    offsets = np.concatenate([[0], np.cumsum(stops - starts)]).astype(np.int64)
    color = None if split.color_labels is None else split.color_labels[idx]
    return dataclasses.replace(split, images=split.images[idx], labels=split.labels[idx],
                               boxes=split.boxes[box_idx].reshape(-1, 4), box_classes=split.box_classes[box_idx],
                               box_offsets=offsets, color_labels=color)


def head(split: Split, n: int | None) -> Split:
    """The first ``n`` images of ``split`` (all of it for None or n >= its length)."""
    return split if n is None or n >= len(split) else take(split, np.arange(n))


def holdout_split(train: Split, n_holdout: int) -> tuple[Split, Split]:
    """(retraining part, held-out part): the last ``n_holdout`` train images are held out (the
    images are i.i.d., so the tail is a random sample; deterministic, prepare's output unchanged)."""
    n = len(train)
    if not 0 < n_holdout < n:
        raise ValueError(f"gemel.n_holdout={n_holdout} must be in 1..{n - 1} (the train split has {n} images)")
    return take(train, np.arange(n - n_holdout)), take(train, np.arange(n - n_holdout, n))
