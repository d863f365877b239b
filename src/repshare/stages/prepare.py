"""DVC stage ``prepare``: instantiate the configured data source (``data._target_``: shapes, ImageNet
or COCO) and write its splits as checksummed shards + manifest to ``data/prepared``; provenance beside it
in ``data/prepare_run.json``."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from repshare.config import ConfigError, allowed_target
from repshare.data.shards import prepared_dir, write_manifest, write_split
from repshare.utils.io import atomic_dir, write_json
from repshare.utils.record import provenance

log = logging.getLogger(__name__)


def build_source(cfg: DictConfig):
    """The data source named by ``data._target_`` (ShapesSource, ImageNetSource or CocoSource)."""
    kwargs = OmegaConf.to_container(cfg.data, resolve=True)
    kwargs.pop("name", None)
    kwargs.pop("shard_size", None)
    # validate_config checks this too; repeated here because instantiate runs whatever it is given.
    if not allowed_target(kwargs.get("_target_")):
        raise ConfigError(f"config value data._target_={kwargs.get('_target_')!r} is invalid: only the project's own "
                          "data sources (repshare.data.<module>.<Class>) may be instantiated")
    return instantiate(kwargs)


def run(cfg: DictConfig) -> dict:
    """Write ``<data_dir>/prepared``; the previous copy stays in place until the new one is complete."""
    t0 = time.time()
    splits = build_source(cfg).splits()
    out = prepared_dir(cfg)
    entries = {}
    with atomic_dir(out) as tmp:
        for name, data in splits.items():
            entries[name] = write_split(tmp, name, data, cfg.data.shard_size)
            log.info("prepared %s: %d images, %d boxes", name, entries[name]["n"], entries[name]["n_boxes"])
        first = next(iter(splits.values()))
        meta = {
            "source": cfg.data.name,
            "class_names": first.meta.get("class_names"),
            # Real data with data.skip_missing: how many listed images were absent (only when some were).
            **{k: first.meta[k] for k in ("n_missing_skipped",) if k in first.meta},
            "config": OmegaConf.to_container(cfg.data, resolve=True),  # what made the data (deterministic)
        }
        write_manifest(tmp, entries, meta)
    # Provenance (time, duration, machine) beside the output, not in it: the manifest, and so DVC's hash
    # of data/prepared that every later stage depends on, stays the same for the same data.
    write_json(run_record_path(cfg), {"metrics": {k: {"n": e["n"], "n_boxes": e["n_boxes"]} for k, e in entries.items()},
                                      "seconds": round(time.time() - t0, 2), **provenance(cfg.data, "prepare")})
    return entries


def run_record_path(cfg: DictConfig) -> Path:
    """``<data_dir>/prepare_run.json``: a ``cache: false`` output that no later stage depends on."""
    return Path(cfg.paths.data_dir) / "prepare_run.json"
