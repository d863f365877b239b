"""Typed schema of the pipeline config.

The YAML tree under ``conf/`` is plain Hydra (so DVC's own Hydra composition can read it without
importing this package); these dataclasses are the schema every entry point validates against.
``validate_config`` merges a composed config into the schema, so a misspelt key or a wrong type
fails at start-up with the key named, not halfway through a training run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from repshare.models.weights import resolve_weights

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


class ConfigError(ValueError):
    """A config value is missing, misspelt, of the wrong type or out of range."""


# --------------------------------------------------------------------------- data sources
@dataclass
class ShapesDataConfig:
    """Embedded default: synthetic images of geometric shapes (classification + boxes)."""

    _target_: str = "repshare.data.shapes.ShapesSource"
    name: str = "shapes"
    image_size: int = 64
    n_train: int = 16000
    n_val: int = 1000
    num_classes: int = 8
    max_objects: int = 3  # objects per image (the largest one gives the class label)
    n_distractors: int = 4  # small clutter that is not an object
    difficulty: float = 0.5  # 0 = plain, 1 = heavy texture, low contrast, small objects
    shard_size: int = 2048
    seed: int = 0


@dataclass
class ImageNetDataConfig:
    """ILSVRC2012-style validation set: class subfolders, or a flat folder + val.txt + synsets."""

    _target_: str = "repshare.data.imagenet.ImageNetSource"
    name: str = "imagenet"
    root: str = MISSING
    val_txt: Optional[str] = None  # "<file> <label>" per line; None = class subfolders
    synsets: Optional[str] = None  # one wnid per line, index = label
    image_size: int = 224
    crop_pct: float = 0.875
    max_images: Optional[int] = None
    skip_missing: bool = False  # listed images not on disk: skip and count them instead of failing
    calibration_images: int = 0  # > 0: a seeded `calib` split of that many images, taken out of val
    num_classes: int = 1000
    shard_size: int = 2048
    seed: int = 0


@dataclass
class CocoDataConfig:
    """COCO-style detection set: an image folder plus an instances json."""

    _target_: str = "repshare.data.coco.CocoSource"
    name: str = "coco"
    images_dir: str = MISSING
    annotations: str = MISSING
    image_size: int = 512
    max_images: Optional[int] = None
    skip_missing: bool = False  # listed images not on disk: skip and count them instead of failing
    num_classes: int = 90
    shard_size: int = 1024
    seed: int = 0


DATA_SCHEMAS: dict[str, type] = {
    "shapes": ShapesDataConfig,
    "imagenet": ImageNetDataConfig,
    "coco": CocoDataConfig,
}


# --------------------------------------------------------------------------- models
@dataclass
class ClassifierConfig:
    _target_: str = "repshare.models.classifier.build_classifier"
    arch: str = "efficientnet_b0"
    num_classes: int = 8
    weights: Optional[str] = None  # random | pretrained | checkpoint | trained; null: from pretrained/checkpoint_path
    pretrained: bool = False
    checkpoint_path: Optional[str] = None
    input_size: Optional[int] = 64  # None: the pretrained config's resolution
    interpolation: Optional[str] = None  # None: the pretrained config's (bilinear/bicubic/...)
    mean: Optional[list[float]] = None  # None: the pretrained config's
    std: Optional[list[float]] = None
    drop_rate: float = 0.1
    drop_path_rate: float = 0.0


@dataclass
class DetectorConfig:
    _target_: str = "repshare.models.detector.build_detector"
    arch: str = "efficientdet_d0"
    num_classes: int = 8
    weights: Optional[str] = None  # random | pretrained | checkpoint | trained; null: from pretrained/checkpoint_path
    pretrained: bool = False
    checkpoint_path: Optional[str] = None
    image_size: int = 128  # effdet needs a multiple of 2**max_level = 128
    init_backbone_from_classifier: bool = True
    mean: Optional[list[float]] = None
    std: Optional[list[float]] = None
    max_det_per_image: int = 100


@dataclass
class ModelConfig:
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    classifier_color: ClassifierConfig = field(default_factory=ClassifierConfig)  # third workload model (Gemel)


# --------------------------------------------------------------------------- training
@dataclass
class OptimConfig:
    epochs: int = 10
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 0.5
    label_smoothing: float = 0.0
    augment: bool = True
    num_workers: int = 0
    limit_train_batches: Optional[float] = None  # int = batches per epoch, float = fraction
    checkpoint_every_n_steps: int = 0  # resume state also every N optimiser steps (0: at epoch ends only)
    fast_depthwise_grad: bool = True  # small-map depthwise weight gradient (repshare.models.fast_depthwise)
    validate_every_epoch: bool = True  # Lightning's validation at each epoch end (the stage evaluates at the end anyway)


@dataclass
class TrainConfig:
    classifier: OptimConfig = field(default_factory=OptimConfig)
    detector: OptimConfig = field(default_factory=OptimConfig)
    classifier_color: OptimConfig = field(default_factory=OptimConfig)


@dataclass
class TrainerConfig:
    """Keyword arguments of ``pytorch_lightning.Trainer`` that the presets set."""

    _target_: str = "pytorch_lightning.Trainer"
    accelerator: str = "cpu"
    devices: Any = 1
    precision: str = "32-true"
    deterministic: bool = True
    enable_progress_bar: bool = True
    log_every_n_steps: int = 10
    fast_dev_run: bool = False
    num_sanity_val_steps: int = 0
    enable_model_summary: bool = False


@dataclass
class LoggerConfig:
    wandb_mode: str = "offline"  # offline | online | disabled
    project: str = "repshare"
    entity: Optional[str] = None
    dir: str = "results/wandb"


# --------------------------------------------------------------------------- analysis stages
@dataclass
class CaptureConfig:
    n_samples: int = 1000
    batch_size: int = 100
    split: str = "val"
    shared_input_size: Optional[int] = None  # set: both models see this resolution
    classifier_input_size: Optional[int] = None  # None: the classifier's input_size
    detector_input_size: Optional[int] = None  # None: the detector's image_size
    device: str = "auto"
    # Input protocols (issue 12): per_model = each model at its own resolution/normalisation;
    # shared = the detector's backbone gets the classifier's input. The first one feeds cka.json.
    protocols: list[str] = field(default_factory=lambda: ["per_model", "shared"])


@dataclass
class CKAConfig:
    estimator: str = "minibatch_unbiased"  # minibatch_unbiased | minibatch_biased
    kernel: str = "linear"  # linear | rbf
    rbf_threshold: float = 0.5
    dtype: str = "float64"  # accumulation precision of the HSIC sums


@dataclass
class SharingConfig:
    resize_method: str = "bilinear"  # nearest | bilinear | bicubic | area | adaptive_avg
    channel_seed: int = 0
    batch_size: int = 100
    n_eval: Optional[int] = None  # None: the whole val split
    forward_chunk: Optional[int] = None  # images per forward pass inside a batch (None: the whole batch)
    device: str = "auto"
    # Fitted adapters (issue 12): calibration images, unlabelled except for the supervised adapter.
    calibration_split: str = "train"
    n_calibration: int = 256
    calibration_batch_size: int = 64
    # merges beyond the paper's (other adapters, the shared protocol) are scored on the first
    # n_eval_variants val images (None: all n_eval); the paper's setting always uses all of them.
    n_eval_variants: Optional[int] = 100


@dataclass
class ResampleAdapterConfig:
    labels: bool = False


@dataclass
class MomentsAdapterConfig:
    labels: bool = False
    eps: float = 1e-5


@dataclass
class LstsqAdapterConfig:
    labels: bool = False
    ridge: float = 1e-3  # relative to the mean feature variance; 0 = ordinary least squares
    max_pixels_per_image: Optional[int] = 64


@dataclass
class TrainedAdapterConfig:
    labels: bool = False
    steps: int = 30
    batch_size: int = 16
    lr: float = 3e-3
    temperature: float = 1.0
    same_stage: bool = True
    top_k_cross: int = 1
    protocols: list[str] = field(default_factory=lambda: ["per_model"])  # subset of capture.protocols


@dataclass
class AdapterConfig:
    """Config group ``adapter``: one entry per adapter to run (choose several: adapter=[resample,lstsq])."""

    resample: Optional[ResampleAdapterConfig] = None
    moments: Optional[MomentsAdapterConfig] = None
    lstsq: Optional[LstsqAdapterConfig] = None
    distill: Optional[TrainedAdapterConfig] = None
    supervised: Optional[TrainedAdapterConfig] = None


@dataclass
class AnalysisConfig:
    n_bootstrap: int = 2000
    ci: float = 0.95
    collapse_drop: float = 0.5  # accuracy below this fraction of the best pair counts as collapsed
    paper_r: dict[str, float] = field(
        default_factory=lambda: {
            "same_stage_S": 0.94,
            "cross_stage_S": 0.99,
            "params": 0.89,
            "size": 0.33,
            "flops": 0.0021,
        }
    )
    # Sharing-point search (issue 12): budgets as fractions of the classifier's bytes.
    budget_fracs: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    accuracy_floor: Optional[float] = None  # minimum agreement with the unmerged classifier (label-free)


@dataclass
class WorkloadModelConfig:
    name: str = MISSING
    task: str = "classification"  # classification | detection
    metric: str = "top1"  # top1 | mAP
    label: str = "labels"  # classifiers: which per-image label (labels | color_labels)
    init_from: Optional[str] = None  # classifiers: warm-start from this workload model's trained weights


@dataclass
class WorkloadConfig:
    """The models that run together on the edge box; every method reads this list."""

    name: str = "embedded"
    models: list[WorkloadModelConfig] = field(default_factory=list)


@dataclass
class GemelSimConfig:
    """The edge box's GPU time-sharing simulation (frames processed vs memory budget)."""

    fps: float = 30.0  # frame rate of every model's stream
    sla_ms: float = 100.0  # a frame not processed within this long after it arrives is dropped
    duration_s: float = 10.0  # simulated stream length
    batch_size: int = 4  # frames a model takes per turn
    # Memory budgets swept: fractions between the largest model (0) and the whole unmerged workload (1),
    # or absolute MB (budgets_mb, set: wins; each must hold the largest model).
    budget_fractions: list[float] = field(default_factory=lambda: [0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    budgets_mb: Optional[list[float]] = None
    load_ms: Optional[dict[str, float]] = None  # per model; None = measured here (read weights + copy to device)
    run_ms: Optional[dict[str, float]] = None  # per model and frame; None = measured here
    n_timing: int = 5  # repetitions of each timing (median)
    device: str = "auto"


@dataclass
class GemelConfig:
    """Gemel (NSDI'23): merge identical layers across the workload's models, heaviest first."""

    target: float = 0.95  # each model keeps >= target x its unmerged accuracy
    max_iterations: int = 3  # merge trials (each = one joint retraining)
    init: str = "first"  # shared value starts from the first model's weights (reference) | mean
    steps: int = 15  # joint retraining steps per trial
    batch_size: int = 8  # images per model per step
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5.0e-4
    freeze_bn: bool = True  # BatchNorm running statistics frozen during the short retraining
    fast_depthwise_grad: bool = True  # exact, faster depthwise weight gradient on small maps (CPU)
    alpha: float = 0.75  # loss weight w_i = min((target_i / acc_i)^alpha, max_weight)
    max_weight: float = 10.0
    n_holdout: int = 200  # train images held out for accept/reject (never retrained on)
    n_report: Optional[int] = 400  # val images the final numbers are reported on (None = all)
    eval_batch_size: int = 50
    sim: GemelSimConfig = field(default_factory=GemelSimConfig)


@dataclass
class CompareConfig:
    """The comparison stage: which method folders hold rows/sections, how rows are scored."""

    # method key -> folder under results/ with comparison_rows.json (and section.json)
    methods: dict[str, str] = field(default_factory=lambda: {
        "cka_sharing": "cka_sharing", "gemel": "gemel", "meedge": "multiexit", "meedge_placement": "placement"})
    # method key -> folder with a section.json only (no memory rows)
    sections_only: dict[str, str] = field(default_factory=lambda: {"concurrency": "concurrency"})
    accuracy_kept: str = "min"  # min | mean of accuracy_rel over the workload's models
    keep_target: float = 0.95  # "keeps accuracy" = accuracy kept >= this (per-method best setting)


@dataclass
class ReportConfig:
    """The reviewer dashboard (results/report/)."""

    title: str = "repshare: memory sharing between co-located vision models"
    strict: bool = False  # true: any problem shown on the dashboard also fails the stage (CI)


@dataclass
class MultiExitConvConfig:
    type: str = "none"  # none | dw | dws | spatial | dilated
    kernel: Optional[int] = None  # 3 | 5 | 7 (None for type none)
    n: int = 0  # conv layers 0..3


@dataclass
class MultiExitFeaturesConfig:
    n_train: int = 2000  # train images whose exit features are cached (branch training pool)
    n_holdout: int = 400  # of those, held out from branch training for merge selection
    n_val: Optional[int] = None
    batch_size: int = 250
    dtype: str = "float16"


@dataclass
class MultiExitZooConfig:
    convs: list[MultiExitConvConfig] = field(default_factory=lambda: [MultiExitConvConfig()])
    fcs: list[list[int]] = field(default_factory=lambda: [[]])
    pool: int = 4
    unfit: str = "skip"  # skip | error


@dataclass
class MultiExitTrainConfig:
    epochs: float = 3.0
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0


@dataclass
class MultiExitLatencyConfig:
    repeats: int = 30
    warmup: int = 3


@dataclass
class MultiExitSurvivalConfig:
    scope: str = "global"  # global | per_exit


@dataclass
class MultiExitMergeConfig:
    range: list[float] = field(default_factory=lambda: [1 / 3, 0.5])
    max_evals: int = 7
    include_output: bool = False
    twin_pairs: int = 3


@dataclass
class MultiExitKDConfig:
    a: float = 0.5
    b: float = 1.0
    temperature: float = 1.0
    fraction: float = 0.2
    freeze_shared: bool = False
    epochs: float = 8.0
    batch_size: int = 64
    lr: float = 1e-3
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    curve_branches: int = 3
    curve_fractions: list[float] = field(default_factory=lambda: [0.1, 0.2, 1 / 3, 5 / 12, 0.5, 0.75, 1.0])
    curve_seeds: int = 1


@dataclass
class MultiExitConfig:
    """MEEdge part 1: branch zoo, survival, self-/twin-merge, few-shot KD recovery."""

    exits: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5, 6])
    device: str = "auto"
    features: MultiExitFeaturesConfig = field(default_factory=MultiExitFeaturesConfig)
    zoo: MultiExitZooConfig = field(default_factory=MultiExitZooConfig)
    train: MultiExitTrainConfig = field(default_factory=MultiExitTrainConfig)
    latency: MultiExitLatencyConfig = field(default_factory=MultiExitLatencyConfig)
    survival: MultiExitSurvivalConfig = field(default_factory=MultiExitSurvivalConfig)
    merge: MultiExitMergeConfig = field(default_factory=MultiExitMergeConfig)
    kd: MultiExitKDConfig = field(default_factory=MultiExitKDConfig)


