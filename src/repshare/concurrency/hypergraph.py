"""The hypergraph of a weighted DAG and its partition into n units with Mt-KaHyPar.

One vertex per DAG vertex (weight = its FLOPs); one net per DAG vertex that has consumers, joining
it with them (cost = bytes of its output): a vertex's output is sent once to every other unit that
reads it, which is what the connectivity-minus-one (km1) objective counts. Partitioning uses
Mt-KaHyPar's deterministic preset, so the same graph and seed always give the same partition.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

THREADS = 1  # Mt-KaHyPar's thread count, fixed: with the deterministic preset and a fixed seed the
# partition then depends on nothing else (not on OMP_NUM_THREADS or the machine's cores; tested)
_INIT = None
_CONTEXT = None
MAX_TOTAL = 2**30  # total vertex weight (and net cost) handed to Mt-KaHyPar: int32 with room for the sums


@dataclass
class Hypergraph:
    vertices: list  # DAG vertex labels; index = hypergraph vertex id
    weights: list[int]
    nets: list[list[int]]  # pins as vertex indices; the producer first
    costs: list[int]


def build_hypergraph(dag: nx.DiGraph, weight: str = "flops", cost: str = "bytes") -> Hypergraph:
    """Nets of size one (the output vertex, isolated vertices) are left out: they are never cut."""
    vertices = sorted(dag.nodes, key=str)
    index = {v: k for k, v in enumerate(vertices)}
    for v in vertices:
        for key in (weight, cost):
            if key not in dag.nodes[v]:
                raise ValueError(f"vertex {v!r} has no {key!r} attribute")
    weights = _fit([float(dag.nodes[v][weight]) for v in vertices])
    nets, raw_costs = [], []
    for v in vertices:
        consumers = sorted(dag.successors(v), key=str)
        if consumers:
            nets.append([index[v]] + [index[u] for u in consumers])
            raw_costs.append(float(dag.nodes[v][cost]))
    return Hypergraph(vertices, weights, nets, _fit(raw_costs))


def _fit(values: list[float]) -> list[int]:
    """Integers >= 1 (the partitioner's minimum) whose total fits its 32-bit weight type: values are scaled
    down in proportion when their total exceeds MAX_TOTAL (ResNet-50's ~4 GFLOPs at 224 px overflow it);
    smaller totals, every generated graph's, are kept exactly."""
    total = sum(values)
    scale = MAX_TOTAL / total if total > MAX_TOTAL else 1.0
    return [max(1, int(v * scale)) for v in values]


def _initializer():
    global _INIT
    if _INIT is None:
        import mtkahypar

        _INIT = mtkahypar.initialize(THREADS)  # one thread: deterministic and fair to the shared cores
    return _INIT


def _context():
    """The deterministic preset's context, built once per process (2.5 of ~21 ms per partition call);
    k and epsilon are set on it before every call, which gives the same partitions as a fresh one (tested)."""
    global _CONTEXT
    if _CONTEXT is None:
        import mtkahypar

        _CONTEXT = _initializer().context_from_preset(mtkahypar.PresetType.DETERMINISTIC)
        _CONTEXT.logging = False
    return _CONTEXT


def check_partition_args(n_vertices: int, n_units: int, epsilon: float) -> None:
    if isinstance(n_units, bool) or not isinstance(n_units, int) or n_units < 2:
        raise ValueError(f"number of units n={n_units!r} must be an integer >= 2")
    if n_units > n_vertices:
        raise ValueError(f"number of units n={n_units} is larger than the number of vertices {n_vertices}")
    if not epsilon > 0:
        raise ValueError(f"imbalance bound epsilon={epsilon!r} must be > 0")


def _partitioned(hg: Hypergraph, n_units: int, epsilon: float, seed: int):
    import mtkahypar

    check_partition_args(len(hg.vertices), n_units, epsilon)
    init, ctx = _initializer(), _context()
    mtkahypar.set_seed(int(seed))
    ctx.set_partitioning_parameters(n_units, float(epsilon), mtkahypar.Objective.KM1)
    h = init.create_hypergraph(ctx, len(hg.vertices), len(hg.nets), hg.nets, hg.weights, hg.costs)
    return h.partition(ctx)


def partition(hg: Hypergraph, n_units: int, epsilon: float, seed: int = 0) -> dict:
    """Mt-KaHyPar (deterministic preset, km1 objective): DAG vertex -> unit in ``0..n_units-1``."""
    p = _partitioned(hg, n_units, epsilon, seed)
    return {v: int(p.block_id(k)) for k, v in enumerate(hg.vertices)}


def partition_km1(hg: Hypergraph, n_units: int, epsilon: float, seed: int = 0) -> int:
    """The partitioner's own km1 value (tests compare it with :func:`metrics.communication`)."""
    return int(_partitioned(hg, n_units, epsilon, seed).km1())
