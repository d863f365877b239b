"""The paper's distribution procedure (Sec. V-A5/6): ``grouping`` then ``assign_workload``.

``grouping`` puts the vertices of each connected piece of the DAG, the input and output vertices
removed, into one group (the paper's DFS over the undirected graph; here networkx's connected
components, the same sets). ``assign_workload`` is the paper's greedy longest-job-first heap:
groups, largest first, go to the least-loaded of ``n - 1`` work units; the last unit gathers the
output. The paper weighs a group by its vertex count; ``weight`` can weigh by FLOPs instead.
"""

from __future__ import annotations

import heapq
import math

import networkx as nx

from repshare.concurrency.graphs import source_and_sink


def grouping(dag: nx.DiGraph) -> dict[object, list]:
    """Group id (the group's smallest vertex) -> its vertices, input and output left out."""
    src, snk = source_and_sink(dag)
    ug = dag.to_undirected(as_view=False)
    ug.remove_nodes_from([src, snk])
    groups = {}
    for comp in nx.connected_components(ug):
        members = sorted(comp, key=str)
        groups[members[0]] = members
    return dict(sorted(groups.items(), key=lambda kv: str(kv[0])))


def assign_workload(groups: dict[object, list], n: int, dag: nx.DiGraph | None = None,
                    weight: str | None = None) -> list[list]:
    """The paper's heap assignment over ``n - 1`` work units (+ the gather unit, last)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"number of units n={n!r} must be an integer >= 2")

    def load(members: list) -> float:
        return float(len(members)) if weight is None else float(sum(dag.nodes[v][weight] for v in members))

    keys = list(groups)
    jobs = [(-load(groups[g]), k) for k, g in enumerate(keys)]
    heapq.heapify(jobs)
    units = [(0.0, i) for i in range(n - 1)]
    heapq.heapify(units)
    assignment: list[list] = [[] for _ in range(n - 1)]
    while jobs:
        job_load, k = heapq.heappop(jobs)
        unit_load, unit_id = heapq.heappop(units)
        heapq.heappush(units, (unit_load - job_load, unit_id))
        assignment[unit_id] += groups[keys[k]]
    return assignment + [["output"]]


def normalised_entropy(loads: list[float]) -> float:
    """Fig. 12's load-balance quality: Shannon entropy of the load shares / log(units); 1 = even."""
    if len(loads) < 2:
        return 1.0
    total = float(sum(loads))
    if total <= 0:
        raise ValueError("all unit loads are zero")
    h = -sum((x / total) * math.log(x / total) for x in loads if x > 0)
    return h / math.log(len(loads))


def balance_quality(dag: nx.DiGraph, n_work_units: int, weight: str | None = None) -> float:
    """Group, assign over ``n_work_units`` work units (+ gather), return the normalised entropy of
    the work units' loads (vertex counts, or ``weight`` sums)."""
    groups = grouping(dag)
    assignment = assign_workload(groups, n_work_units + 1, dag, weight)[:-1]
    loads = [float(len(a)) if weight is None else float(sum(dag.nodes[v][weight] for v in a)) for a in assignment]
    return normalised_entropy(loads)
