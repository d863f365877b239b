"""Stage-wise CKA between the detector backbone (rows) and the classifier (columns) in one pass.

Per batch, both models run stage by stage; the stage outputs go to a CKA estimator and are dropped:

- ``full_biased`` (the paper's Eq. 1): HSIC_0 of the n x n grams of the whole set
  (:class:`repshare.cka.FullSetCKA`; features are spilled to a temporary file, never held);
- ``minibatch_unbiased`` / ``minibatch_biased``: the streaming estimator of Nguyen et al. 2021
  (:class:`repshare.cka.MinibatchCKA`), memory independent of n.

``protocol_preprocess`` gives each model's preprocessing under an input protocol.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from repshare.cka import FullSetCKA, MinibatchCKA
from repshare.features.stages import in_chunks, run_stages, stage_names
from repshare.utils.progress import progress

ESTIMATORS = ("full_biased", "minibatch_unbiased", "minibatch_biased")
PROTOCOLS = ("per_model", "shared")


@dataclass
class CKAResult:
    cross: np.ndarray  # (n_det_stages, n_cls_stages): rows detector stage i, cols classifier stage j
    same_stage: np.ndarray  # diagonal: detector stage i vs classifier stage i
    stage_names_classifier: list[str]
    stage_names_detector: list[str]
    shapes_classifier: list[list[int]]  # (C, H, W) per stage
    shapes_detector: list[list[int]]
    n: int
    seconds: float  # wall clock of the capture (for the run log only: never written to a result file)
    kernel: str = "linear"
    estimator: str = "minibatch_unbiased"
    extra: dict = field(default_factory=dict)

    def record(self) -> dict:
        """The deterministic content of ``cka.json`` (no time, no provenance)."""
        return {
            "stage_names": {"classifier": self.stage_names_classifier, "detector": self.stage_names_detector},
            "same_stage": [float(v) for v in self.same_stage],
            "cross_stage": self.cross.tolist(),
            "shapes": {"classifier": self.shapes_classifier, "detector": self.shapes_detector},
            "n": self.n,
            "estimator": self.estimator,
            "kernel": self.kernel,
            "protocol": self.extra.get("protocol", "per_model"),
        }


def check_estimator(name: str) -> str:
    if name not in ESTIMATORS:
        raise ValueError(f"cka.estimator must be one of {', '.join(ESTIMATORS)}, got {name!r}")
    return name


def min_batch(estimator: str) -> int:
    """Smallest batch the estimator accepts (the unbiased HSIC_1 needs 4 examples per batch)."""
    return 4 if check_estimator(estimator) == "minibatch_unbiased" else 2


def set_input_size(pre: nn.Module, size: int | None) -> None:
    """Make a preprocess module resize to ``size`` pixels (None: leave its own size)."""
    if size is not None:
        pre.input_size = int(size)


def protocol_preprocess(protocol: str, cls_pre: nn.Module, det_pre: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(classifier preprocess, detector preprocess) under an input protocol.

    ``per_model``: each model its own resolution and normalisation. ``shared``: the detector's
    backbone receives exactly the classifier's input (resolution, interpolation, normalisation), so
    same-stage representations have the same shape and no resizing is needed.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown input protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    return (cls_pre, cls_pre) if protocol == "shared" else (cls_pre, det_pre)


def _to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
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
    estimator: str = "minibatch_unbiased",
    n: int | None = None,
    kernel: str = "linear",
    rbf_threshold: float = 0.5,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    total: int | None = None,
    spill_dir: str | None = None,
    chunk: int | None = None,
) -> CKAResult:
    """Stage-wise CKA of the detector backbone (rows) vs the classifier (columns).

    ``batches`` yields uint8 (or float 0..255) image tensors (B, 3, H, W); each is preprocessed per
    model. ``full_biased`` needs ``n``, the number of images the batches hold (a sequence of
    batches gives it itself). The models and preprocess modules are moved to ``device`` (in place)
    and put in eval mode.
    """
    check_estimator(estimator)
    device = torch.device(device)
    for m in (classifier, cls_pre, backbone, det_pre):
        m.to(device).eval()
    names_c = [f"classifier/{s}" for s in stage_names(classifier)]
    names_d = [f"detector/{s}" for s in stage_names(backbone)]
    full = estimator == "full_biased"
    if full:
        if n is None:
            n = sum(int(torch.as_tensor(b).shape[0]) for b in batches)  # a sequence: batches can be read twice
        acc = FullSetCKA(int(n), (names_d, names_c), kernel=kernel, dtype=dtype, rbf_threshold=rbf_threshold,
                         spill_dir=spill_dir)
    else:
        acc = MinibatchCKA(len(names_d), len(names_c), kernel=kernel, unbiased=estimator == "minibatch_unbiased",
                           dtype=dtype, names=(names_d, names_c), rbf_threshold=rbf_threshold)
    shapes_c: list[list[int]] | None = None
    shapes_d: list[list[int]] | None = None
    start = time.perf_counter()
    try:
        with torch.inference_mode():
            for batch in progress(batches, total, "cka capture"):
                batch = _to_device(batch, device)
                outs_d = in_chunks(lambda t: run_stages(backbone, det_pre(t)), batch, chunk)
                shapes_d = shapes_d or [list(o.shape[1:]) for o in outs_d]
                kx = acc.add("x", outs_d) if full else acc.gram_stack(outs_d, "x")
                del outs_d
                outs_c = in_chunks(lambda t: run_stages(classifier, cls_pre(t)), batch, chunk)
                shapes_c = shapes_c or [list(o.shape[1:]) for o in outs_c]
                ky = acc.add("y", outs_c) if full else acc.gram_stack(outs_c, "y")
                del outs_c
                if not full:
                    acc.update_grams(kx, ky)
        if acc.n == 0:
            raise ValueError("capture_cka got no batches")
        cross = acc.compute().cpu().numpy()
    finally:
        if full:
            acc.close()
    k = min(cross.shape)
    return CKAResult(
        cross=cross, same_stage=np.array([cross[i, i] for i in range(k)]),
        stage_names_classifier=stage_names(classifier), stage_names_detector=stage_names(backbone),
        shapes_classifier=shapes_c, shapes_detector=shapes_d, n=acc.n, seconds=time.perf_counter() - start,
        kernel=kernel, estimator=estimator,
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
            outs = run_stages(model, pre(_to_device(batch, device)), upto=upto)
            if not per_stage:
                per_stage = [[] for _ in outs]
            for lst, o in zip(per_stage, outs):
                lst.append(o.cpu())
    if not per_stage:
        raise ValueError("capture_activations got no batches")
    return [torch.cat(lst) for lst in per_stage]
