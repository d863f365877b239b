"""EfficientNet seen as a list of stages: the stem (conv_stem + bn1) and the block stages.

timm's ``forward_intermediates`` only returns the ``feature_info`` taps (5 of the 7 block stages
for EfficientNet-B0), so stage-wise work walks ``conv_stem``/``bn1``/``blocks`` directly. The same
attributes exist on a timm classifier (``EfficientNet``) and on effdet's backbone
(``EfficientNetFeatures``), so one function serves both models.
"""

from __future__ import annotations

import torch
from torch import nn


def stage_modules(model: nn.Module) -> list[nn.Module]:
    """Stage 0 is the stem (conv_stem + bn1); stage k >= 1 is ``blocks[k-1]``."""
    for attr in ("conv_stem", "bn1", "blocks"):
        if not hasattr(model, attr):
            raise ValueError(
                f"{type(model).__name__} has no '{attr}': stage-wise access supports timm EfficientNet-style models"
            )
    return [nn.Sequential(model.conv_stem, model.bn1), *list(model.blocks)]


def stage_names(model: nn.Module) -> list[str]:
    return ["stem"] + [f"stage{k}" for k in range(1, len(model.blocks) + 1)]


def num_stages(model: nn.Module) -> int:
    return 1 + len(model.blocks)


def check_stage(model: nn.Module, index: int, what: str = "stage") -> None:
    n = num_stages(model)
    if not isinstance(index, int) or not 0 <= index < n:
        raise ValueError(f"{what} index {index!r} out of range for {type(model).__name__} (0..{n - 1})")


def run_stages(model: nn.Module, x: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
    """Outputs of stages 0..upto (all stages when ``upto`` is None), computing nothing beyond."""
    stages = stage_modules(model)
    last = len(stages) - 1 if upto is None else upto
    check_stage(model, last)
    outs = []
    for stage in stages[: last + 1]:
        x = stage(x)
        outs.append(x)
    return outs


def run_from(model: nn.Module, x: torch.Tensor, after: int) -> torch.Tensor:
    """Continue a classifier from the output of stage ``after`` through the remaining stages and head."""
    check_stage(model, after)
    for stage in stage_modules(model)[after + 1 :]:
        x = stage(x)
    # timm EfficientNet: forward_features = stem + blocks + conv_head + bn2; forward_head = pool + classifier.
    return model.forward_head(model.bn2(model.conv_head(x)))
