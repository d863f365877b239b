"""Evaluate the source models on the configured dataset (real mode: ImageNet top-1/top-5, COCO mAP).

    python pipelines/evaluate_models.py [--params FILE] [which=classifier|detector|both] [key=value ...]

Writes results/metrics/eval_<model>.json.
"""

from __future__ import annotations

import functools
import sys

from repshare.stage import run_stage
from repshare.training.evaluate import evaluate_models

if __name__ == "__main__":
    args = sys.argv[1:]
    which = next((a.split("=", 1)[1] for a in args if a.startswith("which=")), "both")
    run_stage(functools.partial(evaluate_models, which=which), [a for a in args if not a.startswith("which=")])
