"""MEEdge branch zoo (paper section 3.2.1, Table 1): a branch = optional convolution part + FC part.

A branch reads the frozen backbone's output at one exit (after block stage ``exit``, a
(C, H, W) map), runs 0-3 convolution layers that keep C and H x W, pools to at most
``pool x pool`` (the paper leaves the FC input size open; pooling keeps ``in_f`` sane at early,
high-resolution exits), flattens, and runs 1-3 FC layers (hidden widths, then the class layer).

Convolution types (each layer = conv(s) + BatchNorm + ReLU, stride 1, "same" padding):

* ``dw``       depthwise k x k                               params C*k*k + 2C
* ``dws``      depthwise k x k, then pointwise 1 x 1 (C->C)   params C*k*k + C*C + 2C
* ``spatial``  spatially separable: k x 1 then 1 x k (C->C)   params 2*C*C*k + 2C
* ``dilated``  depthwise k x k with dilation 2, then 1 x 1    params C*k*k + C*C + 2C
               (DARTS' dil_conv; its receptive field is 2k - 1)
* ``none``     no convolution part (n_conv must be 0)

A kernel whose receptive field exceeds the feature map is refused: at such a map the "conv"
mostly reads zero padding.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

CONV_TYPES = ("none", "dw", "dws", "spatial", "dilated")
KERNELS = (3, 5, 7)
MAX_CONV_LAYERS = 3
MAX_FC_LAYERS = 3


@dataclass(frozen=True)
class BranchSpec:
    exit: int  # block stage whose output the branch reads (1..6 for EfficientNet-B0)
    conv: str  # one of CONV_TYPES
    kernel: int | None  # None for conv "none"
    n_conv: int  # 0..3 convolution layers (0 iff conv == "none")
    fc_widths: tuple[int, ...]  # hidden FC widths (0..2 of them); the class layer is added
    pool: int = 4  # adaptive average pool to at most pool x pool before the FC part

    @property
    def conv_name(self) -> str:
        return "none" if self.conv == "none" else f"{self.conv}{self.kernel}x{self.n_conv}"

    @property
    def structure(self) -> str:
        """Readable structure, e.g. ``dws3x1+pool4+fc[256,128]``."""
        return f"{self.conv_name}+pool{self.pool}+fc[{','.join(map(str, self.fc_widths))}]"

    @property
    def id(self) -> str:
        """Unique, file-name safe id, e.g. ``e3-dws3x1-p4-fc256.128``."""
        fc = ".".join(map(str, self.fc_widths)) or "0"
        return f"e{self.exit}-{self.conv_name}-p{self.pool}-fc{fc}"

    def receptive_field(self) -> int:
        if self.conv == "none":
            return 1
        return 2 * self.kernel - 1 if self.conv == "dilated" else self.kernel


def check_spec(spec: BranchSpec, in_shape: Sequence[int] | None = None, max_exit: int | None = None) -> None:
    """Raise ValueError naming the bad value; ``in_shape`` = (C, H, W) of the exit's feature map."""
    if max_exit is not None and not 1 <= spec.exit <= max_exit:
        raise ValueError(f"branch exit {spec.exit!r} out of range (1..{max_exit})")
    if spec.conv not in CONV_TYPES:
        raise ValueError(f"unknown conv type {spec.conv!r}; choose one of {', '.join(CONV_TYPES)}")
    if spec.conv == "none":
        if spec.n_conv != 0:
            raise ValueError(f"conv 'none' needs n_conv 0, got {spec.n_conv!r}")
    else:
        if spec.kernel not in KERNELS:
            raise ValueError(f"conv kernel {spec.kernel!r} for {spec.conv!r} must be one of {KERNELS}")
        if not 1 <= spec.n_conv <= MAX_CONV_LAYERS:
            raise ValueError(f"n_conv {spec.n_conv!r} for {spec.conv!r} must be in 1..{MAX_CONV_LAYERS}")
    if len(spec.fc_widths) > MAX_FC_LAYERS - 1:
        raise ValueError(f"fc_widths {list(spec.fc_widths)} gives more than {MAX_FC_LAYERS} FC layers")
    if any(int(w) < 1 for w in spec.fc_widths):
        raise ValueError(f"fc_widths {list(spec.fc_widths)} must all be >= 1")
    if spec.pool < 1:
        raise ValueError(f"pool {spec.pool!r} must be >= 1")
    if in_shape is not None:
        _, h, w = in_shape
        rf = spec.receptive_field()
        if rf > min(h, w):
            raise ValueError(
                f"conv kernel {spec.kernel} ({spec.conv}, receptive field {rf}) is too large for the "
                f"{h}x{w} feature map at exit {spec.exit}"
            )


