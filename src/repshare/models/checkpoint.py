"""Model weights as safetensors with the config recorded beside them (``model.json``).

Nothing is unpickled: safetensors holds plain tensors, and the one path that must read a torch
pickle (a user's ``.pth``/``.pt`` file) uses ``weights_only=True``.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from repshare.utils.artifacts import CHECKSUMS, verify_file
from repshare.utils.io import atomic_path, write_json

WEIGHTS = "model.safetensors"
CONFIG = "model.json"


def save_model(model: nn.Module, out_dir: str | Path, config: dict[str, Any]) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out_dir / WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    write_json(out_dir / CONFIG, config)
    return out_dir / WEIGHTS


def load_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a weight file: safetensors, or a torch file with ``weights_only=True`` (never full unpickling)."""
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if (path.parent / CHECKSUMS).is_file():  # written by this pipeline: verified, so a damaged file never loads
        verify_file(path)
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "GLOBAL" not in str(err):  # not a pickle at all (e.g. text): "Unsupported operand 110"
            raise ValueError(f"unreadable checkpoint {path}: not a safetensors/torch weight file") from None
        # torch's weights-only unpickler met a class or function: something other than tensors and containers.
        raise ValueError(f"refused checkpoint {path}: it holds Python objects other than weights, and loading it "
                         "would run code (give a safetensors file or a plain state dict saved with torch.save)") from None
    except (SafetensorError, RuntimeError, OSError, EOFError, ValueError, KeyError, IndexError) as err:
        # A text or truncated file surfaces as e.g. KeyError(101) from the pickle reader: name the file instead.
        detail = "" if isinstance(err, (KeyError, IndexError)) or not str(err) else f" ({str(err).splitlines()[0][:120]})"
        raise ValueError(f"unreadable checkpoint {path}: not a safetensors/torch weight file{detail}") from None
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {path} holds no state dict")
    return {k.removeprefix("module.").removeprefix("model."): v for k, v in state.items()}


def load_into(model: nn.Module, path: str | Path, what: str) -> nn.Module:
    """Load weights strictly, turning shape/key mismatches into one readable error."""
    state = load_state_file(path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        detail = "; ".join(
            ([f"shape mismatch {wrong[0]}" + (f" (+{len(wrong) - 1} more)" if len(wrong) > 1 else "")] if wrong else [])
            + ([f"{len(missing)} missing keys, e.g. {missing[0]}"] if missing else [])
            + ([f"{len(unexpected)} unexpected keys, e.g. {unexpected[0]}"] if unexpected else [])
        )
        raise ValueError(f"checkpoint {path} does not fit the {what}: {detail} "
                         "(wrong architecture or class count?)")
    model.load_state_dict(state)
    return model
