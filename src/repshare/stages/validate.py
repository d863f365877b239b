"""DVC stage ``validate``: the first stage; every other stage lists its output as a dependency.

DVC deletes a stage's outputs just before it runs the stage, so a value that only a later stage refused
would cost that stage's previous results. This stage depends on every parameter in params.yaml and runs
first whenever one changes (``dvc repro``, ``dvc exp run -S``, the DVC queue, ``make run``): the stage
runner has already read params.yaml with limits, refused resolvers and environment secrets and validated
the whole config (``repshare.stage.load_params``), so a bad value stops here, with one line and exit
status 2, before DVC touches any other output.

The output's content never depends on the config, so when a valid change reruns this stage its output
hash stays the same and only the stages whose own parameters changed rerun.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from repshare.utils.io import write_text

log = logging.getLogger(__name__)

MARKER = "validated.txt"
MARKER_TEXT = "params.yaml passed pipelines/validate.py (the whole config; see repshare.stages.validate)\n"


def marker_path(cfg: DictConfig) -> Path:
    return Path(cfg.paths.results_dir) / MARKER


def run(cfg: DictConfig) -> Path:
    """Write the fixed marker; reached only when the whole config is valid."""
    path = marker_path(cfg)
    if not path.is_file() or path.read_text(encoding="utf-8") != MARKER_TEXT:
        write_text(path, MARKER_TEXT)
    log.info("the whole config is valid (%s)", path)
    return path
