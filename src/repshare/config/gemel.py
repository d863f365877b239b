"""Config group ``gemel`` (conf/gemel/default.yaml): Gemel (NSDI'23) layer merging across the workload's
models, with its joint retraining and the edge box's time-sharing simulation (``gemel.sim``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from repshare.config.data import split_size
from repshare.config.limits import MAX_BATCH, MAX_COUNT, MAX_RESAMPLES, MAX_STEPS
from repshare.config.rules import (Check, Device, Each, Fraction, Interval, IntRange, NonEmpty, OneOf, OrNull, Positive,
                                   Table, Unique)


@dataclass
class GemelCostConfig:
    """Deterministic load/run times of the simulated edge GPU (docs/methods/gemel.md: the values' sources)."""

    load_gb_per_s: float  # effective weight loading onto the GPU, 1e9 bytes/s
    tflops: float  # effective inference throughput, 1e12 FLOP/s
    run_overhead_ms: float  # fixed cost of one frame (kernel launches, pre/post-processing)


@dataclass
class GemelDecisionConfig:
    """Gemel's accept/reject rule on the select split (repshare.gemel.decision)."""

    n_classification: Optional[int]  # select images per classifier decision (null = all)
    n_detection: Optional[int]  # per detector decision (null = all)
    n_weights: int  # select images for the accuracy after tying (loss weights only)
    alpha: float  # accept only if the one-sided 1 - alpha lower bound of the margin is >= 0
    n_boot: int  # paired bootstrap resamples (decisions and report intervals)


@dataclass
class GemelSimConfig:
    """The edge box's GPU time-sharing simulation (frames processed vs memory budget)."""

    fps: float  # frame rate of every model's stream
    sla_ms: float  # a frame not processed within this long after it arrives is dropped
    duration_s: float  # simulated stream length
    batch_size: int  # frames a model takes per turn
    # Memory budgets swept: fractions between the largest model (0) and the whole unmerged workload (1),
    # or absolute MB (budgets_mb, set: wins; each must hold the largest model).
    budget_fractions: list[float]
    budgets_mb: Optional[list[float]]
    claim_budget_fraction: float  # the budget the claims are judged at (the reference's 50 % level)
    timing: str  # model: load/run times from the cost model (deterministic) | measured (this machine)
    cost: GemelCostConfig
    n_timing: int  # measured: repetitions of each timing (median; their spread is reported)
    device: str


@dataclass
class GemelConfig:
    """Gemel (NSDI'23): merge identical layers across the workload's models, heaviest first."""

    target: float  # each model keeps >= target x its unmerged accuracy
    max_iterations: int  # merge trials (each = one joint retraining)
    init: str  # shared value starts from the first model's weights (reference) | mean
    steps: int  # joint retraining steps per trial
    batch_size: int  # images per model per step
    lr: float
    momentum: float
    weight_decay: float
    freeze_bn: bool  # BatchNorm running statistics frozen during the short retraining
    fast_depthwise_grad: bool  # exact, faster depthwise weight gradient on small maps (CPU)
    alpha: float  # loss weight w_i = min((target_i / acc_i)^alpha, max_weight)
    max_weight: float
    n_holdout: int  # train images held out for accept/reject (never retrained on)
    n_report: Optional[int]  # val images the final numbers are reported on (None = all)
    eval_batch_size: int
    decision: GemelDecisionConfig
    control: bool  # also retrain without merging (the control row)
    # The detector's targets: data (the split's boxes) | unmerged (the unmerged detector's own detections,
    # accuracy relative to the original model: real mode on images without boxes)
    detector_targets: str
    teacher_score: float  # unmerged targets: detections kept at this score or above
    teacher_max_boxes: int  # ... at most this many per image, highest scores first
    sim: GemelSimConfig


def _holdout_leaves_training(n, root) -> str | None:
    have = split_size(root, "train")
    return None if have is None or n < have else f"must be below the train split's {have} images (data.n_train)"


def _boxes_exist(targets, root) -> str | None:
    detector = any(m.get("task") == "detection" for m in root.workload.models)
    # without training images (data.train_root) the gemel stage is skipped, so nothing to check
    if targets == "data" and detector and root.data.name == "imagenet" and root.data.get("train_root"):
        return "data=imagenet has no boxes for the detector: use gemel.detector_targets=unmerged"
    return None


RULES: Table = [
    ("gemel.detector_targets", OneOf("data", "unmerged"), Check(_boxes_exist)),
    ("gemel.teacher_score", Interval(0, 1, open_high=True)),
    ("gemel.teacher_max_boxes", IntRange(1, 1000)),
    ("gemel.target", Interval(0, 1, open_low=True)),
    ("gemel.max_iterations", IntRange(1, 1000)),
    ("gemel.init", OneOf("first", "mean")),
    ("gemel.steps", IntRange(0, MAX_STEPS)),
    ("gemel.batch_size", IntRange(1, MAX_BATCH)),
    ("gemel.lr", Positive()),
    ("gemel.momentum", Interval(0, 1, open_high=True)),
    ("gemel.weight_decay", Interval(0)),
    ("gemel.alpha", Interval(0)),
    ("gemel.max_weight", Positive()),
    ("gemel.n_holdout", IntRange(1, MAX_COUNT), Check(_holdout_leaves_training)),
    ("gemel.n_report", OrNull(IntRange(1, MAX_COUNT))),
    ("gemel.eval_batch_size", IntRange(1, MAX_BATCH)),
    ("gemel.decision.n_classification", OrNull(IntRange(2, MAX_COUNT))),
    ("gemel.decision.n_detection", OrNull(IntRange(2, MAX_COUNT))),
    ("gemel.decision.n_weights", IntRange(1, MAX_COUNT)),
    ("gemel.decision.alpha", Interval(0, 0.5, open_low=True, open_high=True)),
    ("gemel.decision.n_boot", IntRange(100, MAX_RESAMPLES)),
    ("gemel.sim.fps", Interval(0, 1000, open_low=True)),
    ("gemel.sim.sla_ms", Interval(0, 3_600_000, open_low=True)),
    ("gemel.sim.duration_s", Interval(0, 86_400, open_low=True)),
    ("gemel.sim.batch_size", IntRange(1, MAX_BATCH)),
    ("gemel.sim.budget_fractions", NonEmpty(), Unique(), Each(Fraction())),
    ("gemel.sim.budgets_mb", OrNull(NonEmpty(), Unique(), Each(Positive()))),
    ("gemel.sim.claim_budget_fraction", Fraction()),
    ("gemel.sim.timing", OneOf("model", "measured")),
    ("gemel.sim.cost.load_gb_per_s", Positive()),
    ("gemel.sim.cost.tflops", Positive()),
    ("gemel.sim.cost.run_overhead_ms", Interval(0, 60_000)),
    ("gemel.sim.n_timing", IntRange(1, 1000)),
    ("gemel.sim.device", Device()),
]
