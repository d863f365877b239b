"""DVC stage `train_detector`: train the detector on the prepared data (or load published weights in real mode)."""

from repshare.stage import run_stage
from repshare.training import train_detector

if __name__ == "__main__":
    run_stage(train_detector)
