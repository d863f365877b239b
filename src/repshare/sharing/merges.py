"""Every merge of one input protocol: build or fit its adapters, score them, one record per merge.

A merge is (adapter, detector stage i, classifier stage j). Adapters are fitted on calibration
images apart from the report split (``resample`` needs none; ``moments``/``lstsq`` read only the
images; ``distill`` the unmerged classifier's logits; ``supervised`` the labels). Every merge is
scored on the first ``k_variants`` report batches; the paper's setting (``resample`` under
``per_model``) also on the rest, so its accuracy is over all report images. Plain values in (modules,
image arrays, settings), plain records out; no config object and no paths.

Fitting cost is counted in FLOPs (deterministic, :mod:`repshare.models.flops`); wall-clock seconds
are returned apart, for the run log only.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from repshare.features.batching import LabelledBatches, batch_bounds, to_chw
from repshare.features.stages import run_stages
from repshare.models.flops import count_flops, cumulative, stage_flops
from repshare.sharing.adapter import Adapter, ConvAdapter, adapter_bytes, adapter_flops
from repshare.sharing.claims import REFERENCE
from repshare.sharing.evaluate import AdapterKey, evaluate_adapters, prepare_modules
from repshare.sharing.fit import fit_label_free, resized_inputs, train_conv_adapter
from repshare.sharing.memory import memory_saved_frac, model_bytes, offloaded_bytes, offloaded_params
from repshare.sharing.merged import apply_pre, stage_shapes

TRAINED = ("distill", "supervised")


@dataclass(frozen=True)
class TrainSettings:
    """One gradient-trained adapter (config ``adapter.distill`` / ``adapter.supervised``)."""

    steps: int
    batch_size: int
    lr: float
    temperature: float
    same_stage: bool
    top_k_cross: int
    protocols: tuple[str, ...]


@dataclass(frozen=True)
class Settings:
    """Config ``sharing`` + ``adapter`` as plain values."""

    adapters: tuple[str, ...]  # selected adapters, canonical order
    resize_method: str
    channel_seed: int
    calibration_batch_size: int
    ridge: float
    eps: float
    max_pixels: int | None
    trained: dict[str, TrainSettings] = field(default_factory=dict)
    seed: int = 0
    chunk: int | None = None


@dataclass
class Models:
    classifier: nn.Module
    cls_pre: nn.Module  # the classifier's own preprocessing
    detector: nn.Module  # .backbone is the donor
    det_pre: nn.Module


@dataclass
class Scored:
    """One protocol's merges."""

    records: list[dict[str, Any]]  # one per merge (merges.json)
    correct: dict[AdapterKey, np.ndarray]  # per-image top-1 hits of each merge (its own n images)
    baseline: dict[str, Any]  # unmerged classifier: acc, acc_top5, n, correct, acc_variants, n_variants, num_classes
    baseline_correct: np.ndarray  # per-image top-1 hits of the unmerged classifier (all report images)
    reference: list[dict[str, Any]] | None  # pairs.json rows (the paper's setting), when this protocol has it
    seconds: dict[str, float]  # measured wall clock: run log only


def trained_pairs(cka_cross: np.ndarray, same_stage: bool, top_k_cross: int) -> list[tuple[int, int]]:
    """Same-stage pairs (if asked) plus the ``top_k_cross`` cross-stage pairs of highest CKA."""
    n_i, n_j = cka_cross.shape
    out = [(i, i) for i in range(min(n_i, n_j))] if same_stage else []
    cross = sorted(((float(cka_cross[i, j]), i, j) for i in range(n_i) for j in range(n_j) if i != j), reverse=True)
    out += [(i, j) for _, i, j in cross[: int(top_k_cross)]]
    return out


def merge_scores(a: dict, b: dict) -> dict:
    """Combine two disjoint evaluations from their integer counts (exactly the rates of one pass)."""
    n = a["n"] + b["n"]
    out = {"n": n, "correct": a["correct"] + b["correct"], "correct_top5": a["correct_top5"] + b["correct_top5"],
           "per_image": np.concatenate([a["per_image"], b["per_image"]])}
    out["acc"], out["acc_top5"] = out["correct"] / n, out["correct_top5"] / n
    if "agreed" in a:
        out["agreed"] = a["agreed"] + b["agreed"]
        out["agree"] = out["agreed"] / n
    return out


def image_batches(images: np.ndarray, batch_size: int) -> list[torch.Tensor]:
    return [to_chw(images[a:b]) for a, b in batch_bounds(len(images), batch_size, name="sharing.calibration_batch_size")]


