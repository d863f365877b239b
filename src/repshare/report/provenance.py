"""Where this dashboard's numbers came from: the footer every page links to.

Read from the stages' ``*_run.json`` records (beside the DVC outputs, hashed by no stage) and from
``dvc.lock``: the git commit each stage ran at, the hashes DVC recorded for each stage's outputs,
the config overrides on top of the experiment preset, package versions and the machine. Times and
dates in those records are left out, so the same results give the same page.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

PATTERNS = ("*_run.json", "*/*_run.json", "*/*/*_run.json")


def run_records(*roots: Path) -> list[dict[str, Any]]:
    """Every readable ``<stage>_run.json`` under the roots (W&B's folder skipped; this stage's own left
    out: it is written after the pages), sorted by stage name."""
    found = []
    for root in roots:
        for pattern in PATTERNS:
            for path in sorted(root.glob(pattern)):
                if "wandb" in path.relative_to(root).parts:
                    continue
                try:
                    doc = json.loads(path.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    continue
                if not isinstance(doc, dict):
                    continue
                stage = str(doc.get("stage") or path.name[: -len("_run.json")])
                if stage != "report":
                    found.append({**doc, "stage": stage, "record": f"{root.name}/{path.relative_to(root).as_posix()}"})
    return sorted(found, key=lambda r: (r["stage"], r["record"]))


def lock_hashes(lock: Path) -> list[dict[str, str]]:
    """One row per output DVC locked: stage, path, md5 (empty when dvc.lock is absent or unreadable); the
    ``*_run.json`` records are left out (their hashes change with every run's clock)."""
    import yaml

    try:
        doc = yaml.safe_load(lock.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return []
    rows = []
    stages = doc.get("stages", {}) if isinstance(doc, dict) else {}
    for stage, body in sorted(stages.items() if isinstance(stages, dict) else []):
        for out in (body or {}).get("outs", []) if isinstance(body, dict) else []:
            # *_run.json outputs hold times: their hashes change every run and say nothing about the results
            if isinstance(out, dict) and out.get("md5") and not str(out.get("path", "")).endswith("_run.json"):
                rows.append({"Stage": str(stage), "Output": str(out.get("path", "")), "md5": str(out["md5"])})
    return rows


def flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def overrides(config: Mapping[str, Any], preset: Mapping[str, Any]) -> list[str]:
    """``key=value`` for every key whose value differs from the preset (or that the preset lacks)."""
    a, b = flat(config), flat(preset)
    return [f"{k}={json.dumps(a[k], default=str)}" for k in sorted(a) if k not in b or a[k] != b[k]]


def summary(records: Sequence[Mapping[str, Any]], lock_rows: Sequence[Mapping[str, str]],
            override_list: Sequence[str], experiment: str) -> dict[str, Any]:
    """Plain rows for the template: commits, versions, machines (each with the stages it applies to)."""
    def grouped(key: str) -> list[dict[str, Any]]:
        seen: dict[str, list[str]] = {}
        for r in records:
            value = r.get(key)
            text = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value or "unknown")
            seen.setdefault(text, []).append(r["stage"])
        return [{"value": v, "stages": ", ".join(sorted(set(s)))} for v, s in seen.items()]

    versions: dict[str, set[str]] = {}
    for r in records:
        for pkg, ver in (r.get("versions") or {}).items() if isinstance(r.get("versions"), dict) else []:
            versions.setdefault(str(pkg), set()).add(str(ver))
    machines = []
    for g in grouped("machine"):
        try:
            desc = json.loads(g["value"])
        except ValueError:
            desc = g["value"]
        text = ", ".join(f"{k} {v}" for k, v in desc.items()) if isinstance(desc, dict) else str(desc)
        machines.append({"Machine": text, "Stages": g["stages"]})
    return {
        "experiment": experiment,
        "commits": [{"Commit": g["value"], "Stages": g["stages"]} for g in grouped("git_commit")],
        "versions": [{"Package": p, "Version": " / ".join(sorted(v))} for p, v in sorted(versions.items())],
        "machines": machines,
        "lock": list(lock_rows),
        "overrides": list(override_list),
        "records": [r["record"] for r in records],
    }
