"""Evaluate the source models on the configured dataset (real mode: ImageNet top-1/top-5, COCO mAP).

    python pipelines/evaluate_models.py [--params FILE] [which=classifier|detector|both] [key=value ...]

Writes results/metrics/eval_<model>.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig

from repshare.data.shards import load_split, prepared_dir
from repshare.models.load import load_classifier, load_detector, resolve_device
from repshare.stage import run_stage
from repshare.training.evaluate import evaluate_classifier, evaluate_detector
from repshare.utils.io import write_json
from repshare.utils.record import provenance

WHICH = "both"


def evaluate_models(cfg: DictConfig) -> dict:
    split = load_split(prepared_dir(cfg), "val")
    device = resolve_device(cfg.capture.device)
    out = {}
    if WHICH in ("classifier", "both"):
        model, pre = load_classifier(cfg)
        out["classifier"] = evaluate_classifier(model, pre, split, cfg.model.classifier.num_classes, 100, device)
    if WHICH in ("detector", "both"):
        if not len(split.box_classes):
            raise ValueError(f"the {cfg.data.name} data has no boxes: use data=coco (or shapes) for the detector")
        model, pre = load_detector(cfg)
        out["detector"] = evaluate_detector(model, pre, split, 16, device)
    for name, metrics in out.items():
        write_json(Path(cfg.paths.results_dir) / "metrics" / f"eval_{name}.json",
                   {**metrics, "data": cfg.data.name, "provenance": provenance(cfg, "evaluate_models")})
        print(name, {k: v for k, v in metrics.items()})
    return out


if __name__ == "__main__":
    args = sys.argv[1:]
    for a in list(args):
        if a.startswith("which="):
            WHICH = a.split("=", 1)[1]
            args.remove(a)
    if WHICH not in ("classifier", "detector", "both"):
        sys.exit(f"error [evaluate_models]: which={WHICH!r} must be classifier, detector or both")
    run_stage(evaluate_models, args)
