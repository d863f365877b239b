"""DVC stage ``evaluate_merged``: every (input protocol, adapter, detector stage i, classifier stage j) merge.

Per protocol (``capture.protocols``): the adapters of ``cfg.adapter`` are fitted on unlabelled
calibration images (``sharing.calibration_split``; labels are read only for ``supervised``), then
every merge is scored on the val split: top-1/top-5 accuracy, agreement with the unmerged
classifier, bytes freed (minus the adapter's own), FLOPs, fit time. The paper's setting
(``resample`` under ``per_model``) is scored on all ``sharing.n_eval`` images and written to
``results/sharing/pairs.json`` exactly as before; every merge is in ``merges.json``/``merges.csv``.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from repshare.features.batching import batch_bounds, labelled_batches, to_chw
from repshare.features.capture import protocol_preprocess
from repshare.features.stages import stage_modules, stage_names
from repshare.sharing.adapter import (ADAPTERS, CONV_ADAPTERS, Adapter, ConvAdapter, adapter_bytes, adapter_flops,
                                      check_adapter)
from repshare.sharing.evaluate import _prepare, _write_csv, cumulative_stage_flops, evaluate_adapters, pair_rows
from repshare.sharing.fit import fit_label_free, resized_inputs, train_conv_adapter
from repshare.sharing.memory import model_bytes, model_params, offloaded_bytes, offloaded_params
from repshare.sharing.merged import apply_pre, stage_shapes

log = logging.getLogger("repshare")
REFERENCE = ("per_model", "resample")  # the paper's setting: the numbers earlier revisions reported


def selected_adapters(adapter_cfg) -> list[str]:
    """Adapter names chosen in the ``adapter`` config group, in the canonical order."""
    names = [k for k in adapter_cfg if adapter_cfg[k] is not None]
    for n in names:
        check_adapter(n)
    return [a for a in ADAPTERS if a in names]


def trained_pairs(cka_cross: np.ndarray, same_stage: bool, top_k_cross: int) -> list[tuple[int, int]]:
    """Same-stage pairs (if asked) plus the ``top_k_cross`` cross-stage pairs of highest CKA."""
    n_i, n_j = cka_cross.shape
    out = [(i, i) for i in range(min(n_i, n_j))] if same_stage else []
    cross = sorted(((float(cka_cross[i, j]), i, j) for i in range(n_i) for j in range(n_j) if i != j), reverse=True)
    out += [(i, j) for _, i, j in cross[: int(top_k_cross)]]
    return out


def _load_cka(results: Path, protocol: str) -> np.ndarray:
    from repshare.utils.io import read_json

    path = results / "cka" / protocol / "cka.json"
    if not path.is_file():
        raise FileNotFoundError(f"evaluate_merged needs {path} (written by the cka stage with protocol "
                                f"{protocol!r} in capture.protocols) to choose the pairs of trained adapters")
    return np.asarray(read_json(path)["cross_stage"], dtype=float)


def _calibration(cfg, need_labels: bool):
    """Calibration images (and, only when a supervised adapter asks, their labels)."""
    from repshare.data.shards import load_split, read_manifest

    sc = cfg.sharing
    root = Path(cfg.paths.data_dir) / "prepared"
    have = list(read_manifest(root)["splits"])
    if sc.calibration_split not in have:
        raise ValueError(f"sharing.calibration_split={sc.calibration_split!r} is not a prepared split (have: "
                         f"{', '.join(have)}); with ImageNet prepare a held-out one with data.calibration_images=1000 "
                         "and set sharing.calibration_split=calib")
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


def _image_batches(images: np.ndarray, batch_size: int):
    return [to_chw(images[a:b]) for a, b in batch_bounds(len(images), batch_size, name="sharing.calibration_batch_size")]


def run(cfg) -> Path:
    from repshare.data.shards import load_split
    from repshare.models.load import load_classifier, load_detector, resolve_device
    from repshare.utils.io import atomic_dir, write_json
    from repshare.utils.record import provenance
    from repshare.utils.runlog import RunLog

    sc, ad = cfg.sharing, cfg.adapter
    protocols = list(cfg.capture.protocols)
    for p in protocols:
        protocol_preprocess(p, None, None)
    names = selected_adapters(ad)
    if not names:
        raise ValueError("no adapter selected in the adapter config group (e.g. adapter=[resample])")
    results_dir = Path(cfg.paths.results_dir)
    conv = [a for a in names if a in CONV_ADAPTERS]
    trained = [a for a in names if a in ("distill", "supervised")]
    trained_in = {p: [a for a in trained if p in ad[a].protocols] for p in protocols}
    cka = {p: _load_cka(results_dir, p) for p in protocols if trained_in[p]}

    split = load_split(Path(cfg.paths.data_dir) / "prepared", "val", lazy=True)  # read batch by batch
    images, labels = split.images, split.labels
    if sc.n_eval is not None:
        images, labels = images[: sc.n_eval], labels[: sc.n_eval]
    batches = labelled_batches(images, labels, int(sc.batch_size), name="sharing.batch_size")
    if not batches:
        raise ValueError(f"val split under {cfg.paths.data_dir}/prepared holds no images")
    n_var = len(labels) if sc.n_eval_variants is None else min(int(sc.n_eval_variants), len(labels))
    k_var = math.ceil(n_var / int(sc.batch_size))  # whole batches, so the reference cell's batches are unchanged
    chunk = None if sc.get("forward_chunk") is None else int(sc.forward_chunk)
    if chunk is not None and chunk < 1:
        raise ValueError(f"sharing.forward_chunk={chunk} must be >= 1 (or null: whole batches)")
    calib_images = calib_labels = None
    if names != ["resample"]:
        calib_images, calib_labels = _calibration(cfg, "supervised" in names)

    device = resolve_device(sc.device)
    classifier, cls_pre0 = load_classifier(cfg)
    det, det_pre0 = load_detector(cfg)
    backbone = det.backbone
    _prepare(device, classifier, cls_pre0, det, det_pre0)
    n_i, n_j = len(stage_modules(backbone)), len(stage_modules(classifier))
    pairs = [(i, j) for i in range(n_i) for j in range(n_j)]
    x1 = batches[0][0][:1].to(device)
    cls_total = model_bytes(classifier)
    t_stage = time.time()

    records: list[dict[str, Any]] = []
    baselines: dict[str, dict] = {}
    reference_rows = None
    fit_info: dict[str, Any] = {}
    for protocol in protocols:
        cls_pre, det_pre = protocol_preprocess(protocol, cls_pre0, det_pre0)
        with torch.inference_mode():
            cls_in, det_in = apply_pre(cls_pre, x1), apply_pre(det_pre, x1)
        src_shapes, dst_shapes = stage_shapes(backbone, det_in), stage_shapes(classifier, cls_in)
        adapters: dict[tuple[str, int, int], torch.nn.Module] = {}
        fit: dict[tuple[str, int, int], dict] = {}
        if "resample" in names:
            for i, j in pairs:
                adapters[("resample", i, j)] = Adapter(src_shapes[i], dst_shapes[j], sc.resize_method, sc.channel_seed)
                fit[("resample", i, j)] = {"seconds": 0.0, "images": 0}
        kinds = [k for k in ("moments", "lstsq") if k in names or (k == "lstsq" and conv)]
        if kinds:
            fitted, info = fit_label_free(
                backbone, det_pre, classifier, cls_pre, _image_batches(calib_images, int(sc.calibration_batch_size)),
                pairs, src_shapes, dst_shapes, kinds, sc.resize_method, sc.channel_seed,
                ridge=float(ad.lstsq.ridge) if ad.lstsq is not None else 1e-3,
                eps=float(ad.moments.eps) if ad.moments is not None else 1e-5,
                max_pixels=ad.lstsq.max_pixels_per_image if ad.lstsq is not None else 64, device=device,
                chunk=chunk)
            share = info["seconds"] / len(pairs)  # one pass serves every pair: its time split evenly
            fit_info[f"{protocol}/label_free_pass_seconds"] = info["seconds"]
            for key, a in fitted.items():
                fit[key] = {"seconds": share, "images": info["images"]}
                if key[0] in names:
                    adapters[key] = a
        if trained_in[protocol]:
            teacher, donor = None, {}
            calib_batches = _image_batches(calib_images, int(sc.calibration_batch_size))
            with torch.inference_mode():
                if "distill" in trained_in[protocol]:  # the unmerged classifier's logits: the label-free target
                    teacher = torch.cat([classifier(apply_pre(cls_pre, x.to(device))) for x in calib_batches])
            for name in trained_in[protocol]:
                tc = ad[name]
                for i, j in trained_pairs(cka[protocol], bool(tc.same_stage), int(tc.top_k_cross)):
                    init = fitted[("lstsq", i, j)]
                    a = ConvAdapter(src_shapes[i], dst_shapes[j], sc.resize_method).to(device)
                    a.load_state_dict(init.state_dict())
                    if i not in donor:
                        with torch.inference_mode():
                            donor[i] = [stage_out for stage_out in
                                        (_stage(backbone, apply_pre(det_pre, x.to(device)), i) for x in calib_batches)]
                    inputs = resized_inputs(a, donor[i])
                    res = train_conv_adapter(
                        a, inputs, classifier, j,
                        teacher_logits=teacher if name == "distill" else None,
                        labels=calib_labels.to(device) if name == "supervised" else None,
                        steps=int(tc.steps), batch_size=int(tc.batch_size), lr=float(tc.lr),
                        temperature=float(tc.temperature), seed=int(cfg.seed))
                    lst = fit[("lstsq", i, j)]
                    fit_info[f"{protocol}/{name}_train_seconds"] = fit_info.get(f"{protocol}/{name}_train_seconds", 0.0) + res["seconds"]
                    fit[(name, i, j)] = {"seconds": lst["seconds"] + res["seconds"], "images": lst["images"] + res["images"],
                                         "loss_first": res["loss_first"], "loss_last": res["loss_last"]}
                    adapters[(name, i, j)] = a.eval()
            donor.clear()

        # ---- scoring: every merge on the first k_var batches; the reference cell also on the rest
        t0 = time.time()
        res_var, base_var = evaluate_adapters(backbone, det_pre, classifier, cls_pre, batches[:k_var], adapters,
                                              device, progress=True, chunk=chunk)
        full = dict(res_var)
        base_full = base_var
        ref_keys = [k for k in adapters if (protocol, k[0]) == REFERENCE]
        if k_var < len(batches) and ref_keys:
            t_rest = time.time()
            rest, base_rest = evaluate_adapters(backbone, det_pre, classifier, cls_pre, batches[k_var:],
                                                {k: adapters[k] for k in ref_keys}, device, chunk=chunk)
            # the paper's setting alone, on the images the others skip: the cost unit of earlier revisions
            fit_info[f"{protocol}/reference_rest_seconds"] = time.time() - t_rest
            fit_info[f"{protocol}/reference_rest_images"] = sum(b - a for a, b in batches[k_var:].bounds)
            for k in ref_keys:
                full[k] = _merge_scores(res_var[k], rest[k])
            base_full = _merge_scores(base_var, base_rest)
        eval_seconds = time.time() - t0
        fit_info[f"{protocol}/variant_eval_seconds"] = eval_seconds - fit_info.get(f"{protocol}/reference_rest_seconds", 0.0)
        fit_info[f"{protocol}/n_merges"] = len(adapters)
        fit_info[f"{protocol}/eval_seconds"] = eval_seconds
        baselines[protocol] = {"acc": base_full["acc"], "acc_top5": base_full["acc_top5"], "n": base_full["n"],
                               "acc_variants": base_var["acc"], "n_variants": base_var["n"]}
        cls_flops = cumulative_stage_flops(classifier, cls_in.clone())
        det_flops = cumulative_stage_flops(backbone, det_in.clone())
        for (name, i, j), a in adapters.items():
            r = full[(name, i, j)]
            a_bytes = adapter_bytes(a)
            records.append({
                "protocol": protocol, "adapter": name, "i": i, "j": j, "kind": "same" if i == j else "cross",
                "acc": r["acc"], "acc_top5": r["acc_top5"], "agree": r["agree"], "n": r["n"],
                "acc_variants": res_var[(name, i, j)]["acc"], "agree_variants": res_var[(name, i, j)]["agree"],
                "n_variants": res_var[(name, i, j)]["n"],
                "params_offloaded": offloaded_params(classifier, j),
                "bytes_offloaded": offloaded_bytes(classifier, j), "adapter_bytes": a_bytes,
                "bytes_saved": offloaded_bytes(classifier, j) - a_bytes,
                "classifier_bytes": cls_total,
                "size": int(math.prod(dst_shapes[j])),
                "flops_offloaded": int(cls_flops[j]), "flops_shared": int(det_flops[i]),
                "adapter_flops": adapter_flops(a),
                "labels_used": name == "supervised",
                "fit_seconds": fit[(name, i, j)]["seconds"], "fit_images": fit[(name, i, j)]["images"],
                "loss_first": fit[(name, i, j)].get("loss_first"), "loss_last": fit[(name, i, j)].get("loss_last"),
            })
        if ref_keys:
            ref = {(i, j): full[(n, i, j)] for n, i, j in ref_keys}
            reference_rows = pair_rows(ref, classifier, det, dst_shapes, cls_flops, det_flops)
        log.info("evaluate_merged [%s]: %d merges in %.1fs (fit+eval)", protocol, len(adapters), eval_seconds)

    if reference_rows is None:  # the paper's setting was not run: pairs.json holds the first cell
        first = (protocols[0], names[0])
        reference_rows = [{k: r[k] for k in ("i", "j", "kind", "acc", "acc_top5")} | {
            "params_offloaded": None, "bytes_offloaded": r["bytes_offloaded"],
            "memory_saved_frac": r["bytes_offloaded"] / (cls_total + model_bytes(det)), "size": r["size"],
            "flops_offloaded": r["flops_offloaded"], "flops_shared": r["flops_shared"]}
            for r in records if (r["protocol"], r["adapter"]) == first]
    seconds = round(time.time() - t_stage, 2)
    ref_protocol = REFERENCE[0] if REFERENCE[0] in baselines else protocols[0]
    record = {
        "baseline": {"acc": baselines[ref_protocol]["acc"], "acc_top5": baselines[ref_protocol]["acc_top5"],
                     "params": model_params(classifier), "bytes": cls_total},
        "stage_names": stage_names(classifier),
        "pairs": reference_rows,
        "n": baselines[ref_protocol]["n"],
        "resize_method": sc.resize_method,
        "protocol": ref_protocol,
        "adapter": "resample" if "resample" in names else names[0],
        "seconds": seconds,
        "provenance": provenance(cfg, "evaluate_merged"),
    }
    merges = {"baselines": baselines, "protocols": protocols, "adapters": names, "merges": records,
              "classifier_bytes": cls_total, "detector_bytes": model_bytes(det),
              "n_calibration": 0 if calib_images is None else len(calib_images),
              "fit": fit_info, "provenance": provenance(cfg, "evaluate_merged")}
    out = results_dir / "sharing"
    with atomic_dir(out) as tmp:
        with RunLog(cfg, "evaluate_merged", tmp) as run:
            write_json(tmp / "pairs.json", record)
            _write_csv(tmp / "pairs.csv", reference_rows)
            write_json(tmp / "merges.json", merges)
            _write_csv(tmp / "merges.csv", records)
            run.log_table("pairs", reference_rows)
            run.log_table("merges", records)
            run.summary(baseline_acc=record["baseline"]["acc"], n=record["n"], seconds=seconds, **fit_info,
                        **{f"{p}/{a}/acc_mean": float(np.mean([r["acc"] for r in records
                                                                 if r["protocol"] == p and r["adapter"] == a]))
                           for p in protocols for a in names
                           if any(r["protocol"] == p and r["adapter"] == a for r in records)})
    log.info("evaluate_merged: %d merges in %.1fs -> %s", len(records), seconds, out)
    return out


def _stage(backbone, x: torch.Tensor, i: int) -> torch.Tensor:
    from repshare.features.stages import run_stages

    return run_stages(backbone, x, i)[-1]


def _merge_scores(a: dict, b: dict) -> dict:
    """Combine two disjoint evaluations from their integer counts (exactly the rates of one pass)."""
    n = a["n"] + b["n"]
    out = {"n": n, "correct": a["correct"] + b["correct"], "correct_top5": a["correct_top5"] + b["correct_top5"]}
    out["acc"], out["acc_top5"] = out["correct"] / n, out["correct_top5"] / n
    if "agreed" in a:
        out["agreed"] = a["agreed"] + b["agreed"]
        out["agree"] = out["agreed"] / n
    return out
