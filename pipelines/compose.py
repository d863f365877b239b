"""Compose conf/ into params.yaml, exactly as DVC's Hydra integration does on `dvc exp run`.

    python pipelines/compose.py                     # the embedded default
    python pipelines/compose.py experiment=smoke    # any Hydra overrides
    python pipelines/compose.py --check             # exit 1 if params.yaml is stale vs conf/
"""

from __future__ import annotations

import sys

from omegaconf import OmegaConf

from repshare.config import ConfigError, compose_raw, validate_config
from repshare.utils.io import write_text

HEADER = "# Composed from conf/ by pipelines/compose.py (or `dvc exp run`). Edit conf/, not this file.\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    overrides = [a for a in argv if a != "--check"]
    try:
        cfg = compose_raw(overrides)
        validate_config(cfg)
    except ConfigError as err:
        print(f"error [compose]: {err}", file=sys.stderr)
        return 2
    text = HEADER + OmegaConf.to_yaml(cfg, resolve=True)
    if check:
        try:
            current = OmegaConf.load("params.yaml")
        except FileNotFoundError:
            print("params.yaml is missing", file=sys.stderr)
            return 1
        if OmegaConf.to_container(current) != OmegaConf.to_container(cfg, resolve=True):
            print("params.yaml differs from conf/ composed with " + (" ".join(overrides) or "no overrides"), file=sys.stderr)
            return 1
        print("params.yaml is up to date")
        return 0
    write_text("params.yaml", text)
    print(f"wrote params.yaml ({cfg.experiment_name})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
