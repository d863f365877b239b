"""Config group ``model`` (conf/model/classifier/*.yaml, conf/model/detector/*.yaml): how each workload
model is built. ``model.classifier_color`` reuses the classifier files (conf/config.yaml's defaults).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from repshare.config.limits import MAX_IMAGE_SIZE
from repshare.config.rules import (Check, Each, Fraction, Interval, IntRange, Length, NonEmpty, OneOf, OrNull, Positive,
                                   Table, sibling)
from repshare.models.weights import WEIGHT_SOURCES, resolve_weights

BUILD_CLASSIFIER = "repshare.models.classifier.build_classifier"
BUILD_DETECTOR = "repshare.models.detector.build_detector"
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "area")  # = repshare.models.preprocess.INTERPOLATIONS (tested)
EFFDET_STRIDE = 128  # effdet's input must be a multiple of 2**max_level


@dataclass
class ClassifierConfig:
    _target_: str
    arch: str
    num_classes: int
    weights: Optional[str]  # random | pretrained | checkpoint | trained; null: from pretrained/checkpoint_path
    pretrained: bool
    checkpoint_path: Optional[str]
    input_size: Optional[int]  # None: the pretrained config's resolution
    interpolation: Optional[str]  # None: the pretrained config's (bilinear/bicubic/...)
    mean: Optional[list[float]]  # None: the pretrained config's
    std: Optional[list[float]]
    drop_rate: float
    drop_path_rate: float


@dataclass
class DetectorConfig:
    _target_: str
    arch: str
    num_classes: int
    weights: Optional[str]  # random | pretrained | checkpoint | trained; null: from pretrained/checkpoint_path
    pretrained: bool
    checkpoint_path: Optional[str]
    image_size: int  # effdet needs a multiple of 2**max_level = 128
    init_backbone_from_classifier: bool
    mean: Optional[list[float]]
    std: Optional[list[float]]
    max_det_per_image: int


@dataclass
class ModelConfig:
    classifier: ClassifierConfig
    detector: DetectorConfig
    classifier_color: ClassifierConfig  # third workload model (Gemel)


def _arch_name(arch, root) -> str | None:
    return None if re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", arch) else "must be a timm/effdet model name"


def _weights_consistent(weights, root, key) -> str | None:
    """The weight source and checkpoint_path agree (repshare.models.weights decides, as the builders do)."""
    where = key.rsplit(".", 1)[0]
    try:
        resolve_weights(weights, sibling(root, key, "pretrained"), sibling(root, key, "checkpoint_path"), where)
    except ValueError as err:
        return str(err)
    return None


def _effdet_multiple(size, root) -> str | None:
    return None if size % EFFDET_STRIDE == 0 else f"effdet needs a multiple of {EFFDET_STRIDE}"


# The classes/functions each key may instantiate (the one allow-list; see schema.check_targets).
TARGETS = {
    "model.classifier._target_": (BUILD_CLASSIFIER,),
    "model.classifier_color._target_": (BUILD_CLASSIFIER,),
    "model.detector._target_": (BUILD_DETECTOR,),
}
RULES: Table = [
    ("model.*.arch", NonEmpty(), Check(_arch_name)),
    ("model.*.num_classes", IntRange(1, 100_000)),
    ("model.*.weights", OrNull(OneOf(*WEIGHT_SOURCES)), Check(_weights_consistent)),
    ("model.*.checkpoint_path", OrNull(NonEmpty())),
    ("model.*.mean", OrNull(Length(3), Each(Interval(-1000, 1000)))),
    ("model.*.std", OrNull(Length(3), Each(Positive()))),
    ("model.*.input_size", OrNull(IntRange(32, MAX_IMAGE_SIZE))),
    ("model.*.interpolation", OrNull(OneOf(*INTERPOLATIONS))),
    ("model.*.drop_rate", Fraction(open_high=True)),
    ("model.*.drop_path_rate", Fraction(open_high=True)),
    ("model.detector.image_size", IntRange(EFFDET_STRIDE, MAX_IMAGE_SIZE), Check(_effdet_multiple)),
    ("model.detector.max_det_per_image", IntRange(1, 10_000)),
]