def conv_layer(conv: str, channels: int, kernel: int) -> nn.Sequential:
    """One convolution layer of the zoo (conv(s) + BN + ReLU), keeping C and H x W."""
    c, k, p = channels, kernel, kernel // 2
    if conv == "dw":
        ops = [nn.Conv2d(c, c, k, padding=p, groups=c, bias=False)]
    elif conv == "dws":
        ops = [nn.Conv2d(c, c, k, padding=p, groups=c, bias=False), nn.Conv2d(c, c, 1, bias=False)]
    elif conv == "spatial":
        ops = [nn.Conv2d(c, c, (k, 1), padding=(p, 0), bias=False), nn.Conv2d(c, c, (1, k), padding=(0, p), bias=False)]
    elif conv == "dilated":
        ops = [nn.Conv2d(c, c, k, padding=2 * p, dilation=2, groups=c, bias=False), nn.Conv2d(c, c, 1, bias=False)]
    else:
        raise ValueError(f"unknown conv type {conv!r}; choose one of {', '.join(CONV_TYPES[1:])}")
    return nn.Sequential(*ops, nn.BatchNorm2d(c), nn.ReLU(inplace=True))


class Branch(nn.Module):
    """conv part -> adaptive avg pool -> flatten -> FC layers (ReLU between). Logits out.

    ``fc`` holds the FC layers in order; self-merge replaces hidden ``nn.Linear`` layers by
    :class:`repshare.multiexit.merge.SharedLinear`, which has the same call signature.
    """

    def __init__(self, spec: BranchSpec, in_shape: Sequence[int], num_classes: int):
        super().__init__()
        check_spec(spec, in_shape)
        if num_classes < 1:
            raise ValueError(f"num_classes {num_classes!r} must be >= 1")
        c, h, w = (int(v) for v in in_shape)
        self.spec, self.in_shape, self.num_classes = spec, (c, h, w), int(num_classes)
        self.conv = nn.Sequential(*[conv_layer(spec.conv, c, spec.kernel) for _ in range(spec.n_conv)])
        self.pool_hw = (min(spec.pool, h), min(spec.pool, w))
        widths = [c * self.pool_hw[0] * self.pool_hw[1], *map(int, spec.fc_widths), self.num_classes]
        self.fc = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Input of the first FC layer."""
        return F.adaptive_avg_pool2d(self.conv(x), self.pool_hw).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """The FC part on :meth:`features` output (merging changes only this part)."""
        for k, layer in enumerate(self.fc):
            x = layer(x)
            if k < len(self.fc) - 1:
                x = F.relu(x)
        return x


def build_branch(spec: BranchSpec, in_shape: Sequence[int], num_classes: int) -> Branch:
    return Branch(spec, in_shape, num_classes)


def zoo_specs(
    exits: Iterable[int],
    convs: Iterable[tuple[str, int | None, int]],
    fcs: Iterable[Sequence[int]],
    pool: int,
    exit_shapes: dict[int, Sequence[int]],
    unfit: str = "skip",
) -> tuple[list[BranchSpec], list[dict]]:
    """Every (exit, conv, fc) combination: (specs that fit, skipped combos with the reason).

    ``unfit="skip"`` records combinations whose kernel is too large for an exit's map and goes on;
    ``"error"`` raises on the first. A conv that fits no requested exit is always an error (the
    zoo entry could never be used).
    """
    if unfit not in ("skip", "error"):
        raise ValueError(f"unfit={unfit!r} must be skip or error")
    exits, convs, fcs = list(exits), list(convs), [tuple(int(w) for w in f) for f in fcs]
    if not exits or not convs or not fcs:
        raise ValueError("the zoo needs at least one exit, one conv and one FC entry")
    specs, skipped = [], []
    for conv, kernel, n_conv in convs:
        fitted = 0
        for e in exits:
            if e not in exit_shapes:
                raise ValueError(f"exit {e!r} out of range (1..{max(exit_shapes)})")
            for fc in fcs:
                spec = BranchSpec(int(e), str(conv), None if kernel is None else int(kernel), int(n_conv), fc, int(pool))
                try:
                    check_spec(spec, exit_shapes[e])
                except ValueError as err:
                    if unfit == "error" or "too large" not in str(err):
                        raise
                    skipped.append({"id": spec.id, "exit": spec.exit, "structure": spec.structure, "reason": str(err)})
                    continue
                specs.append(spec)
                fitted += 1
        if fitted == 0:
            raise ValueError(f"zoo conv {conv!r} kernel {kernel!r} fits none of the exits {exits}: "
                             f"kernel too large for every feature map")
    ids = [s.id for s in specs]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise ValueError(f"the zoo lists branch {sorted(dup)[0]!r} twice")
    return specs, skipped


def spec_to_dict(spec: BranchSpec) -> dict:
    return {"exit": spec.exit, "conv": spec.conv, "kernel": spec.kernel, "n_conv": spec.n_conv,
            "fc_widths": list(spec.fc_widths), "pool": spec.pool}


def spec_from_dict(d: dict) -> BranchSpec:
    return BranchSpec(int(d["exit"]), str(d["conv"]), None if d.get("kernel") is None else int(d["kernel"]),
                      int(d["n_conv"]), tuple(int(w) for w in d["fc_widths"]), int(d.get("pool", 4)))
