"""Centered kernel alignment (CKA) between two sets of representations of the same n examples.

Full-data estimators follow Kornblith et al. 2019 (and their reference notebook): linear and RBF
grams, biased (HSIC_0) or debiased (unbiased-centred) CKA. ``MinibatchCKA`` is the streaming
estimator of Nguyen et al. 2021: per minibatch it adds the unbiased HSIC_1 (Song et al. 2012) of
every pair of representations, and CKA = sum HSIC(K, L) / sqrt(sum HSIC(K, K) * sum HSIC(L, L)).
Memory depends only on the batch size, never on the total number of examples. ``FullSetCKA`` is
Cao et al.'s Eq. 1 in a streamed pass: HSIC_0 of the n x n grams of the whole set, built from
features spilled to disk batch by batch.

Every function accepts numpy arrays or torch tensors shaped (n, ...) and flattens them to (n, d).
Sums are accumulated in float64 (FullSetCKA: float32 products of centred feature blocks, summed in float64).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch



def _matrix(X, dtype: torch.dtype = torch.float64, what: str = "X") -> torch.Tensor:
    """(n, ...) array/tensor -> (n, d) tensor of ``dtype`` (on the input's device)."""
    t = torch.as_tensor(X)
    if t.ndim < 1:
        raise ValueError(f"{what} must have a leading sample dimension, got a scalar")
    if t.ndim == 1:
        t = t[:, None]
    return t.reshape(t.shape[0], -1).to(dtype)


def _check_same_n(X: torch.Tensor, Y: torch.Tensor) -> None:
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X and Y must hold the same examples: n={X.shape[0]} vs n={Y.shape[0]}")


def _check_gram(K: torch.Tensor, what: str) -> None:
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(f"{what} must be a square (n, n) gram matrix, got shape {tuple(K.shape)}")


# --------------------------------------------------------------------------------------- grams
def gram_linear(X) -> torch.Tensor:
    """Linear kernel gram X X^T (float64)."""
    X = _matrix(X)
    return X @ X.T


def _median(t: torch.Tensor) -> torch.Tensor:
    """numpy-style median (mean of the two middle values for an even count)."""
    s = torch.sort(t.flatten()).values
    m = s.numel()
    return (s[(m - 1) // 2] + s[m // 2]) / 2


def gram_rbf(X, threshold: float = 0.5) -> torch.Tensor:
    """RBF gram with bandwidth sigma = threshold * sqrt(median squared distance) (Kornblith)."""
    if threshold <= 0:
        raise ValueError(f"rbf threshold must be > 0, got {threshold}")
    X = _matrix(X)
    dots = X @ X.T
    sq = torch.diagonal(dots)
    sq_dist = (sq[:, None] + sq[None, :] - 2 * dots).clamp_min(0)
    med = _median(sq_dist)
    return torch.exp(-sq_dist / (2 * threshold**2 * med))


def center_gram(K, unbiased: bool = False) -> torch.Tensor:
    """Double-centre a gram matrix: H K H, or the unbiased (U-)centring of Kornblith's notebook."""
    K = torch.as_tensor(K).to(torch.float64).clone()
    _check_gram(K, "K")
    n = K.shape[0]
    if unbiased:
        if n < 4:
            raise ValueError(f"unbiased centring needs n >= 4 examples, got n={n}")
        K.fill_diagonal_(0)
        means = K.sum(0) / (n - 2)
        means = means - means.sum() / (2 * (n - 1))
        K = K - means[:, None] - means[None, :]
        K.fill_diagonal_(0)
    else:
        means = K.mean(0)
        means = means - means.mean() / 2
        K = K - means[:, None] - means[None, :]
    return K


def cka_from_grams(K, L, debiased: bool = False) -> torch.Tensor:
    """CKA of two (n, n) grams; ``debiased`` uses unbiased centring (Kornblith's debiased CKA)."""
    K, L = torch.as_tensor(K), torch.as_tensor(L)
    _check_gram(K, "K")
    _check_gram(L, "L")
    _check_same_n(K, L)
    Kc = center_gram(K, unbiased=debiased)
    Lc = center_gram(L, unbiased=debiased)
    return (Kc * Lc).sum() / (torch.linalg.norm(Kc) * torch.linalg.norm(Lc))


# ------------------------------------------------------------------------------- feature forms
def _centred_pair(X, Y) -> tuple[torch.Tensor, torch.Tensor]:
    X, Y = _matrix(X, what="X"), _matrix(Y, what="Y")
    _check_same_n(X, Y)
    return X - X.mean(0, keepdim=True), Y - Y.mean(0, keepdim=True)


def _debiased_dot(xty, rows_x, rows_y, sq_x, sq_y, n: int):
    return xty - n / (n - 2.0) * (rows_x @ rows_y) + sq_x * sq_y / ((n - 1) * (n - 2))


def linear_cka_features(X, Y, debiased: bool = False) -> torch.Tensor:
    """Linear CKA in feature space: ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F) on centred columns.

    Cost O(n d_x d_y); exact for large common offsets because centring happens in float64.
    """
    X, Y = _centred_pair(X, Y)
    n = X.shape[0]
    xy = torch.linalg.norm(Y.T @ X) ** 2
    xx = torch.linalg.norm(X.T @ X)
    yy = torch.linalg.norm(Y.T @ Y)
    if debiased:
        if n < 4:
            raise ValueError(f"debiased CKA needs n >= 4 examples, got n={n}")
        rx, ry = (X * X).sum(1), (Y * Y).sum(1)
        sx, sy = rx.sum(), ry.sum()
        xy = _debiased_dot(xy, rx, ry, sx, sy, n)
        xx = torch.sqrt(_debiased_dot(xx**2, rx, rx, sx, sx, n))
        yy = torch.sqrt(_debiased_dot(yy**2, ry, ry, sy, sy, n))
    return xy / (xx * yy)


def linear_cka(X, Y) -> torch.Tensor:
    """Linear CKA (paper Eq. 1, biased HSIC on linear grams), centring columns in float64.

    Uses the feature-space form when it is cheaper than the gram form (they are equal exactly).
    """
    X, Y = _centred_pair(X, Y)
    n, dx, dy = X.shape[0], X.shape[1], Y.shape[1]
    if dx * dy + dx * dx + dy * dy <= 3 * n * n:
        xy = torch.linalg.norm(Y.T @ X) ** 2
        xx = torch.linalg.norm(X.T @ X)
        yy = torch.linalg.norm(Y.T @ Y)
    else:
        K, L = X @ X.T, Y @ Y.T
        xy, xx, yy = (K * L).sum(), torch.linalg.norm(K), torch.linalg.norm(L)
    return xy / (xx * yy)


def rbf_cka(X, Y, threshold: float = 0.5, debiased: bool = False) -> torch.Tensor:
    """CKA with RBF kernels (bandwidth ``threshold`` x median distance, per representation)."""
    Xm, Ym = _matrix(X, what="X"), _matrix(Y, what="Y")
    _check_same_n(Xm, Ym)
    return cka_from_grams(gram_rbf(Xm, threshold), gram_rbf(Ym, threshold), debiased=debiased)


def hsic1(K, L) -> torch.Tensor:
    """Unbiased HSIC_1 estimator (Song et al. 2012) of two (n, n) grams; needs n >= 4."""
    K = torch.as_tensor(K).to(torch.float64).clone()
    L = torch.as_tensor(L).to(torch.float64).clone()
    _check_gram(K, "K")
    _check_gram(L, "L")
    _check_same_n(K, L)
    n = K.shape[0]
    if n < 4:
        raise ValueError(f"unbiased HSIC_1 needs n >= 4 examples, got n={n}")
    K.fill_diagonal_(0)
    L.fill_diagonal_(0)
    trace = (K * L).sum()
    middle = K.sum() * L.sum() / ((n - 1) * (n - 2))
    last = 2.0 / (n - 2) * (K.sum(1) @ L.sum(1))
    return (trace + middle - last) / (n * (n - 3))


# ---------------------------------------------------------------------------- minibatch CKA
def _pair_hsic(kx: torch.Tensor, ky: torch.Tensor, unbiased: bool) -> torch.Tensor:
    """HSIC of every pair of stacked grams: kx (a, n, n), ky (b, n, n) -> (a, b).

    Unbiased: HSIC_1 of Song et al. (diagonals are zeroed here). Biased: tr(K H L H) / (n-1)^2.
    """
    n = kx.shape[-1]
    if unbiased:
        eye = torch.eye(n, dtype=torch.bool, device=kx.device)
        kx = kx.masked_fill(eye, 0)
        ky = ky.masked_fill(eye, 0)
        trace = kx.reshape(kx.shape[0], -1) @ ky.reshape(ky.shape[0], -1).T
        rx, ry = kx.sum(2), ky.sum(2)  # row sums (a, n), (b, n)
        sx, sy = rx.sum(1), ry.sum(1)
        middle = torch.outer(sx, sy) / ((n - 1) * (n - 2))
        last = (2.0 / (n - 2)) * (rx @ ry.T)
        return (trace + middle - last) / (n * (n - 3))
    kx = _centre_stack(kx)
    ky = _centre_stack(ky)
    return (kx.reshape(kx.shape[0], -1) @ ky.reshape(ky.shape[0], -1).T) / (n - 1) ** 2


def _centre_stack(k: torch.Tensor) -> torch.Tensor:
    """H K H for a stack of grams (a, n, n)."""
    return k - k.mean(1, keepdim=True) - k.mean(2, keepdim=True) + k.mean((1, 2), keepdim=True)


def _self_hsic(k: torch.Tensor, unbiased: bool) -> torch.Tensor:
    """HSIC(K_i, K_i) for a stack (a, n, n) -> (a,), without forming the (a, a) matrix."""
    n = k.shape[-1]
    if unbiased:
        eye = torch.eye(n, dtype=torch.bool, device=k.device)
        k = k.masked_fill(eye, 0)
        trace = (k * k).sum((1, 2))
        r = k.sum(2)
        s = r.sum(1)
        return (trace + s * s / ((n - 1) * (n - 2)) - (2.0 / (n - 2)) * (r * r).sum(1)) / (n * (n - 3))
    k = _centre_stack(k)
    return (k * k).sum((1, 2)) / (n - 1) ** 2


class MinibatchCKA:
    """Streaming CKA of every x-representation against every y-representation (Nguyen et al. 2021).

    ``update`` takes one minibatch: a list of ``n_x`` tensors (b, ...) and ``n_y`` tensors (b, ...)
    for the same b examples. Each gram is computed once per batch; all pair HSICs come from one
    stacked matmul. ``compute`` returns the (n_x, n_y) CKA matrix.

    Linear grams are centred per batch (HSIC_1 and the centred HSIC_0 are invariant to that): in
    gram space (H K H in ``dtype``) when ||batch mean||^2 <= ``max_offset_ratio`` x the spread
    (typical activations: 0.1-0.3), else by centring the features and recomputing the gram, which
    keeps float32 grams exact under large common offsets. Grams are formed in ``gram_dtype``
    (default: the input's floating dtype) and promoted to ``dtype`` for the HSIC sums.
    """

    def __init__(
        self,
        n_x: int,
        n_y: int,
        kernel: str = "linear",
        unbiased: bool = True,
        dtype: torch.dtype = torch.float64,
        names: tuple[Sequence[str], Sequence[str]] | None = None,
        rbf_threshold: float = 0.5,
        gram_dtype: torch.dtype | None = None,
        max_offset_ratio: float = 4.0,
    ):
        if kernel not in ("linear", "rbf"):
            raise ValueError(f"kernel must be 'linear' or 'rbf', got {kernel!r}")
        if n_x < 1 or n_y < 1:
            raise ValueError(f"need at least one representation per side, got n_x={n_x}, n_y={n_y}")
        if names is None:
            names = ([f"x[{i}]" for i in range(n_x)], [f"y[{j}]" for j in range(n_y)])
        names_x, names_y = list(names[0]), list(names[1])
        if len(names_x) != n_x or len(names_y) != n_y:
            raise ValueError(f"names give {len(names_x)}/{len(names_y)} entries for n_x={n_x}, n_y={n_y}")
        self.n_x, self.n_y = n_x, n_y
        self.kernel, self.unbiased, self.dtype = kernel, unbiased, dtype
        self.rbf_threshold = rbf_threshold
        self.gram_dtype = gram_dtype
        self.max_offset_ratio = max_offset_ratio
        self.names = (names_x, names_y)
        self.reset()

    def reset(self) -> None:
        self.hsic_xy: torch.Tensor | None = None
        self.hsic_xx: torch.Tensor | None = None
        self.hsic_yy: torch.Tensor | None = None
        self.n = 0
        self.batches = 0

    # -- grams
    def gram_stack(self, feats: Sequence[torch.Tensor], side: str) -> torch.Tensor:
        """Stack of per-representation grams (k, b, b) in ``self.dtype``; side is 'x' or 'y'."""
        names = self.names[0] if side == "x" else self.names[1]
        if len(feats) != len(names):
            raise ValueError(f"expected {len(names)} {side}-representations ({names[0]}...), got {len(feats)}")
        b = None
        grams = []
        for name, f in zip(names, feats):
            f = torch.as_tensor(f)
            if b is None:
                b = f.shape[0]
            elif f.shape[0] != b:
                raise ValueError(f"{name}: batch has n={f.shape[0]} examples, expected n={b}")
            grams.append(self._gram(f, name))
        return torch.stack(grams)

    def _gram(self, f: torch.Tensor, name: str) -> torch.Tensor:
        gdt = self.gram_dtype or (f.dtype if f.is_floating_point() else torch.float32)
        f = f.reshape(f.shape[0], -1).to(gdt)
        if self.kernel == "rbf":
            k = gram_rbf(f, self.rbf_threshold).to(self.dtype)
            if not torch.isfinite(k).all():
                raise ValueError(f"{name}: activations contain NaN/Inf (non-finite gram)")
            return k
        k = (f @ f.T).to(self.dtype)
        if not torch.isfinite(k).all():
            raise ValueError(f"{name}: activations contain NaN/Inf (non-finite gram)")
        # Centre in gram space (H K H, free) unless the common offset is large against the spread,
        # where the uncentred gram has lost precision: then centre the features and redo the gram.
        b = k.shape[0]
        offset = k.sum() / b**2  # ||batch mean||^2
        spread = torch.diagonal(k).sum() / b - offset  # mean squared distance to the batch mean
        if offset <= self.max_offset_ratio * spread:
            return _centre_stack(k[None])[0]
        f = f - f.mean(0, keepdim=True)
        return (f @ f.T).to(self.dtype)

    # -- accumulation
    def update(self, xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor]) -> None:
        """Add one minibatch: xs (n_x tensors of (b, ...)) and ys (n_y tensors of (b, ...))."""
        self.update_grams(self.gram_stack(xs, "x"), self.gram_stack(ys, "y"))

    def update_grams(self, kx: torch.Tensor, ky: torch.Tensor) -> None:
        """Add one minibatch given stacked grams kx (n_x, b, b) and ky (n_y, b, b)."""
        if kx.shape[0] != self.n_x or ky.shape[0] != self.n_y:
            raise ValueError(f"gram stacks have {kx.shape[0]}/{ky.shape[0]} entries, expected {self.n_x}/{self.n_y}")
        b = kx.shape[-1]
        if ky.shape[-1] != b:
            raise ValueError(
                f"mismatched batch: {self.names[0][0]} has n={b} examples, {self.names[1][0]} has n={ky.shape[-1]}"
            )
        if self.unbiased and b < 4:
            raise ValueError(f"unbiased minibatch CKA needs batches of >= 4 examples, got n={b}")
        if not self.unbiased and b < 2:
            raise ValueError(f"minibatch CKA needs batches of >= 2 examples, got n={b}")
        kx, ky = kx.to(self.dtype), ky.to(self.dtype)
        xy = _pair_hsic(kx, ky, self.unbiased)
        xx = _self_hsic(kx, self.unbiased)
        yy = _self_hsic(ky, self.unbiased)
        if self.hsic_xy is None:
            self.hsic_xy, self.hsic_xx, self.hsic_yy = xy, xx, yy
        else:
            self.hsic_xy = self.hsic_xy + xy
            self.hsic_xx = self.hsic_xx + xx
            self.hsic_yy = self.hsic_yy + yy
        self.n += b
        self.batches += 1

    def compute(self) -> torch.Tensor:
        """(n_x, n_y) CKA: sum HSIC_xy / sqrt(sum HSIC_xx * sum HSIC_yy)."""
        if self.hsic_xy is None:
            raise ValueError("MinibatchCKA.compute() called before any update()")
        return self.hsic_xy / torch.sqrt(torch.outer(self.hsic_xx, self.hsic_yy))


# --------------------------------------------------------------------------- full-set CKA (paper Eq. 1)
class FullSetCKA:
    """CKA of every x-representation against every y-representation on the WHOLE set (paper Eq. 1).

    HSIC_0 (biased, Gretton et al. 2005) of the n x n gram matrices of all n examples, as Cao et al.
    define it; ``debiased=True`` uses the unbiased centring of Kornblith's notebook instead.

    The n x n gram of a representation needs the features of every pair of examples, so a streamed
    pass cannot form it batch by batch. ``add`` therefore appends each batch's flattened features
    (``feature_dtype``, float32 by default) to one memory-mapped file per representation in
    ``spill_dir`` (a temporary folder) and accumulates their column sums in float64: the process
    holds one batch, never the features of all examples. ``compute`` then builds each centred gram
    (Xc Xc^T) from column blocks of the file -- n x ``block_bytes`` of features at a time -- and
    takes every pair's alignment from the centred grams in ``dtype``. Memory: the grams,
    (n_x + n_y) x n^2 x 8 bytes; disk: n x sum(d) x 4 bytes (:meth:`spill_bytes`).
    """

    def __init__(
        self,
        n: int,
        names: tuple[Sequence[str], Sequence[str]],
        kernel: str = "linear",
        debiased: bool = False,
        dtype: torch.dtype = torch.float64,
        rbf_threshold: float = 0.5,
        feature_dtype: torch.dtype = torch.float32,
        spill_dir: str | None = None,
        block_bytes: int = 64 << 20,
    ):
        import tempfile

        if kernel not in ("linear", "rbf"):
            raise ValueError(f"kernel must be 'linear' or 'rbf', got {kernel!r}")
        if n < (4 if debiased else 2):
            raise ValueError(f"full-set CKA needs n >= {4 if debiased else 2} examples, got n={n}")
        self.names = (list(names[0]), list(names[1]))
        if not self.names[0] or not self.names[1]:
            raise ValueError("need at least one representation per side")
        self.n_total, self.kernel, self.debiased, self.dtype = int(n), kernel, debiased, dtype
        self.rbf_threshold, self.feature_dtype, self.block_bytes = rbf_threshold, feature_dtype, int(block_bytes)
        self._tmp = tempfile.TemporaryDirectory(prefix="repshare-cka-", dir=spill_dir)
        self._files: dict[str, tuple[str, int]] = {}
        self._sums: dict[str, torch.Tensor] = {}
        self._filled = {"x": 0, "y": 0}
        self.n = 0

    def add(self, side: str, feats: Sequence[torch.Tensor]) -> None:
        """Append one batch of the ``side`` ('x' or 'y') representations, each (b, ...)."""
        names = self.names[0] if side == "x" else self.names[1]
        if len(feats) != len(names):
            raise ValueError(f"expected {len(names)} {side}-representations ({names[0]}...), got {len(feats)}")
        start = self._filled[side]
        b = int(torch.as_tensor(feats[0]).shape[0])
        if start + b > self.n_total:
            raise ValueError(f"full-set CKA was sized for n={self.n_total} examples, got more")
        for name, f in zip(names, feats):
            f = torch.as_tensor(f).detach()
            if f.shape[0] != b:
                raise ValueError(f"{name}: batch has n={f.shape[0]} examples, expected n={b}")
            flat = f.reshape(b, -1).to("cpu", self.feature_dtype).contiguous()
            sums = flat.sum(0).double()  # a NaN/Inf anywhere shows in its column's sum: no extra pass over the batch
            if not torch.isfinite(sums).all():
                raise ValueError(f"{name}: activations contain NaN/Inf")
            if name not in self._files:  # file path, features per example
                self._files[name] = (f"{self._tmp.name}/{side}{len(self._files)}.f", flat.shape[1])
                self._sums[name] = torch.zeros(flat.shape[1], dtype=torch.float64)
                self._check_disk()
            path, width = self._files[name]
            if flat.shape[1] != width:
                raise ValueError(f"{name}: {flat.shape[1]} features per example, earlier batches had {width}")
            with open(path, "ab") as fh:  # appended, not mapped: the process never holds the file's pages
                flat.numpy().tofile(fh)
            self._sums[name] += sums  # the batch's column sums (float32 over <= a batch), summed in float64
        self._filled[side] = start + b
        self.n = min(self._filled.values())

    def _check_disk(self) -> None:
        import shutil

        need, free = self.spill_bytes(), shutil.disk_usage(self._tmp.name).free
        if need > free:
            raise ValueError(f"full-set CKA (cka.estimator=full_biased) needs {need / 2**30:.1f} GiB of temporary disk "
                             f"for n={self.n_total} examples, {free / 2**30:.1f} GiB free in {self._tmp.name}: lower "
                             "capture.n_samples or set cka.estimator=minibatch_unbiased")

    def spill_bytes(self) -> int:
        """Bytes of features written to the spill folder so far (sized for all n examples)."""
        item = torch.empty(0, dtype=self.feature_dtype).element_size()
        return sum(self.n_total * width * item for _, width in self._files.values())

    def gram(self, name: str) -> torch.Tensor:
        """Centred (n, n) gram of one representation, in ``dtype`` (linear or RBF kernel)."""
        path, d = self._files[name]
        n = self.n
        np_dtype = torch.empty(0, dtype=self.feature_dtype).numpy().dtype
        mean = (self._sums[name] / n).to(self.feature_dtype)
        width = max(1, self.block_bytes // max(1, n * np_dtype.itemsize))
        gram = torch.zeros(n, n, dtype=self.dtype)
        for a in range(0, d, width):
            view = np.memmap(path, dtype=np_dtype, mode="r", shape=(n, d))  # mapped per block, then released
            block = torch.from_numpy(np.array(view[:, a:a + width])) - mean[a:a + width]
            del view
            gram += (block @ block.T).to(self.dtype)
        if self.kernel == "rbf":
            gram = _rbf_from_linear(gram, self.rbf_threshold)
        return center_gram(gram, unbiased=self.debiased)

    def compute(self) -> torch.Tensor:
        """(n_x, n_y) CKA matrix: <Kc, Lc> / (||Kc|| ||Lc||) over all n examples."""
        if self._filled["x"] != self._filled["y"] or self.n == 0:
            raise ValueError(f"full-set CKA got {self._filled['x']} x-examples and {self._filled['y']} y-examples")
        if self.n < (4 if self.debiased else 2):
            raise ValueError(f"full-set CKA needs n >= {4 if self.debiased else 2} examples, got n={self.n}")
        kx = torch.stack([self.gram(nm).reshape(-1) for nm in self.names[0]])
        ky = torch.stack([self.gram(nm).reshape(-1) for nm in self.names[1]])
        xy = kx @ ky.T
        return xy / torch.outer(torch.linalg.norm(kx, dim=1), torch.linalg.norm(ky, dim=1))

    def close(self) -> None:
        """Delete the spill folder (also done when the object is garbage-collected)."""
        self._files.clear()
        self._tmp.cleanup()


def _rbf_from_linear(dots: torch.Tensor, threshold: float) -> torch.Tensor:
    """RBF gram from a (centred) linear gram: distances are unchanged by centring (Kornblith's bandwidth)."""
    if threshold <= 0:
        raise ValueError(f"rbf threshold must be > 0, got {threshold}")
    sq = torch.diagonal(dots)
    sq_dist = (sq[:, None] + sq[None, :] - 2 * dots).clamp_min(0)
    return torch.exp(-sq_dist / (2 * threshold**2 * _median(sq_dist)))
