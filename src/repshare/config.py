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


@dataclass
class TrainConfig:
    classifier: OptimConfig = field(default_factory=OptimConfig)
    detector: OptimConfig = field(default_factory=OptimConfig)


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
    device: str = "auto"


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


@dataclass
class WorkloadModelConfig:
    name: str = MISSING
    task: str = "classification"  # classification | detection
    metric: str = "top1"  # top1 | mAP


@dataclass
class WorkloadConfig:
    """The models that run together on the edge box; every method reads this list."""

    name: str = "embedded"
    models: list[WorkloadModelConfig] = field(default_factory=list)


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
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)


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
    "analysis.n_bootstrap",
)


def _check(ok: bool, key: str, value: Any, why: str) -> None:
    if not ok:
        raise ConfigError(f"config value {key}={value!r} is invalid: {why}")


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
    det = merged.model.detector
    _check(det.image_size % 128 == 0, "model.detector.image_size", det.image_size, "effdet needs a multiple of 128")
    a = merged.analysis
    _check(0.0 < a.ci < 1.0, "analysis.ci", a.ci, "must be in (0, 1)")
    return merged


def compose_raw(overrides: list[str] | None = None, config_name: str = "config") -> DictConfig:
    """Compose ``conf/`` with Hydra's compose API, as DVC does on ``dvc exp run`` (not validated)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides or []))


def compose(overrides: list[str] | None = None, config_name: str = "config") -> DictConfig:
    """Compose ``conf/`` and validate it against the schema."""
    return validate_config(compose_raw(overrides, config_name))
