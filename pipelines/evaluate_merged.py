"""DVC stage `evaluate_merged`: accuracy, memory and FLOPs of every detector->classifier sharing pair.

    python pipelines/evaluate_merged.py [--params FILE] [key=value ...]
"""

from repshare.sharing.evaluate import run_evaluate_merged
from repshare.stage import run_stage

if __name__ == "__main__":
    run_stage(run_evaluate_merged)
