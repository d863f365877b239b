"""Evaluate the source models on the configured dataset (real mode: ImageNet top-1/top-5, COCO mAP).

    python pipelines/evaluate_models.py [--params FILE] [which=classifier|detector|both] [key=value ...]

Writes results/metrics/eval_<model>.json.
"""

from __future__ import annotations

import sys

from repshare.stage import run_stage
from repshare.training.evaluate import evaluate_models


def main(argv: list[str]) -> None:
    which = next((a.split("=", 1)[1] for a in argv if a.startswith("which=")), "both")

    def evaluate(cfg):
        return evaluate_models(cfg, which=which)

    evaluate.__module__ = "evaluate_models"  # run_stage labels errors with this: "error [evaluate_models]: ..."
    run_stage(evaluate, [a for a in argv if not a.startswith("which=")])


if __name__ == "__main__":
    main(sys.argv[1:])
