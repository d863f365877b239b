"""Branch and backbone profiles: parameters, latency to an exit, and the ``profiles.json``
contract that placement (MEEdge part 2) reads.

Latencies come from :mod:`repshare.multiexit.cost` (a FLOP cost model by default, measured as an
option). ``latency_to_exit_s`` = stem + stages 1..exit of the backbone + the branch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from repshare.features.stages import stage_modules
from repshare.utils.io import read_json, write_json

SCHEMA_VERSION = 1


def count_params(module: nn.Module) -> int:
    """Stored parameters (a tensor shared between modules counts once)."""
    seen, total = set(), 0
    for p in module.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def head_params(model: nn.Module) -> int:
    """Parameters after the last stage (EfficientNet: conv_head + bn2 + classifier): what the final exit adds."""
    return count_params(model) - sum(count_params(s) for s in stage_modules(model))


def latency_to_exit(stage_latency_s: Sequence[float], exit_: int, branch_latency_s: float) -> float:
    """Backbone stem + stages 1..exit, then the branch."""
    return float(sum(stage_latency_s[: exit_ + 1]) + branch_latency_s)


def full_latency(stage_latency_s: Sequence[float], head_latency_s: float) -> float:
    """The original single-exit inference: every stage and the head."""
    return float(sum(stage_latency_s) + head_latency_s)


# --------------------------------------------------------------------------- profiles.json contract
BACKBONE_FIELDS: dict[str, type | tuple] = {
    "stage_latency_s": list, "head_latency_s": float, "final_accuracy": float,
    "backbone_params": int, "head_params": int, "exits": list,
}
BRANCH_FIELDS: dict[str, type | tuple] = {
    "id": str, "exit": int, "structure": str, "conv": str, "kernel": (int, type(None)), "n_conv": int,
    "fc_widths": list, "params": int, "flops": int, "branch_latency_s": float, "latency_to_exit_s": float,
    "accuracy": float, "survived": bool, "drop_reason": (str, type(None)), "merged_params": (int, type(None)),
    "acc_merged": (float, type(None)), "acc_recovered": (float, type(None)),
}
# Present when part 1 wrote them (accuracies on the select split, the decision split; measured latency spreads).
OPTIONAL_BRANCH_FIELDS: dict[str, type | tuple] = {
    "accuracy_select": float, "acc_merged_select": (float, type(None)), "acc_recovered_select": (float, type(None)),
    "branch_latency_spread_s": float,
}


def _typed(value: Any, kind: type | tuple) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        return False
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        return True  # a JSON number without a fraction
    return isinstance(value, kinds)


def check_profiles(doc: dict, where: str = "profiles") -> dict:
    """Raise ValueError naming the first missing or mistyped field."""
    if not isinstance(doc, dict) or not isinstance(doc.get("backbone"), dict) or not isinstance(doc.get("branches"), list):
        raise ValueError(f"{where}: expected an object with 'backbone' (object) and 'branches' (list)")
    for key, kind in BACKBONE_FIELDS.items():
        if key not in doc["backbone"]:
            raise ValueError(f"{where}: backbone lacks field {key!r}")
        if not _typed(doc["backbone"][key], kind):
            raise ValueError(f"{where}: backbone field {key!r} has the wrong type: {doc['backbone'][key]!r}")
    ids = set()
    for k, b in enumerate(doc["branches"]):
        for key, kind in BRANCH_FIELDS.items():
            if key not in b:
                raise ValueError(f"{where}: branch {k} lacks field {key!r}")
            if not _typed(b[key], kind):
                raise ValueError(f"{where}: branch {k} field {key!r} has the wrong type: {b[key]!r}")
        for key, kind in OPTIONAL_BRANCH_FIELDS.items():
            if key in b and not _typed(b[key], kind):
                raise ValueError(f"{where}: branch {k} field {key!r} has the wrong type: {b[key]!r}")
        for key in ("accuracy", "branch_latency_s", "latency_to_exit_s"):
            if not math.isfinite(b[key]):
                raise ValueError(f"{where}: branch {b['id']!r} field {key!r} is not finite")
        if b["id"] in ids:
            raise ValueError(f"{where}: branch id {b['id']!r} appears twice")
        ids.add(b["id"])
        if b["exit"] not in doc["backbone"]["exits"]:
            raise ValueError(f"{where}: branch {b['id']!r} exit {b['exit']} is not one of backbone.exits")
    return doc


def write_profiles(path: str | Path, backbone: dict, branches: list[dict], **extra: Any) -> Path:
    """Validate and write ``profiles.json`` atomically ({"backbone", "branches"}, plus ``extra`` keys)."""
    doc = {"schema_version": SCHEMA_VERSION, **extra, "backbone": backbone, "branches": branches}
    check_profiles(doc, str(path))
    return write_json(path, doc)


def read_profiles(path: str | Path) -> dict:
    return check_profiles(read_json(path), str(path))
