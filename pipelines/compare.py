"""DVC stage `compare`: see repshare.stages.compare."""

from repshare.stage import run_stage
from repshare.stages.compare import run

if __name__ == "__main__":
    run_stage(run, seed=False)  # draws no random numbers: no seeding (and no torch import for it)
