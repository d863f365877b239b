"""DVC stage `self_merge` (MEEdge part 1; see repshare.stages.self_merge)."""

from repshare.stage import run_stage
from repshare.stages.self_merge import run

if __name__ == "__main__":
    run_stage(run)
