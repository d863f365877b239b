"""DVC stage `report`: see repshare.stages.report."""

from repshare.stage import run_stage
from repshare.stages.report import run

if __name__ == "__main__":
    run_stage(run, seed=False)  # draws no random numbers: no seeding (and no torch import for it)
