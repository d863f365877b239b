"""Fitting the adapters of ``repshare.sharing.adapter`` on calibration images.

* ``moments``: streamed per-channel mean/std (float64 sums) of the fixed adapter's output and of
  the classifier's own stage-j output; ``scale = std_t / (std_s + eps)``, ``shift = mean_t - scale * mean_s``.
* ``lstsq``: ridge least squares of the classifier's stage-j features on the resized detector
  stage-i features, per pixel, with a bias. Only the sufficient statistics (n, sums, X^T X, X^T Y)
  are kept, in float64, so memory does not grow with the number of images.
* ``distill`` / ``supervised``: the lstsq 1x1 convolution trained by gradient descent through the
  frozen classifier suffix, to the unmerged classifier's logits (KL; no labels) or to labels (CE).

The label-free fits take image batches only: they have no way to read a label.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from repshare.features.stages import in_chunks, run_from, run_stages
from repshare.sharing.adapter import Adapter, ConvAdapter, MomentsAdapter, resize
from repshare.sharing.merged import apply_pre

Pair = tuple[int, int]


# --------------------------------------------------------------------------- moments
class ChannelMoments:
    """Streamed per-channel mean and (population) standard deviation of (B, C, H, W) tensors."""

    def __init__(self, channels: int):
        self.n = 0
        self.s1 = torch.zeros(channels, dtype=torch.float64)
        self.s2 = torch.zeros(channels, dtype=torch.float64)

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().to("cpu", torch.float64).transpose(0, 1).reshape(x.shape[1], -1)
        self.n += x.shape[1]
        self.s1 += x.sum(1)
        self.s2 += (x * x).sum(1)

    def mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.n < 2:
            raise ValueError(f"channel moments need at least 2 values per channel, got {self.n}")
        mean = self.s1 / self.n
        var = (self.s2 / self.n - mean * mean).clamp_min(0)
        return mean, var.sqrt()


def moments_affine(src: ChannelMoments, dst: ChannelMoments, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) mapping the source channel moments onto the target's."""
    if eps < 0:
        raise ValueError(f"moments eps must be >= 0, got {eps}")
    ms, ss = src.mean_std()
    mt, st = dst.mean_std()
    if eps == 0 and bool((ss == 0).any()):
        k = int((ss == 0).nonzero()[0])
        raise ValueError(f"moments fit: source channel {k} is constant on the calibration images and eps=0")
    scale = st / (ss + eps)
    return scale, mt - scale * ms


