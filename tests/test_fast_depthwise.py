"""The small-map depthwise weight gradient against autograd through nn.Conv2d (independent truth)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from repshare.models.fast_depthwise import (SmallMapDepthwiseConv2d, depthwise_weight_grad, fast_depthwise_grad,
                                            tap_matrix)


def _grads(conv: nn.Module, x: torch.Tensor, g: torch.Tensor):
    x = x.clone().requires_grad_()
    conv.zero_grad()
    conv(x).backward(g)
    return x.grad, conv.weight.grad.clone(), None if conv.bias is None else conv.bias.grad.clone()


@pytest.mark.parametrize("hw, k, stride, pad, dilation, bias", [
    (2, 5, 1, 2, 1, False),   # EfficientNet's last stage on 64 px inputs
    (4, 5, 2, 2, 1, False),
    (4, 3, 1, 1, 1, True),
    (5, 3, 2, 1, 1, False),   # odd size, stride 2
    (6, 3, 1, 2, 2, True),    # dilation
    (8, 5, 1, 2, 1, False),
])
def test_gradients_equal_nn_conv2d(hw, k, stride, pad, dilation, bias):
    torch.manual_seed(0)
    ref = nn.Conv2d(6, 6, k, stride, pad, dilation, groups=6, bias=bias).double()
    fast = nn.Conv2d(6, 6, k, stride, pad, dilation, groups=6, bias=bias).double()
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(3, 6, hw, hw, dtype=torch.float64)
    g = torch.randn_like(ref(x))
    with fast_depthwise_grad(fast) as n:
        assert n == 1 and type(fast) is SmallMapDepthwiseConv2d
        got = _grads(fast, x, g)
        assert torch.equal(fast(x), ref(x))  # the forward is nn.Conv2d's
    want = _grads(ref, x, g)
    for a, b in zip(got, want):
        assert (a is None and b is None) or torch.allclose(a, b, rtol=1e-10, atol=1e-12)
    assert type(fast) is nn.Conv2d  # restored on exit


def test_gradcheck_against_finite_differences():
    torch.manual_seed(1)
    x = torch.randn(2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    conv = SmallMapDepthwiseConv2d(3, 3, 3, 1, 1, groups=3, bias=False).double()
    assert torch.autograd.gradcheck(lambda x, w: conv._conv_forward(x, w, None), (x, w))


def test_tap_matrix_by_hand():
    # 2x2 input, 3x3 kernel, padding 1: output pixel (0,0) sees input (0,0) through the centre tap 4,
    # input (0,1) through tap 5, (1,0) through tap 7 and (1,1) through tap 8.
    m = tap_matrix(2, 2, 3, 1, 1, 1).view(4, 4, 9)
    assert [int(t) for t in m[:, 0].argmax(1)] == [4, 5, 7, 8]
    assert m.sum().item() == 16  # every (input, output) pair of a 2x2 map is joined by exactly one tap


def test_only_plain_depthwise_convs_are_swapped_and_state_dict_is_unchanged():
    model = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.Conv2d(4, 8, 1),
                          nn.Conv2d(4, 4, 3, padding=1, groups=2), nn.Conv2d(4, 4, 3, padding=1, groups=4,
                                                                              padding_mode="reflect"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with fast_depthwise_grad(model) as n:
        assert n == 1 and [type(m).__name__ for m in model] == ["SmallMapDepthwiseConv2d", "Conv2d", "Conv2d", "Conv2d"]
        assert model.state_dict().keys() == before.keys()
    with fast_depthwise_grad(model, enabled=False) as n:
        assert n == 0


def test_weight_grad_matches_on_a_large_map_path_too():
    """Maps over the size limit fall back to nn.Conv2d; the function itself is still exact there."""
    torch.manual_seed(2)
    x = torch.randn(2, 4, 16, 16, dtype=torch.float64)
    conv = nn.Conv2d(4, 4, 3, 1, 1, groups=4, bias=False).double()
    g = torch.randn_like(conv(x))
    _, want, _ = _grads(conv, x, g)
    assert torch.allclose(depthwise_weight_grad(x, g, 3, 1, 1), want, rtol=1e-10)
