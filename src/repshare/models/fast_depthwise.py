"""A faster weight gradient for depthwise convolutions on small feature maps (CPU training).

oneDNN's depthwise weight gradient is pathological at the small spatial sizes of EfficientNet's last
stages on 64-128 px inputs: on the 2-core box, 44 ms for a 5x5 depthwise conv over 1152 channels at
2x2 (batch 64), 17x its own forward (`benchmarks/bench_depthwise_grad.py`). For a map of H*W input
and Ho*Wo output pixels, the gradient is a per-channel correlation that a batched matrix product
computes directly: P[c] = X[c] (H*W x N) @ G[c] (N x Ho*Wo), then each (input, output) pixel pair is
summed into the kernel tap joining them (a fixed 0/1 matrix from the geometry). Same mathematics,
other summation order; used only while training (``fast_depthwise_grad``), never changes a state dict.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

# Pixel pairs (H*W x Ho*Wo) up to which the matrix product beats oneDNN here (measured: 2x2-8x8 maps,
# and 16x16 with stride 2; a 16x16 stride-1 map is faster in oneDNN).
MAX_PIXEL_PAIRS = 16384


@lru_cache(maxsize=128)
def tap_matrix(h: int, w: int, k: int, stride: int, pad: int, dilation: int) -> torch.Tensor:
    """(h*w*ho*wo, k*k) 0/1 matrix: entry (i*ho*wo + o, t) is 1 when kernel tap t joins input pixel i to
    output pixel o (zero padding contributes nothing)."""
    ho = (h + 2 * pad - dilation * (k - 1) - 1) // stride + 1
    wo = (w + 2 * pad - dilation * (k - 1) - 1) // stride + 1
    m = torch.zeros(h * w, ho * wo, k * k)
    for oy in range(ho):
        for dy in range(k):
            iy = oy * stride - pad + dy * dilation
            if not 0 <= iy < h:
                continue
            for ox in range(wo):
                for dx in range(k):
                    ix = ox * stride - pad + dx * dilation
                    if 0 <= ix < w:
                        m[iy * w + ix, oy * wo + ox, dy * k + dx] = 1.0
    return m.view(h * w * ho * wo, k * k)


def depthwise_weight_grad(x: torch.Tensor, grad_out: torch.Tensor, k: int, stride: int, pad: int,
                          dilation: int = 1) -> torch.Tensor:
    """d(loss)/d(weight) of a square depthwise conv (weight (C, 1, k, k)) from its input and output grad."""
    n, c, h, w = x.shape
    ho, wo = grad_out.shape[-2:]
    xc = x.reshape(n, c, h * w).permute(1, 2, 0)            # (C, H*W, N)
    gc = grad_out.reshape(n, c, ho * wo).permute(1, 0, 2)   # (C, N, Ho*Wo)
    pairs = torch.bmm(xc, gc).reshape(c, h * w * ho * wo)   # per channel, every (input, output) pixel pair
    taps = tap_matrix(h, w, k, stride, pad, dilation).to(device=x.device, dtype=x.dtype)
    return (pairs @ taps).view(c, 1, k, k)


class _DepthwiseConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride: int, pad: int, dilation: int):
        ctx.save_for_backward(x, weight)
        ctx.geometry, ctx.has_bias = (stride, pad, dilation), bias is not None
        return F.conv2d(x, weight, bias, stride, pad, dilation, weight.shape[0])

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        stride, pad, dilation = ctx.geometry
        grad_out = grad_out.contiguous()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad_out, x, weight, None, [stride] * 2, [pad] * 2, [dilation] * 2, False, [0, 0],
                weight.shape[0], [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            grad_w = depthwise_weight_grad(x, grad_out, weight.shape[-1], stride, pad, dilation)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_out.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None, None, None


def _square(v) -> int | None:
    return int(v[0]) if isinstance(v, tuple) and len(v) == 2 and v[0] == v[1] else None


class SmallMapDepthwiseConv2d(nn.Conv2d):
    """nn.Conv2d (same parameters, same forward) whose depthwise weight gradient on small maps comes from
    ``depthwise_weight_grad``; anything else takes nn.Conv2d's own path."""

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        k, stride, pad, dil = (_square(v) for v in (self.kernel_size, self.stride, self.padding, self.dilation))
        if (None not in (k, stride, pad, dil) and input.dim() == 4 and input.device.type == "cpu"
                and torch.is_grad_enabled() and weight.requires_grad):
            h, w = input.shape[-2:]
            ho = (h + 2 * pad - dil * (k - 1) - 1) // stride + 1
            wo = (w + 2 * pad - dil * (k - 1) - 1) // stride + 1
            if h * w * ho * wo <= MAX_PIXEL_PAIRS:
                return _DepthwiseConv.apply(input, weight, bias, stride, pad, dil)
        return super()._conv_forward(input, weight, bias)


def _is_plain_depthwise(m: nn.Module) -> bool:
    return (type(m) is nn.Conv2d and m.groups == m.in_channels == m.out_channels and m.groups > 1
            and m.padding_mode == "zeros" and isinstance(m.padding, tuple))


@contextmanager
def fast_depthwise_grad(model: nn.Module, enabled: bool = True) -> Iterator[int]:
    """While inside, the model's plain depthwise convs use ``SmallMapDepthwiseConv2d``; yields how many.
    The classes are restored on exit, so nothing outside training sees the swap."""
    swapped = [m for m in model.modules() if _is_plain_depthwise(m)] if enabled else []
    for m in swapped:
        m.__class__ = SmallMapDepthwiseConv2d
    try:
        yield len(swapped)
    finally:
        for m in swapped:
            m.__class__ = nn.Conv2d
