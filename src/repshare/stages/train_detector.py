"""DVC stage ``train_detector``: effdet EfficientDet-D0 with its backbone initialised from the trained
classifier, fine-tuned for detection (or in real mode the published/local weights, evaluated). Writes
``results/models/detector/`` and ``results/metrics/detector.json`` (+ provenance in ``detector_run.json``)."""

from __future__ import annotations

from omegaconf import DictConfig

from repshare.training import fit_detector, write_trained


def run(cfg: DictConfig) -> dict:
    trained = fit_detector(cfg)
    return {} if trained is None else write_trained(cfg, trained)
