"""Compose ``conf/`` with Hydra (as DVC does) and validate a composed config against the schema."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import repshare.config.data as data
from repshare.config.rules import ConfigError, check_table
from repshare.config.schema import RULES, RepshareConfig

CONF_DIR = Path(__file__).resolve().parents[3] / "conf"  # src/repshare/config/validate.py -> <repo>/conf


def validate_config(cfg: DictConfig | dict) -> DictConfig:
    """Merge ``cfg`` into the typed schema (a misspelt key, a wrong type or a missing value fails naming
    the key), then apply every group's rule table; return the merged config."""
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(cfg)
    source = cfg.get("data")
    if source is None or "name" not in source:
        raise ConfigError("config has no data.name (choose one of: " + ", ".join(data.SCHEMAS) + ")")
    name = source.name
    if name not in data.SCHEMAS:
        raise ConfigError(f"config value data.name={name!r} is unknown; choose one of: {', '.join(data.SCHEMAS)}")
    try:
        schema = OmegaConf.structured(RepshareConfig)
        schema.data = OmegaConf.structured(data.SCHEMAS[name])
        merged = OmegaConf.merge(schema, cfg)
        OmegaConf.resolve(merged)
        # Typed access of every leaf surfaces MISSING values with their full key.
        values = OmegaConf.to_container(merged, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or ""
        msg = str(err).splitlines()[0]
        raise ConfigError(f"bad config{f' at {key}' if key else ''}: {msg}") from None
    check_table(values, RULES)
    return merged


def compose_raw(overrides: list[str] | None = None, config_name: str = "config") -> DictConfig:
    """Compose ``conf/`` with Hydra's compose API, as DVC does on ``dvc exp run`` (not validated)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    # Inside a Hydra job (a sweep runs the stages in its own process) Hydra is already initialized:
    # compose on a cleared instance and give the job its own back afterwards.
    backup = get_gh_backup()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return hydra_compose(config_name=config_name, overrides=list(overrides or []))
    finally:
        restore_gh_from_backup(backup)


def compose(overrides: list[str] | None = None, config_name: str = "config") -> DictConfig:
    """Compose ``conf/`` and validate it against the schema."""
    return validate_config(compose_raw(overrides, config_name))
