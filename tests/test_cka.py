"""CKA estimators against closed forms, invariances and Kornblith's published demo values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from repshare.cka import (
    FullSetCKA,
    MinibatchCKA,
    center_gram,
    cka_from_grams,
    gram_linear,
    gram_rbf,
    hsic1,
    linear_cka,
    linear_cka_features,
    rbf_cka,
)


@pytest.fixture
def xy():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 12))
    Y = X @ rng.standard_normal((12, 7)) + 0.5 * rng.standard_normal((60, 7))
    return X, Y


def _random_orthogonal(d: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return q


def test_kornblith_reference_values():
    # Values printed in Kornblith et al.'s CKA demo notebook for this exact data.
    np.random.seed(1337)
    X = np.random.randn(100, 10)
    Y = np.random.randn(100, 10) + X
    assert float(linear_cka(X, Y)) == pytest.approx(0.55761, abs=1e-5)
    assert float(cka_from_grams(gram_linear(X), gram_linear(Y))) == pytest.approx(0.55761, abs=1e-5)
    assert float(rbf_cka(X, Y, threshold=0.5)) == pytest.approx(0.65483, abs=1e-5)
    assert float(cka_from_grams(gram_linear(X), gram_linear(Y), debiased=True)) == pytest.approx(0.51346, abs=1e-5)
    assert float(linear_cka_features(X, Y, debiased=True)) == pytest.approx(0.51346, abs=1e-5)


def test_self_similarity_is_one(xy):
    X, _ = xy
    assert float(linear_cka(X, X)) == pytest.approx(1.0, abs=1e-12)
    assert float(rbf_cka(X, X)) == pytest.approx(1.0, abs=1e-12)
    assert float(cka_from_grams(gram_linear(X), gram_linear(X), debiased=True)) == pytest.approx(1.0, abs=1e-12)


def test_invariant_to_orthogonal_and_isotropic_scaling(xy):
    X, Y = xy
    base = float(linear_cka(X, Y))
    Q = _random_orthogonal(X.shape[1], 1)
    assert float(linear_cka(X @ Q, Y)) == pytest.approx(base, abs=1e-12)
    assert float(linear_cka(3.7 * X, 0.01 * Y)) == pytest.approx(base, abs=1e-12)
    assert float(rbf_cka(X @ Q, Y)) == pytest.approx(float(rbf_cka(X, Y)), abs=1e-12)
    assert float(rbf_cka(5 * X, Y)) == pytest.approx(float(rbf_cka(X, Y)), abs=1e-12)


def test_not_invariant_to_anisotropic_scaling(xy):
    X, Y = xy
    scale = np.ones(X.shape[1])
    scale[0] = 50.0
    assert abs(float(linear_cka(X * scale, Y)) - float(linear_cka(X, Y))) > 1e-2


def test_gram_and_feature_forms_agree(xy):
    X, Y = xy
    gram = cka_from_grams(gram_linear(X), gram_linear(Y))
    assert float(linear_cka_features(X, Y)) == pytest.approx(float(gram), abs=1e-12)
    # many features (gram branch of linear_cka) vs few (feature branch) give the same value
    rng = np.random.default_rng(3)
    W = rng.standard_normal((200, 300))
    Z = W[:, :5] + 0.1 * rng.standard_normal((200, 5))
    assert float(linear_cka(W, Z)) == pytest.approx(float(cka_from_grams(gram_linear(W), gram_linear(Z))), abs=1e-12)
    assert float(linear_cka(torch.tensor(W).reshape(200, 3, 10, 10), Z)) == pytest.approx(float(linear_cka(W, Z)))


def test_gram_rbf_closed_form():
    X = np.array([[0.0], [1.0], [3.0]])
    # squared distances [[0,1,9],[1,0,4],[9,4,0]] -> numpy median 1; sigma^2 = 0.25 * 1
    K = gram_rbf(X, threshold=0.5).numpy()
    d2 = np.array([[0, 1, 9], [1, 0, 4], [9, 4, 0]], dtype=float)
    np.testing.assert_allclose(K, np.exp(-d2 / (2 * 0.25)), rtol=1e-12)


def test_center_gram_matches_hkh(xy):
    X, _ = xy
    K = gram_linear(X).numpy()
    n = K.shape[0]
    H = np.eye(n) - 1.0 / n
    np.testing.assert_allclose(center_gram(K).numpy(), H @ K @ H, atol=1e-10)


def test_hsic1_equals_u_centred_inner_product(xy):
    X, Y = xy
    K, L = gram_linear(X), gram_linear(Y)
    n = K.shape[0]
    inner = (center_gram(K, unbiased=True) * center_gram(L, unbiased=True)).sum()
    assert float(hsic1(K, L)) * n * (n - 3) == pytest.approx(float(inner), rel=1e-10)
    # HSIC_1 of independent data averages to ~0 while the biased HSIC stays positive
    rng = np.random.default_rng(5)
    vals = [float(hsic1(gram_linear(rng.standard_normal((20, 3))), gram_linear(rng.standard_normal((20, 3)))))
            for _ in range(200)]
    assert abs(np.mean(vals)) < 3 * np.std(vals) / np.sqrt(len(vals))


def test_float32_large_offset_is_exact():
    rng = np.random.default_rng(7)
    # values on a 2**-8 grid: X + 1e4 is exactly representable in float32 (ulp 2**-10 there)
    X = np.round(rng.standard_normal((80, 16)) * 256) / 256
    Y = np.round((X[:, :8] + rng.standard_normal((80, 8))) * 256) / 256
    want = float(linear_cka(X, Y))
    X32 = torch.tensor(X + 1e4, dtype=torch.float32)
    Y32 = torch.tensor(Y + 1e4, dtype=torch.float32)
    assert np.array_equal(X32.double().numpy() - 1e4, X)
    assert float(linear_cka(X32, Y32)) == pytest.approx(want, abs=1e-6)
    assert float(linear_cka_features(X32, Y32)) == pytest.approx(want, abs=1e-6)
    mb = MinibatchCKA(1, 1)
    mb.update([X32], [Y32])
    want_db = float(cka_from_grams(gram_linear(X), gram_linear(Y), debiased=True))
    assert float(mb.compute()[0, 0]) == pytest.approx(want_db, abs=1e-6)


def test_minibatch_single_batch_equals_debiased_cka(xy):
    X, Y = xy
    rng = np.random.default_rng(2)
    Z = rng.standard_normal((60, 4, 2, 2))
    xs, ys = [X, Z], [Y, X, Z]
    mb = MinibatchCKA(2, 3, dtype=torch.float64)
    mb.update([torch.tensor(a) for a in xs], [torch.tensor(b) for b in ys])
    got = mb.compute().numpy()
    for i, a in enumerate(xs):
        for j, b in enumerate(ys):
            want = float(cka_from_grams(gram_linear(a), gram_linear(b), debiased=True))
            assert got[i, j] == pytest.approx(want, abs=1e-10), (i, j)
    assert got[0, 1] == pytest.approx(1.0, abs=1e-12)  # X vs X


def test_minibatch_biased_single_batch_equals_biased_cka(xy):
    X, Y = xy
    mb = MinibatchCKA(1, 1, unbiased=False)
    mb.update([torch.tensor(X)], [torch.tensor(Y)])
    assert float(mb.compute()[0, 0]) == pytest.approx(float(linear_cka(X, Y)), abs=1e-10)


def test_minibatch_rbf_single_batch_equals_debiased_rbf_cka(xy):
    X, Y = xy
    mb = MinibatchCKA(1, 1, kernel="rbf", rbf_threshold=0.5)
    mb.update([torch.tensor(X)], [torch.tensor(Y)])
    assert float(mb.compute()[0, 0]) == pytest.approx(float(rbf_cka(X, Y, 0.5, debiased=True)), abs=1e-10)


def test_minibatch_accumulates_hsic_sums(xy):
    X, Y = xy
    X, Y = torch.tensor(X), torch.tensor(Y)
    mb = MinibatchCKA(1, 1)
    for sl in (slice(0, 20), slice(20, 40), slice(40, 60)):
        mb.update([X[sl]], [Y[sl]])
    hxy = sum(float(hsic1(gram_linear(X[s]), gram_linear(Y[s]))) for s in (slice(0, 20), slice(20, 40), slice(40, 60)))
    hxx = sum(float(hsic1(gram_linear(X[s]), gram_linear(X[s]))) for s in (slice(0, 20), slice(20, 40), slice(40, 60)))
    hyy = sum(float(hsic1(gram_linear(Y[s]), gram_linear(Y[s]))) for s in (slice(0, 20), slice(20, 40), slice(40, 60)))
    assert float(mb.compute()[0, 0]) == pytest.approx(hxy / np.sqrt(hxx * hyy), rel=1e-10)
    assert mb.n == 60 and mb.batches == 3


def test_agrees_with_torch_cka_package():
    torch_cka = pytest.importorskip("torch_cka")
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    net1 = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 8))
    net2 = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.ReLU(), torch.nn.Linear(12, 5))
    data = torch.randn(64, 6)
    loader = DataLoader(TensorDataset(data), batch_size=16)
    ref = torch_cka.CKA(net1, net2, "a", "b", ["0", "2"], ["0", "2"], device="cpu")
    ref.compare(loader, loader)
    want = ref.export()["CKA"].numpy()
    mb = MinibatchCKA(2, 2)
    with torch.no_grad():
        for (x,) in loader:
            mb.update([net1[0](x), net1(x)], [net2[0](x), net2(x)])
    np.testing.assert_allclose(mb.compute().numpy(), want, atol=1e-4)


def test_bad_inputs_name_model_and_stage():
    names = (["detector/stem", "detector/stage1"], ["classifier/stem"])
    mb = MinibatchCKA(2, 1, names=names)
    a = torch.randn(8, 3)
    with pytest.raises(ValueError, match="n >= 4|>= 4"):
        mb.update([a[:3], a[:3]], [a[:3]])
    with pytest.raises(ValueError, match="detector/stage1"):
        mb.update([a, a[:6]], [a])
    with pytest.raises(ValueError, match="mismatched batch"):
        mb.update([a, a], [a[:6]])
    bad = a.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="classifier/stem.*NaN"):
        mb.update([a, a], [bad])
    inf = a.clone()
    inf[0, 0] = float("inf")
    with pytest.raises(ValueError, match="detector/stage1.*NaN/Inf"):
        mb.update([a, inf], [a])
    with pytest.raises(ValueError, match="expected 2"):
        mb.update([a], [a])
    with pytest.raises(ValueError, match="before any update"):
        mb.compute()
    with pytest.raises(ValueError, match="n=8 vs n=6"):
        linear_cka(a, a[:6])
    with pytest.raises(ValueError, match="n >= 4"):
        hsic1(gram_linear(a[:3]), gram_linear(a[:3]))
    with pytest.raises(ValueError, match="kernel"):
        MinibatchCKA(1, 1, kernel="poly")


def test_minibatch_gram_and_feature_centring_agree():
    rng = np.random.default_rng(11)
    X = torch.tensor(rng.standard_normal((50, 40)) + 0.5, dtype=torch.float32)  # offset/spread ~ 0.25
    Y = torch.tensor(rng.standard_normal((50, 30)), dtype=torch.float32) + X[:, :30]
    fast, slow = MinibatchCKA(1, 1), MinibatchCKA(1, 1, max_offset_ratio=-1.0)  # -1: always centre features
    fast.update([X], [Y])
    slow.update([X], [Y])
    want = float(cka_from_grams(gram_linear(X), gram_linear(Y), debiased=True))
    assert float(fast.compute()[0, 0]) == pytest.approx(want, abs=1e-6)
    assert float(slow.compute()[0, 0]) == pytest.approx(want, abs=1e-6)
    # with a 1e4 offset the float32 gram-space path is wrong, so the feature path is required there
    naive = MinibatchCKA(1, 1, max_offset_ratio=float("inf"))
    naive.update([X + 1e4], [Y + 1e4])
    assert abs(float(naive.compute()[0, 0]) - want) > 1e-3


# --------------------------------------------------------------------------- full-set CKA (the paper's Eq. 1)
def eq1_numpy(X: np.ndarray, Y: np.ndarray) -> float:
    """Eq. 1 written out: HSIC_0(K, L) = tr(K H L H) / (n - 1)^2 with K = X X^T, L = Y Y^T."""
    X, Y = X.reshape(len(X), -1), Y.reshape(len(Y), -1)
    n = len(X)
    H = np.eye(n) - np.ones((n, n)) / n
    K, L = X @ X.T, Y @ Y.T

    def hsic(a, b):
        return np.trace(a @ H @ b @ H) / (n - 1) ** 2

    return hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))


def full_set(xs, ys, bounds, **kw) -> np.ndarray:
    n = len(xs[0])
    acc = FullSetCKA(n, ([f"x{k}" for k in range(len(xs))], [f"y{k}" for k in range(len(ys))]), **kw)
    try:
        for a, b in bounds:
            acc.add("x", [torch.tensor(x[a:b], dtype=torch.float32) for x in xs])
            acc.add("y", [torch.tensor(y[a:b], dtype=torch.float32) for y in ys])
        return acc.compute().numpy()
    finally:
        acc.close()


@pytest.fixture
def reps():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((40, 3, 4, 4)) + 2.0  # an offset: the estimator centres it away
    Y = X.reshape(40, -1)[:, :10] @ rng.standard_normal((10, 6)) + rng.standard_normal((40, 6))
    Z = rng.standard_normal((40, 5))
    return [X, Z], [Y, Z, X]


def test_full_set_cka_is_eq1_written_out(reps):
    xs, ys = reps
    got = full_set(xs, ys, [(0, 13), (13, 29), (29, 40)], block_bytes=40 * 4 * 7)  # column blocks of 7 features
    want = np.array([[eq1_numpy(x, y) for y in ys] for x in xs])
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert got[1, 1] == pytest.approx(1.0, abs=1e-6) and got[0, 2] == pytest.approx(1.0, abs=1e-6)  # CKA(X, X) = 1


def test_full_set_cka_ignores_batching_and_blocks(reps):
    xs, ys = reps
    one = full_set(xs, ys, [(0, 40)])
    np.testing.assert_allclose(full_set(xs, ys, [(0, 2), (2, 40)], block_bytes=1), one, atol=1e-6)


def test_full_set_cka_invariances(reps):
    xs, ys = reps
    X, Y = xs[0].reshape(40, -1), ys[0]
    base = full_set([X], [Y], [(0, 40)])[0, 0]
    Q = _random_orthogonal(X.shape[1], 2)
    assert full_set([X @ Q], [Y], [(0, 40)])[0, 0] == pytest.approx(base, abs=1e-6)  # orthogonal transform
    assert full_set([7.5 * X], [0.02 * Y], [(0, 40)])[0, 0] == pytest.approx(base, abs=1e-6)  # isotropic scaling
    scale = np.ones(X.shape[1])
    scale[0] = 40.0
    assert abs(full_set([X * scale], [Y], [(0, 40)])[0, 0] - base) > 1e-2  # not anisotropic scaling


def test_full_set_rbf_and_debiased_match_the_gram_forms(reps):
    xs, ys = reps
    rbf = full_set(xs, ys, [(0, 20), (20, 40)], kernel="rbf", rbf_threshold=0.5)
    deb = full_set(xs, ys, [(0, 20), (20, 40)], debiased=True)
    for i, x in enumerate(xs):
        for j, y in enumerate(ys):
            assert rbf[i, j] == pytest.approx(float(rbf_cka(x, y, 0.5)), abs=1e-5)
            assert deb[i, j] == pytest.approx(float(cka_from_grams(gram_linear(x), gram_linear(y), debiased=True)),
                                              abs=1e-5)


def test_full_set_differs_from_the_minibatch_estimator(reps):
    """Eq. 1 on the whole set is not the sum of per-batch HSICs: the two estimators are different numbers."""
    xs, ys = reps
    mb = MinibatchCKA(1, 1, unbiased=False)
    for a, b in ((0, 10), (10, 20), (20, 30), (30, 40)):
        mb.update([torch.tensor(xs[0][a:b])], [torch.tensor(ys[0][a:b])])
    assert abs(float(mb.compute()[0, 0]) - eq1_numpy(xs[0], ys[0])) > 1e-3


def test_full_set_spills_features_to_disk_and_removes_them(reps, tmp_path):
    xs, ys = reps
    acc = FullSetCKA(40, (["x"], ["y"]), spill_dir=str(tmp_path))
    acc.add("x", [torch.tensor(xs[0][:20], dtype=torch.float32)])
    acc.add("y", [torch.tensor(ys[0][:20], dtype=torch.float32)])
    files = list(tmp_path.rglob("*.f"))
    assert sorted(f.stat().st_size for f in files) == [20 * 6 * 4, 20 * 48 * 4]  # 20 examples so far, float32
    assert acc.spill_bytes() == 40 * (48 + 6) * 4
    with pytest.raises(ValueError, match="sized for n=40"):
        acc.add("x", [torch.zeros(21, 3, 4, 4)])
    with pytest.raises(ValueError, match="x: 5 features per example, earlier batches had 48"):
        acc.add("x", [torch.zeros(4, 5)])
    acc.close()
    assert not list(tmp_path.rglob("*.f"))


def test_full_set_bad_inputs_are_named():
    acc = FullSetCKA(8, (["detector/stem"], ["classifier/stem"]))
    bad = torch.zeros(4, 3)
    bad[1, 1] = float("nan")
    with pytest.raises(ValueError, match="detector/stem.*NaN"):
        acc.add("x", [bad])
    acc.add("x", [torch.randn(4, 3)])
    with pytest.raises(ValueError, match="4 x-examples and 0 y-examples"):
        acc.compute()
    with pytest.raises(ValueError, match="n >= 2"):
        FullSetCKA(1, (["a"], ["b"]))
    acc.close()


def test_full_set_large_offset_in_float32():
    rng = np.random.default_rng(7)
    X = np.round(rng.standard_normal((80, 16)) * 256) / 256  # exactly representable after + 1e4 in float32
    Y = np.round((X[:, :8] + rng.standard_normal((80, 8))) * 256) / 256
    got = full_set([X + 1e4], [Y + 1e4], [(0, 30), (30, 80)])[0, 0]
    assert got == pytest.approx(eq1_numpy(X, Y), abs=1e-5)
