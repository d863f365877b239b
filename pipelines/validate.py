"""DVC stage `validate` (first; every stage depends on it): see repshare.stages.validate."""

from repshare.stage import run_stage
from repshare.stages.validate import run

if __name__ == "__main__":
    run_stage(run, seed=False)  # no randomness: skip importing torch
