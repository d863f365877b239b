"""Random-graph generators (ER, BA, WS and the paper's distance-based DP) and the conversion of an
undirected graph into the single-source, single-sink DAG the rest of the package scores.

Vertex labels of a converted DAG: the generator's vertices become ``1..N``; ``INPUT = 0`` feeds
every vertex without predecessors and ``OUTPUT = -1`` collects every vertex without successors
(the labels the paper's own grouping code uses).
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np

GENERATORS: tuple[str, ...] = ("er", "ba", "ws", "dp")
INPUT, OUTPUT = 0, -1


@dataclass(frozen=True)
class GeneratorParams:
    """Generator constants. ER/BA/WS defaults are RandWire's (Xie et al. 2019); the DP constants are
    not given in the paper (config ``concurrency.generators.dp_*``)."""

    er_p: float = 0.2
    ba_m: int = 5
    ws_k: int = 4
    ws_p: float = 0.75
    dp_alpha: float = 1.0
    dp_beta: float = 1.0
    dp_p: float = 0.5

    def __post_init__(self) -> None:
        for key in ("er_p", "ws_p", "dp_p"):
            v = getattr(self, key)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"generator probability {key}={v!r} must be in [0, 1]")
        if self.dp_alpha < 0:
            raise ValueError(f"dp_alpha={self.dp_alpha!r} must be >= 0")
        if self.dp_beta < 0:
            raise ValueError(f"dp_beta={self.dp_beta!r} must be >= 0")
        if self.ba_m < 1:
            raise ValueError(f"ba_m={self.ba_m!r} must be >= 1")
        if self.ws_k < 2 or self.ws_k % 2:
            raise ValueError(f"ws_k={self.ws_k!r} must be an even number >= 2")


def ring_distance(i: int, j: int, n_vertices: int) -> int:
    """The paper's distance: the smallest number of vertices between i and j on the ring, plus one."""
    step = abs(i - j) % n_vertices
    return min(step, n_vertices - step)


def dp_edge_probability(d: int, alpha: float, beta: float, p: float) -> float:
    """Eq. 1 as printed: P_new = alpha * P^(beta * d), clipped to [0, 1]."""
    return float(min(1.0, max(0.0, alpha * p ** (beta * d))))


def dp_graph(n_vertices: int, alpha: float, beta: float, p: float, seed: int) -> nx.Graph:
    """Distance-based generator: vertices on a ring, edge (i, j) with probability P_new(d(i, j))."""
    rng = np.random.default_rng(seed)
    g = nx.Graph()
    g.add_nodes_from(range(n_vertices))
    i, j = np.triu_indices(n_vertices, k=1)
    step = j - i
    d = np.minimum(step, n_vertices - step)
    probs = np.clip(alpha * np.power(p, beta * d.astype(float)), 0.0, 1.0)
    keep = rng.random(len(i)) < probs
    g.add_edges_from(zip(i[keep].tolist(), j[keep].tolist()))
    return g


def check_generator(generator: str, n_vertices: int) -> None:
    if generator not in GENERATORS:
        raise ValueError(f"unknown graph generator {generator!r}; choose one of: {', '.join(GENERATORS)}")
    if isinstance(n_vertices, bool) or not isinstance(n_vertices, (int, np.integer)) or n_vertices < 2:
        raise ValueError(f"number of vertices {n_vertices!r} must be an integer >= 2")


def undirected_graph(generator: str, n_vertices: int, seed: int, params: GeneratorParams | None = None) -> nx.Graph:
    """One random undirected graph on vertices ``0..n_vertices-1`` from a named generator."""
    check_generator(generator, n_vertices)
    params = params or GeneratorParams()
    if generator == "er":
        return nx.gnp_random_graph(n_vertices, params.er_p, seed=seed)
    if generator == "ba":
        if params.ba_m >= n_vertices:
            raise ValueError(f"ba_m={params.ba_m} must be below the number of vertices {n_vertices}")
        return nx.barabasi_albert_graph(n_vertices, params.ba_m, seed=seed)
    if generator == "ws":
        if params.ws_k >= n_vertices:
            raise ValueError(f"ws_k={params.ws_k} must be below the number of vertices {n_vertices}")
        return nx.watts_strogatz_graph(n_vertices, params.ws_k, params.ws_p, seed=seed)
    return dp_graph(n_vertices, params.dp_alpha, params.dp_beta, params.dp_p, seed)


