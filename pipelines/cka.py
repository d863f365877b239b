"""DVC stage `cka`: stage-wise CKA per input protocol (see repshare.stages.cka)."""

from repshare.stage import run_stage
from repshare.stages.cka import run

if __name__ == "__main__":
    run_stage(run)
