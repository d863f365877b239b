"""DVC stage `analyze`: correlations, figures, report, metrics.json (see repshare.analysis.run)."""

from repshare.analysis import run_analyze
from repshare.stage import run_stage

if __name__ == "__main__":
    run_stage(run_analyze)
