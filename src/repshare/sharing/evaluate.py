"""Accuracy of merged (detector stage i -> classifier stage j) classifiers.

``evaluate_all_pairs`` runs the detector's prefix ONCE per batch (stages 0..max i, every output
kept) and, for each pair, only the adapter and the classifier's suffix; ``evaluate_pair`` does one
pair on its own through :class:`MergedClassifier`. Both perform the same operations on the same
tensors, so their accuracies agree exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from repshare.features.stages import check_stage, in_chunks, run_from, run_stages
from repshare.sharing.adapter import Adapter, check_method
from repshare.sharing.merged import MergedClassifier, apply_pre, stage_shapes
from repshare.utils.progress import progress as show_progress

log = logging.getLogger("repshare")

Batch = tuple[torch.Tensor, torch.Tensor]
Pair = tuple[int, int]


# --------------------------------------------------------------------------- accuracy
def prepare_modules(device: str | torch.device, *mods: nn.Module | None) -> torch.device:
    """Move every module to ``device`` and put it in eval mode; returns the device."""
    device = torch.device(device)
    for m in mods:
        if isinstance(m, nn.Module):
            m.to(device).eval()
    return device


def _correct(logits: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
    """(top-1 hits, top-5 hits); top-5 is top-min(5, classes)."""
    k = min(5, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    hits = top == labels[:, None]
    return int(hits[:, 0].sum()), int(hits.any(dim=1).sum())


def _scores(hits: tuple[int, int], n: int) -> dict[str, float | int]:
    if n == 0:
        raise ValueError("no images to evaluate: the batches were empty")
    return {"acc": hits[0] / n, "acc_top5": hits[1] / n, "n": n}


def check_pairs(backbone: nn.Module, classifier: nn.Module, pairs: Iterable[Sequence[int]]) -> list[Pair]:
    out = []
    for p in pairs:
        i, j = int(p[0]), int(p[1])
        check_stage(backbone, i, f"detector stage of pair {tuple(p)} (backbone {type(backbone).__name__})")
        check_stage(classifier, j, f"classifier stage of pair {tuple(p)} (classifier {type(classifier).__name__})")
        out.append((i, j))
    if not out:
        raise ValueError("no (i, j) pairs to evaluate")
    return out


def build_adapters(
    backbone: nn.Module,
    det_pre: nn.Module | None,
    classifier: nn.Module,
    cls_pre: nn.Module | None,
    x: torch.Tensor,
    pairs: Sequence[Pair],
    method: str = "bilinear",
    seed: int = 0,
) -> dict[Pair, Adapter]:
    """One adapter per pair, shapes probed with one raw image of ``x``."""
    src = stage_shapes(backbone, apply_pre(det_pre, x[:1]), max(i for i, _ in pairs))
    dst = stage_shapes(classifier, apply_pre(cls_pre, x[:1]), max(j for _, j in pairs))
    return {(i, j): Adapter(src[i], dst[j], method, seed).to(x.device) for i, j in pairs}


def evaluate_all_pairs(
    backbone: nn.Module,
    det_pre: nn.Module | None,
    classifier: nn.Module,
    cls_pre: nn.Module | None,
    batches: Iterable[Batch],
    pairs: Sequence[Sequence[int]],
    method: str = "bilinear",
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict[Pair, dict[str, float | int]]:
    """Top-1/top-5 accuracy of every merged pair; the detector prefix is computed once per batch.

    ``batches`` yields (raw images (B, 3, H, W), int labels (B,)). Models are moved to ``device``
    and put in eval mode.
    """
    pairs = check_pairs(backbone, classifier, pairs)
    check_method(method)
    device = prepare_modules(device, backbone, classifier, det_pre, cls_pre)
    max_i = max(i for i, _ in pairs)
    hits = {p: [0, 0] for p in pairs}
    n, adapters = 0, None
    with torch.inference_mode():
        for x, y in tqdm(batches, desc="all pairs", disable=not progress, leave=False):
            x, y = x.to(device), y.to(device)
            if adapters is None:
                adapters = build_adapters(backbone, det_pre, classifier, cls_pre, x, pairs, method, seed)
            outs = run_stages(backbone, apply_pre(det_pre, x), max_i)
            for (i, j), adapter in adapters.items():
                c1, c5 = _correct(run_from(classifier, adapter(outs[i]), j), y)
                hits[(i, j)][0] += c1
                hits[(i, j)][1] += c5
            n += len(y)
    return {p: _scores(tuple(h), n) for p, h in hits.items()}


def agreement(pred: torch.Tensor | Sequence[int], reference: torch.Tensor | Sequence[int]) -> float:
    """Fraction of images on which two classifiers predict the same class (no labels involved)."""
    pred, reference = torch.as_tensor(pred).reshape(-1), torch.as_tensor(reference).reshape(-1)
    if pred.shape != reference.shape:
        raise ValueError(f"agreement needs predictions for the same images: {pred.numel()} vs {reference.numel()}")
    if pred.numel() == 0:
        raise ValueError("agreement of zero predictions is undefined")
    return float((pred == reference).double().mean())


AdapterKey = tuple[str, int, int]  # (adapter name, detector stage i, classifier stage j)


def evaluate_adapters(
    backbone: nn.Module,
    det_pre: nn.Module | None,
    classifier: nn.Module,
    cls_pre: nn.Module | None,
    batches: Iterable[Batch],
    adapters: dict[AdapterKey, nn.Module],
    device: str | torch.device = "cpu",
    progress: bool = False,
    chunk: int | None = None,
) -> tuple[dict[AdapterKey, dict[str, float | int]], dict[str, float | int]]:
    """Accuracy and agreement of every (adapter, i, j) merge, plus the unmerged baseline, in one pass.

    Per batch the detector prefix and the unmerged classifier run once; each merge runs only its
    adapter and the classifier suffix. ``agree`` = fraction of images where the merge predicts the
    unmerged classifier's class (label-free); ``acc``/``acc_top5`` use the labels; ``per_image`` is
    the top-1 hit (bool) of every image, in batch order. ``chunk``: run every forward ``chunk``
    images at a time (same outputs, peak memory bounded; see ``in_chunks``).
    """
    if not adapters:
        raise ValueError("no adapters to evaluate")
    for _, i, j in adapters:
        check_stage(backbone, i, f"detector stage of pair {(i, j)}")
        check_stage(classifier, j, f"classifier stage of pair {(i, j)}")
    device = prepare_modules(device, backbone, classifier, det_pre, cls_pre, *adapters.values())
    max_i = max(i for _, i, _ in adapters)
    hits = {k: [0, 0, 0] for k in adapters}
    per_image: dict = {k: [] for k in [*adapters, "baseline"]}  # top-1 hit of every image, batch by batch
    base = [0, 0]
    n = 0
    with torch.inference_mode():
        for x, y in show_progress(batches, len(batches) if progress and hasattr(batches, "__len__") else None,
                                  "merged pairs") if progress else batches:
            x, y = x.to(device), y.to(device)
            ref_logits = in_chunks(lambda t: classifier(apply_pre(cls_pre, t)), x, chunk)
            ref = ref_logits.argmax(1)
            c1, c5 = _correct(ref_logits, y)
            base[0] += c1
            base[1] += c5
            per_image["baseline"].append((ref == y).cpu().numpy())
            outs = in_chunks(lambda t: run_stages(backbone, apply_pre(det_pre, t), max_i), x, chunk)
            for key, adapter in adapters.items():
                logits = in_chunks(lambda t, a=adapter, j=key[2]: run_from(classifier, a(t), j), outs[key[1]], chunk)
                c1, c5 = _correct(logits, y)
                h = hits[key]
                h[0] += c1
                h[1] += c5
                pred = logits.argmax(1)
                h[2] += int((pred == ref).sum())
                per_image[key].append((pred == y).cpu().numpy())
            n += len(y)
    # counts kept beside the rates so disjoint evaluations combine exactly; per-image hits for intervals
    flat = {k: np.concatenate(v) if v else np.zeros(0, dtype=bool) for k, v in per_image.items()}
    res = {k: {**_scores((h[0], h[1]), n), "agree": h[2] / n, "correct": h[0], "correct_top5": h[1], "agreed": h[2],
               "per_image": flat[k]} for k, h in hits.items()}
    return res, {**_scores(tuple(base), n), "correct": base[0], "correct_top5": base[1], "per_image": flat["baseline"]}


def evaluate_model(model: nn.Module, batches: Iterable[Batch], device: str | torch.device = "cpu") -> dict[str, float | int]:
    """Top-1/top-5 accuracy of ``model`` (raw images in, logits out)."""
    device = prepare_modules(device, model)
    h1 = h5 = n = 0
    with torch.inference_mode():
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            c1, c5 = _correct(model(x), y)
            h1, h5, n = h1 + c1, h5 + c5, n + len(y)
    return _scores((h1, h5), n)


def evaluate_pair(
    backbone: nn.Module,
    det_pre: nn.Module | None,
    classifier: nn.Module,
    cls_pre: nn.Module | None,
    batches: Iterable[Batch],
    i: int,
    j: int,
    method: str = "bilinear",
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> dict[str, float | int]:
    """Accuracy of one merged pair computed on its own (a :class:`MergedClassifier`)."""
    merged = MergedClassifier(backbone, classifier, i, j, det_pre, cls_pre, method, seed)
    return evaluate_model(merged, batches, device)


def evaluate_baseline(
    classifier: nn.Module, cls_pre: nn.Module | None, batches: Iterable[Batch], device: str | torch.device = "cpu"
) -> dict[str, float | int]:
    """Baseline: the unmodified classifier."""

    class _Pre(nn.Module):
        def __init__(self):
            super().__init__()
            self.classifier, self.pre = classifier, cls_pre

        def forward(self, x):
            return self.classifier(apply_pre(self.pre, x))

    return evaluate_model(_Pre(), batches, device)
