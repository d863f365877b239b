"""DVC stage `evaluate_merged`: every (protocol, adapter, detector stage i, classifier stage j) merge.

    python pipelines/evaluate_merged.py [--params FILE] [key=value ...]
"""

from repshare.stage import run_stage
from repshare.stages.evaluate_merged import run

if __name__ == "__main__":
    run_stage(run)
