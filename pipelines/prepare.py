"""DVC stage `prepare`: generate or convert the dataset into data/prepared (shards + manifest)."""

from repshare.data.prepare import prepare
from repshare.stage import run_stage

if __name__ == "__main__":
    run_stage(prepare)
