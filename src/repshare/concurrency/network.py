"""A trainable PyTorch network from a DAG (Fig. 4): every inner vertex is a basic building block,
every input of a different size passes through a scaling block first.

Basic block: a learnable weighted sum of the inputs (weights through a sigmoid, so the sum cannot
blow up), then ReLU -> 3x3 separable conv -> BN. Staging (downsample x2, double the channels) may
happen in any block's separable conv: ``greedy`` stages whenever the channel cap and the minimum
resolution allow it, ``probabilistic`` does so with probability ``stage_prob`` (paper: 0.5).
Scaling block: max-pool down to the smallest input resolution, 1x1 conv up to the largest input
channel count. The input vertex is a 3x3 stem conv; the output vertex scales and sums the sinks,
then global-average-pools into a linear classifier.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from repshare.concurrency.graphs import source_and_sink
from repshare.concurrency.settings import STAGINGS, NetSpec  # noqa: F401 (re-exported)





def node_key(v: object) -> str:
    return f"v{v}".replace("-", "m")  # ModuleDict keys: v0 (input), v1.., vm1 (output)


def plan_shapes(dag: nx.DiGraph, spec: NetSpec, seed: int) -> dict[object, dict]:
    """(channels, resolution, staged) of every vertex's output, in topological order; the staging
    coin flips use ``seed`` so the same DAG and seed always give the same network."""
    src, snk = source_and_sink(dag)
    rng = np.random.default_rng(seed)
    shapes: dict[object, dict] = {}
    for v in nx.lexicographical_topological_sort(dag, key=str):
        if v == src:
            shapes[v] = {"channels": spec.base_channels, "resolution": spec.image_size, "staged": False}
            continue
        ins = [shapes[u] for u in sorted(dag.predecessors(v), key=str)]
        c = max(s["channels"] for s in ins)
        r = min(s["resolution"] for s in ins)
        if v == snk:
            shapes[v] = {"channels": c, "resolution": 1, "staged": False}
            continue
        can = c < spec.max_channels and r // 2 >= spec.min_resolution
        flip = rng.random()  # always drawn, so one vertex's choice never shifts the others'
        staged = can and (spec.staging == "greedy" or flip < spec.stage_prob)
        shapes[v] = {"channels": min(2 * c, spec.max_channels) if staged else c,
                     "resolution": r // 2 if staged else r, "staged": staged}
    return shapes


class Scale(nn.Module):
    """Scaling block (Fig. 4b): max-pool to the target resolution, 1x1 conv to the target channels."""

    def __init__(self, c_in: int, r_in: int, c_out: int, r_out: int):
        super().__init__()
        factor = r_in // r_out
        self.pool = nn.MaxPool2d(factor, factor, ceil_mode=True) if r_in != r_out else nn.Identity()
        self.proj = nn.Conv2d(c_in, c_out, 1, bias=False) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.pool(x))


class WeightedSum(nn.Module):
    def __init__(self, in_shapes: list[tuple[int, int]], c: int, r: int):
        super().__init__()
        self.scales = nn.ModuleList(Scale(ci, ri, c, r) for ci, ri in in_shapes)
        self.logits = nn.Parameter(torch.zeros(len(in_shapes)))

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        w = torch.sigmoid(self.logits)
        out = self.scales[0](xs[0]) * w[0]
        for k in range(1, len(xs)):
            out = out + self.scales[k](xs[k]) * w[k]
        return out


class NodeBlock(nn.Module):
    """Basic building block (Fig. 4a) with optional staging in its separable conv."""

    def __init__(self, in_shapes: list[tuple[int, int]], c: int, r: int, c_out: int, staged: bool):
        super().__init__()
        self.merge = WeightedSum(in_shapes, c, r)
        stride = 2 if staged else 1
        self.conv = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(c, c, 3, stride=stride, padding=1, groups=c, bias=False),  # depthwise
            nn.Conv2d(c, c_out, 1, bias=False),  # pointwise
            nn.BatchNorm2d(c_out),
        )

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return self.conv(self.merge(xs))


class Head(nn.Module):
    def __init__(self, in_shapes: list[tuple[int, int]], c: int, r: int, num_classes: int):
        super().__init__()
        self.merge = WeightedSum(in_shapes, c, r)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return self.fc(torch.relu(self.merge(xs)).mean(dim=(2, 3)))


def block_signature(dag: nx.DiGraph, shapes: dict, v: object, source: object, sink: object) -> tuple:
    """What a vertex's block depends on: its role, its inputs' shapes, its output shape."""
    if v == source:
        return ("stem",)
    in_shapes = tuple((shapes[u]["channels"], shapes[u]["resolution"]) for u in sorted(dag.predecessors(v), key=str))
    c = max(ci for ci, _ in in_shapes)
    r = min(ri for _, ri in in_shapes)
    if v == sink:
        return ("head", in_shapes, c, r)
    return ("node", in_shapes, c, r, shapes[v]["channels"], shapes[v]["staged"])


def build_block(sig: tuple, spec: NetSpec) -> nn.Module:
    if sig[0] == "stem":
        return nn.Sequential(nn.Conv2d(spec.in_channels, spec.base_channels, 3, padding=1, bias=False),
                             nn.BatchNorm2d(spec.base_channels))
    if sig[0] == "head":
        _, in_shapes, c, r = sig
        return Head(list(in_shapes), c, r, spec.num_classes)
    _, in_shapes, c, r, c_out, staged = sig
    return NodeBlock(list(in_shapes), c, r, c_out, staged)


class DagNetwork(nn.Module):
    """The network of a DAG; ``forward`` returns logits, ``forward_all`` every vertex's output."""

    def __init__(self, dag: nx.DiGraph, spec: NetSpec, seed: int = 0):
        super().__init__()
        self.spec = spec
        self.source, self.sink = source_and_sink(dag)
        self.shapes = plan_shapes(dag, spec, seed)
        self.order = list(self.shapes)  # topological
        self.preds = {v: sorted(dag.predecessors(v), key=str) for v in self.order}
        sig = {v: block_signature(dag, self.shapes, v, self.source, self.sink) for v in self.order}
        self.blocks = nn.ModuleDict({node_key(v): build_block(sig[v], spec) for v in self.order})

    def forward_all(self, x: torch.Tensor) -> dict[object, torch.Tensor]:
        out: dict[object, torch.Tensor] = {}
        for v in self.order:
            block = self.blocks[node_key(v)]
            out[v] = block(x) if v == self.source else block([out[u] for u in self.preds[v]])
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_all(x)[self.sink]


