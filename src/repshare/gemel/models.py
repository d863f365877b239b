"""The workload's models as Gemel sees them: each with its task, label, preprocessing and metric."""

from __future__ import annotations

import dataclasses

import torch

from repshare.data.shards import Split
from repshare.workload import WorkloadModel


@dataclasses.dataclass
class Member:
    spec: WorkloadModel
    label: str  # classifiers: which per-image label; detectors: "boxes"
    pre: torch.nn.Module
    num_classes: int  # classifiers; 0 for a detector


def evaluate(model: torch.nn.Module, member: Member, split: Split, batch_size: int, device) -> float:
    """The model's own task metric: top-1 (classifier, its label) or COCO mAP@[.5:.95] (detector)."""
    from repshare.data.datamodule import with_label
    from repshare.training.evaluate import evaluate_classifier, evaluate_detector

    if member.spec.task == "classification":
        res = evaluate_classifier(model, member.pre, with_label(split, member.label), member.num_classes,
                                  batch_size, device)
        return float(res["top1"])
    return float(evaluate_detector(model, member.pre, split, batch_size, device)["map"])
