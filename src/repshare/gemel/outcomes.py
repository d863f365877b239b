"""Per-image outcomes of one model on one split, so its accuracy can be recomputed on resampled images.

A classifier's outcome is whether each image is classified right (top-1 = their mean); a detector's is
its COCO matches (:mod:`repshare.gemel.coco_map`; mAP is not a mean over images). Both answer
``metric(counts)``: the accuracy on each resample, given as image multiplicities (B, n); all ones is
the split itself. Two outcomes on the same images resampled with the same counts are paired.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from repshare.data.shards import Split
from repshare.gemel.coco_map import DetectionMatches, match, resampled_map
from repshare.gemel.models import Member


@dataclass(frozen=True)
class ClassifierOutcome:
    correct: np.ndarray  # (n,) bool: top-1 right on each image

    @property
    def n(self) -> int:
        return len(self.correct)

    def metric(self, counts: np.ndarray) -> np.ndarray:
        counts = np.atleast_2d(np.asarray(counts, dtype=np.float64))
        return counts @ self.correct.astype(np.float64) / counts.sum(axis=1)


@dataclass(frozen=True)
class DetectionOutcome:
    matches: DetectionMatches

    @property
    def n(self) -> int:
        return self.matches.n_images

    def metric(self, counts: np.ndarray) -> np.ndarray:
        return resampled_map(self.matches, counts)


Outcome = ClassifierOutcome | DetectionOutcome


def value(outcome: Outcome) -> float:
    """The accuracy on the split itself (top-1, or COCO mAP@[.5:.95])."""
    return float(outcome.metric(np.ones((1, outcome.n)))[0])


def counts_from_indices(idx: np.ndarray, n: int) -> np.ndarray:
    """(B, n) image indices drawn with replacement -> (B, n) multiplicities."""
    idx = np.atleast_2d(idx)
    rows = np.arange(len(idx))[:, None] * n
    return np.bincount((idx + rows).ravel(), minlength=len(idx) * n).reshape(len(idx), n).astype(np.float64)


@torch.inference_mode()
def evaluate_outcome(model: torch.nn.Module, member: Member, split: Split, batch_size: int, device) -> Outcome:
    """Run ``model`` on ``split`` with its own task, label and preprocessing."""
    from repshare.data.datamodule import SplitDataset, with_label

    model, pre = model.to(device).eval(), member.pre.to(device)
    if member.spec.task == "classification":
        data = with_label(split, member.label)
        if (data.labels < 0).any():
            raise ValueError(f"{member.spec.name}: the split has unlabelled images (label {member.label!r})")
        right = []
        for x, y in DataLoader(SplitDataset(data, "cls"), batch_size=batch_size):
            right.append((model(pre(x.to(device))).argmax(dim=1).cpu() == y).numpy())
        return ClassifierOutcome(np.concatenate(right) if right else np.zeros(0, bool))
    from repshare.models.detector import detections_to_preds, target_to_metric
    from repshare.training.evaluate import detection_fn

    bench = detection_fn(model).to(device).eval()
    preds, targets = [], []
    for x, t in DataLoader(SplitDataset(split, "det"), batch_size=batch_size):
        scale = pre.input_size / x.shape[-1]  # boxes are compared at the detector's input resolution
        if scale != 1.0:
            t["bbox"] = torch.where(t["bbox"] >= 0, t["bbox"] * scale, t["bbox"])
        preds += [{k: v.cpu().numpy() for k, v in p.items()} for p in detections_to_preds(bench(pre(x.to(device))))]
        targets += [{k: v.cpu().numpy() for k, v in p.items()} for p in target_to_metric(t)]
    return DetectionOutcome(match(preds, targets))
