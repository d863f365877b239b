"""DVC stage ``cka``: stage-wise CKA of the trained detector backbone vs the trained classifier.

One capture per input protocol (``capture.protocols``) on the first ``capture.n_samples`` images of
``capture.split`` (science: :mod:`repshare.features.capture`, :mod:`repshare.cka`). Writes
``results/cka/<protocol>/`` (cka.json, same/cross-stage csv, Fig. 2) with a checksums.json; the
first protocol's files also sit at the top of ``results/cka/``. Durations and provenance go to
``results/metrics/cka_run.json`` only.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

from repshare.features.batching import batch_bounds, to_chw
from repshare.features.capture import (CKAResult, capture_cka, check_estimator, min_batch, protocol_preprocess,
                                       set_input_size)
from repshare.sharing.figures import fig2_cka
from repshare.utils.io import atomic_dir, write_csv, write_json

log = logging.getLogger("repshare")
STAGE = "cka"


def write_protocol(res: CKAResult, folder: Path) -> None:
    """cka.json, same_stage.csv, cross_stage.csv and the Fig. 2 heatmap of one protocol."""
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "cka.json", res.record())
    write_csv(folder / "same_stage.csv", [{"stage": i, "name": res.stage_names_classifier[i], "cka": f"{v:.6f}"}
                                          for i, v in enumerate(res.same_stage)])
    corner = "detector\\classifier"
    write_csv(folder / "cross_stage.csv", [{corner: res.stage_names_detector[i],
                                            **{c: f"{v:.6f}" for c, v in zip(res.stage_names_classifier, row)}}
                                           for i, row in enumerate(res.cross)])
    fig2_cka(res.same_stage, res.cross, res.stage_names_classifier, res.stage_names_detector, res.n,
             folder / "cka_heatmap")


def run(cfg: DictConfig) -> CKAResult:
    from repshare.data.shards import load_split
    from repshare.models.load import load_classifier, load_detector, resolve_device
    from repshare.utils.runlog import RunLog

    cap, ckc = cfg.capture, cfg.cka
    protocols = list(cap.protocols)
    for p in protocols:
        protocol_preprocess(p, None, None)  # an unknown protocol is named before anything loads
    estimator = check_estimator(str(ckc.estimator))
    dtype = getattr(torch, str(ckc.dtype), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"cka.dtype={ckc.dtype!r} is not a torch dtype")
    split = load_split(Path(cfg.paths.data_dir) / "prepared", cap.split, lazy=True)  # read batch by batch
    n_avail = len(split.images)
    n = n_avail if cap.n_samples is None else int(cap.n_samples)
    if n > n_avail:
        raise ValueError(f"capture.n_samples={n} but split '{cap.split}' has only {n_avail} images")
    # Checked before any model loads; a short last batch joins the previous one.
    bounds = batch_bounds(n, cap.batch_size, min_batch(estimator), name="capture.batch_size")
    device = resolve_device(cap.device)
    classifier, cls_pre = load_classifier(cfg)
    det, det_pre = load_detector(cfg)
    shared = cap.shared_input_size
    set_input_size(cls_pre, shared if shared is not None else cap.classifier_input_size)
    set_input_size(det_pre, shared if shared is not None else cap.detector_input_size)
    results: dict[str, CKAResult] = {}
    for protocol in protocols:
        c_pre, d_pre = protocol_preprocess(protocol, cls_pre, det_pre)
        res = capture_cka(classifier, c_pre, det.backbone, d_pre, (to_chw(split.images[a:b]) for a, b in bounds),
                          estimator=estimator, n=n, kernel=ckc.kernel, rbf_threshold=ckc.rbf_threshold, dtype=dtype,
                          device=device, total=len(bounds), chunk=cap.forward_chunk)
        res.extra["protocol"] = protocol
        results[protocol] = res
        log.info("cka [%s, %s]: n=%d in %.1fs; same-stage %s", protocol, estimator, res.n, res.seconds,
                 " ".join(f"{v:.3f}" for v in res.same_stage))
    first = results[protocols[0]]
    results_dir = Path(cfg.paths.results_dir)
    with RunLog(cfg, STAGE, results_dir / "metrics") as runlog, atomic_dir(results_dir / "cka", stage=STAGE) as tmp:
        write_protocol(first, tmp)
        for protocol, res in results.items():
            write_protocol(res, tmp / protocol)
        summary = {"n": first.n, "estimator": estimator}
        for protocol, res in results.items():
            summary[f"{protocol}/seconds"] = round(res.seconds, 2)
            summary.update({f"{protocol}/same_stage/{name}": float(v)
                            for name, v in zip(res.stage_names_classifier, res.same_stage)})
        runlog.summary(**summary)
        runlog.log_table("same_stage", [{"protocol": p, "stage": i, "name": r.stage_names_classifier[i], "cka": float(v)}
                                        for p, r in results.items() for i, v in enumerate(r.same_stage)])
        runlog.log_image("cka_heatmap", tmp / "cka_heatmap.png")
    write_csv(results_dir / "plots" / "cka_same_stage.csv",
              [{"stage": i, "cka": f"{v:.6f}"} for i, v in enumerate(first.same_stage)])
    return first
