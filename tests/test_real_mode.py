"""Real-mode path on small data made here: ImageNet-style and COCO-style folders, local weight files."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from repshare.config import compose
from repshare.stages.prepare import run as prepare
from repshare.data.shards import load_split, prepared_dir
from repshare.models.checkpoint import save_model
from repshare.models.classifier import build_classifier
from repshare.models.detector import build_detector
from repshare.models.load import load_classifier
from repshare.training.evaluate import evaluate_models


def _paths(tmp_path) -> list[str]:
    return [f"paths.data_dir={tmp_path / 'data'}", f"paths.results_dir={tmp_path / 'results'}",
            "logger.wandb_mode=disabled", "capture.device=cpu",
            "sharing.calibration_split=train"]  # the default (select) exists only for the shapes data


def test_imagenet_classifier_from_a_local_checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    for wnid in ("n01", "n02"):
        (tmp_path / "val" / wnid).mkdir(parents=True)
        for k in range(3):
            Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / "val" / wnid / f"{k}.JPEG")
    torch.manual_seed(0)
    save_model(build_classifier("efficientnet_b0", num_classes=2), tmp_path / "w", {})
    cfg = compose(["data=imagenet", f"data.root={tmp_path / 'val'}", "data.num_classes=2", "data.image_size=32",
                   "model.classifier.num_classes=2", f"model.classifier.checkpoint_path={tmp_path / 'w'}",
                   "model.classifier.input_size=32", *_paths(tmp_path)])
    prepare(cfg)
    out = evaluate_models(cfg, "classifier")["classifier"]
    # Independent recount: run the loaded model on the prepared images ourselves.
    model, pre = load_classifier(cfg)
    split = load_split(prepared_dir(cfg), "val")
    with torch.no_grad():
        pred = model(pre(torch.from_numpy(split.images).permute(0, 3, 1, 2))).argmax(1).numpy()
    assert out["n"] == 6 and abs(out["top1"] - (pred == split.labels).mean()) < 1e-6
    saved = json.loads((tmp_path / "results" / "metrics" / "eval_classifier.json").read_text())
    assert saved["data"] == "imagenet" and saved["provenance"]["config"]["data"]["name"] == "imagenet"


def test_coco_detector_map_from_a_local_checkpoint(tmp_path):
    rng = np.random.default_rng(1)
    (tmp_path / "img").mkdir()
    images, anns = [], []
    for k in range(2):
        Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(tmp_path / "img" / f"{k}.jpg")
        images.append({"id": k, "file_name": f"{k}.jpg"})
        anns.append({"id": k, "image_id": k, "category_id": 5, "bbox": [10, 10, 40, 30]})
    (tmp_path / "ann.json").write_text(json.dumps({"images": images, "annotations": anns,
                                                   "categories": [{"id": 5, "name": "thing"},
                                                                  {"id": 7, "name": "other"}]}))
    # Class = COCO category id - 1, so ids 5 and 7 need at least 7 outputs.
    save_model(build_detector("efficientdet_d0", num_classes=8, image_size=128), tmp_path / "w", {})
    cfg = compose(["data=coco", f"data.images_dir={tmp_path / 'img'}", f"data.annotations={tmp_path / 'ann.json'}",
                   "data.image_size=128", "data.num_classes=8", "model.detector.num_classes=8",
                   f"model.detector.checkpoint_path={tmp_path / 'w'}", *_paths(tmp_path)])
    prepare(cfg)
    out = evaluate_models(cfg, "detector")["detector"]
    assert out["n"] == 2 and 0.0 <= out["map"] <= 1.0 and 0.0 <= out["map_50"] <= 1.0
