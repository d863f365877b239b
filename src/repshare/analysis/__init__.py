"""Correlation analysis and the paper's figures (the ``analyze`` stage: ``repshare.stages.analyze``)."""

from repshare.analysis.run import run_analyze

__all__ = ["run_analyze"]
