"""DVC stage `placement` (MEEdge part 2, see repshare.stages.placement)."""

from repshare.stage import run_stage
from repshare.stages.placement import run

if __name__ == "__main__":
    run_stage(run)
