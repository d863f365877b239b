"""DVC stage ``evaluate_merged``: every (input protocol, adapter, detector stage i, classifier stage j) merge.

Adapters are fitted on ``sharing.n_calibration`` images of ``sharing.calibration_split`` (a split
apart from the report split ``val``); every merge is scored on the first ``sharing.n_eval_variants``
report images and the paper's setting (``resample``, ``per_model``) on all ``sharing.n_eval``
(science: :mod:`repshare.sharing.merges`). Writes ``results/evaluate_merged/``: pairs.json/csv (the paper's
setting), merges.json/csv (every merge), correct.npy (per-image top-1 hits, rows = merges.json order)
and baseline_correct.npy, with a checksums.json; durations go to ``results/metrics/evaluate_merged_run.json``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from repshare.features.batching import labelled_batches
from repshare.features.capture import protocol_preprocess
from repshare.features.stages import stage_names
from repshare.sharing.adapter import ADAPTERS, check_adapter
from repshare.sharing.memory import model_bytes, model_params
from repshare.sharing.merges import TRAINED, Models, Settings, TrainSettings, correct_matrix, score_protocol
from repshare.utils.io import atomic_dir, write_csv, write_json

log = logging.getLogger("repshare")
STAGE = "evaluate_merged"


def settings(cfg: DictConfig) -> Settings:
    ad, sc = cfg.adapter, cfg.sharing
    names = [k for k in ad if ad[k] is not None]
    for n in names:
        check_adapter(n)
    trained = {n: TrainSettings(int(ad[n].steps), int(ad[n].batch_size), float(ad[n].lr),
                                float(ad[n].get("temperature", 1.0)), bool(ad[n].same_stage), int(ad[n].top_k_cross),
                                tuple(ad[n].protocols)) for n in TRAINED if n in names}
    chunk = sc.get("forward_chunk")
    if chunk is not None and int(chunk) < 1:
        raise ValueError(f"sharing.forward_chunk={chunk} must be >= 1 (or null: whole batches)")
    return Settings(tuple(a for a in ADAPTERS if a in names), sc.resize_method, int(sc.channel_seed),
                    int(sc.calibration_batch_size), float(ad.lstsq.ridge) if ad.get("lstsq") else 1e-3,
                    float(ad.moments.eps) if ad.get("moments") else 1e-5,
                    ad.lstsq.max_pixels_per_image if ad.get("lstsq") else 64, trained, int(cfg.seed),
                    None if chunk is None else int(chunk))


def calibration(cfg: DictConfig, need_labels: bool):
    """Calibration images (and, only when a supervised adapter asks, their labels)."""
    from repshare.data.shards import load_split, read_manifest

    sc = cfg.sharing
    root = Path(cfg.paths.data_dir) / "prepared"
    have = list(read_manifest(root)["splits"])
    if sc.calibration_split not in have:
        raise ValueError(f"sharing.calibration_split={sc.calibration_split!r} is not a prepared split (have: "
                         f"{', '.join(have)}): with shapes set data.n_select > 0 for a 'select' split; with ImageNet "
                         "prepare a 'calib' split with data.calibration_images=1000")
    split = load_split(root, sc.calibration_split, lazy=True)
    n = int(sc.n_calibration)
    if n > len(split.images):
        raise ValueError(f"sharing.n_calibration={n} but split '{sc.calibration_split}' has only "
                         f"{len(split.images)} images")
    if n < 2:
        raise ValueError(f"sharing.n_calibration={n}: the fits need at least 2 calibration images")
    images = np.asarray(split.images[:n])  # the fits pass over them several times: held, n is bounded by config
    labels = torch.from_numpy(np.asarray(split.labels[:n])).long() if need_labels else None
    return images, labels


def run(cfg: DictConfig) -> Path:
    from repshare.data.shards import load_split
    from repshare.models.load import load_classifier, load_detector, resolve_device
    from repshare.utils.artifacts import read_json_verified
    from repshare.utils.runlog import RunLog

    sc, results_dir = cfg.sharing, Path(cfg.paths.results_dir)
    protocols = list(cfg.capture.protocols)
    for p in protocols:
        protocol_preprocess(p, None, None)
    s = settings(cfg)
    if not s.adapters:
        raise ValueError("no adapter selected in the adapter config group (e.g. adapter=[resample])")
    need_cka = [p for p in protocols if any(p in s.trained[a].protocols for a in s.trained)]
    for p in need_cka:  # the trained adapters' pairs are chosen by CKA
        if not (results_dir / "cka" / p / "cka.json").is_file():
            raise FileNotFoundError(f"evaluate_merged needs {results_dir / 'cka' / p / 'cka.json'} (written by the "
                                    f"cka stage with protocol {p!r} in capture.protocols): run the cka stage")
    cka = {p: np.asarray(read_json_verified(results_dir / "cka" / p / "cka.json", "cka")["cross_stage"], dtype=float)
           for p in need_cka}
    split = load_split(Path(cfg.paths.data_dir) / "prepared", "val", lazy=True)  # the report split, read batch by batch
    n_eval = len(split.labels) if sc.n_eval is None else min(int(sc.n_eval), len(split.labels))
    batches = labelled_batches(split.images[:n_eval], split.labels[:n_eval], int(sc.batch_size), name="sharing.batch_size")
    if not batches:
        raise ValueError(f"val split under {cfg.paths.data_dir}/prepared holds no images")
    n_var = n_eval if sc.n_eval_variants is None else min(int(sc.n_eval_variants), n_eval)
    k_var = math.ceil(n_var / int(sc.batch_size))  # whole batches, so the reference cell's batches are unchanged
    calib_images = calib_labels = None
    if list(s.adapters) != ["resample"]:
        calib_images, calib_labels = calibration(cfg, "supervised" in s.adapters)

    device = resolve_device(sc.device)
    classifier, cls_pre = load_classifier(cfg)
    det, det_pre = load_detector(cfg)
    models = Models(classifier, cls_pre, det, det_pre)
    scored = {p: score_protocol(models, p, s, batches, k_var, calib_images, calib_labels, cka.get(p), device)
              for p in protocols}
    records = [r for p in protocols for r in scored[p].records]
    ref_p = "per_model" if scored.get("per_model") and scored["per_model"].reference else protocols[0]
    reference = scored[ref_p].reference or [
        {k: r[k] for k in ("i", "j", "kind", "acc", "acc_top5", "params_offloaded", "bytes_offloaded", "size",
                           "flops_offloaded", "flops_shared")}
        | {"memory_saved_frac": r["bytes_offloaded"] / (model_bytes(classifier) + model_bytes(det))}
        for r in scored[ref_p].records if r["adapter"] == s.adapters[0]]  # the paper's setting did not run
    base = scored[ref_p].baseline
    pairs = {"baseline": {"acc": base["acc"], "acc_top5": base["acc_top5"], "params": model_params(classifier),
                          "bytes": model_bytes(classifier)},
             "stage_names": stage_names(classifier), "pairs": reference, "n": base["n"],
             "resize_method": sc.resize_method, "protocol": ref_p,
             "adapter": "resample" if "resample" in s.adapters else s.adapters[0]}
    merges = {"baselines": {p: scored[p].baseline for p in protocols}, "protocols": protocols,
              "adapters": list(s.adapters), "merges": records, "classifier_bytes": model_bytes(classifier),
              "detector_bytes": model_bytes(det), "num_classes": base["num_classes"],
              "calibration_split": sc.calibration_split if calib_images is not None else None,
              "n_calibration": 0 if calib_images is None else len(calib_images), "n_eval": n_eval,
              "n_variants": scored[protocols[0]].baseline["n_variants"], "report_split": "val"}
    correct = {(p, *k): v for p in protocols for k, v in scored[p].correct.items()}
    with RunLog(cfg, STAGE, results_dir / "metrics") as runlog, atomic_dir(results_dir / "evaluate_merged", stage=STAGE) as tmp:
        write_json(tmp / "pairs.json", pairs)
        write_csv(tmp / "pairs.csv", reference, lineterminator="\r\n")
        write_json(tmp / "merges.json", merges)
        write_csv(tmp / "merges.csv", records, lineterminator="\r\n")
        np.save(tmp / "correct.npy", correct_matrix(records, correct, n_eval), allow_pickle=False)
        np.save(tmp / "baseline_correct.npy", scored[ref_p].baseline_correct.astype(np.int8), allow_pickle=False)
        runlog.log_table("pairs", reference)
        runlog.log_table("merges", records)
        runlog.summary(baseline_acc=pairs["baseline"]["acc"], n=pairs["n"], n_merges=len(records),
                       **{f"{p}/{k}": round(v, 2) for p in protocols for k, v in scored[p].seconds.items()})
    log.info("evaluate_merged: %d merges -> %s", len(records), results_dir / "evaluate_merged")
    return results_dir / "evaluate_merged"
