"""EfficientDet detector (effdet), backbone initialisation from the classifier, Lightning module.

The pair is timm ``efficientnet_b0`` (classifier) and effdet ``efficientdet_d0`` (detector): the
detector's backbone is timm's ``efficientnet_b0`` as a feature extractor (symmetric padding, BN eps
1e-5), so its stage i is structurally identical to the classifier's stage i and the weights copy
one to one. The TensorFlow-ported pair (``tf_efficientnet_b0`` / ``tf_efficientdet_d0``: 'same'
padding, BN eps 1e-3) matches too and is what the real mode loads with published weights; mixing
one of each family would not (padding and eps differ).
"""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch
from effdet import DetBenchTrain, EfficientDet, create_model, get_efficientdet_config
from effdet.config.model_config import efficientdet_model_param_dict
from torch import nn
from torchmetrics.detection import MeanAveragePrecision

from repshare.features.stages import stage_modules
from repshare.models.checkpoint import load_into
from repshare.models.preprocess import Preprocess
from repshare.models.weights import fetch_guard, resolve_weights, torch_hub_cached


def build_detector(arch: str = "efficientdet_d0", num_classes: int = 90, pretrained: bool = False,
                   checkpoint_path: str | None = None, image_size: int = 512, max_det_per_image: int = 100,
                   weights: str | None = None, key: str = "model.detector", **_: Any) -> EfficientDet:
    """An effdet EfficientDet; ``weights`` as in ``build_classifier`` (``repshare.models.weights``)."""
    if arch not in efficientdet_model_param_dict:
        raise ValueError(f"{key}.arch={arch!r} is not an effdet model name")
    if image_size % 128:
        raise ValueError(f"{key}.image_size={image_size} must be a multiple of 128 for effdet")
    source = resolve_weights(weights, pretrained, checkpoint_path, key)
    if source == "pretrained":
        # Published COCO weights (network or torch.hub cache); the head is reset when the class count differs.
        url = get_efficientdet_config(arch).url
        if not url:
            raise ValueError(f"effdet publishes no weights for {key}.arch={arch!r}: set weights=random or checkpoint_path")
        with fetch_guard(key, f"{key}.arch={arch!r}", url, torch_hub_cached(url)):
            return create_model(arch, pretrained=True, num_classes=num_classes, image_size=(image_size, image_size),
                                max_det_per_image=max_det_per_image)
    config = get_efficientdet_config(arch)
    config.num_classes = num_classes
    config.image_size = (image_size, image_size)
    config.max_det_per_image = max_det_per_image
    model = EfficientDet(config, pretrained_backbone=False)
    if source == "checkpoint":
        load_into(model, checkpoint_path, f"detector {arch} with {num_classes} classes")
    return model


def init_backbone_from_classifier(detector: EfficientDet, classifier: nn.Module) -> int:
    """Copy the classifier's stem and block stages into the detector's backbone, exactly.

    Returns the number of tensors copied; raises if any stage differs in structure or shape.
    """
    src_stages, dst_stages = stage_modules(classifier), stage_modules(detector.backbone)
    if len(dst_stages) > len(src_stages):
        raise ValueError(f"detector backbone has {len(dst_stages)} stages, classifier {len(src_stages)}")
    copied = 0
    for k, (src, dst) in enumerate(zip(src_stages, dst_stages)):
        s, d = src.state_dict(), dst.state_dict()
        if s.keys() != d.keys() or any(s[n].shape != d[n].shape for n in s):
            raise ValueError(f"stage {k} of the classifier and the detector backbone differ in structure")
        for m_src, m_dst in zip(src.modules(), dst.modules()):
            if isinstance(m_src, nn.BatchNorm2d) and m_src.eps != m_dst.eps:
                raise ValueError(f"stage {k}: BatchNorm eps {m_src.eps} vs {m_dst.eps} (mixing tf_ and non-tf_ models?)")
            if isinstance(m_src, nn.Conv2d) and (m_src.padding != m_dst.padding or type(m_src) is not type(m_dst)):
                raise ValueError(f"stage {k}: convolution padding differs ({type(m_src).__name__} vs {type(m_dst).__name__})")
        dst.load_state_dict(s)
        copied += len(s)
    return copied


