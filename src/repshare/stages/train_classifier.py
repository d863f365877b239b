"""DVC stage ``train_classifier``: the workload's shape classifier (timm EfficientNet-B0), trained with Lightning
on the prepared data, or in real mode the published/local weights, evaluated. Writes ``results/models/classifier/`` and
``results/metrics/classifier.json`` (+ provenance in ``classifier_run.json``)."""

from __future__ import annotations

from omegaconf import DictConfig

from repshare.training import fit_classifier, write_trained

NAME = "classifier"


def run(cfg: DictConfig) -> dict:
    trained = fit_classifier(cfg, NAME)
    return {} if trained is None else write_trained(cfg, trained)
