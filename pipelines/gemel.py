"""DVC stage `gemel` (see repshare.stages.gemel)."""

from repshare.stage import run_stage
from repshare.stages.gemel import run

if __name__ == "__main__":
    run_stage(run)
