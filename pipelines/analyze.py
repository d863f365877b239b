"""DVC stage `analyze`: correlations, figures, sharing-point search, report section (see repshare.stages.analyze)."""

from repshare.stage import run_stage
from repshare.stages.analyze import run

if __name__ == "__main__":
    run_stage(run)
