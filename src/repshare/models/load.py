"""Load the two source models for the analysis stages, in either mode.

Each model's ``weights`` (random | pretrained | checkpoint | trained, see ``repshare.models.weights``)
says what is loaded; left null it follows the older keys: ``checkpoint_path`` (a user's local weight
file), then ``pretrained: true`` (published timm/effdet weights), then the model the training stage
wrote to ``results/models/<name>/``.
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
from repshare.models.weights import resolve_weights


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
                                f"(or set model.{name}.weights=random|pretrained, or checkpoint_path)")
    return path


def classifier_preprocess(cfg: DictConfig, model: nn.Module, name: str = "classifier") -> Preprocess:
    c = cfg.model[name]
    return from_pretrained_cfg(getattr(model, "pretrained_cfg", None), c.input_size, c.mean, c.std, c.interpolation)


def detector_preprocess(cfg: DictConfig) -> Preprocess:
    d = cfg.model.detector
    return Preprocess(d.image_size, d.mean or IMAGENET_MEAN, d.std or IMAGENET_STD, "bilinear")


def weights_source(cfg: DictConfig, name: str) -> str:
    """random | pretrained | checkpoint | trained: where model ``name``'s weights come from."""
    c = cfg.model[name]
    return resolve_weights(c.get("weights"), c.get("pretrained", False), c.get("checkpoint_path"), f"model.{name}")


def model_kwargs(cfg: DictConfig, name: str, use_trained: bool = True) -> dict:
    """Builder kwargs of model ``name`` (classifier | detector | ...). ``weights: trained`` becomes the file
    the training stage wrote (``use_trained``) or a fresh initialisation (the training stage's start)."""
    kw = dict(cfg.model[name])
    kw.pop("_target_", None)
    source = weights_source(cfg, name)
    if source == "trained" and use_trained:
        source, kw["checkpoint_path"] = "checkpoint", str(trained_weights(cfg, name))
    elif source == "trained":
        source = "random"
    kw.update(weights=source, key=f"model.{name}")
    return kw


def classifier_kwargs(cfg: DictConfig, use_trained: bool = True) -> dict:
    return model_kwargs(cfg, "classifier", use_trained)


def detector_kwargs(cfg: DictConfig, use_trained: bool = True) -> dict:
    return model_kwargs(cfg, "detector", use_trained)


def _build(cfg: DictConfig, name: str, builder) -> nn.Module:
    kw = model_kwargs(cfg, name)
    try:
        return builder(**kw)
    except ValueError as err:
        if weights_source(cfg, name) != "trained":
            raise
        # The fallback to the training stage's output is the surprising one: say so, and how to choose.
        raise ValueError(f"{err}; model.{name}.weights is 'trained' (no pretrained/checkpoint_path set), so "
                         f"{kw['checkpoint_path']} was used: retrain, or set model.{name}.weights=random|pretrained "
                         f"or model.{name}.checkpoint_path") from None


def load_classifier(cfg: DictConfig) -> tuple[nn.Module, Preprocess]:
    model = _build(cfg, "classifier", build_classifier)
    return model.eval(), classifier_preprocess(cfg, model)


def load_detector(cfg: DictConfig) -> tuple[nn.Module, Preprocess]:
    model = _build(cfg, "detector", build_detector)
    return model.eval(), detector_preprocess(cfg)
