"""The detector's targets from the unmerged detector itself (``gemel.detector_targets: unmerged``).

Gemel measures a merged model's accuracy relative to the original model: the unmerged model's results
are the reference. Real images without boxes (an ImageNet train subset) then still give the detector
targets to retrain towards and to be judged against: its own unmerged detections, kept at
``score >= teacher_score``, at most ``max_boxes`` per image, highest score first. Against these targets
the unmerged detector's mAP is exactly 1 when ``max_boxes`` drops no detection at or above the threshold
(every kept detection then outranks every other in its class; tested), a little below otherwise, so
"target x unmerged" asks the merged detector to reproduce the original's detections.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch.utils.data import DataLoader

from repshare.data.shards import Split
from repshare.gemel.models import Member


@torch.inference_mode()
def unmerged_boxes(model: torch.nn.Module, member: Member, split: Split, score: float, max_boxes: int,
                   batch_size: int, device) -> Split:
    """``split`` with its boxes replaced by ``model``'s detections (image pixels, 0-based classes)."""
    from repshare.data.datamodule import SplitDataset
    from repshare.models.detector import detections_to_preds
    from repshare.training.evaluate import detection_fn

    bench, pre = detection_fn(model).to(device).eval(), member.pre.to(device)
    boxes, classes, counts = [], [], []
    for x, _ in DataLoader(SplitDataset(split, "cls"), batch_size=batch_size):
        scale = pre.input_size / x.shape[-1]  # detections come at the detector's input resolution
        for p in detections_to_preds(bench(pre(x.to(device)))):
            s = p["scores"].cpu().numpy()
            keep = np.argsort(-s, kind="stable")[: max_boxes]
            keep = keep[s[keep] >= score]
            # not clipped to the image: the targets are exactly the detections they come from
            boxes.append((p["boxes"].cpu().numpy()[keep] / scale).astype(np.float32))
            classes.append(p["labels"].cpu().numpy()[keep].astype(np.int64))
            counts.append(len(keep))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return dataclasses.replace(
        split, boxes=np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32),
        box_classes=np.concatenate(classes) if classes else np.zeros(0, np.int64), box_offsets=offsets,
        meta={**split.meta, "box_source": f"the unmerged {member.spec.name}'s detections (score >= {score}, "
                                     f"<= {max_boxes} per image)"})


def with_unmerged_targets(splits, models: dict[str, torch.nn.Module], members: dict[str, Member], score: float,
                          max_boxes: int, batch_size: int, device):
    """``splits`` (a ``gemel.study.Splits``) with train, select and report boxes from the workload's one
    unmerged detector. ValueError names the setting when there are two detectors (one set of boxes per
    image) or when no image keeps a box."""
    dets = [n for n, m in members.items() if m.spec.task == "detection"]
    if not dets:
        return splits
    if len(dets) > 1:
        raise ValueError(f"gemel.detector_targets=unmerged: the workload has {len(dets)} detectors "
                         f"({', '.join(dets)}); the prepared data holds one set of boxes per image, so only one "
                         "is supported")
    name = dets[0]
    out = {k: unmerged_boxes(models[name], members[name], getattr(splits, k), score, max_boxes, batch_size, device)
           for k in ("train", "select", "report")}
    empty = next((k for k, s in out.items() if len(s.box_classes) == 0), None)
    if empty is not None:
        raise ValueError(f"gemel.teacher_score={score}: the unmerged {name} keeps no detection on the {empty} images "
                         "(nothing to retrain towards or judge against); lower gemel.teacher_score")
    return dataclasses.replace(splits, **out)
