"""Settings of the concurrency study as plain dataclasses, in a module that imports neither torch nor
networkx, so the config schema (``repshare.config.concurrency``) derives its groups from them at no
import cost. ``network``, ``proxy`` and ``study`` re-export them under their old names.
"""

from __future__ import annotations

from dataclasses import dataclass

STAGINGS = ("greedy", "probabilistic")


@dataclass(frozen=True)
class NetSpec:
    base_channels: int = 16
    max_channels: int = 128
    image_size: int = 32
    min_resolution: int = 4
    staging: str = "probabilistic"
    stage_prob: float = 0.5
    num_classes: int = 8
    in_channels: int = 3

    def __post_init__(self) -> None:
        if self.staging not in STAGINGS:
            raise ValueError(f"staging {self.staging!r} is not one of {', '.join(STAGINGS)}")
        if not 0.0 <= self.stage_prob <= 1.0:
            raise ValueError(f"stage_prob={self.stage_prob!r} must be in [0, 1]")
        for key in ("base_channels", "max_channels", "image_size", "min_resolution", "num_classes", "in_channels"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}={getattr(self, key)!r} must be >= 1")


@dataclass(frozen=True)
class ProxyTraining:
    """The proxy's architectures and training (config group ``concurrency.proxy``)."""

    archs_per_generator: int = 2
    n_vertices: int = 10
    base_channels: int = 8
    max_channels: int = 32
    steps: int = 200
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    n_train: int = 4000
    n_eval: int = 500


@dataclass(frozen=True)
class DPSweep:
    """CS of DP graphs over the constants of Eq. 1 (``alpha``, ``beta``), which the paper does not give."""

    betas: tuple[float, ...] = (0.5, 1.0, 2.0)
    alphas: tuple[float, ...] = (1.0,)
    n_vertices: int = 40
    n_units: int = 4
    graphs: int = 4
