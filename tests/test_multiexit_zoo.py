"""MEEdge part 1: branch zoo structures, the feature cache, survival."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

from repshare.models.preprocess import Preprocess
from repshare.multiexit.features import check_exits, extract_features, max_exit
from repshare.models.flops import count_flops
from repshare.multiexit.profile import count_params, latency_to_exit
from repshare.multiexit.survival import survival
from repshare.multiexit.train import accuracy, predict, train_branch, train_branches
from repshare.multiexit.zoo import Branch, BranchSpec, zoo_specs
from repshare.features.stages import run_stages

SHAPE = (8, 6, 6)


def spec(conv="dws", kernel=3, n=1, fc=(16,), pool=2, exit_=1) -> BranchSpec:
    return BranchSpec(exit_, conv, kernel, n, tuple(fc), pool)


# ---------------------------------------------------------------------------- structures
@pytest.mark.parametrize("conv,conv_params", [
    ("none", 0),
    ("dw", 8 * 9 + 16),              # depthwise 3x3 + BN(8)
    ("dws", 8 * 9 + 8 * 8 + 16),     # + pointwise 8->8
    ("spatial", 2 * 8 * 8 * 3 + 16),  # 3x1 and 1x3 full convs
    ("dilated", 8 * 9 + 8 * 8 + 16),  # dilated depthwise + pointwise
])
def test_every_structure_builds_with_hand_counted_params(conv, conv_params):
    s = spec(conv, None if conv == "none" else 3, 0 if conv == "none" else 1)
    b = Branch(s, SHAPE, 4)
    fc = (8 * 2 * 2) * 16 + 16 + 16 * 4 + 4  # pool 2x2 -> 32 in -> 16 -> 4 classes
    assert count_params(b) == conv_params + fc
    x = torch.randn(3, *SHAPE)
    assert b(x).shape == (3, 4)
    assert len(b.fc) == 2


def test_conv_layers_stack_and_fc_depths():
    b = Branch(spec("dw", 3, 3, fc=(16, 12)), SHAPE, 5)
    assert len(b.conv) == 3 and [type(m).__name__ for m in b.fc] == ["Linear"] * 3
    assert count_params(b) == 3 * (8 * 9 + 16) + (32 * 16 + 16) + (16 * 12 + 12) + (12 * 5 + 5)
    # pool larger than the map: pooled to the map itself
    assert Branch(spec("none", None, 0, fc=(), pool=10), SHAPE, 4).fc[0].in_features == 8 * 6 * 6


def test_flops_count_the_matmuls():
    b = Branch(spec("none", None, 0, fc=(16,)), SHAPE, 4)
    assert count_flops(b, torch.randn(1, *SHAPE)) == 2 * (32 * 16 + 16 * 4)


@pytest.mark.parametrize("bad,match", [
    (spec("conv3d"), "unknown conv type 'conv3d'"),
    (spec("dw", 9), "kernel 9"),
    (spec("dilated", 5), "too large for the 6x6"),
    (spec("dw", 7), "too large"),
    (spec("none", None, 1), "n_conv 0"),
    (spec("dw", 3, 4), "n_conv 4"),
    (spec(fc=(8, 8, 8)), "more than 3 FC layers"),
])
def test_bad_specs_name_the_value(bad, match):
    with pytest.raises(ValueError, match=match):
        Branch(bad, SHAPE, 4)


def test_zoo_skips_or_refuses_unfit_kernels():
    shapes = {1: (8, 16, 16), 2: (8, 4, 4)}
    convs = [("none", None, 0), ("dw", 5, 1)]
    specs, skipped = zoo_specs([1, 2], convs, [[], [8]], 2, shapes, "skip")
    assert len(specs) == 2 * 2 + 1 * 2 and [s["exit"] for s in skipped] == [2, 2]
    assert "too large" in skipped[0]["reason"]
    with pytest.raises(ValueError, match="kernel 5"):
        zoo_specs([1, 2], convs, [[]], 2, shapes, "error")
    with pytest.raises(ValueError, match="fits none of the exits"):
        zoo_specs([2], [("dw", 7, 1)], [[]], 2, shapes, "skip")
    with pytest.raises(ValueError, match="exit 9"):
        zoo_specs([9], convs, [[]], 2, shapes)


# ---------------------------------------------------------------------------- feature cache
@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    m = timm.create_model("efficientnet_b0", num_classes=5).eval()
    return m, Preprocess(32)


def test_exit_range(backbone):
    model, _ = backbone
    assert max_exit(model) == 6 and check_exits(model, [3, 1]) == [1, 3]
    for bad in (0, 7, -1):
        with pytest.raises(ValueError, match=f"exit index {bad} out of range"):
            check_exits(model, [bad])


@pytest.mark.parametrize("on_disk", [False, True])
def test_cached_features_give_the_backbone_path_outputs(backbone, tmp_path, on_disk):
    model, pre = backbone
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 5, 10)
    cache = extract_features(model, pre, images, labels, [2, 3], batch_size=4,
                             folder=tmp_path / "c" if on_disk else None, dtype="float32")
    if on_disk:
        assert (tmp_path / "c" / "exit2.npy").is_file() and isinstance(cache.features[2], np.memmap)
    x = pre(torch.from_numpy(images).permute(0, 3, 1, 2))
    with torch.no_grad():
        outs = run_stages(model, x)
        ref_logits = model(x)
    torch.manual_seed(1)
    b = Branch(BranchSpec(3, "dws", 3, 1, (7,), 2), tuple(outs[3].shape[1:]), 5).eval()
    with torch.no_grad():
        direct = b(outs[3])
    assert torch.allclose(predict(b, cache.features[3], batch_size=3), direct, atol=1e-6)
    assert np.allclose(cache.logits, ref_logits.numpy(), atol=1e-5)
    assert (cache.labels == labels).all()
    half = extract_features(model, pre, images, labels, [3], batch_size=5, dtype="float16")
    assert torch.allclose(predict(b, half.features[3]), direct, atol=2e-2)


# ---------------------------------------------------------------------------- training
def test_train_branch_learns_a_separable_task_and_batching_is_independent():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 4, 3, 3, generator=g)
    y = (x[:, 0].mean((1, 2)) > 0).long().numpy()
    s = BranchSpec(1, "none", None, 0, (8,), 3)
    torch.manual_seed(0)
    alone = Branch(s, (4, 3, 3), 2)
    torch.manual_seed(0)
    together = [Branch(s, (4, 3, 3), 2), Branch(BranchSpec(1, "dw", 3, 1, (), 3), (4, 3, 3), 2)]
    r = train_branch(alone, x.numpy(), y, epochs=8, batch_size=50, lr=2e-2, seed=3)
    train_branches(together, x.numpy(), y, epochs=8, batch_size=50, lr=2e-2, seed=3)
    assert r.steps == 8 * 4
    assert accuracy(alone, x, y) > 0.9
    # Training next to another branch on the same batches changes nothing.
    for p, q in zip(alone.parameters(), together[0].parameters()):
        assert torch.allclose(p, q, atol=1e-6)
    with pytest.raises(ValueError, match="labels"):
        train_branch(alone, x.numpy(), y[:10])


# ---------------------------------------------------------------------------- survival
def test_survival_on_a_hand_made_table():
    rows = [
        {"id": "a", "exit": 1, "latency_to_exit_s": 1.0, "accuracy": 0.50},  # fastest: survives
        {"id": "b", "exit": 1, "latency_to_exit_s": 2.0, "accuracy": 0.40},  # slower and worse than a
        {"id": "c", "exit": 2, "latency_to_exit_s": 3.0, "accuracy": 0.70},  # survives
        {"id": "d", "exit": 3, "latency_to_exit_s": 9.0, "accuracy": 0.99},  # too slow (full = 8)
        {"id": "e", "exit": 3, "latency_to_exit_s": 3.0, "accuracy": 0.70},  # exact tie with c: c listed first
        {"id": "f", "exit": 3, "latency_to_exit_s": 4.0, "accuracy": 0.65},  # dominated by c (other exit)
    ]
    out = survival(rows, 8.0, "global")
    assert [ok for ok, _ in out] == [True, False, True, False, False, False]
    assert "dominated by a" in out[1][1] and "too slow" in out[3][1]
    assert "dominated by c" in out[4][1] and "dominated by c" in out[5][1]
    per_exit = survival(rows, 8.0, "per_exit")
    assert [ok for ok, _ in per_exit] == [True, False, True, False, True, False]
    assert "dominated by e" in per_exit[5][1]
    with pytest.raises(ValueError, match="scope 'x'"):
        survival(rows, 8.0, "x")
    assert latency_to_exit([1.0, 2.0, 4.0], 1, 0.5) == 3.5
