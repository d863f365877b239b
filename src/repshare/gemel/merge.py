"""Tie identical layers to one parameter tensor across models (storage identity, not equality)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from repshare.gemel.layers import LayerInstance

INITS = ("first", "mean")


def _module(model: nn.Module, path: str) -> nn.Module:
    return model.get_submodule(path)


@torch.no_grad()
def tie_layers(models: dict[str, nn.Module], instances: Iterable[LayerInstance], init: str = "first") -> None:
    """Make every member layer of each instance hold the same ``weight`` (and ``bias``) Parameter.

    ``init="first"``: the shared value is the first member model's (the reference's behaviour);
    ``"mean"``: the members' mean. Already-tied instances stay tied (their value is unchanged).
    """
    if init not in INITS:
        raise ValueError(f"gemel.init={init!r} must be one of {', '.join(INITS)}")
    for inst in instances:
        missing = [m for m in inst.members if m not in models]
        if missing:
            raise KeyError(f"layer instance {inst.index} names model {missing[0]!r}, not in the workload")
        layers = [_module(models[m], p) for m, p in inst.members.items()]
        for attr in ("weight", "bias"):
            params = [getattr(layer, attr) for layer in layers]
            if params[0] is None:
                continue
            if any(p.shape != params[0].shape for p in params):
                raise ValueError(f"layer instance {inst.index}: {attr} shapes differ across models")
            shared = params[0]
            if init == "mean" and any(p is not shared for p in params):
                shared = nn.Parameter(torch.stack([p.detach() for p in params]).mean(0))
            for layer in layers:
                setattr(layer, attr, shared)  # registers the same Parameter object in every model


def unique_parameters(modules: Iterable[nn.Module]) -> list[nn.Parameter]:
    """Every parameter of ``modules`` once (a shared tensor is listed once, not once per model:
    the reference hands the optimizer duplicates, so momentum and weight decay apply twice)."""
    seen: set[int] = set()
    out = []
    for module in modules:
        for p in module.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


def shared_bytes(models: dict[str, nn.Module]) -> tuple[int, int]:
    """(bytes of every model's parameters counted per model, bytes of the distinct tensors)."""
    total = sum(p.numel() * p.element_size() for m in models.values() for p in m.parameters())
    distinct = sum(p.numel() * p.element_size() for p in unique_parameters(models.values()))
    return total, distinct
