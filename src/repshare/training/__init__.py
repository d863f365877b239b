"""Training of the workload's models (Lightning, resumable); the ``train_*`` stages call it."""

from repshare.training.fit import Trained, fit_classifier, fit_detector, write_trained

__all__ = ["Trained", "fit_classifier", "fit_detector", "write_trained"]