@dataclass
class PlacementSimConfig:
    """MEEdge part 2: the device-server memory-elastic loop over a trace of memory budgets."""

    rate_mbps: float = 85.0  # transfer rate R (paper: ~85 Mbit/s Wi-Fi)
    request_bits: int = 64  # the device's (latency budget, memory budget) message
    search_s: float = 0.05  # L_search the server spends per placement (charged to the adaptation time)
    window_s: float = 2.0  # time between budget changes
    # budgets of the trace as fractions of M_full (8 windows = 7 changes, as in the paper's Fig. 9(b))
    trace_fractions: list[float] = field(default_factory=lambda: [1.0, 0.35, 0.1, 0.5, 0.05, 0.75, 0.2, 0.02])
    deadline_factor: float = 0.8  # finite-time mode: deadline = factor x single-exit inference time


@dataclass
class PlacementBaselinesConfig:
    """The paper's baselines, trained by part 1's code on part 1's cached exit features."""

    train: bool = True  # false: only the single-exit baseline (needs no training)
    reuse_zoo: bool = True  # a baseline branch part 1's zoo already trained (same spec) is reused, not retrained
    seeds: list[int] = field(default_factory=lambda: [0])
    pool: int = 4
    spinn_fractions: list[float] = field(default_factory=lambda: [0.15, 0.30, 0.45, 0.60, 0.75, 0.90])
    spinn_conv: str = "dws"
    spinn_kernel: int = 3
    branchynet_exits: list[int] = field(default_factory=lambda: [2, 4])
    branchynet_conv: str = "dws"
    branchynet_kernel: int = 3
    branchynet_n_conv: int = 1
    branchynet_fc: list[int] = field(default_factory=lambda: [128])


