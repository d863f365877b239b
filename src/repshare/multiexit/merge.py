"""Neuron-level weight sharing (MEEdge 3.5.1): self-merge within a branch, twin-merge across two.

Error between two neurons = L2 distance of their incoming weight vectors with the bias appended
(MEEdge's "L2-Norm loss", the simplification of MTZ's Hessian error that MTZ's own FC code uses).
Pairs are sorted by error and taken greedily so that no neuron is in two pairs; a merged pair
keeps one weight vector, the average of the two, and both neurons read it (their outgoing
weights in the next layer stay separate and trainable). Memory saved = the (in_f + 1) parameters
of every row no longer stored.

Self-merge pairs neurons of the same layer of one branch; twin-merge (MTZ-style, the paper's
comparison in Fig. 7(2)) pairs neuron i of branch A's layer with neuron j of branch B's layer of
the same shape. Only hidden FC layers merge by default: merging two neurons of the class layer
would make two classes' logits identical (``include_output`` switches that on).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

Pair = tuple[int, int, float]  # (neuron i, neuron j, error)


class SharedLinear(nn.Module):
    """A linear layer whose output neurons read rows of a smaller weight table.

    ``weight`` (rows, in), ``bias`` (rows,), ``index`` (out,) maps each output neuron to its row;
    ``shared`` (rows,) marks rows read by more than one neuron (the merged, shared weights).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, index: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone())
        self.bias = nn.Parameter(bias.detach().clone())
        self.register_buffer("index", index.long().clone())
        counts = torch.bincount(self.index, minlength=len(weight))
        self.register_buffer("shared", counts > 1)
        self.in_features, self.out_features = weight.shape[1], len(index)

    @classmethod
    def from_linear(cls, linear: nn.Linear, pairs: Sequence[Sequence[int]]) -> "SharedLinear":
        """Merge each (i, j) of ``pairs`` (disjoint) of ``linear`` into one averaged row."""
        w, b = linear.weight.detach(), linear.bias.detach()
        n = w.shape[0]
        rep = list(range(n))  # neuron -> the neuron whose row it reads
        for i, j, *_ in pairs:
            i, j = int(i), int(j)
            if not (0 <= i < n and 0 <= j < n) or i == j or rep[i] != i or rep[j] != j:
                raise ValueError(f"pair ({i}, {j}) is out of range or overlaps another pair (layer of {n} neurons)")
            rep[j] = i
        w, b = w.clone(), b.clone()
        for i, j, *_ in pairs:
            w[int(i)] = (w[int(i)] + w[int(j)]) / 2
            b[int(i)] = (b[int(i)] + b[int(j)]) / 2
        keep = sorted(set(rep))
        row_of = {neuron: r for r, neuron in enumerate(keep)}
        index = torch.tensor([row_of[rep[k]] for k in range(n)])
        return cls(w[keep], b[keep], index)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight[self.index], self.bias[self.index])

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rows={len(self.weight)}"


