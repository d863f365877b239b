"""DVC stage `concurrency`: concurrency score of generated and workload architectures (see repshare.stages.concurrency)."""

from repshare.stage import run_stage
from repshare.stages.concurrency import run

if __name__ == "__main__":
    run_stage(run)
