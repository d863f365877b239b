"""Config groups of representation sharing (Cao et al., MobiCom'24): ``capture`` (activations of both
models), ``cka``, ``sharing`` (merged-model evaluation), ``adapter`` (which adapters, one file each in
conf/adapter/; choose several: ``adapter=[resample,lstsq]``) and ``analysis`` (correlations, search)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from repshare.config.data import split_size
from repshare.config.limits import MAX_BATCH, MAX_COUNT, MAX_IMAGE_SIZE, MAX_RESAMPLES, MAX_SEED, MAX_STEPS
from repshare.config.rules import (Check, Device, Each, Fraction, Identifier, Interval, IntRange, Keys, NonEmpty, OneOf,
                                   OrNull, Positive, Table, Unique, Values)

PROTOCOLS = ("per_model", "shared")  # = repshare.features.capture.PROTOCOLS (tested)
RESIZE_METHODS = ("nearest", "bilinear", "bicubic", "area", "adaptive_avg")
SPLITS = ("train", "val")  # every data source has them; ImageNet can add `calib` (data.calibration_images)


@dataclass
class CaptureConfig:
    n_samples: Optional[int]  # None: the whole split (the default is ${sharing.n_eval}: CKA on the report images)
    batch_size: int
    split: str
    shared_input_size: Optional[int]  # set: both models see this resolution
    classifier_input_size: Optional[int]  # None: the classifier's input_size
    detector_input_size: Optional[int]  # None: the detector's image_size
    device: str
    # per_model = each model at its own resolution/normalisation; shared = the detector's backbone
    # gets the classifier's input. The first one feeds cka.json.
    protocols: list[str]
    forward_chunk: Optional[int]  # images per forward pass inside a batch (None: the whole batch)


@dataclass
class CKAConfig:
    estimator: str  # full_biased (the paper's Eq. 1) | minibatch_unbiased | minibatch_biased
    kernel: str  # linear | rbf
    rbf_threshold: float
    dtype: str  # accumulation precision of the HSIC sums


@dataclass
class SharingConfig:
    resize_method: str
    channel_seed: int
    batch_size: int
    n_eval: Optional[int]  # None: the whole val split
    forward_chunk: Optional[int]  # images per forward pass inside a batch (None: the whole batch)
    device: str
    calibration_split: str  # images the fitted adapters are fitted on (unlabelled but for `supervised`)
    n_calibration: int
    calibration_batch_size: int
    n_eval_variants: Optional[int]  # merges beyond the paper's are scored on this many val images (None: n_eval)


@dataclass
class ResampleAdapterConfig:
    labels: bool


@dataclass
class MomentsAdapterConfig:
    labels: bool
    eps: float


@dataclass
class LstsqAdapterConfig:
    labels: bool
    ridge: float  # relative to the mean feature variance; 0 = ordinary least squares
    max_pixels_per_image: Optional[int]


@dataclass
class TrainedAdapterConfig:
    labels: bool
    steps: int
    batch_size: int
    lr: float
    same_stage: bool
    top_k_cross: int
    protocols: list[str]  # subset of capture.protocols
    temperature: float = 1.0  # optional key: conf/adapter/supervised.yaml leaves it out (only distill's KL uses it)


@dataclass
class AdapterConfig:
    """One entry per adapter to run; null = not chosen (a selection, not a value)."""

    resample: Optional[ResampleAdapterConfig] = None
    moments: Optional[MomentsAdapterConfig] = None
    lstsq: Optional[LstsqAdapterConfig] = None
    distill: Optional[TrainedAdapterConfig] = None
    supervised: Optional[TrainedAdapterConfig] = None


@dataclass
class AnalysisConfig:
    n_bootstrap: int
    ci: float
    paper_r: dict[str, float]  # the paper's |Pearson r| per metric
    budget_fracs: list[float]  # sharing-point search: budgets as fractions of the classifier's bytes
    accuracy_floor: Optional[float]  # minimum agreement with the unmerged classifier (label-free)


def _within_split(split_key: str):
    """Check: a count of images drawn from the split named at ``split_key`` fits that split."""
    def check(n, root) -> str | None:
        split = root.select(split_key)
        have = split_size(root, split)
        return None if have is None or n <= have else f"split {split!r} has only {have} images (data.n_{split})"
    return check


def _some_adapter(adapters, root) -> str | None:
    return None if any(v is not None for v in adapters.values()) else \
        "choose at least one adapter (e.g. adapter=[resample])"


def _labels_only_supervised(labels, root, key) -> str | None:
    name = key.split(".")[1]
    return None if labels == (name == "supervised") else "only the supervised adapter uses labels"


def _captured(protocol, root) -> str | None:
    return None if protocol in root.capture.protocols else "must be one of capture.protocols"


def _has_calib(split, root) -> str | None:
    fitted = [a for a in ("moments", "lstsq", "distill", "supervised") if root.adapter.get(a) is not None]
    if not fitted:  # only the fixed adapter: no image is read from the calibration split
        return None
    if split == "calib" and root.data.name != "imagenet":
        return "only ImageNet data has a calib split (data.calibration_images)"
    if split == "select" and not (root.data.name in ("shapes", "imagenet") and (root.data.get("n_select") or 0) > 0):
        return ("needs a select split: data.n_select > 0 (shapes; ImageNet with data.train_root), or use calib "
                "(ImageNet, data.calibration_images) or train")
    return None


RULES: Table = [
    ("capture.n_samples", OrNull(IntRange(1, MAX_COUNT), Check(_within_split("capture.split")))),
    ("capture.batch_size", IntRange(1, MAX_BATCH)),
    ("capture.split", OneOf(*SPLITS)),
    ("capture.shared_input_size", OrNull(IntRange(32, MAX_IMAGE_SIZE))),
    ("capture.classifier_input_size", OrNull(IntRange(32, MAX_IMAGE_SIZE))),
    ("capture.detector_input_size", OrNull(IntRange(32, MAX_IMAGE_SIZE))),
    ("capture.device", Device()),
    ("capture.protocols", NonEmpty(), Unique(), Each(OneOf(*PROTOCOLS))),
    ("capture.forward_chunk", OrNull(IntRange(1, MAX_BATCH))),
    ("cka.estimator", OneOf("full_biased", "minibatch_unbiased", "minibatch_biased")),
    ("cka.kernel", OneOf("linear", "rbf")),
    ("cka.rbf_threshold", Positive()),
    ("cka.dtype", OneOf("float32", "float64")),
    ("sharing.resize_method", OneOf(*RESIZE_METHODS)),
    ("sharing.channel_seed", IntRange(0, MAX_SEED)),
    ("sharing.batch_size", IntRange(1, MAX_BATCH)),
    ("sharing.n_eval", OrNull(IntRange(1, MAX_COUNT))),
    ("sharing.forward_chunk", OrNull(IntRange(1, MAX_BATCH))),
    ("sharing.device", Device()),
    # never val: every merge is reported on val, so the adapters are fitted on images apart from it
    ("sharing.calibration_split", OneOf("train", "calib", "select"), Check(_has_calib)),
    ("sharing.n_calibration", IntRange(2, MAX_COUNT), Check(_within_split("sharing.calibration_split"))),
    ("sharing.calibration_batch_size", IntRange(1, MAX_BATCH)),
    ("sharing.n_eval_variants", OrNull(IntRange(1, MAX_COUNT))),
    ("adapter", Check(_some_adapter)),
    ("adapter.*.labels", Check(_labels_only_supervised)),
    ("adapter.moments.eps", Interval(0)),
    ("adapter.lstsq.ridge", Interval(0)),
    ("adapter.lstsq.max_pixels_per_image", OrNull(IntRange(1, MAX_COUNT))),
    ("adapter.*.steps", IntRange(1, MAX_STEPS)),
    ("adapter.*.batch_size", IntRange(1, MAX_BATCH)),
    ("adapter.*.lr", Positive()),
    ("adapter.*.temperature", Positive()),
    ("adapter.*.top_k_cross", IntRange(0, 64)),
    ("adapter.*.protocols", NonEmpty(), Unique(), Each(Check(_captured))),
    ("analysis.n_bootstrap", IntRange(1, MAX_RESAMPLES)),
    ("analysis.ci", Interval(0, 1, open_low=True, open_high=True)),
    ("analysis.paper_r", Keys(Identifier()), Values(Interval(-1, 1))),
    ("analysis.budget_fracs", NonEmpty(), Unique(), Each(Fraction())),
    ("analysis.accuracy_floor", OrNull(Fraction())),
]
