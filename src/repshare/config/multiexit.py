"""Config group ``multiexit`` (conf/multiexit/*.yaml): MEEdge part 1 -- branch zoo, survival,
self-/twin-merge, few-shot KD recovery."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from repshare.config.data import split_size
from repshare.config.limits import MAX_BATCH, MAX_COUNT, MAX_EPOCHS, MAX_RESAMPLES, MAX_SEED
from repshare.config.rules import (Check, Device, Each, Fraction, Interval, IntRange, Length, NonEmpty, OneOf, OrNull,
                                   Positive, Table, Unique, sibling)

CONV_TYPES = ("none", "dw", "dws", "spatial", "dilated")  # = repshare.multiexit.zoo.CONV_TYPES (tested)
KERNELS = (3, 5, 7)  # = repshare.multiexit.zoo.KERNELS (tested)
MAX_FC_WIDTH = 4096


@dataclass
class MultiExitConvConfig:
    type: str  # none | dw | dws | spatial | dilated
    kernel: Optional[int]  # 3 | 5 | 7 (None for type none)
    n: int  # conv layers 0..3


@dataclass
class MultiExitFeaturesConfig:
    n_train: int  # train images whose exit features are cached (branch training pool)
    n_holdout: int  # of those, held out from branch training for merge selection
    n_val: Optional[int]  # val (report) images for every accuracy shown (null: the whole val split)
    batch_size: int
    dtype: str
    n_select: Optional[int]  # select images cached for decisions (null: the whole select split)


@dataclass
class MultiExitZooConfig:
    convs: list[MultiExitConvConfig]
    fcs: list[list[int]]
    pool: int
    unfit: str  # skip | error


@dataclass
class MultiExitTrainConfig:
    epochs: float
    batch_size: int
    lr: float
    weight_decay: float


@dataclass
class MultiExitLatencyConfig:
    source: str  # flops (cost model, deterministic) | measured
    flops_per_s: float  # cost model: seconds = call_overhead_s + flops / flops_per_s
    call_overhead_s: float
    repeats: int  # measured: batch-1 timings, median of this many calls
    warmup: int


@dataclass
class MultiExitSurvivalConfig:
    scope: str  # global | per_exit


@dataclass
class MultiExitMergeConfig:
    range: list[float]
    max_evals: int
    include_output: bool
    twin_pairs: int


@dataclass
class MultiExitKDConfig:
    a: float
    b: float
    temperature: float
    fraction: float
    freeze_shared: bool
    epochs: float
    batch_size: int
    lr: float
    seeds: list[int]
    curve_branches: int
    curve_fractions: list[float]
    curve_seeds: int


@dataclass
class MultiExitConfig:
    """MEEdge part 1: branch zoo, survival, self-/twin-merge, few-shot KD recovery."""

    exits: list[int]
    device: str
    n_bootstrap: int  # bootstrap resamples of the claims' intervals
    features: MultiExitFeaturesConfig
    zoo: MultiExitZooConfig
    train: MultiExitTrainConfig
    latency: MultiExitLatencyConfig
    survival: MultiExitSurvivalConfig
    merge: MultiExitMergeConfig
    kd: MultiExitKDConfig


def _conv_shape(conv, root) -> str | None:
    if conv["type"] == "none":
        return None if conv["n"] == 0 and conv["kernel"] is None else "type none needs n 0 and kernel null"
    if conv["kernel"] not in KERNELS:
        return f"kernel must be {', '.join(map(str, KERNELS[:-1]))} or {KERNELS[-1]}"
    return None if 1 <= conv["n"] <= 3 else "n (conv layers) must be in 1..3"


def _fc_widths(widths, root) -> str | None:
    ok = len(widths) <= 2 and all(isinstance(w, int) and 1 <= w <= MAX_FC_WIDTH for w in widths)
    return None if ok else f"each entry: 0..2 hidden widths in 1..{MAX_FC_WIDTH} (1..3 FC layers)"


def _cached_train_images(n, root) -> str | None:
    have = split_size(root, "train")
    return None if have is None or n <= have else f"the train split has only {have} images (data.n_train)"


def _holdout_below_cache(n, root, key) -> str | None:
    cached = sibling(root, key, "n_train")
    if n >= cached:
        return f"must be in [0, n_train={cached}) (the rest trains the branches)"
    if n == 0 and split_size(root, "select") == 0:
        return "must be > 0 when the data has no select split (data.n_select: 0): decisions need images of their own"
    return None


def _ordered_range(r, root) -> str | None:
    return None if r[0] <= r[1] else "must be [lo, hi] with lo <= hi"


RULES: Table = [
    ("multiexit.exits", NonEmpty(), Unique(), Each(IntRange(1, 64))),
    ("multiexit.device", Device()),
    ("multiexit.n_bootstrap", IntRange(100, MAX_RESAMPLES)),
    ("multiexit.features.n_train", IntRange(1, MAX_COUNT), Check(_cached_train_images)),
    ("multiexit.features.n_holdout", IntRange(0, MAX_COUNT), Check(_holdout_below_cache)),
    ("multiexit.features.n_val", OrNull(IntRange(1, MAX_COUNT))),
    ("multiexit.features.batch_size", IntRange(1, MAX_BATCH)),
    ("multiexit.features.dtype", OneOf("float16", "float32")),
    ("multiexit.features.n_select", OrNull(IntRange(1, MAX_COUNT))),
    ("multiexit.zoo.convs", NonEmpty(), Unique()),
    ("multiexit.zoo.convs[*].type", OneOf(*CONV_TYPES)),
    ("multiexit.zoo.convs[*]", Check(_conv_shape)),
    ("multiexit.zoo.fcs", NonEmpty(), Unique(), Each(Check(_fc_widths))),
    ("multiexit.zoo.pool", IntRange(1, 64)),
    ("multiexit.zoo.unfit", OneOf("skip", "error")),
    ("multiexit.train.epochs", Interval(0, MAX_EPOCHS, open_low=True)),
    ("multiexit.train.batch_size", IntRange(1, MAX_BATCH)),
    ("multiexit.train.lr", Positive()),
    ("multiexit.train.weight_decay", Interval(0)),
    ("multiexit.latency.source", OneOf("flops", "measured")),
    ("multiexit.latency.flops_per_s", Positive()),
    ("multiexit.latency.call_overhead_s", Interval(0, 1, open_high=True)),
    ("multiexit.latency.repeats", IntRange(1, MAX_RESAMPLES)),
    ("multiexit.latency.warmup", IntRange(0, MAX_RESAMPLES)),
    ("multiexit.survival.scope", OneOf("global", "per_exit")),
    ("multiexit.merge.range", Length(2), Each(Interval(0, 0.5)), Check(_ordered_range)),
    ("multiexit.merge.max_evals", IntRange(1, 1000)),
    ("multiexit.merge.twin_pairs", IntRange(0, 1000)),
    ("multiexit.kd.a", Fraction()),
    ("multiexit.kd.b", Interval(0)),
    ("multiexit.kd.temperature", Positive()),
    ("multiexit.kd.fraction", Interval(0, 1, open_low=True)),
    ("multiexit.kd.epochs", Interval(0, MAX_EPOCHS, open_low=True)),
    ("multiexit.kd.batch_size", IntRange(1, MAX_BATCH)),
    ("multiexit.kd.lr", Positive()),
    ("multiexit.kd.seeds", Length(1, 100), Unique(), Each(IntRange(0, MAX_SEED))),
    ("multiexit.kd.curve_branches", IntRange(0, 1000)),
    ("multiexit.kd.curve_fractions", NonEmpty(), Unique(), Each(Interval(0, 1, open_low=True))),
    ("multiexit.kd.curve_seeds", IntRange(1, 100)),
]
