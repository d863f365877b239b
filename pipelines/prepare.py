"""DVC stage `prepare` (see repshare.stages.prepare)."""

from repshare.stage import run_stage
from repshare.stages.prepare import run

if __name__ == "__main__":
    run_stage(run)