# --------------------------------------------------------------------------- least squares
class RidgeAccumulator:
    """Sufficient statistics of a multi-output linear regression, accumulated in float64."""

    def __init__(self, d_in: int, d_out: int):
        self.d_in, self.d_out = int(d_in), int(d_out)
        self.n = 0
        self.sx = torch.zeros(self.d_in, dtype=torch.float64)
        self.sy = torch.zeros(self.d_out, dtype=torch.float64)
        self.sxx = torch.zeros(self.d_in, self.d_in, dtype=torch.float64)
        self.sxy = torch.zeros(self.d_in, self.d_out, dtype=torch.float64)

    def update(self, X: torch.Tensor, Y: torch.Tensor) -> None:
        """Add rows X (m, d_in) and Y (m, d_out)."""
        if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
            raise ValueError(f"expected X (m, {self.d_in}) and Y (m, {self.d_out}), got {tuple(X.shape)} / {tuple(Y.shape)}")
        if X.shape[1] != self.d_in or Y.shape[1] != self.d_out:
            raise ValueError(f"expected {self.d_in} inputs and {self.d_out} outputs, got {X.shape[1]} / {Y.shape[1]}")
        X = X.detach().to("cpu", torch.float64)
        Y = Y.detach().to("cpu", torch.float64)
        self.n += X.shape[0]
        self.sx += X.sum(0)
        self.sy += Y.sum(0)
        self.sxx += X.T @ X
        self.sxy += X.T @ Y

    def solve(self, ridge: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """(W (d_out, d_in), b (d_out,)) minimising sum ||y - W x - b||^2 + lam ||W||^2.

        ``lam = ridge * trace(Cov_x)``/d_in, i.e. ``ridge`` is relative to the mean feature variance
        (scale-free); the bias is not penalised. ``ridge = 0`` is ordinary least squares and raises
        ValueError when the centred features are (numerically) singular.
        """
        if ridge < 0:
            raise ValueError(f"lstsq ridge must be >= 0, got {ridge}")
        need = self.d_in + 1 if ridge == 0 else 2
        if self.n < need:
            raise ValueError(f"least-squares fit needs at least {need} rows for {self.d_in} inputs, got {self.n}")
        mx, my = self.sx / self.n, self.sy / self.n
        cxx = self.sxx - self.n * torch.outer(mx, mx)
        cxy = self.sxy - self.n * torch.outer(mx, my)
        cxx = (cxx + cxx.T) / 2
        scale = float(torch.trace(cxx)) / self.d_in
        if ridge == 0:
            eig = torch.linalg.eigvalsh(cxx)
            if not float(eig[0]) > 1e-12 * max(float(eig[-1]), 1e-300):
                raise ValueError(
                    f"singular least-squares fit ({self.d_in} inputs, smallest/largest eigenvalue "
                    f"{float(eig[0]):.3g}/{float(eig[-1]):.3g}): constant or collinear features with ridge=0; "
                    "set a ridge > 0")
            lam = 0.0
        else:
            lam = ridge * (scale if scale > 0 else 1.0)
        A = cxx + lam * torch.eye(self.d_in, dtype=torch.float64)
        W = torch.linalg.solve(A, cxy)  # (d_in, d_out)
        b = my - mx @ W
        return W.T.contiguous(), b


def pixel_rows(x: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
    """(B, C, H, W) -> (B * P, C) rows at flat pixel ``positions`` (all H*W pixels when None)."""
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    if positions is not None:
        flat = flat[:, :, positions]
    return flat.permute(0, 2, 1).reshape(-1, x.shape[1])


def _positions(hw: int, max_pixels: int | None, gen: torch.Generator) -> torch.Tensor | None:
    if max_pixels is None or hw <= max_pixels:
        return None
    return torch.randperm(hw, generator=gen)[:max_pixels]


# --------------------------------------------------------------------------- one pass over all pairs
def fit_label_free(
    backbone: nn.Module,
    det_pre: nn.Module | None,
    classifier: nn.Module,
    cls_pre: nn.Module | None,
    images: Iterable[torch.Tensor],
    pairs: Sequence[Pair],
    src_shapes: Sequence[Sequence[int]],
    dst_shapes: Sequence[Sequence[int]],
    kinds: Sequence[str] = ("moments", "lstsq"),
    method: str = "bilinear",
    seed: int = 0,
    ridge: float = 1e-3,
    eps: float = 1e-5,
    max_pixels: int | None = 64,
    device: str | torch.device = "cpu",
    chunk: int | None = None,
) -> tuple[dict[tuple[str, int, int], nn.Module], dict]:
    """Fit ``moments`` and/or ``lstsq`` adapters of every pair in ONE pass over unlabelled ``images``.

    ``images`` yields raw image batches (B, 3, H, W) only. ``src_shapes``/``dst_shapes`` are the
    (C, H, W) stage outputs of the backbone and the classifier under the protocol's preprocessing.
    ``max_pixels`` caps the pixel rows per image and pair for lstsq (a seeded random subset; None =
    all). ``chunk``: forward passes ``chunk`` images at a time (``in_chunks``). Returns
    ({(kind, i, j): adapter}, info with seconds, images and rows seen).
    """
    bad = [k for k in kinds if k not in ("moments", "lstsq")]
    if bad:
        raise ValueError(f"fit_label_free fits moments/lstsq, not {bad[0]!r}")
    device = torch.device(device)
    pairs = [(int(i), int(j)) for i, j in pairs]
    max_i, max_j = max(i for i, _ in pairs), max(j for _, j in pairs)
    bases = {(i, j): Adapter(src_shapes[i], dst_shapes[j], method, seed).to(device) for i, j in pairs}
    src_m = {p: ChannelMoments(dst_shapes[p[1]][0]) for p in pairs} if "moments" in kinds else {}
    dst_m = {j: ChannelMoments(dst_shapes[j][0]) for j in {j for _, j in pairs}} if "moments" in kinds else {}
    ridge_acc = {(i, j): RidgeAccumulator(src_shapes[i][0], dst_shapes[j][0]) for i, j in pairs} if "lstsq" in kinds else {}
    gen = torch.Generator().manual_seed(int(seed))
    n_images = 0
    t0 = time.perf_counter()
    with torch.inference_mode():
        for x in images:
            x = x.to(device)
            outs_d = in_chunks(lambda t: run_stages(backbone, apply_pre(det_pre, t), max_i), x, chunk)
            outs_c = in_chunks(lambda t: run_stages(classifier, apply_pre(cls_pre, t), max_j), x, chunk)
            if tuple(outs_d[0].shape[1:]) != tuple(src_shapes[0]) or tuple(outs_c[0].shape[1:]) != tuple(dst_shapes[0]):
                raise ValueError("calibration images give stage shapes different from the evaluation's; "
                                 "use images of the same size")
            n_images += x.shape[0]
            for j, m in dst_m.items():
                m.update(outs_c[j])
            for i, j in pairs:
                if src_m:
                    src_m[(i, j)].update(bases[(i, j)](outs_d[i]))
                if ridge_acc:
                    h, w = dst_shapes[j][1:]
                    pos = _positions(h * w, max_pixels, gen)
                    src = resize(outs_d[i], (h, w), method)
                    ridge_acc[(i, j)].update(pixel_rows(src, pos), pixel_rows(outs_c[j], pos))
    if n_images < 2:
        raise ValueError(f"the fit needs at least 2 calibration images, got {n_images}")
    out: dict[tuple[str, int, int], nn.Module] = {}
    for i, j in pairs:
        if src_m:
            scale, shift = moments_affine(src_m[(i, j)], dst_m[j], eps)
            out[("moments", i, j)] = MomentsAdapter(bases[(i, j)], scale, shift).to(device)
        if ridge_acc:
            W, b = ridge_acc[(i, j)].solve(ridge)
            out[("lstsq", i, j)] = ConvAdapter(src_shapes[i], dst_shapes[j], method).set_linear(W, b).to(device)
    info = {"seconds": time.perf_counter() - t0, "images": n_images,
            "rows_per_pair": {f"{i},{j}": a.n for (i, j), a in ridge_acc.items()}}
    return out, info


# --------------------------------------------------------------------------- gradient-trained 1x1 conv
def train_conv_adapter(
    adapter: ConvAdapter,
    inputs: torch.Tensor,
    classifier: nn.Module,
    j: int,
    *,
    teacher_logits: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    steps: int = 100,
    batch_size: int = 32,
    lr: float = 1e-3,
    temperature: float = 1.0,
    seed: int = 0,
    tol: float = 1e-9,
) -> dict:
    """Train ``adapter.conv`` in place through the frozen classifier suffix after stage ``j``.

    ``inputs``: the donor's stage output already resized (``adapter.resized(...)``), (N, C_src, H, W).
    Exactly one of ``teacher_logits`` (N, K) (distillation: KL to the unmerged classifier, no
    labels) or ``labels`` (N,) (cross-entropy: the supervised upper bound) is given. Adam; training
    stops early once a batch loss falls below ``tol`` (an adapter that already reproduces the
    teacher is left exactly as it is, rather than moved by Adam's normalised noise).
    """
    if (teacher_logits is None) == (labels is None):
        raise ValueError("give exactly one of teacher_logits (distill) or labels (supervised)")
    target = teacher_logits if labels is None else labels
    n = inputs.shape[0]
    if target.shape[0] != n:
        raise ValueError(f"{n} inputs but {target.shape[0]} targets")
    if n < 2:
        raise ValueError(f"training an adapter needs at least 2 calibration images, got {n}")
    if steps < 0 or batch_size < 1 or lr <= 0 or temperature <= 0:
        raise ValueError(f"bad training settings steps={steps}, batch_size={batch_size}, lr={lr}, temperature={temperature}")
    gen = torch.Generator().manual_seed(int(seed))
    frozen = [p for p in classifier.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    was_training = classifier.training
    classifier.eval()
    opt = torch.optim.Adam(adapter.conv.parameters(), lr=lr)
    losses = []
    t0 = time.perf_counter()
    try:
        with torch.inference_mode(False), torch.enable_grad():
            inputs = inputs.detach().clone()  # normal tensors: inference-mode tensors cannot enter autograd
            teacher_logits = None if teacher_logits is None else teacher_logits.detach().clone()
            labels = None if labels is None else labels.detach().clone()
            for _ in range(int(steps)):
                idx = torch.randint(0, n, (min(batch_size, n),), generator=gen)
                logits = run_from(classifier, adapter.conv(inputs[idx]), j)
                if labels is None:
                    t = temperature
                    loss = F.kl_div(F.log_softmax(logits / t, 1), F.log_softmax(teacher_logits[idx] / t, 1),
                                    reduction="batchmean", log_target=True) * t * t
                else:
                    loss = F.cross_entropy(logits, labels[idx])
                losses.append(float(loss.detach()))
                if losses[-1] < tol:
                    break
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    finally:
        for p in frozen:
            p.requires_grad_(True)
        classifier.train(was_training)
    return {"seconds": time.perf_counter() - t0, "steps": len(losses),
            "images": len(losses) * min(batch_size, n), "loss_first": losses[0] if losses else math.nan,
            "loss_last": float(sum(losses[-10:]) / len(losses[-10:])) if losses else math.nan}


def resized_inputs(adapter: ConvAdapter, donor_outputs: Iterable[torch.Tensor]) -> torch.Tensor:
    """Stack ``adapter.resized`` of donor stage outputs (the fixed part, computed once for training)."""
    with torch.inference_mode():
        parts = [adapter.resized(o.detach()) for o in donor_outputs]
    if not parts:
        raise ValueError("no calibration batches")
    return torch.cat(parts).clone()


def pair_map(pairs: Iterable[Sequence[int]]) -> Mapping[int, list[int]]:
    """{i: [j, ...]} of a pair list (helper for per-donor-stage work)."""
    out: dict[int, list[int]] = {}
    for i, j in pairs:
        out.setdefault(int(i), []).append(int(j))
    return out
