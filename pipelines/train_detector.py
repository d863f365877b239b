"""DVC stage `train_detector` (see repshare.stages.train_detector)."""

from repshare.stage import run_stage
from repshare.stages.train_detector import run

if __name__ == "__main__":
    run_stage(run)