def fit_adapters(m: Models, cls_pre: nn.Module, det_pre: nn.Module, protocol: str, s: Settings,
                 calib_images: np.ndarray | None, calib_labels: torch.Tensor | None, cka_cross: np.ndarray | None,
                 src_shapes: list, dst_shapes: list, flops: dict[str, list[int]], device: torch.device
                 ) -> tuple[dict[AdapterKey, nn.Module], dict[AdapterKey, dict], dict[str, float]]:
    """Adapters of every selected kind and pair, their fitting cost (FLOPs, images) and measured seconds."""
    backbone, classifier = m.detector.backbone, m.classifier
    n_i, n_j = len(src_shapes), len(dst_shapes)
    pairs = [(i, j) for i in range(n_i) for j in range(n_j)]
    names = s.adapters
    adapters: dict[AdapterKey, nn.Module] = {}
    cost: dict[AdapterKey, dict] = {}
    seconds: dict[str, float] = {}
    if "resample" in names:
        for i, j in pairs:
            adapters[("resample", i, j)] = Adapter(src_shapes[i], dst_shapes[j], s.resize_method, s.channel_seed)
            cost[("resample", i, j)] = {"flops": 0, "images": 0}
    conv = [a for a in names if a in ("lstsq", *TRAINED)]
    kinds = [k for k in ("moments", "lstsq") if k in names or (k == "lstsq" and conv)]
    fitted: dict[AdapterKey, nn.Module] = {}
    if kinds:
        n_cal = len(calib_images)
        fitted, info = fit_label_free(backbone, det_pre, classifier, cls_pre,
                                      image_batches(calib_images, s.calibration_batch_size), pairs, src_shapes,
                                      dst_shapes, kinds, s.resize_method, s.channel_seed, ridge=s.ridge, eps=s.eps,
                                      max_pixels=s.max_pixels, device=device, chunk=s.chunk)
        # one forward pass of both prefixes serves every pair: its FLOPs are split evenly
        share = n_cal * (flops["det_cum"][n_i - 1] + flops["cls_cum"][n_j - 1]) / len(pairs)
        seconds["label_free_pass_seconds"] = info["seconds"]
        for key, a in fitted.items():
            cost[key] = {"flops": share, "images": n_cal}
            if key[0] in names:
                adapters[key] = a
    trained = [a for a in TRAINED if a in names and protocol in s.trained[a].protocols]
    if trained:
        calib_batches = image_batches(calib_images, s.calibration_batch_size)
        n_cal, teacher, donor = len(calib_images), None, {}
        with torch.inference_mode():
            if "distill" in trained:  # the unmerged classifier's logits: the label-free target
                teacher = torch.cat([classifier(apply_pre(cls_pre, x.to(device))) for x in calib_batches])
        for name in trained:
            tc = s.trained[name]
            chosen = trained_pairs(cka_cross, tc.same_stage, tc.top_k_cross)
            for i, j in chosen:
                a = ConvAdapter(src_shapes[i], dst_shapes[j], s.resize_method).to(device)
                a.load_state_dict(fitted[("lstsq", i, j)].state_dict())
                if i not in donor:
                    with torch.inference_mode():
                        donor[i] = [run_stages(backbone, apply_pre(det_pre, x.to(device)), i)[-1] for x in calib_batches]
                res = train_conv_adapter(a, resized_inputs(a, donor[i]), classifier, j,
                                         teacher_logits=teacher if name == "distill" else None,
                                         labels=calib_labels.to(device) if name == "supervised" else None,
                                         steps=tc.steps, batch_size=tc.batch_size, lr=tc.lr,
                                         temperature=tc.temperature, seed=s.seed)
                key = f"{name}_train_seconds"
                seconds[key] = seconds.get(key, 0.0) + res["seconds"]
                # forward + backward ~ 3 forward passes of adapter + suffix per trained image, the donor's
                # prefix once per calibration image, and (distill) a share of the teacher's pass
                suffix = flops["cls_total"] - flops["cls_cum"][j] + adapter_flops(a)
                teach = n_cal * flops["cls_total"] / len(chosen) if name == "distill" else 0
                lst = cost[("lstsq", i, j)]
                cost[(name, i, j)] = {"flops": lst["flops"] + 3 * res["images"] * suffix + n_cal * flops["det_cum"][i]
                                      + teach, "images": lst["images"] + res["images"],
                                      "loss_first": res["loss_first"], "loss_last": res["loss_last"]}
                adapters[(name, i, j)] = a.eval()
    return adapters, cost, seconds


def model_flops(m: Models, cls_in: torch.Tensor, det_in: torch.Tensor) -> dict[str, Any]:
    """Per-image FLOPs: cumulative per stage of both models and the classifier's whole forward."""
    return {"cls_cum": cumulative(stage_flops(m.classifier, cls_in.clone())),
            "det_cum": cumulative(stage_flops(m.detector.backbone, det_in.clone())),
            "cls_total": count_flops(m.classifier, cls_in[:1].clone())}


