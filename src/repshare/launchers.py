"""Which Hydra launchers a sweep may name (checked before Hydra starts), and how many CPU threads
a sweep job may use (set when the job starts).

Hydra's own message for an unknown launcher is a multi-line "Could not find" dump, and a launcher
whose plugin is missing fails with a confusing error about the plugin's config node. This check
turns both into one line naming the launcher and what to do (``repshare.sweep`` exits 2 on it).

Threads: joblib's workers start with ``OMP_NUM_THREADS`` = their share of the cores, but submitit's
jobs (local executor, and SLURM without a ``setup`` that exports it) start with torch's default of
one thread per core *each*. Two such jobs on two cores ran 2x2 OpenMP threads that spin-wait for
each other: the same smoke stages took 13-16x the wall time and 7x the CPU of the joblib sweep (measured,
docs/sweeps.md). :func:`limit_job_threads` gives each job the CPUs its launcher allocated.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from typing import Any

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
    return name


THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def job_threads(launcher: Mapping[str, Any] | None, environ: Mapping[str, str]) -> int | None:
    """CPU threads for one sweep job; None = leave torch's default (a single run, Hydra's basic launcher).

    In order: an ``OMP_NUM_THREADS`` already set (by the user, joblib, or a SLURM ``setup`` line);
    SLURM's ``SLURM_CPUS_PER_TASK``; the launcher's ``cpus_per_task``; 1 for any other submitit job
    (no allocation given: the local executor starts every job of the sweep at once).
    """
    for key, value in (("OMP_NUM_THREADS", environ.get("OMP_NUM_THREADS")),
                       ("SLURM_CPUS_PER_TASK", environ.get("SLURM_CPUS_PER_TASK")),
                       ("hydra.launcher.cpus_per_task", (launcher or {}).get("cpus_per_task"))):
        if value not in (None, ""):
            try:
                n = int(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{key}={value!r} must be a whole number of CPU threads") from None
            if n < 1:
                raise ConfigError(f"{key}={value!r} must be >= 1")
            return n
    return 1 if environ.get("SUBMITIT_EXECUTOR") else None


def limit_job_threads(launcher: Mapping[str, Any] | None) -> int | None:
    """Apply :func:`job_threads` to this process: the environment (read by torch and BLAS at import and
    inherited by worker processes) and, if torch is already imported, torch itself. Returns the count."""
    n = job_threads(launcher, os.environ)
    if n is None:
        return None
    for var in THREAD_VARS:
        if not os.environ.get(var):
            os.environ[var] = str(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    return n
