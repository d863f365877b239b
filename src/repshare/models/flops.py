"""The project's one FLOP counter (``torch.utils.flop_counter``: convolutions and matrix products)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_flops(fn: Callable | nn.Module, *args) -> int:
    """FLOPs of ``fn(*args)``; a module runs in eval mode, without gradients. Every submodule's own mode
    is restored after (``train(True)`` on a wrapper would put shared BatchNorm layers in training mode)."""
    modes = [(m, m.training) for m in fn.modules()] if isinstance(fn, nn.Module) else []
    if modes:
        fn.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            fn(*args)
    finally:
        for m, training in modes:
            m.training = training
    return int(counter.get_total_flops())


def stage_flops(model: nn.Module, x: torch.Tensor) -> list[int]:
    """Per-image FLOPs of the stem and each block stage of a timm/effdet backbone for input ``x``
    (its first image is used)."""
    from repshare.features.stages import stage_modules

    x = x[:1]
    out = []
    with torch.no_grad():
        for stage in stage_modules(model):
            out.append(count_flops(stage, x))
            x = stage(x)
    return out


def cumulative(values: list[int]) -> list[int]:
    """Entry k: sum of entries 0..k (e.g. FLOPs up to the end of stage k)."""
    out, total = [], 0
    for v in values:
        total += v
        out.append(total)
    return out
