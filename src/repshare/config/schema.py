"""The root of the config schema: every group's dataclass under one ``RepshareConfig``, every group's
rule table in one list, the ``_target_`` allow-list.

Where values live
-----------------
The YAML under ``conf/`` holds the values; the dataclasses hold the types (and the rules the ranges).
DVC's Hydra integration composes ``conf/`` into params.yaml on ``dvc exp run`` without importing this
package, so the YAML must carry every value a stage reads; a second copy in the dataclasses could only
drift from it (it had: ``gemel.steps`` 15 vs 40, ``gemel.lr`` 0.01 vs 0.001, the proxy's steps ...).
So a schema field has no default and ``validate_config`` fails naming any key the YAML leaves out.
The one exception is an *optional key*: a field that some conf/ file legitimately omits (the adapter
``temperature`` that only distill sets, a workload entry's ``label``). Its default is written in the
dataclass and nowhere else; ``tests/test_config_rules.py`` checks that every schema default is
omitted by at least one composition (so it is live, not a stale copy of a YAML value) and that the
science dataclasses the schema derives from contribute no values.

How to add a key (say ``gemel.new_key``)
----------------------------------------
1. Put its value in the group's YAML (conf/gemel/default.yaml), with a comment saying what it is.
2. Add the typed field, without a default, to the group's dataclass in ``repshare/config/gemel.py``
   (for a group derived from a science dataclass -- placement, concurrency's sub-groups -- add the
   field to that science dataclass instead; its default serves Python callers only).
3. Add one row to that module's ``RULES`` table: ``("gemel.new_key", IntRange(1, 100))``. Every key
   gets a rule: a range (``Interval``, ``IntRange``, ``Fraction``, ``Positive``), a choice (``OneOf``),
   list rules (``NonEmpty``, ``Unique``, ``Each(...)``, ``Length``), ``Identifier`` for anything that
   becomes a file or page name, ``OrNull(...)`` for nullable keys, ``Check(fn)`` for a cross-field
   rule (``fn(value, root[, key]) -> why | None``), bounds from ``repshare.config.limits``.
4. Regenerate params.yaml: ``python pipelines/compose.py``; add a bad value to the table in
   tests/test_config_rules.py.
A new group: a module with its dataclass(es) and ``RULES`` (and ``TARGETS`` if it instantiates
anything), a field in ``RepshareConfig`` below, and the module in ``GROUP_MODULES``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore

import repshare.config.compare as compare
import repshare.config.concurrency as concurrency
import repshare.config.data as data
import repshare.config.gemel as gemel
import repshare.config.model as model
import repshare.config.multiexit as multiexit
import repshare.config.placement as placement
import repshare.config.sharing as sharing
import repshare.config.train as train
import repshare.config.workload as workload
from repshare.config.compare import CompareConfig, ReportConfig
from repshare.config.concurrency import ConcurrencyConfig
from repshare.config.gemel import GemelConfig
from repshare.config.limits import MAX_SEED
from repshare.config.model import ClassifierConfig, DetectorConfig, ModelConfig
from repshare.config.multiexit import MultiExitConfig
from repshare.config.placement import PlacementConfig
from repshare.config.rules import Check, Identifier, IntRange, NonEmpty, Table, invalid
from repshare.config.sharing import AdapterConfig, AnalysisConfig, CaptureConfig, CKAConfig, SharingConfig
from repshare.config.train import LoggerConfig, TrainConfig, TrainerConfig
from repshare.config.workload import WorkloadConfig


@dataclass
class PathsConfig:
    data_dir: str
    results_dir: str


@dataclass
class RepshareConfig:
    experiment_name: str
    seed: int
    paths: PathsConfig
    data: Any  # validated against data.SCHEMAS[data.name]
    model: ModelConfig
    train: TrainConfig
    trainer: TrainerConfig
    logger: LoggerConfig
    capture: CaptureConfig
    cka: CKAConfig
    sharing: SharingConfig
    adapter: AdapterConfig
    analysis: AnalysisConfig
    workload: WorkloadConfig
    compare: CompareConfig
    report: ReportConfig
    gemel: GemelConfig
    multiexit: MultiExitConfig
    placement: PlacementConfig
    concurrency: ConcurrencyConfig


# Order = the order the rules run in (the first failure is reported).
GROUP_MODULES = (data, model, train, sharing, workload, gemel, multiexit, placement, concurrency, compare)

# key -> the classes/functions a config may instantiate there; no other key may hold a ``_target_``.
TARGETS: dict[str, tuple[str, ...]] = {k: v for m in GROUP_MODULES for k, v in getattr(m, "TARGETS", {}).items()}


def allowed_target(target: Any, key: str | None = None) -> bool:
    """Whether ``target`` may be instantiated at ``key`` (e.g. ``"data._target_"``); without a key, whether
    any group may instantiate it. Nothing else passes: not other functions of the package, not builtins."""
    if key is not None:
        return target in TARGETS.get(key, ())
    return any(target in allowed for allowed in TARGETS.values())


def _walk_targets(node: Any, prefix: str = ""):
    if isinstance(node, dict):
        for k, v in node.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if k == "_target_":
                yield key, v
            else:
                yield from _walk_targets(v, key)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk_targets(v, f"{prefix}[{i}]")


def _check_targets(cfg: dict, root) -> None:
    for key, target in _walk_targets(cfg):
        if key not in TARGETS:
            raise invalid(key, target, "nothing may be instantiated here (keys with a _target_: "
                                       f"{', '.join(sorted(TARGETS))})")
        if target not in TARGETS[key]:
            raise invalid(key, target, f"only {', '.join(TARGETS[key])} may be instantiated here")
    return None


def _a_folder(path: str, root) -> str | None:
    p = os.path.normpath(path.strip())
    return None if p not in (".", "/") else "must name a folder, not the project or filesystem root"


def _apart(results_dir: str, root) -> str | None:
    same = os.path.normpath(results_dir) == os.path.normpath(root.paths.data_dir)
    return "must differ from paths.data_dir" if same else None


ROOT_RULES: Table = [
    ("experiment_name", Identifier()),
    ("seed", IntRange(0, MAX_SEED)),
    ("paths.data_dir", NonEmpty(), Check(_a_folder)),
    ("paths.results_dir", NonEmpty(), Check(_a_folder), Check(_apart)),
]
RULES: Table = [*ROOT_RULES, *(row for m in GROUP_MODULES for row in m.RULES), ("", Check(_check_targets))]


def register_configs() -> None:
    """Register the schema in Hydra's ConfigStore (for users extending configs in Python)."""
    cs = ConfigStore.instance()
    cs.store(name="repshare_schema", node=RepshareConfig)
    for name, schema in data.SCHEMAS.items():
        cs.store(group="data", name=f"{name}_schema", node=schema)
    cs.store(group="model/classifier", name="classifier_schema", node=ClassifierConfig)
    cs.store(group="model/detector", name="detector_schema", node=DetectorConfig)
    cs.store(group="trainer", name="trainer_schema", node=TrainerConfig)
    cs.store(group="logger", name="logger_schema", node=LoggerConfig)


