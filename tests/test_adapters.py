"""Fitted adapters (moments, lstsq, distill, supervised), agreement and the budget search (issue 12)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from repshare.features.capture import protocol_preprocess
from repshare.features.stages import run_from, run_stages
from repshare.sharing.adapter import (ADAPTERS, Adapter, ConvAdapter, MomentsAdapter, adapter_bytes, adapter_flops,
                                      check_adapter)
from repshare.sharing.evaluate import agreement, evaluate_adapters
from repshare.sharing.fit import (ChannelMoments, RidgeAccumulator, fit_label_free, moments_affine, pixel_rows,
                                  resized_inputs, train_conv_adapter)
from repshare.sharing.merged import stage_shapes
from repshare.sharing.search import budget_sweep, check_budget, choose, pareto_front, regret_table

torch.set_num_threads(1)


class Pre(nn.Module):
    def __init__(self, size: int):
        super().__init__()
        self.input_size = size

    def forward(self, x):
        return F.interpolate(x.float() / 255.0, size=(self.input_size, self.input_size), mode="bilinear",
                             align_corners=False)


class Toy(nn.Module):
    """EfficientNet-shaped toy (stem + 2 block stages + head) with non-trivial BN statistics."""

    def __init__(self, widths=(4, 6, 8), seed: int = 0, classes: int = 5):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv_stem = nn.Conv2d(3, widths[0], 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.blocks = nn.Sequential(
            nn.Sequential(nn.Conv2d(widths[0], widths[1], 3, padding=1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(widths[1], widths[2], 3, stride=2, padding=1), nn.ReLU()),
        )
        self.conv_head = nn.Conv2d(widths[2], 12, 1)
        self.bn2 = nn.BatchNorm2d(12)
        self.classifier = nn.Linear(12, classes)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            for bn in (self.bn1, self.bn2):
                bn.running_mean.copy_(torch.randn(bn.num_features, generator=g) * 0.1)
                bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        self.eval()

    def forward_head(self, x):
        return self.classifier(x.mean((2, 3)))

    def forward(self, x):
        return self.forward_head(self.bn2(self.conv_head(self.blocks(self.bn1(self.conv_stem(x))))))


def images(n: int, size: int = 16, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    return [x[a:a + 8] for a in range(0, n, 8)]


def shapes(model, pre, x):
    return stage_shapes(model, pre(x[:1]))


# --------------------------------------------------------------------------- moments
def test_moments_match_target_channel_mean_and_std_on_calibration_set():
    cls, donor = Toy(seed=0), Toy(widths=(5, 3, 7), seed=1)
    pre_c, pre_d = Pre(16), Pre(24)
    batches = images(32)
    src, dst = shapes(donor, pre_d, batches[0]), shapes(cls, pre_c, batches[0])
    pairs = [(0, 0), (2, 1), (1, 2)]
    fitted, info = fit_label_free(donor, pre_d, cls, pre_c, batches, pairs, src, dst, ["moments"], eps=0.0)
    assert info["images"] == 32
    for i, j in pairs:
        a = fitted[("moments", i, j)]
        with torch.no_grad():
            out = torch.cat([a(run_stages(donor, pre_d(x), i)[-1]) for x in batches])
            tgt = torch.cat([run_stages(cls, pre_c(x), j)[-1] for x in batches])
        dims = (0, 2, 3)
        assert torch.allclose(out.mean(dims), tgt.mean(dims), atol=1e-4)
        assert torch.allclose(out.std(dims, unbiased=False), tgt.std(dims, unbiased=False), rtol=1e-4, atol=1e-5)
        assert adapter_bytes(a) == 2 * 4 * dst[j][0]  # scale + shift, float32


def test_channel_moments_streaming_equals_whole_tensor():
    x = torch.randn(20, 3, 4, 5) * 3 + 2
    m = ChannelMoments(3)
    for part in x.split(7):
        m.update(part)
    mean, std = m.mean_std()
    assert torch.allclose(mean, x.double().mean((0, 2, 3)))
    assert torch.allclose(std, x.double().std((0, 2, 3), unbiased=False))


def test_moments_constant_source_channel_without_eps_is_named():
    src, dst = ChannelMoments(2), ChannelMoments(2)
    src.update(torch.ones(4, 2, 3, 3))
    dst.update(torch.randn(4, 2, 3, 3))
    with pytest.raises(ValueError, match="channel 0 is constant"):
        moments_affine(src, dst, eps=0.0)
    scale, shift = moments_affine(src, dst, eps=1e-5)  # with eps: finite
    assert torch.isfinite(scale).all() and torch.isfinite(shift).all()


# --------------------------------------------------------------------------- lstsq
def test_lstsq_recovers_a_known_map_exactly_streamed():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(4, 6, generator=g, dtype=torch.float64)
    b = torch.randn(4, generator=g, dtype=torch.float64)
    acc = RidgeAccumulator(6, 4)
    for _ in range(5):  # five batches, noise-free
        X = torch.randn(50, 6, generator=g, dtype=torch.float64) * 3 + 1
        acc.update(X, X @ W.T + b)
    W_hat, b_hat = acc.solve(0.0)
    assert torch.allclose(W_hat, W, atol=1e-9) and torch.allclose(b_hat, b, atol=1e-9)


def test_lstsq_equals_numpy_least_squares_and_closed_form_ridge():
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(40, 5)), rng.normal(size=(40, 3))
    acc = RidgeAccumulator(5, 3)
    acc.update(torch.from_numpy(X[:17]), torch.from_numpy(Y[:17]))
    acc.update(torch.from_numpy(X[17:]), torch.from_numpy(Y[17:]))
    W, b = acc.solve(0.0)
    sol = np.linalg.lstsq(np.hstack([X, np.ones((40, 1))]), Y, rcond=None)[0]
    np.testing.assert_allclose(W.numpy().T, sol[:5], atol=1e-10)
    np.testing.assert_allclose(b.numpy(), sol[5], atol=1e-10)
    # ridge: centred closed form, lam relative to the mean feature variance, bias unpenalised
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    lam = 0.3 * np.trace(Xc.T @ Xc) / 5
    Wr = np.linalg.solve(Xc.T @ Xc + lam * np.eye(5), Xc.T @ Yc)
    W2, b2 = acc.solve(0.3)
    np.testing.assert_allclose(W2.numpy().T, Wr, atol=1e-10)
    np.testing.assert_allclose(b2.numpy(), Y.mean(0) - X.mean(0) @ Wr, atol=1e-10)


def test_lstsq_singular_without_ridge_and_too_few_rows_are_named():
    acc = RidgeAccumulator(3, 2)
    X = torch.randn(30, 3, dtype=torch.float64)
    X[:, 1] = 5.0  # a constant feature
    acc.update(X, torch.randn(30, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="singular least-squares fit.*ridge=0"):
        acc.solve(0.0)
    W, _ = acc.solve(1e-3)  # regularised: fine
    assert torch.isfinite(W).all()
    few = RidgeAccumulator(3, 2)
    few.update(torch.randn(3, 3), torch.randn(3, 2))
    with pytest.raises(ValueError, match="at least 4 rows"):
        few.solve(0.0)
    with pytest.raises(ValueError, match="ridge must be >= 0"):
        acc.solve(-1.0)


def test_pixel_rows_layout():
    x = torch.arange(2 * 3 * 2 * 2).reshape(2, 3, 2, 2).float()
    rows = pixel_rows(x, None)
    assert rows.shape == (8, 3)
    assert rows[5].tolist() == x[1, :, 0, 1].tolist()  # image 1, pixel (0, 1)
    assert pixel_rows(x, torch.tensor([3])).tolist() == [x[0, :, 1, 1].tolist(), x[1, :, 1, 1].tolist()]


# --------------------------------------------------------------------------- identical models
def test_identical_models_every_adapter_at_i_eq_j_reproduces_the_classifier():
    cls = Toy(seed=3)
    donor = copy.deepcopy(cls)
    pre_c, pre_d = protocol_preprocess("shared", Pre(16), Pre(32))  # shared input: same shapes at i = j
    batches = images(48)
    sh = shapes(cls, pre_c, batches[0])
    pairs = [(k, k) for k in range(3)]
    fitted, _ = fit_label_free(donor, pre_d, cls, pre_c, batches, pairs, sh, sh, ["moments", "lstsq"],
                               ridge=0.0, eps=0.0, max_pixels=None)
    x = torch.cat(batches[:2])
    with torch.no_grad():
        ref = cls(pre_c(x))
        for k in range(3):
            h = run_stages(donor, pre_d(x), k)[-1]
            assert torch.equal(run_from(cls, Adapter(sh[k], sh[k])(h), k), ref)
            assert torch.allclose(run_from(cls, fitted[("moments", k, k)](h), k), ref, atol=1e-4)
            lst = fitted[("lstsq", k, k)]
            assert torch.allclose(run_from(cls, lst(h), k), ref, atol=1e-4)
            # distill starts at lstsq: the teacher is already matched, so the adapter stays put
            d = copy.deepcopy(lst)
            teacher = torch.cat([cls(pre_c(b)) for b in batches])
            src = resized_inputs(d, [run_stages(donor, pre_d(b), k)[-1] for b in batches])
            train_conv_adapter(d, src, cls, k, teacher_logits=teacher, steps=5, batch_size=8, tol=1e-6)
            assert torch.allclose(run_from(cls, d(h), k), ref, atol=1e-4)


def test_distill_and_supervised_lower_their_loss_and_need_one_target():
    cls, donor = Toy(seed=0), Toy(widths=(5, 3, 7), seed=1)
    pre = Pre(16)
    batches = images(32)
    sh_d, sh_c = shapes(donor, pre, batches[0]), shapes(cls, pre, batches[0])
    a = ConvAdapter(sh_d[1], sh_c[1])
    src = resized_inputs(a, [run_stages(donor, pre(b), 1)[-1] for b in batches])
    with torch.no_grad():
        teacher = torch.cat([cls(pre(b)) for b in batches])
    res = train_conv_adapter(a, src, cls, 1, teacher_logits=teacher, steps=40, batch_size=32, lr=0.05)
    assert res["loss_last"] < res["loss_first"]
    assert all(p.requires_grad for p in cls.parameters())  # the classifier is left as it was
    labels = teacher.argmax(1)
    res = train_conv_adapter(ConvAdapter(sh_d[1], sh_c[1]), src, cls, 1, labels=labels, steps=40, batch_size=32, lr=0.05)
    assert res["loss_last"] < res["loss_first"]
    with pytest.raises(ValueError, match="exactly one"):
        train_conv_adapter(a, src, cls, 1, steps=1)
    with pytest.raises(ValueError, match="exactly one"):
        train_conv_adapter(a, src, cls, 1, teacher_logits=teacher, labels=labels, steps=1)


def test_adapter_accounting():
    a = ConvAdapter((4, 8, 8), (6, 4, 4))
    assert adapter_bytes(a) == 4 * (4 * 6 + 6)
    assert adapter_flops(a) == 2 * 4 * 6 * 16 + 6 * 16
    assert adapter_bytes(Adapter((4, 8, 8), (6, 4, 4))) == 0  # the channel index is rebuilt from the seed
    m = MomentsAdapter(Adapter((4, 8, 8), (6, 4, 4)), torch.ones(6), torch.zeros(6))
    assert adapter_bytes(m) == 4 * 12
    with pytest.raises(ValueError, match="shape"):
        a(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="unknown adapter 'pca'"):
        check_adapter("pca")
    assert ADAPTERS == ("resample", "moments", "lstsq", "distill", "supervised")


# --------------------------------------------------------------------------- agreement
def test_agreement_hand_made():
    assert agreement([0, 1, 2, 3], [0, 1, 0, 0]) == 0.5
    assert agreement(torch.tensor([4, 4, 4]), torch.tensor([4, 4, 4])) == 1.0
    assert agreement([1, 2, 3, 0, 0], [0, 0, 0, 0, 1]) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="same images"):
        agreement([1, 2], [1])
    with pytest.raises(ValueError, match="zero"):
        agreement([], [])


def test_evaluate_adapters_agreement_and_accuracy_by_hand():
    cls = Toy(seed=3)
    pre = Pre(16)
    x = torch.cat(images(16))
    with torch.no_grad():
        pred = cls(pre(x)).argmax(1)
    y = pred.clone()
    y[:4] = (y[:4] + 1) % 5  # 12 of 16 labels equal the unmerged prediction
    sh = shapes(cls, pre, x)
    res, base = evaluate_adapters(copy.deepcopy(cls), pre, cls, pre, [(x[:8], y[:8]), (x[8:], y[8:])],
                                  {("resample", 2, 2): Adapter(sh[2], sh[2])})
    r = res[("resample", 2, 2)]
    assert base["acc"] == 12 / 16 and r["acc"] == 12 / 16 and r["agree"] == 1.0 and r["agreed"] == 16
    # per-image hits in batch order: the 4 relabelled images miss, the 12 others hit
    want = [False] * 4 + [True] * 12
    assert r["per_image"].tolist() == want and base["per_image"].tolist() == want


# --------------------------------------------------------------------------- budget search
TABLE = [  # bytes_saved, true acc and label-free predictors of five hand-made merges
    {"adapter": "lstsq", "i": 0, "j": 0, "bytes_saved": 10, "acc": 0.90, "cka": 0.95, "agreement": 0.97, "params": 10, "size": 9, "flops": 1},
    {"adapter": "lstsq", "i": 1, "j": 1, "bytes_saved": 40, "acc": 0.80, "cka": 0.85, "agreement": 0.90, "params": 40, "size": 7, "flops": 3},
    {"adapter": "resample", "i": 1, "j": 1, "bytes_saved": 42, "acc": 0.50, "cka": 0.85, "agreement": 0.55, "params": 40, "size": 7, "flops": 3},
    {"adapter": "lstsq", "i": 2, "j": 2, "bytes_saved": 70, "acc": 0.60, "cka": 0.40, "agreement": 0.70, "params": 70, "size": 2, "flops": 6},
    {"adapter": "lstsq", "i": 1, "j": 2, "bytes_saved": 70, "acc": 0.30, "cka": 0.60, "agreement": 0.35, "params": 70, "size": 2, "flops": 6},
]


def names(picked):
    return sorted((c["adapter"], c["i"], c["j"]) for c in picked)


def test_budget_search_returns_the_known_best_under_each_budget():
    assert names(choose(TABLE, 0, "agreement")) == [("lstsq", 0, 0)]
    assert names(choose(TABLE, 30, "agreement")) == [("lstsq", 1, 1)]
    assert names(choose(TABLE, 41, "agreement")) == [("lstsq", 2, 2)]  # 42-byte merge: agreement 0.55 < 0.70
    assert names(choose(TABLE, 60, "agreement")) == [("lstsq", 2, 2)]
    assert names(choose(TABLE, 60, "cka")) == [("lstsq", 1, 2)]  # CKA prefers the worse one here
    assert choose(TABLE, 71, "cka") == []
    # ties: CKA cannot tell the two adapters of pair (1, 1) apart
    assert names(choose(TABLE, 30, "cka")) == [("lstsq", 1, 1), ("resample", 1, 1)]
    assert names(choose(TABLE, 30, "params")) == [("lstsq", 1, 1), ("resample", 1, 1)]
    assert names(choose(TABLE, 0, "agreement", floor=0.98)) == []
    assert names(choose(TABLE, 0, "cka", floor=0.9)) == [("lstsq", 0, 0)]
    sweep = budget_sweep(TABLE, [0, 30, 60], 100, ["agreement", "cka"])
    by = {(r["budget_bytes"], r["predictor"]): r for r in sweep}
    assert by[(30, "cka")]["chosen_acc"] == pytest.approx((0.8 + 0.5) / 2)  # tie: mean accuracy
    assert by[(30, "cka")]["regret"] == pytest.approx(0.8 - 0.65)
    assert by[(60, "agreement")]["regret"] == 0 and by[(60, "cka")]["regret"] == pytest.approx(0.3)
    reg = {r["predictor"]: r for r in regret_table(sweep)}
    assert reg["agreement"]["mean_regret"] == 0
    assert reg["cka"]["max_regret"] == pytest.approx(0.3)


def test_budget_search_never_reads_accuracy():
    garbage = [{**c, "acc": float(k * 7 % 5)} for k, c in enumerate(TABLE)]
    for pred in ("cka", "agreement", "cka_x_agreement", "params", "size", "flops"):
        for b in (0, 30, 41, 60):
            assert names(choose(TABLE, b, pred)) == names(choose(garbage, b, pred))
    no_acc = [{k: v for k, v in c.items() if k != "acc"} for c in TABLE]
    assert names(choose(no_acc, 30, "agreement")) == [("lstsq", 1, 1)]


def test_budget_bad_values_are_named():
    with pytest.raises(ValueError, match="negative"):
        check_budget(-1, 100)
    with pytest.raises(ValueError, match="exceeds the classifier's 100 bytes"):
        budget_sweep(TABLE, [101], 100)
    with pytest.raises(ValueError, match="unknown predictor 'acc'"):
        choose(TABLE, 0, "acc")
    with pytest.raises(ValueError, match="floor"):
        choose(TABLE, 0, "cka", floor=1.5)


def test_pareto_front():
    pts = [(10, 0.9), (40, 0.8), (42, 0.5), (70, 0.6), (70, 0.3)]
    assert pareto_front(pts) == [(10, 0.9), (40, 0.8), (70, 0.6)]
