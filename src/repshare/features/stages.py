"""A timm model seen as a list of stages: stage 0 is the stem, stages 1..N the body stages.

timm's ``forward_intermediates`` only returns the ``feature_info`` taps (5 of the 7 block stages for
EfficientNet-B0) and cannot resume from the middle, so stage-wise work walks the modules directly.
Stage definition per family (the stage outputs are what CKA compares and where merging cuts):

- EfficientNet (timm ``EfficientNet`` and effdet's backbone ``EfficientNetFeatures``): stage 0 =
  ``conv_stem`` + ``bn1``; stage k = ``blocks[k-1]`` (7 for B0). The classifier's ``conv_head`` + ``bn2``
  run after the last stage, before the head. Unchanged from the original EfficientNet-only code.
- MobileNetV3: stage 0 = ``conv_stem`` + ``bn1``; stage k = ``blocks[k-1]`` (7 for
  ``mobilenetv3_large_100``, the last being the 1x1 conv to 960 channels); ``conv_head`` is part of
  timm's head (``forward_head``).
- ResNet / ResNet-D / SE-ResNet...: stage 0 = ``conv1`` + ``bn1`` + ``act1`` + ``maxpool`` (stride 4);
  stage k = ``layer{k}`` (4).
- ConvNeXt: stage 0 = ``stem`` (4x4 patchify conv + norm); stage k = ``stages[k-1]`` (4); ``norm_pre``
  runs after the last stage.
- RegNet: stage 0 = ``stem``; stage k = ``s{k}`` (4); ``final_conv`` runs after the last stage.
- Other timm models with ``stem`` + ``stages`` (CSPNet, NFNet, ...): as ConvNeXt, with ``norm_pre`` /
  ``final_conv`` / ``final_act`` after the last stage when present.

Every stage boundary is a ``feature_info`` stage of the model; ``verify_stage_walk`` checks on a
small input that stem -> stages -> tail -> ``forward_head`` reproduces the model's output exactly and
that the last stage's channels match ``feature_info``, and classifiers are built only if it passes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass
class StageLayout:
    family: str
    stages: list[nn.Module]  # stage 0 = stem
    tail: list[nn.Module]  # rest of forward_features after the last stage (before forward_head)


def _is(model: nn.Module, module: str, names: tuple[str, ...]) -> bool:
    """isinstance against timm classes by name (no import of every timm module needed)."""
    return any(type(model).__name__ == n and type(model).__module__.startswith(module) for n in names)


def stage_layout(model: nn.Module) -> StageLayout:
    """The stem + stages walk of ``model`` (see the module docstring); ValueError if it has none."""
    if all(hasattr(model, a) for a in ("conv_stem", "bn1", "blocks")):
        # EfficientNet / MobileNetV3 families (classifier or features-only backbone).
        family = "mobilenetv3" if _is(model, "timm", ("MobileNetV3", "MobileNetV3Features")) else "efficientnet"
        tail = [model.conv_head, model.bn2] if family == "efficientnet" and hasattr(model, "bn2") else []
        return StageLayout(family, [nn.Sequential(model.conv_stem, model.bn1), *list(model.blocks)], tail)
    if all(hasattr(model, a) for a in ("conv1", "bn1", "act1", "maxpool", "layer1")):
        layers = [getattr(model, f"layer{k}") for k in range(1, 5) if hasattr(model, f"layer{k}")]
        return StageLayout("resnet", [nn.Sequential(model.conv1, model.bn1, model.act1, model.maxpool), *layers], [])
    if hasattr(model, "stem") and hasattr(model, "s1"):
        body = [getattr(model, f"s{k}") for k in range(1, 10) if hasattr(model, f"s{k}")]
        tail = [model.final_conv] if hasattr(model, "final_conv") else []
        return StageLayout("regnet", [model.stem, *body], tail)
    if hasattr(model, "stem") and isinstance(getattr(model, "stages", None), (nn.Sequential, nn.ModuleList)):
        family = "convnext" if _is(model, "timm", ("ConvNeXt",)) else "stem+stages"
        tail = [getattr(model, a) for a in ("norm_pre", "final_conv", "final_act") if hasattr(model, a)]
        return StageLayout(family, [model.stem, *list(model.stages)], tail)
    raise ValueError(
        f"{type(model).__name__} has no stage-wise walk: supported are timm EfficientNet, MobileNetV3, ResNet, "
        "ConvNeXt, RegNet and other models with 'stem' + 'stages'")


def stage_modules(model: nn.Module) -> list[nn.Module]:
    """Stage 0 is the stem (EfficientNet: conv_stem + bn1); stage k >= 1 is the k-th body stage (``blocks[k-1]``)."""
    return stage_layout(model).stages


def stage_names(model: nn.Module) -> list[str]:
    return ["stem"] + [f"stage{k}" for k in range(1, num_stages(model))]


def num_stages(model: nn.Module) -> int:
    return len(stage_modules(model))


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
    layout = stage_layout(model)
    for stage in layout.stages[after + 1 :]:
        x = stage(x)
    # The rest of forward_features (EfficientNet: conv_head + bn2), then timm's forward_head (pool + classifier).
    for module in layout.tail:
        x = module(x)
    return model.forward_head(x)


def in_chunks(fn: Callable[[torch.Tensor], Any], x: torch.Tensor, chunk: int | None) -> Any:
    """``fn(x)`` computed ``chunk`` images at a time and concatenated along the batch (a tensor or a
    list of tensors). The outputs are the same (eval mode: no batch statistics); the peak memory of
    ``fn``'s intermediates (an MBConv's 6x expansion at 256x256 is ~25 MB per image) scales with
    ``chunk``, not the batch. ``None`` (or a batch no larger than ``chunk``) is one call."""
    if chunk is None or x.shape[0] <= chunk:
        return fn(x)
    if chunk < 1:
        raise ValueError(f"forward chunk must be >= 1 image, got {chunk}")
    parts = [fn(x[a : a + chunk]) for a in range(0, x.shape[0], chunk)]
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(parts)
    return [torch.cat(ps) for ps in zip(*parts)]


@torch.no_grad()
def verify_stage_walk(model: nn.Module, size: int = 64, atol: float = 1e-5) -> str:
    """Check that the walk reproduces ``model(x)`` (eval mode) and fits ``feature_info``; return the family."""
    layout = stage_layout(model)
    was_training = model.training
    model.eval()
    try:
        x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
        outs = run_stages(model, x)
        walked, direct = run_from(model, outs[0], 0), model(x)
    finally:
        model.train(was_training)
    if walked.shape != direct.shape or not torch.allclose(walked, direct, atol=atol, rtol=1e-4):
        raise ValueError(f"the {layout.family} stage walk of {type(model).__name__} does not reproduce its output; "
                         "stage-wise sharing is not supported for this model")
    info = getattr(model, "feature_info", None)
    if info is not None and hasattr(info, "channels"):
        channels = info.channels()
    elif isinstance(info, list) and info and "num_chs" in info[-1]:
        channels = [f["num_chs"] for f in info]
    else:
        channels = None
    if channels and outs[-1].shape[1] != channels[-1]:
        raise ValueError(f"the last {layout.family} stage of {type(model).__name__} has {outs[-1].shape[1]} "
                         f"channels but feature_info says {channels[-1]}")
    return layout.family
