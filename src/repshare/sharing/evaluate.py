"""Accuracy, memory and FLOPs of every merged (detector stage i -> classifier stage j) pair.

``evaluate_all_pairs`` runs the detector's prefix ONCE per batch (stages 0..max i, every output
kept) and, for each pair, only the adapter and the classifier's suffix; ``evaluate_pair`` does one
pair on its own through :class:`MergedClassifier`. Both perform the same operations on the same
tensors, so their accuracies agree exactly.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

from repshare.features.stages import check_stage, run_from, run_stages, stage_modules, stage_names
from repshare.sharing.adapter import Adapter, check_method
from repshare.sharing.memory import memory_saved_frac, model_bytes, model_params, offloaded_bytes, offloaded_params
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
    """DVC stage ``evaluate_merged``: all 8 x 8 pairs on the val split -> results/sharing/."""
    from repshare.data.shards import load_split
    from repshare.features.batching import labelled_batches
    from repshare.models.load import load_classifier, load_detector, resolve_device
    from repshare.utils.io import atomic_dir, write_json
    from repshare.utils.record import provenance
    from repshare.utils.runlog import RunLog

    sc = cfg.sharing
    split = load_split(Path(cfg.paths.data_dir) / "prepared", "val")
    images, labels = split.images, split.labels
    if sc.n_eval is not None:
        images, labels = images[: sc.n_eval], labels[: sc.n_eval]
    batches = labelled_batches(images, labels, int(sc.batch_size))
    if not batches:
        raise ValueError(f"val split under {cfg.paths.data_dir}/prepared holds no images")
    device = resolve_device(sc.device)
    classifier, cls_pre = load_classifier(cfg)
    det, det_pre = load_detector(cfg)
    backbone = det.backbone
    _prepare(device, classifier, cls_pre, det, det_pre)

    baseline = evaluate_baseline(classifier, cls_pre, batches, device)
    pairs = [(i, j) for i in range(len(stage_modules(backbone))) for j in range(len(stage_modules(classifier)))]
    t0 = time.time()
    results = evaluate_all_pairs(
        backbone, det_pre, classifier, cls_pre, batches, pairs, sc.resize_method, sc.channel_seed, device, progress=True
    )
    seconds = round(time.time() - t0, 2)

    x1 = batches[0][0][:1].to(device)
    with torch.inference_mode():
        cls_in, det_in = apply_pre(cls_pre, x1), apply_pre(det_pre, x1)
    cls_shapes = stage_shapes(classifier, cls_in)
    rows = pair_rows(
        results, classifier, det, cls_shapes, cumulative_stage_flops(classifier, cls_in.clone()),
        cumulative_stage_flops(backbone, det_in.clone()),
    )
    record = {
        "baseline": {
            "acc": baseline["acc"],
            "acc_top5": baseline["acc_top5"],
            "params": model_params(classifier),
            "bytes": model_bytes(classifier),
        },
        "stage_names": stage_names(classifier),
        "pairs": rows,
        "n": baseline["n"],
        "resize_method": sc.resize_method,
        "seconds": seconds,
        "provenance": provenance(cfg, "evaluate_merged"),
    }
    out = Path(cfg.paths.results_dir) / "sharing"
    with atomic_dir(out) as tmp:
        with RunLog(cfg, "evaluate_merged", tmp) as run:
            write_json(tmp / "pairs.json", record)
            _write_csv(tmp / "pairs.csv", rows)
            run.log_table("pairs", rows)
            best = max((r for r in rows if r["kind"] == "cross"), key=lambda r: r["acc"], default=None)
            run.summary(
                baseline_acc=baseline["acc"],
                same_stage_acc_mean=sum(r["acc"] for r in rows if r["kind"] == "same") / max(1, sum(r["kind"] == "same" for r in rows)),
                best_cross_pair=None if best is None else [best["i"], best["j"]],
                best_cross_acc=None if best is None else best["acc"],
                n=baseline["n"],
                seconds=seconds,
            )
    log.info("evaluate_merged: %d pairs on %d images in %.1fs -> %s", len(rows), baseline["n"], seconds, out)
    return out
