"""The ``prepare`` stage: instantiate the configured data source and write shards + manifest."""

from __future__ import annotations

import logging
import time

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from repshare.data.shards import prepared_dir, write_manifest, write_split
from repshare.utils.io import atomic_dir
from repshare.utils.record import provenance

log = logging.getLogger(__name__)


def build_source(cfg: DictConfig):
    """The data source named by ``data._target_`` (ShapesSource, ImageNetSource or CocoSource)."""
    kwargs = OmegaConf.to_container(cfg.data, resolve=True)
    kwargs.pop("name", None)
    kwargs.pop("shard_size", None)
    return instantiate(kwargs)


def prepare(cfg: DictConfig) -> dict:
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
            "seconds": round(time.time() - t0, 2),
            "provenance": provenance(cfg.data, "prepare"),
        }
        write_manifest(tmp, entries, meta)
    return entries
