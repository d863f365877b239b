"""DVC stage `train_classifier` (see repshare.stages.train_classifier)."""

from repshare.stage import run_stage
from repshare.stages.train_classifier import run

if __name__ == "__main__":
    run_stage(run)