def _vectors(weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    w = weight.detach().double()
    return torch.cat([w, bias.detach().double()[:, None]], 1) if bias is not None else w


def _greedy(dist: np.ndarray, rows_i: np.ndarray, rows_j: np.ndarray, max_pairs: int) -> list[Pair]:
    order = np.argsort(dist, kind="stable")
    used_i, used_j, out = set(), set(), []
    for k in order:
        i, j = int(rows_i[k]), int(rows_j[k])
        if i in used_i or j in used_j:
            continue
        out.append((i, j, float(dist[k])))
        used_i.add(i)
        used_j.add(j)
        if len(out) >= max_pairs:
            break
    return out


def neuron_pairs(weight: torch.Tensor, bias: torch.Tensor | None = None) -> list[Pair]:
    """Disjoint pairs of one layer's neurons, ascending L2 error of [w | b] (greedy): n // 2 pairs."""
    v = _vectors(weight, bias)
    n = len(v)
    if n < 2:
        return []
    d = torch.cdist(v, v).numpy()
    iu, ju = np.triu_indices(n, 1)
    # Within one layer a neuron may appear on either side of a pair: one "used" set for both.
    order = np.argsort(d[iu, ju], kind="stable")
    used, out = set(), []
    for k in order:
        i, j = int(iu[k]), int(ju[k])
        if i in used or j in used:
            continue
        out.append((i, j, float(d[i, j])))
        used.update((i, j))
        if len(out) >= n // 2:
            break
    return out


def twin_pairs(wa: torch.Tensor, ba: torch.Tensor | None, wb: torch.Tensor, bb: torch.Tensor | None) -> list[Pair]:
    """Disjoint (neuron of A, neuron of B) pairs, ascending L2 error (greedy): min(nA, nB) pairs."""
    va, vb = _vectors(wa, ba), _vectors(wb, bb)
    if va.shape[1] != vb.shape[1]:
        raise ValueError(f"twin-merge needs layers with the same input size, got {va.shape[1] - 1} and {vb.shape[1] - 1}")
    d = torch.cdist(va, vb).numpy()
    ii, jj = np.indices(d.shape)
    return _greedy(d.ravel(), ii.ravel(), jj.ravel(), min(len(va), len(vb)))


def mergeable_layers(branch: nn.Module, include_output: bool = False) -> list[int]:
    """Indices into ``branch.fc`` that self-merge may touch (hidden layers; the class layer if asked)."""
    n = len(branch.fc)
    return [k for k in range(n) if k < n - 1 or include_output]


def check_range(lo: float, hi: float) -> None:
    if not (0.0 <= lo <= hi <= 0.5):
        raise ValueError(f"merge range [{lo!r}, {hi!r}] must satisfy 0 <= lo <= hi <= 1/2 (fractions of the candidate pairs)")


@dataclass
class MergeResult:
    fraction: float
    pairs: dict[int, int]  # fc layer index -> merged pairs
    candidates: dict[int, int]  # fc layer index -> candidate pairs
    params_saved: int
    errors: dict[int, list[float]] = field(default_factory=dict)  # merged pairs' errors per layer

    @property
    def n_pairs(self) -> int:
        return sum(self.pairs.values())


def n_merge(fraction: float, candidates: int) -> int:
    """Pairs merged in a layer with ``candidates`` pairs at ``fraction`` (round half up)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"merge fraction {fraction!r} must be in [0, 1]")
    return min(candidates, int(math.floor(fraction * candidates + 0.5)))


def candidate_pairs(branch: nn.Module, include_output: bool = False) -> dict[int, list[Pair]]:
    out = {}
    for k in mergeable_layers(branch, include_output):
        layer = branch.fc[k]
        if not isinstance(layer, nn.Linear):
            raise ValueError(f"fc layer {k} is already merged ({type(layer).__name__}); merge the original branch")
        out[k] = neuron_pairs(layer.weight, layer.bias)
    return out


def self_merge(branch: nn.Module, fraction: float, candidates: dict[int, list[Pair]] | None = None,
               include_output: bool = False) -> tuple[nn.Module, MergeResult]:
    """A merged copy of ``branch``: in each mergeable FC layer the first ``fraction`` of its candidate pairs."""
    cands = candidates if candidates is not None else candidate_pairs(branch, include_output)
    merged = copy.deepcopy(branch)
    pairs, saved, errors = {}, 0, {}
    for k, cand in cands.items():
        m = n_merge(fraction, len(cand))
        layer = branch.fc[k]
        merged.fc[k] = SharedLinear.from_linear(layer, cand[:m])
        pairs[k], errors[k] = m, [e for _, _, e in cand[:m]]
        saved += m * (layer.in_features + 1)
    return merged, MergeResult(fraction, pairs, {k: len(c) for k, c in cands.items()}, saved, errors)


def twin_layers(a: nn.Module, b: nn.Module) -> list[int]:
    """Hidden FC layers of A and B with identical shapes (the layers twin-merge may pair)."""
    n = min(len(a.fc), len(b.fc)) - 1
    return [k for k in range(max(n, 0)) if a.fc[k].weight.shape == b.fc[k].weight.shape
            and len(a.fc) == len(b.fc)]


def twin_merge(a: nn.Module, b: nn.Module, fraction: float) -> tuple[nn.Module, nn.Module, MergeResult]:
    """Copies of A and B whose paired rows (first ``fraction`` of each layer's twin pairs) hold the
    same averaged vector, stored once for both branches."""
    layers = twin_layers(a, b)
    if not layers:
        raise ValueError("twin-merge needs two branches with hidden FC layers of the same shapes")
    a2, b2 = copy.deepcopy(a), copy.deepcopy(b)
    pairs, cands, saved, errors = {}, {}, 0, {}
    for k in layers:
        la, lb = a.fc[k], b.fc[k]
        cand = twin_pairs(la.weight, la.bias, lb.weight, lb.bias)
        m = n_merge(fraction, len(cand))
        with torch.no_grad():
            for i, j, _ in cand[:m]:
                w = (la.weight[i] + lb.weight[j]) / 2
                bias = (la.bias[i] + lb.bias[j]) / 2
                a2.fc[k].weight[i], b2.fc[k].weight[j] = w, w
                a2.fc[k].bias[i], b2.fc[k].bias[j] = bias, bias
        pairs[k], cands[k], errors[k] = m, len(cand), [e for _, _, e in cand[:m]]
        saved += m * (la.in_features + 1)
    return a2, b2, MergeResult(fraction, pairs, cands, saved, errors)


def traverse_fractions(max_candidates: int, lo: float, hi: float, max_evals: int = 12) -> list[float]:
    """Fractions k / max_candidates for k from ceil(lo * n) to floor(hi * n) (at most ``max_evals``, evenly spread)."""
    check_range(lo, hi)
    if max_candidates < 1:
        return [0.0]
    k_lo, k_hi = math.ceil(lo * max_candidates - 1e-9), math.floor(hi * max_candidates + 1e-9)
    ks = list(range(k_lo, max(k_lo, k_hi) + 1))
    if len(ks) > max_evals:
        ks = sorted({int(round(v)) for v in np.linspace(k_lo, k_hi, max_evals)})
    return [k / max_candidates for k in ks]


def select_by_accuracy(fractions: Sequence[float], evaluate: Callable[[float], float]) -> tuple[float, list[tuple[float, float]]]:
    """The paper's rule: evaluate each fraction, keep the most accurate (ties: the larger fraction,
    which saves more memory). Returns (best fraction, [(fraction, accuracy)])."""
    trace = [(f, float(evaluate(f))) for f in fractions]
    best = max(trace, key=lambda t: (t[1], t[0]))[0]
    return best, trace


def shared_tensors(branch: nn.Module) -> list[tuple[nn.Parameter, torch.Tensor]]:
    """(parameter, row mask) of every SharedLinear's weight and bias: the shared weights W_s."""
    out = []
    for m in branch.modules():
        if isinstance(m, SharedLinear) and bool(m.shared.any()):
            out.append((m.weight, m.shared))
            out.append((m.bias, m.shared))
    return out


def branch_from_state(branch: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Load ``state`` (from a saved plain or merged branch) into ``branch`` built from its spec,
    first turning every FC layer that was saved merged (has ``fc.<k>.index``) into a SharedLinear."""
    for k in range(len(branch.fc)):
        key = f"fc.{k}.index"
        if key in state:
            branch.fc[k] = SharedLinear(state[f"fc.{k}.weight"], state[f"fc.{k}.bias"], state[key])
    missing, unexpected = branch.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"saved branch does not fit its spec: missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]}")
    return branch
