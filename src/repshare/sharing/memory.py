"""Memory accounting of representation sharing.

When the classifier takes the detector's stage-i representation at its own stage j, the
classifier's stages 0..j are never run, so their weights need not be loaded: they are
"off-loaded". Bytes count parameters and buffers (BatchNorm running statistics included); a
tensor shared between modules is counted once.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from repshare.features.stages import check_stage, stage_modules


def _unique(tensors: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    seen: set[int] = set()
    out = []
    for t in tensors:
        if id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out


def _params(modules: Iterable[nn.Module]) -> list[torch.Tensor]:
    return _unique(p for m in modules for p in m.parameters())


def _buffers(modules: Iterable[nn.Module]) -> list[torch.Tensor]:
    return _unique(b for m in modules for b in m.buffers())


def _nbytes(tensors: Iterable[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def offloaded_stages(classifier: nn.Module, j: int) -> list[nn.Module]:
    check_stage(classifier, j, f"classifier stage ({type(classifier).__name__})")
    return stage_modules(classifier)[: j + 1]


def offloaded_params(classifier: nn.Module, j: int) -> int:
    """Number of parameters in the classifier's stages 0..j."""
    return sum(p.numel() for p in _params(offloaded_stages(classifier, j)))


def offloaded_bytes(classifier: nn.Module, j: int) -> int:
    """Bytes of parameters + buffers in the classifier's stages 0..j."""
    mods = offloaded_stages(classifier, j)
    return _nbytes(_params(mods)) + _nbytes(_buffers(mods))


def model_params(model: nn.Module) -> int:
    return sum(p.numel() for p in _params([model]))


def model_bytes(model: nn.Module) -> int:
    """Bytes of all parameters + buffers of ``model``."""
    return _nbytes(_params([model])) + _nbytes(_buffers([model]))


def memory_saved_frac(classifier: nn.Module, detector: nn.Module, j: int) -> float:
    """Off-loaded bytes as a fraction of both models' bytes (classifier + whole detector)."""
    return offloaded_bytes(classifier, j) / (model_bytes(classifier) + model_bytes(detector))
