"""DVC stage `train_classifier_color` (see repshare.stages.train_classifier_color)."""

from repshare.stage import run_stage
from repshare.stages.train_classifier_color import run

if __name__ == "__main__":
    run_stage(run)
