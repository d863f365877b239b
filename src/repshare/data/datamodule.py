"""Lightning data module over the prepared shards (the same code for shapes, ImageNet and COCO).

Images stay uint8 in memory and in the batches; models normalise and resize them with their own
``Preprocess`` (so each model sees its own resolution, mean and std from one dataset).
Classification batches are ``(images uint8 B,3,H,W, labels)``; detection batches are
``(images, {"bbox": B,K,4 xyxy pixels, -1 padded, "cls": B,K 0-based, -1 padded})``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from repshare.data.shards import Split, load_split


LABELS = ("labels", "color_labels")  # which per-image label a classifier learns


def with_label(split: Split, label: str = "labels") -> Split:
    """``split`` whose ``labels`` are the chosen per-image label (e.g. the shapes' ``color_labels``)."""
    if label not in LABELS:
        raise ValueError(f"label={label!r} must be one of {', '.join(LABELS)}")
    if label == "labels":
        return split
    values = getattr(split, label, None)
    if values is None:
        raise ValueError(f"the prepared data has no {label!r} (only the shapes data has it; re-run prepare)")
    return dataclasses.replace(split, labels=values)


class SplitDataset(Dataset):
    def __init__(self, split: Split, task: str = "cls", max_boxes: int | None = None):
        if task not in ("cls", "det"):
            raise ValueError(f"task={task!r} must be 'cls' or 'det'")
        self.images = torch.from_numpy(np.ascontiguousarray(split.images)).permute(0, 3, 1, 2)  # view, no copy
        self.labels = torch.from_numpy(split.labels)
        self.split, self.task = split, task
        counts = np.diff(split.box_offsets)
        self.max_boxes = max_boxes or max(1, int(counts.max(initial=0)))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, k: int):
        if self.task == "cls":
            return self.images[k], self.labels[k]
        boxes, classes = self.split.boxes_of(k)
        bbox = torch.full((self.max_boxes, 4), -1.0)
        cls = torch.full((self.max_boxes,), -1, dtype=torch.long)
        m = min(len(classes), self.max_boxes)
        bbox[:m] = torch.from_numpy(boxes[:m])
        cls[:m] = torch.from_numpy(classes[:m])
        return self.images[k], {"bbox": bbox, "cls": cls}


class PreparedDataModule(pl.LightningDataModule):
    def __init__(self, root: str | Path, batch_size: int = 64, num_workers: int = 0, task: str = "cls",
                 seed: int = 0, train_split: str = "train", val_split: str = "val", label: str = "labels"):
        super().__init__()
        self.label = label
        self.root, self.batch_size, self.num_workers = Path(root), batch_size, num_workers
        self.task, self.seed = task, seed
        self.train_split, self.val_split = train_split, val_split
        self.train_set: SplitDataset | None = None
        self.val_set: SplitDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.val_set is None:
            val = with_label(load_split(self.root, self.val_split), self.label)
            self.val_set = SplitDataset(val, self.task)
        if self.train_set is None and stage in (None, "fit"):
            train = with_label(load_split(self.root, self.train_split), self.label)
            self.train_set = SplitDataset(train, self.task)

    def _loader(self, ds: Dataset, shuffle: bool) -> DataLoader:
        g = torch.Generator().manual_seed(self.seed)
        return DataLoader(ds, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          generator=g, drop_last=shuffle and len(ds) > self.batch_size,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()