def to_effdet_target(target: dict[str, torch.Tensor], image_size: int, batch: int) -> dict[str, torch.Tensor]:
    """Our boxes (xyxy, 0-based classes, -1 padded) -> effdet's labeler format (yxyx, 1-based, -1 padded)."""
    bbox, cls = target["bbox"], target["cls"]
    valid = cls >= 0
    yxyx = bbox[..., [1, 0, 3, 2]]
    dev = bbox.device
    return {
        "bbox": torch.where(valid[..., None], yxyx, torch.full_like(yxyx, -1.0)),
        "cls": torch.where(valid, cls + 1, torch.full_like(cls, -1)).float(),
        "img_scale": torch.ones(batch, device=dev),
        "img_size": torch.tensor([[image_size, image_size]], device=dev, dtype=torch.float).expand(batch, 2),
    }


def detections_to_preds(det: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """effdet detections (B, K, 6: x1 y1 x2 y2 score class 1-based) -> torchmetrics predictions."""
    out = []
    for d in det:
        keep = d[:, 4] > 0
        out.append({"boxes": d[keep, :4], "scores": d[keep, 4], "labels": d[keep, 5].long() - 1})
    return out


def target_to_metric(target: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    out = []
    for b, c in zip(target["bbox"], target["cls"]):
        keep = c >= 0
        out.append({"boxes": b[keep], "labels": c[keep]})
    return out


class DetectorModule(pl.LightningModule):
    def __init__(self, model: EfficientDet, preprocess: Preprocess, lr: float = 2e-3, weight_decay: float = 0.01,
                 warmup_epochs: float = 0.3, epochs: int = 3):
        super().__init__()
        self.model, self.preprocess = model, preprocess
        self.bench = DetBenchTrain(model, create_labeler=True)
        self.lr, self.weight_decay, self.warmup_epochs, self.epochs = lr, weight_decay, warmup_epochs, epochs
        self.image_size = model.config.image_size[0]
        self.val_map = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools")

    def _inputs(self, x: torch.Tensor, target: dict[str, torch.Tensor]):
        # Boxes are in the prepared image's pixels; rescale them if the detector runs at another size.
        scale = self.image_size / x.shape[-1]
        t = dict(target)
        if scale != 1.0:
            t["bbox"] = torch.where(t["bbox"] >= 0, t["bbox"] * scale, t["bbox"])
        return self.preprocess(x), t

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, target = batch
        x, t = self._inputs(x, target)
        out = self.bench(x, to_effdet_target(t, self.image_size, x.shape[0]))
        self.log("train/loss", out["loss"], prog_bar=True)
        self.log("train/class_loss", out["class_loss"])
        self.log("train/box_loss", out["box_loss"])
        return out["loss"]

    def validation_step(self, batch, batch_idx: int) -> None:
        x, target = batch
        x, t = self._inputs(x, target)
        out = self.bench(x, to_effdet_target(t, self.image_size, x.shape[0]))
        self.log("val/loss", out["loss"])
        self.val_map.update(detections_to_preds(out["detections"]), target_to_metric(t))

    def on_validation_epoch_end(self) -> None:
        res = self.val_map.compute()
        self.log("val/map", res["map"], prog_bar=True)
        self.log("val/map_50", res["map_50"])
        self.val_map.reset()

    test_step = validation_step
    on_test_epoch_end = on_validation_epoch_end

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        total = int(self.trainer.estimated_stepping_batches)
        steps_per_epoch = max(1, total // max(1, self.epochs))
        warmup = int(self.warmup_epochs * steps_per_epoch)

        def f(s: int) -> float:
            if s < warmup:
                return (s + 1) / max(1, warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (s - warmup) / max(1, total - warmup))))

        return {"optimizer": opt, "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.LambdaLR(opt, f),
                                                   "interval": "step"}}