@dataclass
class PlacementConfig:
    """MEEdge part 2: HPF branch placement (Alg. 1, 2), memory-elastic inference, baselines."""

    model_name: str = "classifier"  # workload model the multi-exit network is built on
    candidates: str = "both"  # both | original | merged: which versions of survivors are candidates
    bytes_per_param: int = 4
    max_per_exit: Optional[int] = 1  # branches per exit point (null: any number)
    return_best: bool = False  # anytime answer: last exit finished (false) | best so far (true)
    horizon_factor: float = 1.5  # mAE horizon T = factor x single-exit inference time
    horizon_factors: list[float] = field(default_factory=lambda: [1.1, 1.25, 1.5, 2.0, 3.0])
    budget_fractions: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0])
    variant: str = "m7"  # MEEdge's own priority (the trace, the claims)
    variants: list[str] = field(default_factory=lambda: ["m0", "m1", "m2", "m3", "m4", "m5", "m6", "m7"])
    search_time_s: Optional[float] = None  # wall-clock cap of one DFS (null: none; results then reproducible)
    node_budget: Optional[int] = 2000  # DFS nodes per placement (deterministic search budget)
    prune_nonimproving: bool = True  # Alg. 2 line 12: expand a child only if it raises the value
    mc_samples: int = 48
    mc_seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    exact_max_candidates: int = 60  # exact optimum only up to this many candidates
    exact_node_limit: int = 2_000_000
    n_bootstrap: int = 500  # parametric bootstrap of exit accuracies (binomial on the val size)
    simulation: PlacementSimConfig = field(default_factory=PlacementSimConfig)
    baselines: PlacementBaselinesConfig = field(default_factory=PlacementBaselinesConfig)


