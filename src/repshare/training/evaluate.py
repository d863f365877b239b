"""Source-model evaluation: classifier top-1/top-5 and detector COCO mAP (torchmetrics)."""

from __future__ import annotations

from pathlib import Path

import torch
from effdet import DetBenchPredict
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
                        device: torch.device | str = "cpu") -> dict[str, float]:
    keep = split.labels >= 0
    if not keep.any():
        raise ValueError("no labelled images to evaluate the classifier on")
    top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro").to(device)
    top5 = MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro").to(device)
    model, pre = model.to(device).eval(), pre.to(device)
    for x, y in tqdm(DataLoader(SplitDataset(split, "cls"), batch_size=batch_size), desc="eval classifier", leave=False):
        x, y = x.to(device), y.to(device)
        m = y >= 0
        logits = model(pre(x[m]))
        top1.update(logits, y[m])
        top5.update(logits, y[m])
    return {"top1": float(top1.compute()), "top5": float(top5.compute()), "n": int(keep.sum())}


@torch.inference_mode()
def evaluate_detector(model: nn.Module, pre: Preprocess, split: Split, batch_size: int = 16,
                      device: torch.device | str = "cpu") -> dict[str, float]:
    bench = DetBenchPredict(model).to(device).eval()
    pre = pre.to(device)
    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools")
    size = model.config.image_size[0]
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


def evaluate_models(cfg: DictConfig, which: str = "both") -> dict:
    """Evaluate the configured source models on the prepared val split (real mode: ImageNet / COCO)."""
    from repshare.data.shards import load_split, prepared_dir
    from repshare.models.load import load_classifier, load_detector, resolve_device
    from repshare.utils.io import write_json
    from repshare.utils.record import provenance

    split = load_split(prepared_dir(cfg), "val")
    device = resolve_device(cfg.capture.device)
    out = {}
    if which not in WHICH:
        raise ValueError(f"which={which!r} must be one of {', '.join(WHICH)}")
    if which in ("classifier", "both"):
        model, pre = load_classifier(cfg)
        out["classifier"] = evaluate_classifier(model, pre, split, cfg.model.classifier.num_classes, 100, device)
    if which in ("detector", "both"):
        if not len(split.box_classes):
            raise ValueError(f"the {cfg.data.name} data has no boxes: use data=coco (or shapes) for the detector")
        model, pre = load_detector(cfg)
        out["detector"] = evaluate_detector(model, pre, split, 16, device)
    for name, metrics in out.items():
        write_json(Path(cfg.paths.results_dir) / "metrics" / f"eval_{name}.json",
                   {**metrics, "data": cfg.data.name, "provenance": provenance(cfg, "evaluate_models")})
        print(name, {k: v for k, v in metrics.items()})
    return out