def to_dag(graph: nx.Graph) -> nx.DiGraph:
    """Orient an undirected graph by depth-first search (smaller vertex ids first) and add the
    input and output vertices.

    Every edge points from the endpoint visited earlier in the DFS preorder to the later one, so the
    preorder is a topological order and the result is acyclic. Vertices are relabelled ``v -> v+1``.
    """
    if any(not isinstance(v, (int, np.integer)) or v < 0 for v in graph.nodes):
        raise ValueError("to_dag expects vertices labelled with non-negative integers")
    order: dict[int, int] = {}
    for root in sorted(graph.nodes):
        if root in order:
            continue
        # Iterative DFS; neighbours are pushed largest-first so the smallest id is visited first.
        stack = [root]
        while stack:
            v = stack.pop()
            if v in order:
                continue
            order[v] = len(order)
            stack.extend(sorted((u for u in graph.neighbors(v) if u not in order), reverse=True))
    dag = nx.DiGraph()
    dag.add_nodes_from(v + 1 for v in sorted(graph.nodes))
    for u, v in graph.edges:
        if u == v:
            continue
        a, b = (u, v) if order[u] < order[v] else (v, u)
        dag.add_edge(a + 1, b + 1)
    sources = [v for v in dag.nodes if dag.in_degree(v) == 0]
    sinks = [v for v in dag.nodes if dag.out_degree(v) == 0]
    dag.add_node(INPUT)
    dag.add_node(OUTPUT)
    dag.add_edges_from((INPUT, v) for v in sources)
    dag.add_edges_from((v, OUTPUT) for v in sinks)
    return dag


def random_dag(generator: str, n_vertices: int, seed: int, params: GeneratorParams | None = None) -> nx.DiGraph:
    return to_dag(undirected_graph(generator, n_vertices, seed, params))


def source_and_sink(dag: nx.DiGraph) -> tuple[object, object]:
    """The DAG's single source and single sink; ValueError if it has several or a cycle."""
    if not nx.is_directed_acyclic_graph(dag):
        raise ValueError("graph is not a directed acyclic graph")
    sources = [v for v in dag.nodes if dag.in_degree(v) == 0]
    sinks = [v for v in dag.nodes if dag.out_degree(v) == 0]
    if len(sources) != 1 or len(sinks) != 1:
        raise ValueError(f"expected one source and one sink, found {len(sources)} sources and {len(sinks)} sinks")
    return sources[0], sinks[0]


def width_depth(dag: nx.DiGraph) -> dict[int, int]:
    """Fig. 10's histogram: number of inner vertices at each depth (longest-path depth from the
    input; the input and output vertices are left out)."""
    src, snk = source_and_sink(dag)
    depth: dict[object, int] = {}
    for v in nx.topological_sort(dag):
        preds = list(dag.predecessors(v))
        depth[v] = 0 if not preds else 1 + max(depth[u] for u in preds)
    hist: dict[int, int] = {}
    for v, d in depth.items():
        if v in (src, snk):
            continue
        hist[d] = hist.get(d, 0) + 1
    return dict(sorted(hist.items()))


def expected_dp_degree(n_vertices: int, alpha: float, beta: float, p: float) -> float:
    """Mean vertex degree of the DP generator (closed form over ring distances), for the docs."""
    return sum(dp_edge_probability(min(k, n_vertices - k), alpha, beta, p) for k in range(1, n_vertices))


def parallel_chains(lengths: list[int]) -> nx.DiGraph:
    """Input -> len(lengths) disjoint chains -> output (Fig. 5's examples; vertices 1..N)."""
    if not lengths or any(n < 1 for n in lengths):
        raise ValueError(f"chain lengths {lengths!r} must be positive")
    dag = nx.DiGraph()
    dag.add_nodes_from([INPUT, OUTPUT])
    v = 1
    for n in lengths:
        chain = list(range(v, v + n))
        v += n
        nx.add_path(dag, [INPUT, *chain, OUTPUT])
    return dag


# Fig. 5 (n = 3): (a) 6/(9/3) = 2, (b) 5/(15/3) = 1, (c) 7/(15/3) = 1.4, (d) 7/(7/3) = 3.
FIG5_EXAMPLES: tuple[tuple[str, list[int], float], ...] = (
    ("(a)", [6, 3], 2.0), ("(b)", [5, 5, 5], 1.0), ("(c)", [7, 4, 4], 1.4), ("(d)", [7], 3.0))
