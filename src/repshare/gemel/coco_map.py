"""COCO box mAP@[.5:.95] that can be recomputed on resampled sets of images (bootstrap).

The detector's accuracy is COCO mAP, which is not a mean over images: a bootstrap interval needs
the metric on many resampled image sets, and running pycocotools on each costs seconds. This module
matches detections to ground truth once, per image (as ``COCOeval.evaluateImg`` does: per image and
class, detections by score, each taking the unmatched ground-truth box of highest IoU >= the
threshold), and keeps only what ``COCOeval.accumulate`` needs: per class, every detection's image
and whether it is a true positive at each IoU threshold, and each image's ground-truth count. A
resample is then a vector of image multiplicities, and its mAP is a weighted cumulative sum.

A resample equals COCOeval on the repeated images listed in image order, except where two detections
of one image tie in score (the copies would interleave there; a real detector's float scores rarely tie).
With every multiplicity 1 the value equals torchmetrics' ``MeanAveragePrecision(backend="pycocotools")``
(area range "all", 100 detections, its float32 thresholds): ``tests/test_gemel_map.py`` checks it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

# torchmetrics hands COCOeval its thresholds as float32 linspaces converted to Python floats: the same here.
IOU_THRESHOLDS = np.array(torch.linspace(0.5, 0.95, 10).tolist(), dtype=np.float64)
REC_THRESHOLDS = np.array(torch.linspace(0.0, 1.0, 101).tolist(), dtype=np.float64)
MAX_DETS = 100  # per image and class, as COCOeval's largest maxDets
CHUNK = 4_000_000  # resamples x detections held at once (floats): bounds the memory of one class


@dataclass(frozen=True)
class ClassMatches:
    """One class's detections in COCO's accumulate order (score descending, stable)."""

    image: np.ndarray  # (nd,) image index of each detection
    tp: np.ndarray  # (T, nd) bool: true positive at IoU threshold t
    gt_per_image: np.ndarray  # (n_images,) ground-truth boxes of this class per image


@dataclass(frozen=True)
class DetectionMatches:
    n_images: int
    classes: dict[int, ClassMatches]  # classes with at least one ground-truth box


def xywh(boxes_xyxy: np.ndarray) -> np.ndarray:
    """xyxy -> xywh in float32 (as torchvision's box_convert on the float32 tensors torchmetrics gets)."""
    b = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)


def area(boxes_xyxy: np.ndarray) -> np.ndarray:
    """Box areas as COCO records them for torchmetrics' boxes: w x h of the float32 xywh box, in double."""
    wh = xywh(boxes_xyxy)[:, 2:].astype(np.float64)
    return wh[:, 0] * wh[:, 1]


def coco_iou(d: np.ndarray, g: np.ndarray) -> np.ndarray:
    """IoU of xywh boxes as pycocotools' ``bbIou`` computes it (double precision, no crowd): (len(d), len(g))."""
    d = d.astype(np.float64)[:, None, :]
    g = g.astype(np.float64)[None, :, :]
    w = np.minimum(d[..., 0] + d[..., 2], g[..., 0] + g[..., 2]) - np.maximum(d[..., 0], g[..., 0])
    h = np.minimum(d[..., 1] + d[..., 3], g[..., 1] + g[..., 3]) - np.maximum(d[..., 1], g[..., 1])
    inter = np.where((w > 0) & (h > 0), w * h, 0.0)
    union = d[..., 2] * d[..., 3] + g[..., 2] * g[..., 3] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(inter > 0, inter / union, 0.0)


def match_class(d_boxes: np.ndarray, g_boxes: np.ndarray) -> np.ndarray:
    """(T, len(d)) true-positive flags of one image's detections of one class (already in score order)."""
    tp = np.zeros((len(IOU_THRESHOLDS), len(d_boxes)), dtype=bool)
    if not len(d_boxes) or not len(g_boxes):
        return tp
    ious = coco_iou(xywh(d_boxes), xywh(g_boxes))
    taken = np.zeros((len(IOU_THRESHOLDS), len(g_boxes)), dtype=bool)
    for di in np.flatnonzero(ious.max(axis=1) >= IOU_THRESHOLDS[0]):  # the others match nothing at any threshold
        for ti, t in enumerate(IOU_THRESHOLDS):
            best, m = min(t, 1 - 1e-10), -1
            for gi in range(len(g_boxes)):  # COCOeval's loop: the last box of the highest IoU wins a tie
                if taken[ti, gi] or ious[di, gi] < best:
                    continue
                best, m = ious[di, gi], gi
            if m >= 0:
                taken[ti, m] = True
                tp[ti, di] = True
    return tp


