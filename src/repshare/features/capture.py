"""Stage-wise activation capture and streaming CKA between the classifier and the detector backbone.

``capture_cka`` makes one pass over the data: per batch it runs both models stage by stage, turns
each stage output into a (b, b) gram right away, drops the activations and adds all pair HSICs to a
``MinibatchCKA`` (rows = detector stages, columns = classifier stages). ``run_cka`` is the DVC stage
wiring: load the prepared split and the trained models, capture, write ``results/cka``.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from repshare.cka import MinibatchCKA
from repshare.features.stages import run_stages, stage_names

log = logging.getLogger(__name__)


@dataclass
class CKAResult:
    cross: np.ndarray  # (n_det_stages, n_cls_stages): rows detector stage i, cols classifier stage j
    same_stage: np.ndarray  # diagonal: detector stage i vs classifier stage i
    stage_names_classifier: list[str]
    stage_names_detector: list[str]
    shapes_classifier: list[list[int]]  # (C, H, W) per stage
    shapes_detector: list[list[int]]
    n: int
    seconds: float
    kernel: str = "linear"
    unbiased: bool = True
    extra: dict = field(default_factory=dict)


def _to_device_float(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    batch = torch.as_tensor(batch)
    if batch.ndim != 4 or batch.shape[1] != 3:
        raise ValueError(f"capture batches must be (B, 3, H, W) images, got shape {tuple(batch.shape)}")
    return batch.to(device)


def capture_cka(
    classifier: nn.Module,
    cls_pre: nn.Module,
    backbone: nn.Module,
    det_pre: nn.Module,
    batches: Iterable[torch.Tensor],
    *,
    kernel: str = "linear",
    unbiased: bool = True,
    rbf_threshold: float = 0.5,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    total: int | None = None,
) -> CKAResult:
    """Streamed stage-wise CKA of the detector backbone (rows) vs the classifier (columns).

    ``batches`` yields uint8 (or float 0..255) image tensors (B, 3, H, W); each is preprocessed per
    model. The models and preprocess modules are moved to ``device`` (in place) and put in eval mode.
    """
    device = torch.device(device)
    for m in (classifier, cls_pre, backbone, det_pre):
        m.to(device).eval()
    names_c = [f"classifier/{s}" for s in stage_names(classifier)]
    names_d = [f"detector/{s}" for s in stage_names(backbone)]
    acc = MinibatchCKA(
        len(names_d), len(names_c), kernel=kernel, unbiased=unbiased, dtype=dtype,
        names=(names_d, names_c), rbf_threshold=rbf_threshold,
    )
    shapes_c: list[list[int]] | None = None
    shapes_d: list[list[int]] | None = None
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in tqdm(batches, desc="cka capture", total=total, leave=False, disable=None):
            batch = _to_device_float(batch, device)
            outs_d = run_stages(backbone, det_pre(batch))
            if shapes_d is None:
                shapes_d = [list(o.shape[1:]) for o in outs_d]
            kx = acc.gram_stack(outs_d, "x")
            del outs_d
            outs_c = run_stages(classifier, cls_pre(batch))
            if shapes_c is None:
                shapes_c = [list(o.shape[1:]) for o in outs_c]
            ky = acc.gram_stack(outs_c, "y")
            del outs_c
            acc.update_grams(kx, ky)
    if acc.batches == 0:
        raise ValueError("capture_cka got no batches")
    cross = acc.compute().cpu().numpy()
    seconds = time.perf_counter() - start
    k = min(cross.shape)
    return CKAResult(
        cross=cross,
        same_stage=np.array([cross[i, i] for i in range(k)]),
        stage_names_classifier=stage_names(classifier),
        stage_names_detector=stage_names(backbone),
        shapes_classifier=shapes_c,
        shapes_detector=shapes_d,
        n=acc.n,
        seconds=seconds,
        kernel=kernel,
        unbiased=unbiased,
    )


def capture_activations(
    model: nn.Module, pre: nn.Module, batches: Iterable[torch.Tensor], upto: int | None = None
) -> list[torch.Tensor]:
    """All stage outputs for every example, stacked per stage on the CPU (small n / tests only)."""
    model.eval()
    per_stage: list[list[torch.Tensor]] = []
    device = next(model.parameters()).device
    with torch.inference_mode():
        for batch in batches:
            outs = run_stages(model, pre(_to_device_float(batch, device)), upto=upto)
            if not per_stage:
                per_stage = [[] for _ in outs]
            for lst, o in zip(per_stage, outs):
                lst.append(o.cpu())
    if not per_stage:
        raise ValueError("capture_activations got no batches")
    return [torch.cat(lst) for lst in per_stage]


# ------------------------------------------------------------------------------------ wiring
def _set_input_size(pre: nn.Module, size: int | None) -> None:
    if size is not None:
        pre.input_size = int(size)


def _csv(rows: list[list]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def plot_cka(result: CKAResult, path_png: Path, path_pdf: Path | None = None) -> None:
    """Paper Fig. 2 style: same-stage CKA per stage (left) and the cross-stage heatmap (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [1, 1.3]})
    k = len(result.same_stage)
    xs = np.arange(k)
    ax0.bar(xs, result.same_stage, color="#4C72B0", alpha=0.6)
    ax0.plot(xs, result.same_stage, "o-", color="#C44E52")
    for x, v in zip(xs, result.same_stage):
        ax0.annotate(f"{v:.2f}", (x, v), textcoords="offset points", xytext=(0, 4), ha="center", fontsize=8)
    ax0.set_xticks(xs, result.stage_names_classifier[:k], rotation=45, ha="right")
    ax0.set_ylim(0, 1.1)
    ax0.set_ylabel("CKA")
    ax0.set_title("Same-stage CKA (classifier i vs detector i)")
    im = ax1.imshow(result.cross, vmin=0, vmax=1, cmap="viridis", origin="lower")
    for i in range(result.cross.shape[0]):
        for j in range(result.cross.shape[1]):
            v = result.cross[i, j]
            ax1.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v < 0.6 else "black")
    ax1.set_xticks(range(result.cross.shape[1]), result.stage_names_classifier, rotation=45, ha="right")
    ax1.set_yticks(range(result.cross.shape[0]), result.stage_names_detector)
    ax1.set_xlabel("classifier stage")
    ax1.set_ylabel("detector stage")
    ax1.set_title(f"Cross-stage CKA (n={result.n})")
    fig.colorbar(im, ax=ax1, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path_png, dpi=150)
    if path_pdf is not None:
        fig.savefig(path_pdf)
    plt.close(fig)


