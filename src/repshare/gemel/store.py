"""The merged workload on disk: one safetensors file holding each shared tensor once, plus a
manifest naming, for every model, which file tensor each of its state entries is and which
layers it shares with which models (the reference records neither)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from repshare.gemel.layers import LayerInstance
from repshare.gemel.merge import tie_layers
from repshare.utils.io import atomic_path, read_json, write_json

WEIGHTS = "workload.safetensors"
MANIFEST = "manifest.json"


def save_merged(models: dict[str, nn.Module], merged: list[LayerInstance], out_dir: str | Path,
                meta: dict[str, Any] | None = None) -> Path:
    out_dir = Path(out_dir)
    names: dict[int, str] = {}  # id(tensor) -> file key
    for inst in merged:
        for attr in ("weight", "bias"):
            model, path = next(iter(inst.members.items()))
            p = getattr(models[model].get_submodule(path), attr)
            if p is not None:
                names.setdefault(id(p), f"shared/{inst.index}.{attr}")
    tensors: dict[str, torch.Tensor] = {}
    keys: dict[str, dict[str, str]] = {}
    for model_name, model in models.items():
        keys[model_name] = {}
        for key, t in model.state_dict(keep_vars=True).items():
            fk = names.setdefault(id(t), f"{model_name}/{key}")
            if fk not in tensors:
                tensors[fk] = t.detach().cpu().contiguous()
            keys[model_name][key] = fk
    with atomic_path(out_dir / WEIGHTS) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    manifest = {
        "models": list(models),
        "shared_layers": [{"instance": i.index, "bytes": i.bytes, "saving_bytes": i.saving,
                           "definition": list(map(str, i.signature)), "members": dict(i.members)} for i in merged],
        "shares": {m: [{"layer": i.members[m], "instance": i.index,
                        "with": {o: p for o, p in i.members.items() if o != m}} for i in merged if m in i.members]
                   for m in models},
        "keys": keys,
        **(meta or {}),
    }
    write_json(out_dir / MANIFEST, manifest)
    return out_dir / WEIGHTS


def load_merged(out_dir: str | Path, skeletons: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """Fill ``skeletons`` (freshly built models) from a saved workload and tie the shared layers again."""
    out_dir = Path(out_dir)
    manifest = read_json(out_dir / MANIFEST)
    if not (out_dir / WEIGHTS).is_file():
        raise FileNotFoundError(f"missing merged weights {out_dir / WEIGHTS}")
    tensors = load_file(str(out_dir / WEIGHTS))
    for name in manifest["models"]:
        if name not in skeletons:
            raise KeyError(f"{out_dir / MANIFEST} holds model {name!r}; no model of that name was given")
        state = {k: tensors[fk] for k, fk in manifest["keys"][name].items()}
        skeletons[name].load_state_dict(state)
    instances = [LayerInstance(s["instance"], tuple(s["definition"]), s["bytes"], dict(s["members"]))
                 for s in manifest["shared_layers"]]
    models = {n: skeletons[n] for n in manifest["models"]}
    tie_layers(models, instances, "first")
    return models