@dataclass
class ConcurrencyGeneratorConfig:
    """Random-graph generator constants (ER/BA/WS: RandWire's; DP: Eq. 1, not given in the paper)."""

    er_p: float = 0.2
    ba_m: int = 5
    ws_k: int = 4
    ws_p: float = 0.75
    dp_alpha: float = 1.0
    dp_beta: float = 1.0
    dp_p: float = 0.5


@dataclass
class ConcurrencyNetworkConfig:
    base_channels: int = 16
    max_channels: int = 128
    image_size: int = 32
    min_resolution: int = 4
    stage_prob: float = 0.5  # probabilistic staging (paper: 0.5)


@dataclass
class ConcurrencyLatencyConfig:
    unit_flops_per_s: float = 2.0e9
    bandwidth_bytes_per_s: float = 1.25e8  # 1 Gbit/s edge LAN
    message_latency_s: float = 5.0e-4


@dataclass
class ConcurrencyProxyConfig:
    archs_per_generator: int = 2
    n_vertices: int = 10
    base_channels: int = 8
    max_channels: int = 32
    steps: int = 60
    batch_size: int = 16
    lr: float = 3.0e-3
    n_train: int = 4000
    n_eval: int = 500


@dataclass
class ConcurrencyDPSweepConfig:
    betas: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    alphas: list[float] = field(default_factory=lambda: [1.0])
    n_vertices: int = 40
    n_units: int = 4
    graphs: int = 4


@dataclass
class ConcurrencyConfig:
    """Concurrency score (Hadidi et al., EDGE 2023): generated and workload architectures."""

    generators: list[str] = field(default_factory=lambda: ["er", "ba", "ws", "dp"])
    n_vertices: list[int] = field(default_factory=lambda: [40, 80])
    n_units: list[int] = field(default_factory=lambda: [4, 6, 8, 10])
    epsilons: list[float] = field(default_factory=lambda: [0.03, 0.1, 0.3])
    graphs_per_generator: int = 8  # per vertex count; the paper samples 1000
    staging_samples: int = 40  # Table IV: graphs per generator and staging (parameters only)
    grouping_units: list[int] = field(default_factory=lambda: [2, 3, 4, 6, 8])
    exponents: list[float] = field(default_factory=lambda: [1.0, 1.5, 1.0])  # a, b, c of Eq. 4
    seed: int = 0
    score_workload: bool = True
    generator: ConcurrencyGeneratorConfig = field(default_factory=ConcurrencyGeneratorConfig)
    network: ConcurrencyNetworkConfig = field(default_factory=ConcurrencyNetworkConfig)
    latency: ConcurrencyLatencyConfig = field(default_factory=ConcurrencyLatencyConfig)
    proxy: ConcurrencyProxyConfig = field(default_factory=ConcurrencyProxyConfig)
    dp_sweep: ConcurrencyDPSweepConfig = field(default_factory=ConcurrencyDPSweepConfig)


@dataclass
class PathsConfig:
    data_dir: str = "data"
    results_dir: str = "results"