def score_protocol(m: Models, protocol: str, s: Settings, batches: LabelledBatches, k_variants: int,
                   calib_images: np.ndarray | None, calib_labels: torch.Tensor | None,
                   cka_cross: np.ndarray | None, device: torch.device) -> Scored:
    """Fit and score every merge of one protocol (see the module docstring)."""
    from repshare.features.capture import protocol_preprocess

    cls_pre, det_pre = protocol_preprocess(protocol, m.cls_pre, m.det_pre)
    backbone, classifier = m.detector.backbone, m.classifier
    prepare_modules(device, classifier, cls_pre, m.detector, det_pre)  # eval mode: no batch statistics anywhere
    x1 = batches[0][0][:1].to(device)
    with torch.inference_mode():
        cls_in, det_in = apply_pre(cls_pre, x1), apply_pre(det_pre, x1)
        num_classes = int(classifier(cls_in).shape[1])
    src_shapes, dst_shapes = stage_shapes(backbone, det_in), stage_shapes(classifier, cls_in)
    flops = model_flops(m, cls_in, det_in)
    adapters, cost, seconds = fit_adapters(m, cls_pre, det_pre, protocol, s, calib_images, calib_labels, cka_cross,
                                           src_shapes, dst_shapes, flops, device)
    t0 = time.perf_counter()
    res_var, base_var = evaluate_adapters(backbone, det_pre, classifier, cls_pre, batches[:k_variants], adapters,
                                          device, progress=True, chunk=s.chunk)
    full, base_full = dict(res_var), base_var
    ref_keys = [k for k in adapters if (protocol, k[0]) == REFERENCE]
    if k_variants < len(batches) and ref_keys:  # the paper's setting alone on the images the others skip
        rest, base_rest = evaluate_adapters(backbone, det_pre, classifier, cls_pre, batches[k_variants:],
                                            {k: adapters[k] for k in ref_keys}, device, chunk=s.chunk)
        full.update({k: merge_scores(res_var[k], rest[k]) for k in ref_keys})
        base_full = merge_scores(base_var, base_rest)
    seconds["eval_seconds"] = time.perf_counter() - t0
    cls_total = model_bytes(classifier)
    records = []
    for (name, i, j), a in adapters.items():
        r, v, c = full[(name, i, j)], res_var[(name, i, j)], cost[(name, i, j)]
        a_bytes = adapter_bytes(a)
        records.append({
            "protocol": protocol, "adapter": name, "i": i, "j": j, "kind": "same" if i == j else "cross",
            "acc": r["acc"], "acc_top5": r["acc_top5"], "agree": r["agree"], "n": r["n"], "correct": r["correct"],
            "acc_variants": v["acc"], "agree_variants": v["agree"], "n_variants": v["n"],
            "params_offloaded": offloaded_params(classifier, j), "bytes_offloaded": offloaded_bytes(classifier, j),
            "adapter_bytes": a_bytes, "bytes_saved": offloaded_bytes(classifier, j) - a_bytes,
            "classifier_bytes": cls_total, "size": int(math.prod(dst_shapes[j])),
            "flops_offloaded": int(flops["cls_cum"][j]), "flops_shared": int(flops["det_cum"][i]),
            "adapter_flops": adapter_flops(a), "labels_used": name == "supervised",
            "fit_flops": float(c["flops"]), "fit_images": c["images"],
            "loss_first": c.get("loss_first"), "loss_last": c.get("loss_last"),
        })
    reference = None
    if ref_keys:
        ref = {(i, j): full[(n, i, j)] for n, i, j in ref_keys}
        reference = pair_rows(ref, classifier, m.detector, dst_shapes, flops["cls_cum"], flops["det_cum"])
    baseline = {"acc": base_full["acc"], "acc_top5": base_full["acc_top5"], "n": base_full["n"],
                "correct": base_full["correct"], "acc_variants": base_var["acc"], "n_variants": base_var["n"],
                "num_classes": num_classes}
    return Scored(records, {k: full[k]["per_image"] for k in adapters}, baseline, base_full["per_image"],
                  reference, seconds)


def pair_rows(results: dict[tuple[int, int], dict], classifier: nn.Module, detector: nn.Module,
              cls_shapes: list, cls_flops: list[int], det_flops: list[int]) -> list[dict]:
    """One flat record per pair of the paper's setting: accuracy, off-loaded memory, size, FLOPs."""
    rows = []
    for (i, j), r in sorted(results.items()):
        c, h, w = cls_shapes[j]
        rows.append({
            "i": i, "j": j, "kind": "same" if i == j else "cross", "acc": r["acc"], "acc_top5": r["acc_top5"],
            "params_offloaded": offloaded_params(classifier, j), "bytes_offloaded": offloaded_bytes(classifier, j),
            "memory_saved_frac": memory_saved_frac(classifier, detector, j), "size": int(c * h * w),
            "flops_offloaded": int(cls_flops[j]), "flops_shared": int(det_flops[i]),
        })
    return rows


def correct_matrix(records: list[dict], correct: dict[tuple[str, str, int, int], np.ndarray], n_images: int
                   ) -> np.ndarray:
    """(merges, images) int8 top-1 hits in the order of ``records`` (``correct`` keyed by (protocol,
    adapter, i, j)); -1 = not scored on that image."""
    out = np.full((len(records), n_images), -1, dtype=np.int8)
    for k, r in enumerate(records):
        hits = correct[(r["protocol"], r["adapter"], r["i"], r["j"])]
        out[k, : len(hits)] = hits
    return out
