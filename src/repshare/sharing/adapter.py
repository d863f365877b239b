"""Adapter between a donor representation and the shape a receiver expects (Cao et al., MobiCom'24).

Channels: the target number of channels is sampled uniformly *with repetition* from the source by
systematic (stratified) sampling: ``idx[k] = floor((k + u) * C_src / C_dst)`` for k = 0..C_dst-1,
with one phase ``u`` in [0, 1) drawn from ``seed``. Every source channel is picked either
``floor(C_dst/C_src)`` or ``ceil(C_dst/C_src)`` times, so when ``C_dst >= C_src`` each source
channel appears at least once and the counts differ by at most one; when ``C_dst < C_src`` the
picks are distinct and evenly spread. The index is sorted and deterministic given the seed, and
``C_dst == C_src`` gives the identity.

Resolution: resized with ``F.interpolate`` (nearest | bilinear | bicubic | area) or
``F.adaptive_avg_pool2d`` (adaptive_avg). Equal resolutions are passed through untouched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

RESIZE_METHODS = ("nearest", "bilinear", "bicubic", "area", "adaptive_avg")


def check_method(method: str) -> str:
    if method not in RESIZE_METHODS:
        raise ValueError(f"unknown resize method {method!r}: expected one of {', '.join(RESIZE_METHODS)}")
    return method


def channel_index(c_src: int, c_dst: int, seed: int = 0) -> torch.Tensor:
    """Sorted LongTensor of ``c_dst`` source-channel indices (systematic sampling, see module doc)."""
    if int(c_src) < 1 or int(c_dst) < 1:
        raise ValueError(f"channel counts must be >= 1, got c_src={c_src!r}, c_dst={c_dst!r}")
    c_src, c_dst = int(c_src), int(c_dst)
    if c_src == c_dst:
        return torch.arange(c_src, dtype=torch.long)
    u = float(np.random.default_rng(seed).random())
    idx = [min(c_src - 1, math.floor((k + u) * c_src / c_dst)) for k in range(c_dst)]
    return torch.tensor(idx, dtype=torch.long)


def resize(x: torch.Tensor, size: tuple[int, int], method: str) -> torch.Tensor:
    """Resize a (B, C, H, W) tensor to ``size`` with one of ``RESIZE_METHODS``."""
    check_method(method)
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if method == "adaptive_avg":
        return F.adaptive_avg_pool2d(x, size)
    if method in ("bilinear", "bicubic"):
        return F.interpolate(x, size=size, mode=method, align_corners=False)
    return F.interpolate(x, size=size, mode=method)


class Adapter(nn.Module):
    """Map a (B, *src_shape) representation to (B, *dst_shape): channel sampling, then resizing."""

    def __init__(
        self,
        src_shape: Sequence[int],
        dst_shape: Sequence[int],
        method: str = "bilinear",
        seed: int = 0,
    ):
        super().__init__()
        if len(src_shape) != 3 or len(dst_shape) != 3:
            raise ValueError(f"shapes must be (C, H, W), got src={tuple(src_shape)}, dst={tuple(dst_shape)}")
        self.src_shape = tuple(int(s) for s in src_shape)
        self.dst_shape = tuple(int(s) for s in dst_shape)
        self.method = check_method(method)
        self.seed = seed
        with torch.inference_mode(False):  # a normal tensor even when built inside inference_mode
            index = channel_index(self.src_shape[0], self.dst_shape[0], seed)
        self.register_buffer("index", index, persistent=False)
        self.same_channels = self.src_shape[0] == self.dst_shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.src_shape:
            raise ValueError(f"adapter expects inputs of shape (B, {self.src_shape}), got {tuple(x.shape)}")
        if not self.same_channels:
            x = x.index_select(1, self.index)
        return resize(x, self.dst_shape[1:], self.method)

    def extra_repr(self) -> str:
        return f"src={self.src_shape}, dst={self.dst_shape}, method={self.method}, seed={self.seed}"


# --------------------------------------------------------------------------- fitted adapters (issue 12)
# Linear CKA ignores per-feature centring, isotropic scaling and orthogonal maps of a representation;
# the fixed ``Adapter`` above removes none of them. These adapters are fitted on images so that what
# CKA ignores is put back to what the receiving classifier expects.
ADAPTERS = ("resample", "moments", "lstsq", "distill", "supervised")
LABEL_FREE = ("resample", "moments", "lstsq", "distill")  # fitted (if at all) without any label
CONV_ADAPTERS = ("lstsq", "distill", "supervised")  # resize + 1x1 convolution with bias


def check_adapter(name: str) -> str:
    if name not in ADAPTERS:
        raise ValueError(f"unknown adapter {name!r}: expected one of {', '.join(ADAPTERS)}")
    return name


class MomentsAdapter(nn.Module):
    """The fixed adapter followed by a per-channel affine map: ``base(x) * scale + shift``.

    ``scale``/``shift`` are fitted so that each output channel's mean and standard deviation on the
    calibration images equal those of the classifier's own stage output (``repshare.sharing.fit``).
    """

    def __init__(self, base: Adapter, scale: torch.Tensor, shift: torch.Tensor):
        super().__init__()
        c = base.dst_shape[0]
        if scale.shape != (c,) or shift.shape != (c,):
            raise ValueError(f"moments adapter needs scale/shift of shape ({c},), got {tuple(scale.shape)}/{tuple(shift.shape)}")
        self.base = base
        self.src_shape, self.dst_shape = base.src_shape, base.dst_shape
        self.scale = nn.Parameter(scale.detach().float().clone(), requires_grad=False)
        self.shift = nn.Parameter(shift.detach().float().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) * self.scale[None, :, None, None] + self.shift[None, :, None, None]


class ConvAdapter(nn.Module):
    """Resize the source to the target resolution, then a 1x1 convolution (with bias) to the target channels.

    Every source channel feeds every target channel, so the map can undo an orthogonal transform,
    a rescaling and an offset of the representation: what linear CKA is blind to.
    """

    def __init__(self, src_shape: Sequence[int], dst_shape: Sequence[int], method: str = "bilinear"):
        super().__init__()
        if len(src_shape) != 3 or len(dst_shape) != 3:
            raise ValueError(f"shapes must be (C, H, W), got src={tuple(src_shape)}, dst={tuple(dst_shape)}")
        self.src_shape = tuple(int(s) for s in src_shape)
        self.dst_shape = tuple(int(s) for s in dst_shape)
        self.method = check_method(method)
        self.conv = nn.Conv2d(self.src_shape[0], self.dst_shape[0], 1, bias=True)

    def resized(self, x: torch.Tensor) -> torch.Tensor:
        """The parameter-free part: the source at the target resolution (all its channels)."""
        if tuple(x.shape[1:]) != self.src_shape:
            raise ValueError(f"adapter expects inputs of shape (B, {self.src_shape}), got {tuple(x.shape)}")
        return resize(x, self.dst_shape[1:], self.method)

    def set_linear(self, weight: torch.Tensor, bias: torch.Tensor) -> "ConvAdapter":
        """Load a (C_dst, C_src) weight and (C_dst,) bias (e.g. a least-squares solution)."""
        c_dst, c_src = self.dst_shape[0], self.src_shape[0]
        if weight.shape != (c_dst, c_src) or bias.shape != (c_dst,):
            raise ValueError(f"expected weight ({c_dst}, {c_src}) and bias ({c_dst},), "
                             f"got {tuple(weight.shape)} and {tuple(bias.shape)}")
        with torch.no_grad():
            self.conv.weight.copy_(weight.reshape(c_dst, c_src, 1, 1).to(self.conv.weight))
            self.conv.bias.copy_(bias.to(self.conv.bias))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.resized(x))

    def extra_repr(self) -> str:
        return f"src={self.src_shape}, dst={self.dst_shape}, method={self.method}"


def adapter_bytes(adapter: nn.Module) -> int:
    """Bytes an adapter adds to the device: its parameters and persistent buffers (state_dict).

    The fixed adapter's channel index is a non-persistent buffer rebuilt from the seed, so it adds 0
    (as in the paper's accounting).
    """
    return sum(t.numel() * t.element_size() for t in adapter.state_dict().values())


def adapter_flops(adapter: nn.Module) -> int:
    """Multiply-add FLOPs (2 per MAC) per image of the adapter's learned part (resizing not counted)."""
    if isinstance(adapter, ConvAdapter):
        c_dst, h, w = adapter.dst_shape
        return 2 * adapter.src_shape[0] * c_dst * h * w + c_dst * h * w
    if isinstance(adapter, MomentsAdapter):
        return 2 * math.prod(adapter.dst_shape)
    return 0
