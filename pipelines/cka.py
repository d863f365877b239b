"""DVC stage `cka`: stage-wise CKA between the detector backbone and the classifier."""

from repshare.features.capture import run_cka
from repshare.stage import run_stage

if __name__ == "__main__":
    run_stage(run_cka)
