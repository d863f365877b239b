"""The pipeline's config: the schema of every group of ``conf/`` and its checks.

One module per config group holds its dataclass(es) and its rule table (``RULES``); the YAML under
conf/ holds the values. How to add a key and its rule: :mod:`repshare.config.schema`. The names
below are the package's public interface (``from repshare.config import compose, ConfigError``).
"""

from repshare.config.compare import CompareConfig, ReportConfig
from repshare.config.concurrency import (ConcurrencyConfig, ConcurrencyDPSweepConfig, ConcurrencyGeneratorConfig,
                                         ConcurrencyLatencyConfig, ConcurrencyNetworkConfig, ConcurrencyProxyConfig)
from repshare.config.data import SCHEMAS as DATA_SCHEMAS
from repshare.config.data import CocoDataConfig, ImageNetDataConfig, ShapesDataConfig
from repshare.config.gemel import GemelConfig, GemelSimConfig
from repshare.config.model import ClassifierConfig, DetectorConfig, ModelConfig
from repshare.config.multiexit import (MultiExitConfig, MultiExitConvConfig, MultiExitFeaturesConfig, MultiExitKDConfig,
                                       MultiExitLatencyConfig, MultiExitMergeConfig, MultiExitSurvivalConfig,
                                       MultiExitTrainConfig, MultiExitZooConfig)
from repshare.config.placement import PlacementBaselinesConfig, PlacementConfig, PlacementSimConfig
from repshare.config.rules import ConfigError
from repshare.config.schema import PathsConfig, RepshareConfig, allowed_target, register_configs
from repshare.config.sharing import (PROTOCOLS, AdapterConfig, AnalysisConfig, CaptureConfig, CKAConfig,
                                     LstsqAdapterConfig, MomentsAdapterConfig, ResampleAdapterConfig, SharingConfig,
                                     TrainedAdapterConfig)
from repshare.config.train import LoggerConfig, OptimConfig, TrainConfig, TrainerConfig
from repshare.config.validate import CONF_DIR, compose, compose_raw, validate_config
from repshare.config.workload import WorkloadConfig, WorkloadModelConfig

register_configs()

__all__ = [
    "CONF_DIR", "ConfigError", "compose", "compose_raw", "validate_config", "allowed_target", "register_configs",
    "RepshareConfig", "PathsConfig", "DATA_SCHEMAS", "ShapesDataConfig", "ImageNetDataConfig", "CocoDataConfig",
    "ModelConfig", "ClassifierConfig", "DetectorConfig", "TrainConfig", "OptimConfig", "TrainerConfig",
    "LoggerConfig", "CaptureConfig", "CKAConfig", "SharingConfig", "AdapterConfig", "ResampleAdapterConfig",
    "MomentsAdapterConfig", "LstsqAdapterConfig", "TrainedAdapterConfig", "AnalysisConfig", "PROTOCOLS",
    "WorkloadConfig", "WorkloadModelConfig", "GemelConfig", "GemelSimConfig", "CompareConfig", "ReportConfig",
    "MultiExitConfig", "MultiExitConvConfig", "MultiExitFeaturesConfig", "MultiExitZooConfig",
    "MultiExitTrainConfig", "MultiExitLatencyConfig", "MultiExitSurvivalConfig", "MultiExitMergeConfig",
    "MultiExitKDConfig", "PlacementConfig", "PlacementSimConfig", "PlacementBaselinesConfig",
    "ConcurrencyConfig", "ConcurrencyGeneratorConfig", "ConcurrencyNetworkConfig", "ConcurrencyLatencyConfig",
    "ConcurrencyProxyConfig", "ConcurrencyDPSweepConfig",
]
