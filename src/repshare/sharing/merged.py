"""The merged (representation-sharing) classifier.

The detector's backbone runs stages 0..i, an :class:`~repshare.sharing.adapter.Adapter` maps that
representation to the shape of the classifier's stage-j output, and the classifier continues with
its stages after j and its head (``features.stages.run_from``). The classifier's stages 0..j are
never run, which is what lets them be off-loaded.

EfficientNet is a chain at stage granularity: its residual connections live inside each block,
so no skip connection crosses a stage boundary and the only tensor that crosses the share point
is the stage output. Models with skips across the cut (ResNet-style long skips, U-Net encoder ->
decoder) need every crossing tensor delivered at the position its consumer expects; the
``LayeredNet`` / ``SkipAlignedMerge`` pair below is a small generic mechanism for that.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from repshare.features.stages import check_stage, run_from, run_stages
from repshare.sharing.adapter import Adapter, check_method

Shape = tuple[int, int, int]


def apply_pre(pre: Callable[[torch.Tensor], torch.Tensor] | None, x: torch.Tensor) -> torch.Tensor:
    """Preprocess ``x``; without a preprocess, float inputs pass through and integers become float."""
    if pre is not None:
        return pre(x)
    return x if x.is_floating_point() else x.float()


def stage_shapes(model: nn.Module, x: torch.Tensor, upto: int | None = None) -> list[Shape]:
    """(C, H, W) of every stage output for model input ``x`` (one image is enough)."""
    with torch.inference_mode():
        return [tuple(o.shape[1:]) for o in run_stages(model, x[:1], upto)]


class MergedClassifier(nn.Module):
    """Classifier whose stages 0..j are replaced by the detector backbone's stages 0..i + an adapter.

    ``forward(x)`` takes raw images (what ``det_pre``/``cls_pre`` accept). The adapter's target
    shape is the classifier's stage-j output at the resolution ``cls_pre`` produces; it is found
    by a one-image probe on the first call (or :meth:`build`) and reused while the input size is
    unchanged.
    """

    def __init__(
        self,
        backbone: nn.Module,
        classifier: nn.Module,
        i: int,
        j: int,
        det_pre: nn.Module | None = None,
        cls_pre: nn.Module | None = None,
        method: str = "bilinear",
        seed: int = 0,
    ):
        super().__init__()
        check_stage(backbone, i, f"detector stage (backbone {type(backbone).__name__})")
        check_stage(classifier, j, f"classifier stage (classifier {type(classifier).__name__})")
        self.backbone, self.classifier = backbone, classifier
        self.det_pre, self.cls_pre = det_pre, cls_pre
        self.i, self.j = i, j
        self.method, self.seed = check_method(method), seed
        self.adapter: Adapter | None = None
        self._built_for: tuple[int, ...] | None = None

    def build(self, x: torch.Tensor) -> Adapter:
        """Create the adapter for raw inputs shaped like ``x`` (probes one image)."""
        key = tuple(x.shape[1:])
        if self.adapter is None or self._built_for != key:
            with torch.inference_mode():
                src = stage_shapes(self.backbone, apply_pre(self.det_pre, x[:1]), self.i)[-1]
                dst = stage_shapes(self.classifier, apply_pre(self.cls_pre, x[:1]), self.j)[-1]
            self.adapter = Adapter(src, dst, self.method, self.seed).to(x.device)
            self._built_for = key
        return self.adapter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        adapter = self.build(x)
        shared = run_stages(self.backbone, apply_pre(self.det_pre, x), self.i)[-1]
        return run_from(self.classifier, adapter(shared), self.j)


# --------------------------------------------------------------------------- skips across the cut
INPUT = -1  # position of the model input in a LayeredNet's ``sources``


def crossing_positions(sources: Sequence[Sequence[int]], cut: int) -> list[int]:
    """Layer outputs at positions ``0..cut`` read by some layer after ``cut``, sorted.

    The model input (``-1``) is not listed: both models see the same input, so it never needs sharing.

    For a chain (``sources[k] == (k-1,)``) this is ``[cut]``; a skip from layer a to layer b > cut
    with a < cut adds ``a``.
    """
    return sorted({p for k in range(cut + 1, len(sources)) for p in sources[k] if 0 <= p <= cut})


def align_inputs(shared: dict[int, torch.Tensor], n_positions: int) -> list[torch.Tensor | None]:
    """Place shared tensors at their positions in a list of ``n_positions`` layer outputs (None elsewhere)."""
    bad = [p for p in shared if not 0 <= p < n_positions]
    if bad:
        raise ValueError(f"shared positions {bad} out of range 0..{n_positions - 1}")
    return [shared.get(p) for p in range(n_positions)]


class LayeredNet(nn.Module):
    """A feed-forward net as layers + wiring: layer k is called on the outputs at ``sources[k]``.

    ``sources[k]`` lists positions < k (``-1`` = the model input). ``forward_from`` continues from a
    list of layer outputs where positions not needed may be ``None``.
    """

    def __init__(self, layers: Sequence[nn.Module], sources: Sequence[Sequence[int]]):
        super().__init__()
        if len(layers) != len(sources):
            raise ValueError(f"{len(layers)} layers but {len(sources)} source lists")
        for k, src in enumerate(sources):
            if not src or any(not INPUT <= p < k for p in src):
                raise ValueError(f"layer {k} has invalid sources {list(src)}: each must be in -1..{k - 1}")
        self.layers = nn.ModuleList(layers)
        self.sources = [tuple(s) for s in sources]

    def _inputs(self, x: torch.Tensor | None, outs: list, k: int) -> list[torch.Tensor]:
        args = []
        for p in self.sources[k]:
            t = x if p == INPUT else outs[p]
            if t is None:
                raise ValueError(f"layer {k} needs the output at position {p}, which was not provided")
            args.append(t)
        return args

    def run_upto(self, x: torch.Tensor, cut: int) -> list[torch.Tensor]:
        outs: list = []
        for k in range(cut + 1):
            outs.append(self.layers[k](*self._inputs(x, outs, k)))
        return outs

    def forward_from(self, outs: list[torch.Tensor | None], after: int, x: torch.Tensor | None = None) -> torch.Tensor:
        outs = list(outs[: after + 1]) + [None] * max(0, after + 1 - len(outs))
        for k in range(after + 1, len(self.layers)):
            outs.append(self.layers[k](*self._inputs(x, outs, k)))
        return outs[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run_upto(x, len(self.layers) - 1)[-1]


class SkipAlignedMerge(nn.Module):
    """Receiver layers after ``cut_receiver`` fed by donor layers up to ``cut_donor``, skips included.

    Every receiver position ``p`` that crosses the cut is taken from the donor at the position with
    the same offset from the cut (``p + cut_donor - cut_receiver``), passed through
    ``adapters[p]`` when given, and placed at position ``p`` so the receiver's later layers find
    their inputs where they expect them. The receiver's own layers up to the cut never run.
    """

    def __init__(
        self,
        donor: LayeredNet,
        receiver: LayeredNet,
        cut_donor: int,
        cut_receiver: int | None = None,
        adapters: dict[int, nn.Module] | None = None,
    ):
        super().__init__()
        cut_receiver = cut_donor if cut_receiver is None else cut_receiver
        for net, cut, name in ((donor, cut_donor, "donor"), (receiver, cut_receiver, "receiver")):
            if not 0 <= cut < len(net.layers):
                raise ValueError(f"{name} cut {cut!r} out of range 0..{len(net.layers) - 1}")
        self.donor, self.receiver = donor, receiver
        self.cut_donor, self.cut_receiver = cut_donor, cut_receiver
        self.crossing = crossing_positions(receiver.sources, cut_receiver)
        self.donor_pos = {p: p + cut_donor - cut_receiver for p in self.crossing}
        bad = {p: q for p, q in self.donor_pos.items() if not 0 <= q <= cut_donor}
        if bad:
            raise ValueError(f"receiver positions {sorted(bad)} crossing the cut have no donor counterpart ({bad})")
        self.adapters = nn.ModuleDict({str(p): m for p, m in (adapters or {}).items()})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        donor_outs = self.donor.run_upto(x, self.cut_donor)
        shared = {}
        for p in self.crossing:
            t = donor_outs[self.donor_pos[p]]
            shared[p] = self.adapters[str(p)](t) if str(p) in self.adapters else t
        return self.receiver.forward_from(align_inputs(shared, self.cut_receiver + 1), self.cut_receiver, x)