@dataclass
class RepshareConfig:
    experiment_name: str = "embedded"
    seed: int = 0
    paths: PathsConfig = field(default_factory=PathsConfig)
    data: Any = MISSING  # validated against DATA_SCHEMAS[data.name]
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    cka: CKAConfig = field(default_factory=CKAConfig)
    sharing: SharingConfig = field(default_factory=SharingConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    gemel: GemelConfig = field(default_factory=GemelConfig)
    multiexit: MultiExitConfig = field(default_factory=MultiExitConfig)
    placement: PlacementConfig = field(default_factory=PlacementConfig)
    concurrency: ConcurrencyConfig = field(default_factory=ConcurrencyConfig)


def register_configs() -> None:
    """Register the schema in Hydra's ConfigStore (for users extending configs in Python)."""
    cs = ConfigStore.instance()
    cs.store(name="repshare_schema", node=RepshareConfig)
    for name, schema in DATA_SCHEMAS.items():
        cs.store(group="data", name=f"{name}_schema", node=schema)
    cs.store(group="model/classifier", name="classifier_schema", node=ClassifierConfig)
    cs.store(group="model/detector", name="detector_schema", node=DetectorConfig)
    cs.store(group="trainer", name="trainer_schema", node=TrainerConfig)
    cs.store(group="logger", name="logger_schema", node=LoggerConfig)


register_configs()

# Allowed values of the enumerated string settings, checked after the type merge.
CHOICES: dict[str, tuple[str, ...]] = {
    "logger.wandb_mode": ("offline", "online", "disabled"),
    "cka.estimator": ("minibatch_unbiased", "minibatch_biased"),
    "cka.kernel": ("linear", "rbf"),
    "cka.dtype": ("float32", "float64"),
    "sharing.resize_method": ("nearest", "bilinear", "bicubic", "area", "adaptive_avg"),
    "capture.split": ("train", "val"),
    "compare.accuracy_kept": ("min", "mean"),
    "sharing.calibration_split": ("train", "val", "calib"),
    "gemel.init": ("first", "mean"),
    "multiexit.features.dtype": ("float16", "float32"),
    "multiexit.zoo.unfit": ("skip", "error"),
    "multiexit.survival.scope": ("global", "per_exit"),
}

POSITIVE: tuple[str, ...] = (
    "data.image_size",
    "data.shard_size",
    "data.num_classes",
    "model.classifier.num_classes",
    "model.detector.num_classes",
    "model.detector.image_size",
    "train.classifier.epochs",
    "train.classifier.batch_size",
    "train.detector.epochs",
    "train.detector.batch_size",
    "capture.n_samples",
    "capture.batch_size",
    "sharing.batch_size",
    "sharing.n_calibration",
    "sharing.calibration_batch_size",
    "analysis.n_bootstrap",
    "gemel.max_iterations",
    "gemel.batch_size",
    "gemel.eval_batch_size",
    "gemel.n_holdout",
    "gemel.lr",
    "gemel.max_weight",
    "gemel.sim.fps",
    "gemel.sim.sla_ms",
    "gemel.sim.duration_s",
    "gemel.sim.batch_size",
    "gemel.sim.n_timing",
    "multiexit.features.n_train",
    "multiexit.features.batch_size",
    "multiexit.zoo.pool",
    "multiexit.train.epochs",
    "multiexit.train.batch_size",
    "multiexit.train.lr",
    "multiexit.latency.repeats",
    "multiexit.merge.max_evals",
    "multiexit.kd.epochs",
    "multiexit.kd.batch_size",
    "multiexit.kd.lr",
    "multiexit.kd.temperature",
)


def _check(ok: bool, key: str, value: Any, why: str) -> None:
    if not ok:
        raise ConfigError(f"config value {key}={value!r} is invalid: {why}")


def _check_multiexit(merged: DictConfig) -> None:
    """MEEdge part 1 ranges the type merge cannot express."""
    m = merged.multiexit
    exits = list(m.exits)
    _check(len(exits) > 0 and len(set(exits)) == len(exits), "multiexit.exits", exits, "must be distinct and non-empty")
    _check(all(e >= 1 for e in exits), "multiexit.exits", exits, "exit indices start at 1 (after block stage 1)")
    f = m.features
    _check(0 <= f.n_holdout < f.n_train, "multiexit.features.n_holdout", f.n_holdout, "must be in [0, n_train)")
    _check(f.n_val is None or f.n_val > 0, "multiexit.features.n_val", f.n_val, "must be > 0 or null")
    for k, c in enumerate(m.zoo.convs):
        key = f"multiexit.zoo.convs[{k}]"
        _check(c.type in ("none", "dw", "dws", "spatial", "dilated"), f"{key}.type", c.type,
               "must be one of none, dw, dws, spatial, dilated")
        if c.type == "none":
            _check(c.n == 0 and c.kernel is None, key, dict(c), "type none needs n 0 and kernel null")
        else:
            _check(c.kernel in (3, 5, 7), f"{key}.kernel", c.kernel, "must be 3, 5 or 7")
            _check(1 <= c.n <= 3, f"{key}.n", c.n, "must be in 1..3")
    _check(len(m.zoo.convs) > 0, "multiexit.zoo.convs", list(m.zoo.convs), "must not be empty")
    fcs = [list(x) for x in m.zoo.fcs]
    _check(len(fcs) > 0 and all(len(x) <= 2 and all(w >= 1 for w in x) for x in fcs), "multiexit.zoo.fcs", fcs,
           "each entry: 0..2 hidden widths >= 1 (1..3 FC layers)")
    r = list(m.merge.range)
    _check(len(r) == 2 and 0.0 <= r[0] <= r[1] <= 0.5, "multiexit.merge.range", r,
           "must be [lo, hi] with 0 <= lo <= hi <= 1/2")
    _check(m.merge.twin_pairs >= 0, "multiexit.merge.twin_pairs", m.merge.twin_pairs, "must be >= 0")
    kd = m.kd
    _check(0.0 < kd.fraction <= 1.0, "multiexit.kd.fraction", kd.fraction, "must be in (0, 1]")
    _check(0.0 <= kd.a <= 1.0, "multiexit.kd.a", kd.a, "must be in [0, 1]")
    _check(kd.b >= 0.0, "multiexit.kd.b", kd.b, "must be >= 0")
    _check(len(kd.seeds) > 0, "multiexit.kd.seeds", list(kd.seeds), "must not be empty")
    _check(kd.curve_branches >= 0 and kd.curve_seeds >= 1, "multiexit.kd.curve_branches/curve_seeds",
           (kd.curve_branches, kd.curve_seeds), "must be >= 0 and >= 1")
    cf = list(kd.curve_fractions)
    _check(all(0.0 <= x <= 1.0 for x in cf), "multiexit.kd.curve_fractions", cf, "must be in [0, 1]")


def _check_placement(merged: DictConfig) -> None:
    """MEEdge part 2 ranges (the placement stage re-checks budgets against the candidates)."""
    p = merged.placement
    _check(p.candidates in ("both", "original", "merged"), "placement.candidates", p.candidates,
           "must be one of both, original, merged")
    _check(p.bytes_per_param > 0, "placement.bytes_per_param", p.bytes_per_param, "must be > 0")
    _check(p.max_per_exit is None or p.max_per_exit >= 1, "placement.max_per_exit", p.max_per_exit, "must be >= 1 or null")
    _check(p.horizon_factor > 0, "placement.horizon_factor", p.horizon_factor, "must be > 0")
    hf = list(p.horizon_factors)
    _check(all(h > 0 for h in hf), "placement.horizon_factors", hf, "must all be > 0")
    bf = list(p.budget_fractions)
    _check(len(bf) > 0 and all(b > 0 for b in bf), "placement.budget_fractions", bf,
           "must be a non-empty list of fractions > 0 (a memory budget of 0 or less is no budget)")
    variants = ("m0", "m1", "m2", "m3", "m4", "m5", "m6", "m7")
    _check(p.variant in variants, "placement.variant", p.variant, f"must be one of {', '.join(variants)}")
    bad = [v for v in p.variants if v not in variants]
    _check(not bad, "placement.variants", list(p.variants), f"{bad[0] if bad else ''!r} is not one of {', '.join(variants)}")
    _check(p.search_time_s is None or p.search_time_s > 0, "placement.search_time_s", p.search_time_s,
           "must be > 0 seconds or null")
    _check(p.node_budget is None or p.node_budget > 0, "placement.node_budget", p.node_budget, "must be > 0 or null")
    _check(p.mc_samples >= 1 and len(p.mc_seeds) > 0, "placement.mc_samples/mc_seeds", (p.mc_samples, list(p.mc_seeds)),
           "need >= 1 sample and >= 1 seed")
    _check(p.exact_max_candidates >= 0 and p.exact_node_limit > 0, "placement.exact_max_candidates/exact_node_limit",
           (p.exact_max_candidates, p.exact_node_limit), "must be >= 0 and > 0")
    _check(p.n_bootstrap >= 0, "placement.n_bootstrap", p.n_bootstrap, "must be >= 0")
    s = p.simulation
    _check(s.rate_mbps > 0, "placement.simulation.rate_mbps", s.rate_mbps, "must be > 0")
    _check(s.request_bits >= 0, "placement.simulation.request_bits", s.request_bits, "must be >= 0")
    _check(s.search_s >= 0, "placement.simulation.search_s", s.search_s, "must be >= 0 seconds")
    _check(s.window_s > 0, "placement.simulation.window_s", s.window_s, "must be > 0")
    tf = list(s.trace_fractions)
    _check(len(tf) > 0 and all(f > 0 for f in tf), "placement.simulation.trace_fractions", tf,
           "must be a non-empty list of budget fractions > 0")
    _check(s.deadline_factor > 0, "placement.simulation.deadline_factor", s.deadline_factor, "must be > 0")
    b = p.baselines
    _check(len(b.seeds) > 0, "placement.baselines.seeds", list(b.seeds), "must not be empty")
    _check(b.pool >= 1, "placement.baselines.pool", b.pool, "must be >= 1")
    sf = list(b.spinn_fractions)
    _check(len(sf) > 0 and all(0 < f < 1 for f in sf), "placement.baselines.spinn_fractions", sf, "must be in (0, 1)")
    _check(len(b.branchynet_exits) > 0, "placement.baselines.branchynet_exits", list(b.branchynet_exits),
           "must not be empty")


def _check_concurrency(merged: DictConfig) -> None:
    c = merged.concurrency
    gens = ("er", "ba", "ws", "dp")
    _check(len(c.generators) > 0, "concurrency.generators", list(c.generators), "must not be empty")
    for g in c.generators:
        _check(g in gens, "concurrency.generators", g, f"unknown generator; choose from {', '.join(gens)}")
    nv = list(c.n_vertices)
    _check(len(nv) > 0 and all(v >= 2 for v in nv), "concurrency.n_vertices", nv, "vertices must be >= 2")
    nu = list(c.n_units)
    _check(len(nu) > 0 and all(n >= 2 for n in nu), "concurrency.n_units", nu, "units must be >= 2")
    _check(max(nu) <= min(nv), "concurrency.n_units", nu, f"must not exceed the vertex count {min(nv)}")
    eps = list(c.epsilons)
    _check(len(eps) > 0 and all(e > 0 for e in eps), "concurrency.epsilons", eps, "must be > 0")
    _check(c.graphs_per_generator >= 2, "concurrency.graphs_per_generator", c.graphs_per_generator, "must be >= 2")
    _check(c.staging_samples >= 2, "concurrency.staging_samples", c.staging_samples, "must be >= 2")
    gu = list(c.grouping_units)
    _check(all(n >= 1 for n in gu), "concurrency.grouping_units", gu, "must be >= 1")
    _check(len(c.exponents) == 3 and all(e >= 0 for e in c.exponents), "concurrency.exponents",
           list(c.exponents), "must be three numbers >= 0 (a, b, c)")
    g = c.generator
    for key in ("er_p", "ws_p", "dp_p"):
        _check(0.0 <= g[key] <= 1.0, f"concurrency.generator.{key}", g[key], "a probability must be in [0, 1]")
    _check(g.dp_alpha >= 0, "concurrency.generator.dp_alpha", g.dp_alpha, "must be >= 0")
    _check(g.dp_beta >= 0, "concurrency.generator.dp_beta", g.dp_beta, "must be >= 0")
    _check(1 <= g.ba_m < min(nv), "concurrency.generator.ba_m", g.ba_m, f"must be in [1, {min(nv)})")
    _check(g.ws_k >= 2 and g.ws_k % 2 == 0 and g.ws_k < min(nv), "concurrency.generator.ws_k", g.ws_k,
           f"must be even, >= 2 and below {min(nv)}")
    n = c.network
    for key in ("base_channels", "max_channels", "image_size", "min_resolution"):
        _check(n[key] >= 1, f"concurrency.network.{key}", n[key], "must be >= 1")
    _check(0.0 <= n.stage_prob <= 1.0, "concurrency.network.stage_prob", n.stage_prob, "must be in [0, 1]")
    lat = c.latency
    _check(lat.unit_flops_per_s > 0, "concurrency.latency.unit_flops_per_s", lat.unit_flops_per_s, "must be > 0")
    _check(lat.bandwidth_bytes_per_s > 0, "concurrency.latency.bandwidth_bytes_per_s",
           lat.bandwidth_bytes_per_s, "must be > 0")
    _check(lat.message_latency_s >= 0, "concurrency.latency.message_latency_s", lat.message_latency_s, "must be >= 0")
    p = c.proxy
    _check(p.archs_per_generator >= 0, "concurrency.proxy.archs_per_generator", p.archs_per_generator, "must be >= 0")
    for key in ("steps", "batch_size", "n_train", "n_eval", "base_channels", "max_channels"):
        _check(p[key] >= 1, f"concurrency.proxy.{key}", p[key], "must be >= 1")
    _check(p.n_vertices >= 4, "concurrency.proxy.n_vertices", p.n_vertices, "must be >= 4")
    _check(p.lr > 0, "concurrency.proxy.lr", p.lr, "must be > 0")
    s = c.dp_sweep
    _check(all(b >= 0 for b in s.betas), "concurrency.dp_sweep.betas", list(s.betas), "must be >= 0")
    _check(all(a >= 0 for a in s.alphas), "concurrency.dp_sweep.alphas", list(s.alphas), "must be >= 0")
    _check(2 <= s.n_units <= s.n_vertices, "concurrency.dp_sweep.n_units", s.n_units,
           f"must be in [2, dp_sweep.n_vertices={s.n_vertices}]")
    _check(s.graphs >= 0, "concurrency.dp_sweep.graphs", s.graphs, "must be >= 0")


def validate_config(cfg: DictConfig | dict) -> DictConfig:
    """Merge ``cfg`` into the typed schema and check ranges; raise ConfigError naming the key."""
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(cfg)
    data = cfg.get("data")
    if data is None or "name" not in data:
        raise ConfigError("config has no data.name (choose one of: " + ", ".join(DATA_SCHEMAS) + ")")
    name = data.name
    if name not in DATA_SCHEMAS:
        raise ConfigError(f"config value data.name={name!r} is unknown; choose one of: {', '.join(DATA_SCHEMAS)}")
    try:
        schema = OmegaConf.structured(RepshareConfig)
        schema.data = OmegaConf.structured(DATA_SCHEMAS[name])
        merged = OmegaConf.merge(schema, cfg)
        OmegaConf.resolve(merged)
        # Typed access of every leaf surfaces MISSING values with their full key.
        OmegaConf.to_container(merged, throw_on_missing=True)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or ""
        msg = str(err).splitlines()[0]
        raise ConfigError(f"bad config{f' at {key}' if key else ''}: {msg}") from None

    for key, allowed in CHOICES.items():
        value = OmegaConf.select(merged, key)
        _check(value in allowed, key, value, f"must be one of {', '.join(allowed)}")
    for key in POSITIVE:
        value = OmegaConf.select(merged, key)
        _check(value is not None and value > 0, key, value, "must be > 0")
    if name == "shapes":
        d = merged.data
        _check(d.n_train >= 0, "data.n_train", d.n_train, "must be >= 0")
        _check(d.n_val > 0, "data.n_val", d.n_val, "must be > 0")
        _check(0.0 <= d.difficulty <= 1.0, "data.difficulty", d.difficulty, "must be in [0, 1]")
        _check(d.max_objects >= 1, "data.max_objects", d.max_objects, "must be >= 1")
        _check(d.n_distractors >= 0, "data.n_distractors", d.n_distractors, "must be >= 0")
    for mname in merged.model:  # weight source of every model: one of the four, consistent with checkpoint_path
        m = merged.model[mname]
        try:
            resolve_weights(m.weights, m.pretrained, m.checkpoint_path, f"model.{mname}")
        except ValueError as err:
            raise ConfigError(str(err)) from None
    det = merged.model.detector
    _check(det.image_size % 128 == 0, "model.detector.image_size", det.image_size, "effdet needs a multiple of 128")
    a = merged.analysis
    _check(0.0 < a.ci < 1.0, "analysis.ci", a.ci, "must be in (0, 1)")
    kt = merged.compare.keep_target
    _check(0.0 < kt <= 1.0, "compare.keep_target", kt, "must be in (0, 1]")
    _check_sharing(merged)
    _check_multiexit(merged)
    _check_placement(merged)
    _check_reliability(merged)
    _check_concurrency(merged)
    g = merged.gemel
    _check(0.0 < g.target <= 1.0, "gemel.target", g.target, "must be in (0, 1]")
    _check(g.steps >= 0, "gemel.steps", g.steps, "must be >= 0")
    _check(g.momentum >= 0.0 and g.weight_decay >= 0.0 and g.alpha >= 0.0, "gemel.momentum/weight_decay/alpha",
           (g.momentum, g.weight_decay, g.alpha), "must be >= 0")
    _check(g.n_report is None or g.n_report > 0, "gemel.n_report", g.n_report, "must be > 0 or null")
    fr = list(g.sim.budget_fractions)
    _check(len(fr) > 0 and all(0.0 <= b <= 1.0 for b in fr), "gemel.sim.budget_fractions", fr,
           "must be fractions in [0, 1] (0 = the largest model, 1 = the whole workload)")
    mb = g.sim.budgets_mb
    _check(mb is None or (len(mb) > 0 and all(b > 0 for b in mb)), "gemel.sim.budgets_mb",
           None if mb is None else list(mb), "must be a non-empty list of MB > 0, or null")
    return merged


# Classes/functions a config may name in ``_target_`` (besides the project's own ``repshare.`` ones).
ALLOWED_TARGETS: tuple[str, ...] = ("pytorch_lightning.Trainer", "lightning.pytorch.Trainer")


def allowed_target(target: Any) -> bool:
    """Whether ``_target_`` names a public top-level class/function of a ``repshare`` module (or the Trainer).

    Checked on the source files, without importing: ``repshare.utils.io.shutil.rmtree`` (a re-exported
    attribute) or ``builtins.print`` are refused, so a params.yaml cannot make ``instantiate`` run anything else.
    """
    import ast

    if not isinstance(target, str):
        return False
    if target in ALLOWED_TARGETS:
        return True
    parts = target.split(".")
    if len(parts) < 3 or parts[0] != "repshare" or not all(p.isidentifier() for p in parts):
        return False
    base = Path(__file__).resolve().parent.joinpath(*parts[1:-1])
    src = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
    if not src.is_file() or parts[-1].startswith("_"):
        return False
    tree = ast.parse(src.read_text(encoding="utf-8"))
    return any(isinstance(n, (ast.ClassDef, ast.FunctionDef)) and n.name == parts[-1] for n in tree.body)


def _check_targets(node: Any, prefix: str = "") -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if k == "_target_":
                _check(allowed_target(v), key, v,
                       "only the project's own classes (repshare.<module>.<Name>) or pytorch_lightning.Trainer "
                       "may be instantiated")
            else:
                _check_targets(v, key)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _check_targets(v, f"{prefix}[{i}]")


def _check_reliability(cfg: DictConfig) -> None:
    """Values the training code would otherwise accept silently or fail on with a library traceback."""
    for name in cfg.train:
        opt, key = cfg.train[name], f"train.{name}"
        for field_ in ("epochs", "batch_size", "lr"):
            _check(opt[field_] > 0, f"{key}.{field_}", opt[field_], "must be > 0")
        _check(opt.weight_decay >= 0, f"{key}.weight_decay", opt.weight_decay, "must be >= 0")
        _check(opt.warmup_epochs >= 0, f"{key}.warmup_epochs", opt.warmup_epochs, "must be >= 0")
        _check(0 <= opt.label_smoothing < 1, f"{key}.label_smoothing", opt.label_smoothing, "must be in [0, 1)")
        _check(opt.num_workers >= 0, f"{key}.num_workers", opt.num_workers, "must be >= 0 (0: load in the main process)")
        _check(opt.checkpoint_every_n_steps >= 0, f"{key}.checkpoint_every_n_steps", opt.checkpoint_every_n_steps,
               "must be >= 0 (0: only at epoch ends)")
        ltb = opt.limit_train_batches
        _check(ltb is None or ltb > 0, f"{key}.limit_train_batches", ltb,
               "must be > 0 (a fraction <= 1 of the batches, or a number of batches) or null; 0 would train on nothing")
        _check(ltb is None or ltb <= 1 or float(ltb).is_integer(), f"{key}.limit_train_batches", ltb,
               "above 1 it is a number of batches and must be a whole number")
    # Labels run 0..data.num_classes-1: a smaller head fails deep inside the loss (IndexError).
    c = cfg.model.classifier
    _check(c.num_classes >= cfg.data.num_classes, "model.classifier.num_classes", c.num_classes,
           f"must be >= data.num_classes={cfg.data.num_classes} (the data's labels)")
    if cfg.data.name == "shapes":
        d = cfg.model.detector
        _check(d.num_classes >= cfg.data.num_classes, "model.detector.num_classes", d.num_classes,
               f"must be >= data.num_classes={cfg.data.num_classes} (the data's box classes)")
    _check_targets(OmegaConf.to_container(cfg, resolve=True))


def compose_raw(overrides: list[str] | None = None, config_name: str = "config") -> DictConfig:
    """Compose ``conf/`` with Hydra's compose API, as DVC does on ``dvc exp run`` (not validated)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides or []))


def compose(overrides: list[str] | None = None, config_name: str = "config") -> DictConfig:
    """Compose ``conf/`` and validate it against the schema."""
    return validate_config(compose_raw(overrides, config_name))


PROTOCOLS = ("per_model", "shared")


def _check_sharing(cfg: DictConfig) -> None:
    """Protocols, adapters, fit settings and budgets of representation sharing (issue 12)."""
    protocols = list(cfg.capture.protocols)
    _check(bool(protocols) and len(set(protocols)) == len(protocols), "capture.protocols", protocols,
           "must list distinct protocols")
    for p in protocols:
        _check(p in PROTOCOLS, "capture.protocols", p, f"unknown protocol; choose from {', '.join(PROTOCOLS)}")
    ad = cfg.adapter
    names = [k for k in ad if ad[k] is not None]
    _check(bool(names), "adapter", names, "choose at least one adapter (e.g. adapter=[resample])")
    for n in names:  # a fact about the adapter, not a switch: only `supervised` reads labels
        _check(ad[n].labels == (n == "supervised"), f"adapter.{n}.labels", ad[n].labels,
               "only the supervised adapter uses labels")
    if ad.moments is not None:
        _check(ad.moments.eps >= 0, "adapter.moments.eps", ad.moments.eps, "must be >= 0")
    if ad.lstsq is not None:
        _check(ad.lstsq.ridge >= 0, "adapter.lstsq.ridge", ad.lstsq.ridge, "must be >= 0")
        mp = ad.lstsq.max_pixels_per_image
        _check(mp is None or mp > 0, "adapter.lstsq.max_pixels_per_image", mp, "must be > 0 or null")
    for name in ("distill", "supervised"):
        t = ad[name]
        if t is None:
            continue
        for key in ("steps", "batch_size", "lr", "temperature"):
            _check(t[key] > 0, f"adapter.{name}.{key}", t[key], "must be > 0")
        _check(t.top_k_cross >= 0, f"adapter.{name}.top_k_cross", t.top_k_cross, "must be >= 0")
        for p in t.protocols:
            _check(p in protocols, f"adapter.{name}.protocols", p, "must be one of capture.protocols")
    s = cfg.sharing
    _check(s.n_eval is None or s.n_eval > 0, "sharing.n_eval", s.n_eval, "must be > 0 or null")
    _check(s.n_eval_variants is None or s.n_eval_variants > 0, "sharing.n_eval_variants", s.n_eval_variants,
           "must be > 0 or null")
    _check(s.forward_chunk is None or s.forward_chunk > 0, "sharing.forward_chunk", s.forward_chunk,
           "must be > 0 or null")
    a = cfg.analysis
    for f in a.budget_fracs:
        _check(0.0 <= f <= 1.0, "analysis.budget_fracs", f, "a budget must be between 0 and the classifier's bytes (0..1)")
    _check(a.accuracy_floor is None or 0.0 <= a.accuracy_floor <= 1.0, "analysis.accuracy_floor", a.accuracy_floor,
           "must be in [0, 1] or null")
