"""Source-model evaluation: classifier top-1/top-5 and detector COCO mAP (torchmetrics, pycocotools).

Detector label space: a detection's class column is effdet's 1-based class, which for COCO is the
original category id (the published 90-class weights and a detector trained here on ``data=coco``
alike); the prepared ground truth stores ``category_id - 1`` (see ``repshare.data.coco``), and
``detections_to_preds`` subtracts the same 1, so both sides meet in one space with the id gaps kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from effdet import DetBenchPredict, EfficientDet
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.detection import MeanAveragePrecision
from tqdm import tqdm

from repshare.data.datamodule import SplitDataset
from repshare.data.shards import Split
from repshare.models.detector import detections_to_preds, target_to_metric
from repshare.models.preprocess import Preprocess


@torch.inference_mode()
def evaluate_classifier(model: nn.Module, pre: Preprocess, split: Split, num_classes: int, batch_size: int = 100,
                        device: torch.device | str = "cpu", label_check: bool = False) -> dict[str, Any]:
    """top-1 / top-5 on ``split``. ``label_check`` (real mode): also the top-1 against every label minus one
    (:func:`check_label_shift`) and the preprocessing actually used."""
    keep = split.labels >= 0
    if not keep.any():
        raise ValueError("no labelled images to evaluate the classifier on")
    top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro").to(device)
    top5 = MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro").to(device)
    model, pre = model.to(device).eval(), pre.to(device)
    minus_one = 0
    for x, y in tqdm(DataLoader(SplitDataset(split, "cls"), batch_size=batch_size), desc="eval classifier", leave=False):
        x, y = x.to(device), y.to(device)
        m = y >= 0
        logits = model(pre(x[m]))
        top1.update(logits, y[m])
        top5.update(logits, y[m])
        minus_one += int((logits.argmax(1) == y[m] - 1).sum())
    out: dict[str, Any] = {"top1": float(top1.compute()), "top5": float(top5.compute()), "n": int(keep.sum())}
    if label_check:
        out["top1_labels_minus_1"] = minus_one / int(keep.sum())
        out["preprocess"] = pre.describe()
    return out


# A real model scores ~0.1 % on labels one too high and its usual top-1 after subtracting one.
SHIFT_MIN_TOP1, SHIFT_RATIO = 0.2, 5.0


def check_label_shift(metrics: dict[str, Any], where: str) -> None:
    """Refuse labels that the model scores far better after subtracting one: TensorFlow's 1001-class files
    (0 = background) and 1-based lists are otherwise read with every label shifted. Untrained models (at
    chance either way) pass."""
    given, shifted = float(metrics["top1"]), metrics.get("top1_labels_minus_1")
    if shifted is not None and shifted >= SHIFT_MIN_TOP1 and shifted > SHIFT_RATIO * given:
        raise ValueError(f"{where}: the labels look one too high (a 1001-class file with 0 = background, or 1-based): "
                         f"top-1 {given:.3f} as given vs {shifted:.3f} with every label minus one; set "
                         "data.label_offset=-1")


def detection_fn(model: nn.Module) -> nn.Module:
    """An effdet ``EfficientDet`` wrapped for inference; any other module is taken to return effdet-format
    detections itself (B, K, 6: x1 y1 x2 y2 score class, class 1-based = COCO category id)."""
    return DetBenchPredict(model) if isinstance(model, EfficientDet) else model


@torch.inference_mode()
def evaluate_detector(model: nn.Module, pre: Preprocess, split: Split, batch_size: int = 16,
                      device: torch.device | str = "cpu") -> dict[str, float]:
    """COCO box mAP of ``model`` on ``split``; boxes are compared at the detector's input resolution."""
    bench = detection_fn(model).to(device).eval()
    pre = pre.to(device)
    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools")
    size = pre.input_size
    for x, t in tqdm(DataLoader(SplitDataset(split, "det"), batch_size=batch_size), desc="eval detector", leave=False):
        scale = size / x.shape[-1]
        t = {k: v.to(device) for k, v in t.items()}
        if scale != 1.0:
            t["bbox"] = torch.where(t["bbox"] >= 0, t["bbox"] * scale, t["bbox"])
        det = bench(pre(x.to(device)))
        metric.update([{k: v.cpu() for k, v in p.items()} for p in detections_to_preds(det)],
                      [{k: v.cpu() for k, v in p.items()} for p in target_to_metric(t)])
    res = metric.compute()
    return {"map": float(res["map"]), "map_50": float(res["map_50"]), "map_75": float(res["map_75"]),
            "n": len(split)}


WHICH = ("classifier", "detector", "both")


def check_label_space(labels, num_classes: int, what: str, key: str) -> None:
    """The prepared labels must index the model's outputs (e.g. COCO ids up to 90 need a 90-way head)."""
    top = int(labels.max(initial=-1))
    if top >= num_classes:
        raise ValueError(f"the prepared data's {what} go up to {top} but {key}={num_classes}: the model cannot "
                         "predict them (set the model's class count to the data's label space)")


def evaluate_models(cfg: DictConfig, which: str = "both") -> dict:
    """Evaluate the configured source models on the prepared val split (real mode: ImageNet / COCO)."""
    from repshare.data.shards import load_split, prepared_dir
    from repshare.models.load import load_classifier, load_detector, resolve_device
    from repshare.utils.io import write_json
    from repshare.utils.record import provenance

    if which not in WHICH:
        raise ValueError(f"which={which!r} must be one of {', '.join(WHICH)}")
    split = load_split(prepared_dir(cfg), "val")
    device = resolve_device(cfg.capture.device)
    out = {}
    if which in ("classifier", "both"):
        n_cls = cfg.model.classifier.num_classes
        check_label_space(split.labels[split.labels >= 0], n_cls, "labels", "model.classifier.num_classes")
        model, pre = load_classifier(cfg)
        out["classifier"] = evaluate_classifier(model, pre, split, n_cls, 100, device, label_check=True)
        check_label_shift(out["classifier"], f"data={cfg.data.name} with model.classifier")
    if which in ("detector", "both"):
        if not len(split.box_classes):
            raise ValueError(f"the {cfg.data.name} data has no boxes: use data=coco (or shapes) for the detector")
        check_label_space(split.box_classes, cfg.model.detector.num_classes, "box classes",
                          "model.detector.num_classes")
        model, pre = load_detector(cfg)
        out["detector"] = {**evaluate_detector(model, pre, split, 16, device), "preprocess": pre.describe()}
    skipped = split.meta.get("n_missing_skipped")
    for name, metrics in out.items():
        if skipped:
            metrics["n_missing_skipped"] = int(skipped)  # data.skip_missing: listed images not on disk
        write_json(Path(cfg.paths.results_dir) / "metrics" / f"eval_{name}.json",
                   {**metrics, "data": cfg.data.name, "provenance": provenance(cfg, "evaluate_models")})
        print(name, {k: v for k, v in metrics.items()})
    return out


