"""DVC stage `branches` (MEEdge part 1; see repshare.stages.branches)."""

from repshare.stage import run_stage
from repshare.stages.branches import run

if __name__ == "__main__":
    run_stage(run)
