"""DVC stage ``cka``: stage-wise CKA of the trained detector backbone vs the trained classifier.

One capture per input protocol (``capture.protocols``): ``results/cka/<protocol>/`` holds each;
the first protocol's files are also written at the top of ``results/cka/`` (what earlier
revisions wrote, for the per-model protocol: the same numbers).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from repshare.features.batching import batch_bounds, to_chw
from repshare.features.capture import CKAResult, _csv, _set_input_size, capture_cka, protocol_preprocess, write_cka_results

log = logging.getLogger("repshare")


def run(cfg) -> CKAResult:
    from repshare.data.shards import load_split
    from repshare.models.load import load_classifier, load_detector, resolve_device
    from repshare.utils.io import atomic_dir, write_text
    from repshare.utils.record import provenance
    from repshare.utils.runlog import RunLog

    cap, ckc = cfg.capture, cfg.cka
    protocols = list(cap.protocols)
    for p in protocols:
        protocol_preprocess(p, None, None)  # unknown protocol: named before anything loads
    split = load_split(Path(cfg.paths.data_dir) / "prepared", cap.split, lazy=True)  # read batch by batch
    n_avail = len(split.images)
    if cap.n_samples > n_avail:
        raise ValueError(f"capture.n_samples={cap.n_samples} but split '{cap.split}' has only {n_avail} images")
    images = split.images[: cap.n_samples]
    if ckc.estimator not in ("minibatch_unbiased", "minibatch_biased"):
        raise ValueError(f"cka.estimator must be minibatch_unbiased|minibatch_biased, got {ckc.estimator!r}")
    unbiased = ckc.estimator == "minibatch_unbiased"
    dtype = getattr(torch, str(ckc.dtype), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"cka.dtype={ckc.dtype!r} is not a torch dtype")
    device = resolve_device(cap.device)
    # Checked before any model loads; a short last batch joins the previous one.
    bounds = batch_bounds(len(images), cap.batch_size, 4 if unbiased else 2, name="capture.batch_size")
    classifier, cls_pre = load_classifier(cfg)
    det, det_pre = load_detector(cfg)
    backbone = det.backbone
    if cap.shared_input_size is not None:
        _set_input_size(cls_pre, cap.shared_input_size)
        _set_input_size(det_pre, cap.shared_input_size)
    else:
        _set_input_size(cls_pre, cap.classifier_input_size)
        _set_input_size(det_pre, cap.detector_input_size)
    results: dict[str, CKAResult] = {}
    for protocol in protocols:
        c_pre, d_pre = protocol_preprocess(protocol, cls_pre, det_pre)
        res = capture_cka(
            classifier, c_pre, backbone, d_pre,
            (to_chw(images[a:b]) for a, b in bounds),
            kernel=ckc.kernel, unbiased=unbiased, rbf_threshold=ckc.rbf_threshold, dtype=dtype,
            device=device, total=len(bounds),
        )
        res.extra["protocol"] = protocol
        results[protocol] = res
        log.info("cka [%s]: n=%d in %.1fs; same-stage %s", protocol, res.n, res.seconds,
                 " ".join(f"{v:.3f}" for v in res.same_stage))
    first = results[protocols[0]]
    results_dir = Path(cfg.paths.results_dir)
    with atomic_dir(results_dir / "cka") as tmp:
        prov = provenance(cfg, "cka")
        write_cka_results(first, tmp, ckc.estimator, prov)
        for protocol, res in results.items():
            (tmp / protocol).mkdir()
            write_cka_results(res, tmp / protocol, ckc.estimator, prov)
        run = RunLog(cfg, "cka", tmp)
        summary = {"n": first.n, "seconds": sum(r.seconds for r in results.values())}
        for protocol, res in results.items():
            summary.update({f"{protocol}/same_stage/{name}": float(v)
                            for name, v in zip(res.stage_names_classifier, res.same_stage)})
        run.summary(**summary)
        run.log_table("same_stage", [
            {"protocol": protocol, "stage": i, "name": res.stage_names_classifier[i], "cka": float(v)}
            for protocol, res in results.items() for i, v in enumerate(res.same_stage)
        ])
        run.log_image("cka_heatmap", tmp / "cka_heatmap.png")
        run.close()
    rows = [["stage", "cka"]] + [[i, f"{v:.6f}"] for i, v in enumerate(first.same_stage)]
    write_text(results_dir / "plots" / "cka_same_stage.csv", _csv(rows))
    return first