def write_cka_results(result: CKAResult, out_dir: Path, estimator: str, provenance: dict | None = None) -> dict:
    """cka.json, same_stage.csv, cross_stage.csv and the heatmaps into ``out_dir``; returns the json."""
    from repshare.utils.io import write_json, write_text

    out_dir = Path(out_dir)
    record = {
        "stage_names": {"classifier": result.stage_names_classifier, "detector": result.stage_names_detector},
        "same_stage": [float(v) for v in result.same_stage],
        "cross_stage": result.cross.tolist(),
        "shapes": {"classifier": result.shapes_classifier, "detector": result.shapes_detector},
        "n": result.n,
        "estimator": estimator,
        "kernel": result.kernel,
        "protocol": result.extra.get("protocol", "per_model"),
        "seconds": round(result.seconds, 3),
        "provenance": provenance or {},
    }
    write_json(out_dir / "cka.json", record)
    rows = [["stage", "name", "cka"]] + [
        [i, result.stage_names_classifier[i], f"{v:.6f}"] for i, v in enumerate(result.same_stage)
    ]
    write_text(out_dir / "same_stage.csv", _csv(rows))
    rows = [["detector\\classifier", *result.stage_names_classifier]] + [
        [result.stage_names_detector[i], *[f"{v:.6f}" for v in row]] for i, row in enumerate(result.cross)
    ]
    write_text(out_dir / "cross_stage.csv", _csv(rows))
    plot_cka(result, out_dir / "cka_heatmap.png", out_dir / "cka_heatmap.pdf")
    return record


PROTOCOLS = ("per_model", "shared")


def protocol_preprocess(protocol: str, cls_pre: nn.Module, det_pre: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(classifier preprocess, detector preprocess) under an input protocol.

    ``per_model``: each model its own resolution and normalisation. ``shared``: the detector's
    backbone receives exactly the classifier's input (resolution, interpolation, normalisation), so
    same-stage representations have the same shape and no resizing is needed.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown input protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    return (cls_pre, cls_pre) if protocol == "shared" else (cls_pre, det_pre)


def run_cka(cfg) -> CKAResult:
    """DVC stage ``cka`` (wiring in ``repshare.stages.cka``); returns the first protocol's result."""
    from repshare.stages.cka import run

    return run(cfg)
