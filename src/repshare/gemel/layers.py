"""Identical layers across models and their heaviest-first groups (Gemel §4, reference
``sharing_algorithm.py``).

Two layers are identical when their definitions match: type, in/out shape, kernel, stride,
padding, dilation, groups, bias, padding mode and dtype (the reference compares ``str(layer)``
and ignores stride; here stride counts, so a shared tensor never feeds two different
computations of a different output size). Only Conv and Linear layers are shared: BatchNorm
holds per-model statistics of each model's own activations, and sharing them is what the
reference also avoids.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

SHAREABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def layer_signature(module: nn.Module) -> tuple | None:
    """The definition of a shareable layer as a hashable tuple, or None if it is not shareable."""
    if not isinstance(module, SHAREABLE) or module.weight is None:
        return None
    dtype = str(module.weight.dtype)
    has_bias = getattr(module, "bias", None) is not None
    if isinstance(module, nn.Linear):
        return (type(module).__name__, module.in_features, module.out_features, has_bias, dtype)
    return (type(module).__name__, module.in_channels, module.out_channels, tuple(module.kernel_size),
            tuple(module.stride), module.padding if isinstance(module.padding, str) else tuple(module.padding),
            tuple(module.dilation), module.groups, has_bias, module.padding_mode, dtype)


def param_bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters(recurse=False))


@dataclass
class LayerInstance:
    """One shareable layer and the place it holds in each of two or more models (at most one per model)."""

    index: int  # stable id: order of first occurrence
    signature: tuple
    bytes: int  # parameter bytes of one copy
    members: dict[str, str] = field(default_factory=dict)  # model name -> module path

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(self.members)

    @property
    def saving(self) -> int:
        """Bytes no longer stored once every member holds one tensor."""
        return self.bytes * (len(self.members) - 1)


@dataclass
class Group:
    """Identical layers shared by the same set of models; merged (or halved) together."""

    index: int
    instances: list[LayerInstance]

    @property
    def saving(self) -> int:
        return sum(i.saving for i in self.instances)

    @property
    def models(self) -> tuple[str, ...]:
        return self.instances[0].models


def identical_layers(models: dict[str, nn.Module]) -> list[LayerInstance]:
    """Every shareable layer definition present in two or more models.

    Within one definition, each model's k-th occurrence (in ``named_modules`` order) joins the
    first instance that does not hold a layer of that model yet, as in the reference, so an
    instance never holds two layers of one model (which would tie a model to itself).
    """
    by_sig: dict[tuple, list[LayerInstance]] = {}
    order = 0
    for name, model in models.items():
        for path, module in model.named_modules():
            sig = layer_signature(module)
            if sig is None:
                continue
            slot = next((inst for inst in by_sig.get(sig, []) if name not in inst.members), None)
            if slot is None:
                slot = LayerInstance(order, sig, param_bytes(module))
                order += 1
                by_sig.setdefault(sig, []).append(slot)
            slot.members[name] = path
    shared = [inst for insts in by_sig.values() for inst in insts if len(inst.members) > 1]
    shared.sort(key=lambda i: i.index)
    for k, inst in enumerate(shared):  # dense ids for readable manifests
        inst.index = k
    return shared


def group_layers(instances: list[LayerInstance]) -> list[Group]:
    """Instances of one definition shared by the same models form a group; groups ordered by the
    bytes they save, largest first (ties: first occurrence)."""
    groups: dict[tuple, list[LayerInstance]] = {}
    for inst in instances:
        groups.setdefault((inst.signature, inst.models), []).append(inst)
    ordered = sorted(groups.values(), key=lambda g: (-sum(i.saving for i in g), g[0].index))
    return [Group(k, g) for k, g in enumerate(ordered)]
