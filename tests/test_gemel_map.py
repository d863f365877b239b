"""The resampling COCO mAP against torchmetrics' MeanAveragePrecision (pycocotools), the reference:
on the full set, and on a resample written out as an explicit list of (repeated) images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.detection import MeanAveragePrecision

from repshare.gemel.coco_map import coco_iou, match, resampled_map, xywh


def _images(n: int, seed: int, classes: int = 3, ties: bool = True) -> tuple[list[dict], list[dict]]:
    """Ground truth boxes; predictions = jittered copies (some with the wrong class), junk boxes, misses."""
    rng = np.random.default_rng(seed)
    preds, targets = [], []
    for _ in range(n):
        g = int(rng.integers(0, 4))
        xy = rng.uniform(0, 100, (g, 2))
        wh = rng.uniform(5, 40, (g, 2))
        gb = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        gl = rng.integers(0, classes, g)
        keep = rng.random(g) < 0.8  # some objects are missed
        jitter = rng.normal(0, 2, (g, 4)).astype(np.float32)
        db = np.concatenate([gb[keep] + jitter[keep], gb[:1] + 1.5 if g else np.zeros((0, 4), np.float32),
                             np.sort(rng.uniform(0, 128, (5, 4)), axis=1).astype(np.float32)])
        dl = np.concatenate([np.where(rng.random(int(keep.sum())) < 0.9, gl[keep], (gl[keep] + 1) % classes),
                             gl[:1], rng.integers(0, classes, 5)])
        ds = rng.random(len(db)).astype(np.float32)
        if ties:
            ds[:3] = np.round(ds[:3], 1)  # tied scores, within and across images
        else:
            ds[0] = 0.5  # tied across images only
        preds.append({"boxes": torch.tensor(db), "scores": torch.tensor(ds), "labels": torch.tensor(dl)})
        targets.append({"boxes": torch.tensor(gb), "labels": torch.tensor(gl)})
    return preds, targets


def _reference(preds, targets) -> float:
    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools")
    metric.update(preds, targets)
    return float(metric.compute()["map"])


def test_iou_by_hand():
    d = xywh(np.array([[0, 0, 10, 10]], np.float32))
    g = xywh(np.array([[5, 0, 15, 10], [20, 20, 30, 30]], np.float32))
    assert np.allclose(coco_iou(d, g), [[50 / 150, 0.0]])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_full_set_equals_torchmetrics(seed):
    preds, targets = _images(40, seed)
    ours = resampled_map(match(preds, targets), np.ones((1, 40)))[0]
    assert ours == pytest.approx(_reference(preds, targets), abs=1e-7)  # torchmetrics returns float32


def test_resample_equals_torchmetrics_on_the_repeated_images():
    preds, targets = _images(30, 5, ties=False)
    rng = np.random.default_rng(7)
    m = match(preds, targets)
    for _ in range(3):
        # in image order: COCO breaks ties between equal scores of different images by image order (ties
        # between two detections of one image would interleave the copies: a resample differs there only)
        idx = np.sort(rng.integers(0, 30, 30))
        counts = np.bincount(idx, minlength=30)[None, :]
        ref = _reference([preds[i] for i in idx], [targets[i] for i in idx])
        assert resampled_map(m, counts)[0] == pytest.approx(ref, abs=1e-7)  # torchmetrics returns float32


def test_rows_are_independent_and_a_class_absent_from_a_resample_does_not_count():
    preds, targets = _images(20, 3)
    m = match(preds, targets)
    counts = np.random.default_rng(0).integers(0, 3, (4, 20))
    together = resampled_map(m, counts)
    apart = np.array([resampled_map(m, c[None])[0] for c in counts])
    assert np.allclose(together, apart)
    # only images without ground truth: no class counts -> NaN, never 0 or 1
    empty = [k for k, t in enumerate(targets) if len(t["labels"]) == 0]
    assert empty, "the fixture has images without objects"
    only = np.zeros((1, 20))
    only[0, empty] = 1
    assert np.isnan(resampled_map(m, only)[0])


def test_perfect_detections_score_one():
    _, targets = _images(10, 4)
    preds = [{"boxes": t["boxes"], "scores": torch.ones(len(t["labels"])), "labels": t["labels"]} for t in targets]
    assert resampled_map(match(preds, targets), np.ones((1, 10)))[0] == pytest.approx(1.0)
