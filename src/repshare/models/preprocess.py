"""Model-side input transform: uint8 images -> float, resized, normalised.

Mean, std, resolution and interpolation come from the model's pretrained config unless the
config file sets them, so a checkpoint is evaluated the way it was trained.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "area")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Preprocess(nn.Module):
    def __init__(self, input_size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 interpolation: str = "bilinear"):
        super().__init__()
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation={interpolation!r} must be one of {', '.join(INTERPOLATIONS)}")
        if input_size <= 0:
            raise ValueError(f"input_size={input_size} must be > 0")
        self.input_size, self.interpolation = int(input_size), interpolation
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1) * 255.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if x.shape[-2:] != (self.input_size, self.input_size):
            kw = {"align_corners": False, "antialias": True} if self.interpolation in ("bilinear", "bicubic") else {}
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode=self.interpolation, **kw)
        return (x - self.mean) / self.std

    def describe(self) -> dict:
        """What is applied, as plain values (recorded beside results: a checkpoint's scores depend on it)."""
        return {"input_size": self.input_size, "interpolation": self.interpolation,
                "mean": [round(float(v) / 255.0, 6) for v in self.mean.flatten()],
                "std": [round(float(v) / 255.0, 6) for v in self.std.flatten()]}

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}, interpolation={self.interpolation}"


def from_pretrained_cfg(pretrained_cfg: dict | None, input_size: int | None, mean, std,
                        interpolation: str | None) -> Preprocess:
    """Config values win; missing ones come from timm's ``pretrained_cfg``, then ImageNet defaults."""
    pc = pretrained_cfg or {}
    size = input_size or (pc.get("input_size") or (3, 224, 224))[-1]
    interp = interpolation or pc.get("interpolation") or "bilinear"
    return Preprocess(size, mean or pc.get("mean") or IMAGENET_MEAN, std or pc.get("std") or IMAGENET_STD, interp)
