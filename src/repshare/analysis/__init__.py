"""Correlation analysis, the paper's figures and the static HTML report (the ``analyze`` stage)."""

from repshare.analysis.run import run_analyze

__all__ = ["run_analyze"]
