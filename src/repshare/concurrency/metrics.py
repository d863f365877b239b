"""The concurrency score's metrics as pure functions of a networkx DiGraph.

The DAG has one source (input) and one sink (output); vertices carry a work weight (``flops``)
and the bytes of their output (``bytes``). A partition maps every vertex to a unit ``0..n-1``.

- load balance ``delta_w = max_p W_p / W_avg`` (1 = perfectly balanced);
- communication ``Lambda = sum over cut nets of cost * (parts connected - 1)`` (km1), where the net
  of a vertex joins it with its consumers; ``Lambda' = Lambda / (U_c * n)``;
- overlap ``eta = longest path (in vertices) / (|V| / n)``, input and output vertices excluded;
- ``CS = (delta_w^a * Lambda'^b * eta^c)^(1/3)``, paper: a = c = 1, b = 1.5; lower is better.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import networkx as nx

from repshare.concurrency.graphs import source_and_sink
from repshare.concurrency.hypergraph import build_hypergraph, check_partition_args, partition

PAPER_EXPONENTS = (1.0, 1.5, 1.0)


def _check_parts(dag: nx.DiGraph, parts: Mapping, n_units: int) -> None:
    missing = [v for v in dag.nodes if v not in parts]
    if missing:
        raise ValueError(f"partition has no unit for vertex {missing[0]!r}")
    bad = [p for p in parts.values() if not 0 <= p < n_units]
    if bad:
        raise ValueError(f"partition unit {bad[0]!r} is outside 0..{n_units - 1}")


def part_weights(dag: nx.DiGraph, parts: Mapping, n_units: int, weight: str = "flops") -> list[float]:
    _check_parts(dag, parts, n_units)
    w = [0.0] * n_units
    for v in dag.nodes:
        w[parts[v]] += float(dag.nodes[v][weight])
    return w


def load_balance(dag: nx.DiGraph, parts: Mapping, n_units: int, weight: str = "flops") -> float:
    """delta_w = max_p W_p / W_avg, W_avg = total weight / n."""
    w = part_weights(dag, parts, n_units, weight)
    total = sum(w)
    if total <= 0:
        raise ValueError(f"total vertex weight {weight!r} is {total}; it must be > 0")
    return max(w) / (total / n_units)


def communication(dag: nx.DiGraph, parts: Mapping, cost: str = "bytes") -> float:
    """Lambda = sum over the nets (vertex + its consumers) of cost * (units connected - 1)."""
    total = 0.0
    for v in dag.nodes:
        succ = list(dag.successors(v))
        if not succ:
            continue
        units = {parts[v], *(parts[u] for u in succ)}
        total += float(dag.nodes[v][cost]) * (len(units) - 1)
    return total


def unit_cost(dag: nx.DiGraph, cost: str = "bytes") -> float:
    """The smallest positive net cost in a graph (U_c: the paper takes the smallest over a generator)."""
    costs = [float(dag.nodes[v][cost]) for v in dag.nodes if dag.out_degree(v) > 0 and dag.nodes[v][cost] > 0]
    if not costs:
        raise ValueError("graph has no edges, so no net cost to normalise by")
    return min(costs)


def normalised_communication(lam: float, u_c: float, n_units: int) -> float:
    """Lambda' = Lambda / (U_c * n)."""
    if not u_c > 0:
        raise ValueError(f"unit of communication U_c={u_c!r} must be > 0")
    return lam / (u_c * n_units)


def longest_inner_path(dag: nx.DiGraph) -> int:
    """Vertices on the longest input -> output path, the input and output themselves excluded."""
    source_and_sink(dag)
    return nx.dag_longest_path_length(dag, weight=None) - 1


def overlap(dag: nx.DiGraph, n_units: int) -> float:
    """eta = longest path in vertices / (|V| / n), input and output vertices excluded (Eq. 2)."""
    inner = dag.number_of_nodes() - 2
    if isinstance(n_units, bool) or not isinstance(n_units, int) or n_units < 2:
        raise ValueError(f"number of units n={n_units!r} must be an integer >= 2")
    if inner < 1:
        raise ValueError("graph has no vertex besides its input and output")
    return longest_inner_path(dag) / (inner / n_units)


def concurrency_score(delta_w: float, lambda_norm: float, eta: float,
                      exponents: tuple[float, float, float] = PAPER_EXPONENTS) -> float:
    """CS = (delta_w^a * Lambda'^b * eta^c)^(1/3) (Eq. 4); lower = more concurrent."""
    a, b, c = exponents
    for name, v in (("delta_w", delta_w), ("Lambda'", lambda_norm), ("eta", eta)):
        if v < 0:
            raise ValueError(f"{name}={v!r} must be >= 0")
    return float((delta_w ** a * lambda_norm ** b * eta ** c) ** (1.0 / 3.0))


def score_partitions(dag: nx.DiGraph, n_units: int, epsilons: Iterable[float], seed: int = 0,
                     u_c: float | None = None, exponents: tuple[float, float, float] = PAPER_EXPONENTS,
                     weight: str = "flops", cost: str = "bytes") -> list[dict]:
    """Partition ``dag`` into ``n_units`` with Mt-KaHyPar at every imbalance bound and score each:
    one row per epsilon with delta_w, Lambda, Lambda', eta, CS and the partition itself."""
    epsilons = list(epsilons)
    if not epsilons:
        raise ValueError("no imbalance bounds epsilon given")
    source_and_sink(dag)
    for eps in epsilons:
        check_partition_args(dag.number_of_nodes(), n_units, eps)
    u_c = unit_cost(dag, cost) if u_c is None else u_c
    eta = overlap(dag, n_units)
    hg = build_hypergraph(dag, weight, cost)
    rows = []
    for eps in epsilons:
        parts = partition(hg, n_units, eps, seed)
        dw = load_balance(dag, parts, n_units, weight)
        lam = communication(dag, parts, cost)
        lam_n = normalised_communication(lam, u_c, n_units)
        rows.append({"epsilon": float(eps), "delta_w": dw, "Lambda": lam, "Lambda_norm": lam_n, "eta": eta,
                     "CS": concurrency_score(dw, lam_n, eta, exponents), "parts": parts})
    return rows


def best_row(rows: list[dict]) -> dict:
    """The partition option with the lowest CS (ties: the smaller epsilon, listed first)."""
    return min(rows, key=lambda r: r["CS"])