def count_params(module: nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


_COST_CACHE: dict[tuple, tuple[int, int]] = {}


@torch.no_grad()
def block_cost(sig: tuple, spec: NetSpec) -> tuple[int, int]:
    """(FLOPs of one forward at batch 1, parameters) of a block, from torch's FLOP counter on the
    block itself; memoised by signature, since a sampled graph repeats a few block shapes."""
    key = (sig, spec)
    if key not in _COST_CACHE:
        block = build_block(sig, spec).eval()
        if sig[0] == "stem":
            xs = torch.zeros(1, spec.in_channels, spec.image_size, spec.image_size)
        else:
            xs = [torch.zeros(1, c, r, r) for c, r in sig[1]]
        with FlopCounterMode(display=False) as counter:
            block(xs)
        _COST_CACHE[key] = (int(counter.get_total_flops()), count_params(block))
    return _COST_CACHE[key]


def annotate(dag: nx.DiGraph, spec: NetSpec, seed: int = 0) -> nx.DiGraph:
    """Copy of ``dag`` with, on every vertex, ``flops`` (torch's FLOP counter on the vertex's block,
    one image), ``bytes`` (its float32 output for one image), ``params``, ``channels``,
    ``resolution``: the network :class:`DagNetwork` builds from the same DAG, spec and seed."""
    src, snk = source_and_sink(dag)
    shapes = plan_shapes(dag, spec, seed)
    out = dag.copy()
    for v, s in shapes.items():
        flops, params = block_cost(block_signature(dag, shapes, v, src, snk), spec)
        numel = spec.num_classes if v == snk else s["channels"] * s["resolution"] ** 2
        out.nodes[v].update(flops=flops, bytes=4 * numel, params=params,
                            channels=s["channels"], resolution=s["resolution"])
    return out


def total_flops(net: DagNetwork, batch: int = 1) -> int:
    """Whole-network FLOPs from torch's counter (the test's independent check of the vertex sum)."""
    x = torch.zeros(batch, net.spec.in_channels, net.spec.image_size, net.spec.image_size)
    net.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x)
    return int(counter.get_total_flops())
