"""Load the two source models for the analysis stages, in either mode.

Order of precedence for each model: ``checkpoint_path`` (a user's local weight file), then
``pretrained: true`` (published timm/effdet weights), then the model the training stage wrote to
``results/models/<name>/``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from repshare.models.checkpoint import WEIGHTS
from repshare.models.classifier import build_classifier
from repshare.models.detector import build_detector
from repshare.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess, from_pretrained_cfg


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={name!r} requested but no CUDA GPU is available")
    return torch.device(name)


def model_dir(cfg: DictConfig, name: str) -> Path:
    return Path(cfg.paths.results_dir) / "models" / name


def trained_weights(cfg: DictConfig, name: str) -> Path:
    path = model_dir(cfg, name) / WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"no trained {name} at {path}: run the train_{name} stage first "
                                f"(or set model.{name}.pretrained / checkpoint_path)")
    return path


def classifier_preprocess(cfg: DictConfig, model: nn.Module) -> Preprocess:
    c = cfg.model.classifier
    return from_pretrained_cfg(getattr(model, "pretrained_cfg", None), c.input_size, c.mean, c.std, c.interpolation)


def detector_preprocess(cfg: DictConfig) -> Preprocess:
    d = cfg.model.detector
    return Preprocess(d.image_size, d.mean or IMAGENET_MEAN, d.std or IMAGENET_STD, "bilinear")


def model_kwargs(cfg: DictConfig, name: str, use_trained: bool = True) -> dict:
    """Builder kwargs of model ``name`` (classifier | detector); without pretrained weights or a
    checkpoint_path, the weights the training stage wrote are used."""
    kw = dict(cfg.model[name])
    kw.pop("_target_", None)
    if use_trained and not kw["checkpoint_path"] and not kw["pretrained"]:
        kw["checkpoint_path"] = str(trained_weights(cfg, name))
    return kw


def classifier_kwargs(cfg: DictConfig, use_trained: bool = True) -> dict:
    return model_kwargs(cfg, "classifier", use_trained)


def detector_kwargs(cfg: DictConfig, use_trained: bool = True) -> dict:
    return model_kwargs(cfg, "detector", use_trained)


def load_classifier(cfg: DictConfig) -> tuple[nn.Module, Preprocess]:
    model = build_classifier(**classifier_kwargs(cfg))
    return model.eval(), classifier_preprocess(cfg, model)


def load_detector(cfg: DictConfig) -> tuple[nn.Module, Preprocess]:
    model = build_detector(**detector_kwargs(cfg))
    return model.eval(), detector_preprocess(cfg)
