"""Which Hydra launchers a sweep may name, checked before Hydra starts.

Hydra's own message for an unknown launcher is a multi-line "Could not find" dump, and a launcher
whose plugin is missing fails with a confusing error about the plugin's config node. This check
turns both into one line naming the launcher and what to do (``repshare.sweep`` exits 2 on it).
"""

from __future__ import annotations

import importlib.util
import shutil
import warnings
from collections.abc import Sequence

from repshare.config import CONF_DIR, ConfigError

# launcher -> (the plugin module it needs, how to install it)
PLUGINS: dict[str, tuple[str, str]] = {
    "local": ("hydra_plugins.hydra_joblib_launcher", "pip install hydra-joblib-launcher"),
    "joblib": ("hydra_plugins.hydra_joblib_launcher", "pip install hydra-joblib-launcher"),
    "slurm": ("hydra_plugins.hydra_submitit_launcher", 'pip install -c constraints.txt -e ".[cluster]"'),
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", 'pip install -c constraints.txt -e ".[cluster]"'),
    "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", 'pip install -c constraints.txt -e ".[cluster]"'),
}
BUILTIN = ("basic",)  # Hydra's in-process launcher


def known_launchers() -> list[str]:
    """Launcher names a sweep can select: ours in conf/hydra/launcher/, Hydra's, the plugins'."""
    ours = sorted(p.stem for p in (CONF_DIR / "hydra" / "launcher").glob("*.yaml"))
    return sorted(set(ours) | set(BUILTIN) | set(PLUGINS))


def requested_launcher(argv: Sequence[str]) -> str | None:
    """The value of a ``hydra/launcher=X`` override on the command line (the last one wins)."""
    found = None
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+~") == "hydra/launcher":
            found = value
    return found


def check_launcher(argv: Sequence[str]) -> str | None:
    """Raise ConfigError naming an unknown launcher or one whose plugin is not installed."""
    name = requested_launcher(argv)
    if name is None:
        return None
    known = known_launchers()
    if name not in known:
        raise ConfigError(f"hydra/launcher={name!r} is unknown; choose one of: {', '.join(known)}")
    plugin = PLUGINS.get(name)
    if plugin is not None and importlib.util.find_spec(plugin[0]) is None:
        raise ConfigError(f"hydra/launcher={name!r} needs the plugin {plugin[0].split('.')[-1]}: {plugin[1]}")
    if name in ("slurm", "submitit_slurm") and shutil.which("srun") is None:
        raise ConfigError(f"hydra/launcher={name!r} needs SLURM (no srun on PATH): run the sweep on a cluster "
                          "login node, or use hydra/launcher=submitit_local to try the same path here")
    if name == "submitit_local":
        # Our conf/hydra/launcher/submitit_local.yaml shares its name with the plugin's schema node
        # on purpose (it is validated against it); Hydra warns about that once per job.
        warnings.filterwarnings("ignore", message=".*validated against ConfigStore schema.*")
    return name
