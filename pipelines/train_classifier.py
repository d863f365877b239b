"""DVC stage `train_classifier`: train the classifier on the prepared data (or load published weights in real mode)."""

from repshare.stage import run_stage
from repshare.training import train_classifier

if __name__ == "__main__":
    run_stage(train_classifier)
