"""Training stages for the two source models."""

from repshare.training.train import train_classifier, train_detector

__all__ = ["train_classifier", "train_detector"]
