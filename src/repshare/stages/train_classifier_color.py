"""DVC stage ``train_classifier_color``: the workload's third model, a second EfficientNet-B0
classifier on the largest object's colour, fine-tuned briefly from the trained shape classifier
(workload.models: label color_labels, init_from classifier) by the same training code."""

from __future__ import annotations

from repshare.training.train import train_classifier

NAME = "classifier_color"


def run(cfg) -> dict:
    return train_classifier(cfg, NAME)
