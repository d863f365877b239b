"""Accuracy, memory and FLOPs of every merged (detector stage i -> classifier stage j) pair.

``evaluate_all_pairs`` runs the detector's prefix ONCE per batch (stages 0..max i, every output
kept) and, for each pair, only the adapter and the classifier's suffix; ``evaluate_pair`` does one
pair on its own through :class:`MergedClassifier`. Both perform the same operations on the same
tensors, so their accuracies agree exactly.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

from repshare.features.stages import check_stage, in_chunks, run_from, run_stages, stage_modules
from repshare.sharing.adapter import Adapter, check_method
from repshare.sharing.memory import memory_saved_frac, offloaded_bytes, offloaded_params
from repshare.sharing.merged import MergedClassifier, apply_pre, stage_shapes

log = logging.getLogger("repshare")

Batch = tuple[torch.Tensor, torch.Tensor]
Pair = tuple[int, int]


# --------------------------------------------------------------------------- accuracy
def _prepare(device: str | torch.device, *mods: nn.Module | None) -> torch.device:
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
    device = _prepare(device, backbone, classifier, det_pre, cls_pre)
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
    unmerged classifier's class (label-free); ``acc``/``acc_top5`` use the labels. ``chunk``: run
    every forward ``chunk`` images at a time (same outputs, peak memory bounded; see ``in_chunks``).
    """
    if not adapters:
        raise ValueError("no adapters to evaluate")
    for _, i, j in adapters:
        check_stage(backbone, i, f"detector stage of pair {(i, j)}")
        check_stage(classifier, j, f"classifier stage of pair {(i, j)}")
    device = _prepare(device, backbone, classifier, det_pre, cls_pre, *adapters.values())
    max_i = max(i for _, i, _ in adapters)
    hits = {k: [0, 0, 0] for k in adapters}
    base = [0, 0]
    n = 0
    with torch.inference_mode():
        for x, y in tqdm(batches, desc="merged pairs", disable=not progress, leave=False):
            x, y = x.to(device), y.to(device)
            ref_logits = in_chunks(lambda t: classifier(apply_pre(cls_pre, t)), x, chunk)
            ref = ref_logits.argmax(1)
            c1, c5 = _correct(ref_logits, y)
            base[0] += c1
            base[1] += c5
            outs = in_chunks(lambda t: run_stages(backbone, apply_pre(det_pre, t), max_i), x, chunk)
            for key, adapter in adapters.items():
                logits = in_chunks(lambda t, a=adapter, j=key[2]: run_from(classifier, a(t), j), outs[key[1]], chunk)
                c1, c5 = _correct(logits, y)
                h = hits[key]
                h[0] += c1
                h[1] += c5
                h[2] += int((logits.argmax(1) == ref).sum())
            n += len(y)
    # counts kept beside the rates so disjoint evaluations combine exactly
    res = {k: {**_scores((h[0], h[1]), n), "agree": h[2] / n, "correct": h[0], "correct_top5": h[1], "agreed": h[2]}
           for k, h in hits.items()}
    return res, {**_scores(tuple(base), n), "correct": base[0], "correct_top5": base[1]}


def evaluate_model(model: nn.Module, batches: Iterable[Batch], device: str | torch.device = "cpu") -> dict[str, float | int]:
    """Top-1/top-5 accuracy of ``model`` (raw images in, logits out)."""
    device = _prepare(device, model)
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


# --------------------------------------------------------------------------- FLOPs
def count_flops(fn, *args) -> int:
    """FLOPs of ``fn(*args)`` by ``torch.utils.flop_counter`` (convs and matmuls)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn(*args)
    return int(counter.get_total_flops())


def stage_flops(model: nn.Module, x: torch.Tensor) -> list[int]:
    """Per-image FLOPs of each stage of ``model`` for the preprocessed input ``x`` (first image used)."""
    x = x[:1]
    flops = []
    with torch.no_grad():
        for stage in stage_modules(model):
            flops.append(count_flops(stage, x))
            x = stage(x)
    return flops


def cumulative_stage_flops(model: nn.Module, x: torch.Tensor) -> list[int]:
    """Entry k: per-image FLOPs of stages 0..k."""
    out, total = [], 0
    for f in stage_flops(model, x):
        total += f
        out.append(total)
    return out


# --------------------------------------------------------------------------- pipeline stage
def pair_rows(
    results: dict[Pair, dict],
    classifier: nn.Module,
    detector: nn.Module,
    cls_shapes: Sequence[Sequence[int]],
    cls_flops: Sequence[int],
    det_flops: Sequence[int],
) -> list[dict]:
    """One flat record per pair: accuracy, off-loaded memory, representation size, FLOPs."""
    rows = []
    for (i, j), r in sorted(results.items()):
        c, h, w = cls_shapes[j]
        rows.append({
            "i": i,
            "j": j,
            "kind": "same" if i == j else "cross",
            "acc": r["acc"],
            "acc_top5": r["acc_top5"],
            "params_offloaded": offloaded_params(classifier, j),
            "bytes_offloaded": offloaded_bytes(classifier, j),
            "memory_saved_frac": memory_saved_frac(classifier, detector, j),
            "size": int(c * h * w),
            "flops_offloaded": int(cls_flops[j]),
            "flops_shared": int(det_flops[i]),
        })
    return rows


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def run_evaluate_merged(cfg) -> Path:
    """DVC stage ``evaluate_merged`` (wiring in ``repshare.stages.evaluate_merged``)."""
    from repshare.stages.evaluate_merged import run

    return run(cfg)
