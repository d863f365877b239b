"""DVC stage `kd_recover` (MEEdge part 1; see repshare.stages.kd_recover)."""

from repshare.stage import run_stage
from repshare.stages.kd_recover import run

if __name__ == "__main__":
    run_stage(run)
