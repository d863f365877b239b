"""DVC stage ``train_classifier_color``: the workload's third model, a second EfficientNet-B0 classifier on the largest
object's colour, fine-tuned briefly from the trained shape classifier (its workload entry gives the label
and ``init_from``). Writes ``results/models/classifier_color/`` and
``results/metrics/classifier_color.json`` (+ provenance in ``classifier_color_run.json``)."""

from __future__ import annotations

from omegaconf import DictConfig

from repshare.stage_scope import skip_reason, write_skipped
from repshare.training import fit_classifier, write_trained

NAME = "classifier_color"


def run(cfg: DictConfig) -> dict:
    if (reason := skip_reason("train_classifier_color", cfg)) is not None:  # repshare.stage_scope
        return write_skipped("train_classifier_color", cfg, reason)
    trained = fit_classifier(cfg, NAME)
    return {} if trained is None else write_trained(cfg, trained)