def match(preds: Sequence[dict], targets: Sequence[dict]) -> DetectionMatches:
    """Match per image; ``preds``: {boxes (K,4) xyxy, scores (K,), labels (K,)}, ``targets``: {boxes, labels},
    numpy arrays or tensors, in one coordinate frame (torchmetrics' input format)."""
    if len(preds) != len(targets):
        raise ValueError(f"{len(preds)} predictions for {len(targets)} images")
    n = len(targets)
    per_class: dict[int, list] = {}
    gt_counts: dict[int, np.ndarray] = {}
    for i, (p, t) in enumerate(zip(preds, targets)):
        db, ds, dl = (np.asarray(p[k]) for k in ("boxes", "scores", "labels"))
        gb, gl = np.asarray(t["boxes"]).reshape(-1, 4), np.asarray(t["labels"]).astype(np.int64)
        dl = dl.astype(np.int64)
        if len(gb) and (area(gb) < 0).any():
            raise ValueError(f"image {i}: a ground-truth box has a negative size")
        for c in np.unique(gl):
            gt_counts.setdefault(int(c), np.zeros(n, np.int64))[i] = int((gl == c).sum())
        for c in np.unique(dl):
            idx = np.flatnonzero(dl == c)
            order = idx[np.argsort(-ds[idx].astype(np.float64), kind="mergesort")][:MAX_DETS]
            # COCOeval ignores an unmatched detection whose area is outside the range ("all": >= 0); one of
            # negative area never overlaps anything, so it is always unmatched: drop it.
            order = order[area(db[order]) >= 0]
            tp = match_class(db[order], gb[gl == c])
            per_class.setdefault(int(c), []).append((np.full(len(order), i), ds[order].astype(np.float64), tp))
    classes = {}
    for c, counts in sorted(gt_counts.items()):
        parts = per_class.get(c, [])
        if parts:
            image = np.concatenate([p[0] for p in parts])
            scores = np.concatenate([p[1] for p in parts])
            tp = np.concatenate([p[2] for p in parts], axis=1)
            order = np.argsort(-scores, kind="mergesort")  # accumulate's order: ties keep image order
            image, tp = image[order], tp[:, order]
        else:
            image, tp = np.zeros(0, np.int64), np.zeros((len(IOU_THRESHOLDS), 0), bool)
        classes[c] = ClassMatches(image, tp, counts)
    return DetectionMatches(n, classes)


def average_precision(tp_counts: np.ndarray, all_counts: np.ndarray, npos: np.ndarray) -> np.ndarray:
    """COCO's 101-point interpolated AP per row. ``tp_counts``/``all_counts``: (B, k) cumulative weighted
    true positives / detections at each true positive (in score order), ``npos``: (B,) > 0."""
    b, k = tp_counts.shape
    if k == 0:
        return np.zeros(b)
    pr = tp_counts / (all_counts + np.spacing(1))
    rc = tp_counts / npos[:, None]
    env = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]  # precision made monotone, as accumulate does
    q = np.zeros((b, len(REC_THRESHOLDS)))
    for row in range(b):
        idx = np.searchsorted(rc[row], REC_THRESHOLDS, side="left")
        ok = idx < k
        q[row, ok] = env[row, idx[ok]]
    return q.mean(axis=1)


def resampled_map(m: DetectionMatches, counts: np.ndarray) -> np.ndarray:
    """mAP@[.5:.95] of each resample; ``counts``: (B, n_images) image multiplicities (all ones = the set
    itself). Classes without ground truth in a resample do not count (COCO's -1); NaN if none has any."""
    counts = np.atleast_2d(np.asarray(counts, dtype=np.float64))
    if counts.shape[1] != m.n_images:
        raise ValueError(f"counts cover {counts.shape[1]} images, the matches {m.n_images}")
    total = np.zeros(len(counts))
    valid = np.zeros(len(counts))
    for cm in m.classes.values():
        npos = counts @ cm.gt_per_image
        has = npos > 0
        last = int(np.flatnonzero(cm.tp.any(axis=0)).max(initial=-1)) + 1  # later detections never count
        step = max(1, CHUNK // max(1, last))
        for lo in range(0, len(counts), step):
            sl = slice(lo, lo + step)
            w = counts[sl][:, cm.image[:last]]
            seen = np.cumsum(w, axis=1)  # weighted detections up to each position
            for t in range(len(IOU_THRESHOLDS)):
                pos = np.flatnonzero(cm.tp[t, :last])
                ap = average_precision(np.cumsum(w[:, pos], axis=1), seen[:, pos], np.where(has[sl], npos[sl], 1.0))
                total[sl] += np.where(has[sl], ap, 0.0)
        valid += has * len(IOU_THRESHOLDS)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(valid > 0, total / np.where(valid > 0, valid, 1.0), np.nan)
