"""Gemel's detector targets from the unmerged detector (``gemel.detector_targets: unmerged``): the kept
detections are hand-computed from a stub detector's fixed output, and the mAP of the detector against its
own targets is checked against values worked out by hand (1 when nothing at or above the threshold is
dropped; 0.75 in a case where ``max_boxes`` drops a detection that outranks a kept one)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from repshare.data.shards import Split
from repshare.gemel.models import Member
from repshare.gemel.outcomes import evaluate_outcome, value
from repshare.gemel.study import Splits
from repshare.gemel.teacher import unmerged_boxes, with_unmerged_targets
from repshare.models.preprocess import Preprocess
from repshare.workload import WorkloadModel

# Per image: x1 y1 x2 y2 score class (1-based), in the detector's 64 px input = 2 x the 32 px images.
# A, B in image 0; C, D in image 1 (no two boxes overlap); a padding row with score 0.
DETS = torch.tensor([
    [[0, 0, 20, 20, 0.9, 1], [30, 30, 50, 50, 0.7, 2], [0, 0, 0, 0, 0.0, 0]],  # A, B
    [[4, 8, 24, 40, 0.6, 2], [40, 0, 60, 20, 0.3, 1], [0, 0, 0, 0, 0.0, 0]],   # C, D
], dtype=torch.float32)


class StubDetector(nn.Module):
    """Returns DETS for a batch of the two images (effdet's inference format)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[0] == 2 and x.shape[-1] == 64
        return DETS.clone()


def _member() -> Member:
    pre = Preprocess(64, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bilinear")
    return Member(WorkloadModel("detector", "detection", "mAP"), "boxes", pre, 0)


def _split() -> Split:
    return Split(np.zeros((2, 32, 32, 3), np.uint8), np.zeros(2, np.int64), np.zeros((0, 4), np.float32),
                 np.zeros(0, np.int64), np.zeros(3, np.int64))


def test_kept_detections_are_those_at_or_above_the_score_in_image_pixels():
    out = unmerged_boxes(StubDetector(), _member(), _split(), 0.5, 20, 2, "cpu")
    assert out.box_offsets.tolist() == [0, 2, 3]  # A, B | C (D's 0.3 < 0.5)
    np.testing.assert_array_equal(out.boxes, [[0, 0, 10, 10], [15, 15, 25, 25], [2, 4, 12, 20]])
    assert out.box_classes.tolist() == [0, 1, 1]  # 0-based, as the prepared data
    assert "score >= 0.5" in out.meta["box_source"]
    one = unmerged_boxes(StubDetector(), _member(), _split(), 0.0, 1, 2, "cpu")
    assert one.box_offsets.tolist() == [0, 1, 2] and one.box_classes.tolist() == [0, 1]  # A | C


def test_the_unmerged_detector_scores_one_against_its_own_targets_unless_max_boxes_drops_a_higher_score():
    m = _member()
    every = unmerged_boxes(StubDetector(), m, _split(), 0.3, 20, 2, "cpu")  # A, B, C, D kept
    assert value(evaluate_outcome(StubDetector(), m, every, 2, "cpu")) == pytest.approx(1.0)
    # One box per image: A (class 0) and C (class 1) are the targets. Class 0: A 0.9 matched, then D 0.3
    # unmatched -> AP 1. Class 1: B 0.7 (image 0) unmatched ranks above C 0.6 matched -> precision 1/2 at
    # recall 1, so 0.5 at every recall point -> AP 0.5. At every IoU threshold the same: mAP = 0.75.
    one = unmerged_boxes(StubDetector(), m, _split(), 0.0, 1, 2, "cpu")
    assert value(evaluate_outcome(StubDetector(), m, one, 2, "cpu")) == pytest.approx(0.75)


def test_two_detectors_or_no_kept_box_stop_with_the_setting_named():
    m = _member()
    splits = Splits(_split(), _split(), _split())
    with pytest.raises(ValueError, match=r"gemel.teacher_score=0.95: .* keeps no detection on the train images"):
        with_unmerged_targets(splits, {"detector": StubDetector()}, {"detector": m}, 0.95, 20, 2, "cpu")
    two = {"detector": m, "detector2": m}
    with pytest.raises(ValueError, match="has 2 detectors"):
        with_unmerged_targets(splits, {k: StubDetector() for k in two}, two, 0.3, 20, 2, "cpu")


def test_a_detector_without_boxes_needs_unmerged_targets_at_compose():
    """ImageNet has no boxes: Gemel's detector targets must come from the unmerged detector (one line, the key)."""
    from repshare.config import ConfigError, compose, validate_config

    with pytest.raises(ConfigError, match=r"gemel\.detector_targets.*data=imagenet has no boxes"):
        validate_config(compose(["experiment=real", "data.root=/v", "data.train_root=/t", "gemel.detector_targets=data"]))
    validate_config(compose(["experiment=real", "data.root=/v", "data.train_root=/t"]))  # the preset's targets pass
    validate_config(compose(["experiment=real", "data.root=/v", "gemel.detector_targets=data"]))  # gemel skipped
    with pytest.raises(ConfigError, match=r"gemel\.teacher_score"):
        validate_config(compose(["experiment=real", "data.root=/v", "gemel.teacher_score=1.5"]))
