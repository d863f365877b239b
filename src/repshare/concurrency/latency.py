"""Simulated distributed latency of a partitioned DAG (the paper measured on 10 cloud instances;
we simulate, and say so).

Each unit runs its vertices one at a time in a fixed topological order; a vertex starts when its
unit is free and every input has arrived. An output read on another unit is sent once per
destination unit (as the km1 nets count it) and arrives after ``message_latency_s +
bytes / bandwidth_bytes_per_s``; links never contend. Latency = the output vertex's finish time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import networkx as nx

from repshare.concurrency.graphs import source_and_sink


@dataclass(frozen=True)
class LinkModel:
    unit_flops_per_s: float = 2e9  # one small edge core
    bandwidth_bytes_per_s: float = 1.25e8  # 1 Gbit/s
    message_latency_s: float = 5e-4

    def __post_init__(self) -> None:
        for key in ("unit_flops_per_s", "bandwidth_bytes_per_s"):
            if not getattr(self, key) > 0:
                raise ValueError(f"{key}={getattr(self, key)!r} must be > 0")
        if self.message_latency_s < 0:
            raise ValueError(f"message_latency_s={self.message_latency_s!r} must be >= 0")


def simulate_latency(dag: nx.DiGraph, parts: Mapping, link: LinkModel = LinkModel(),
                     weight: str = "flops", cost: str = "bytes") -> dict[str, float]:
    """{'latency_s', 'compute_s' (slowest unit's busy time), 'comm_s' (all transfer time)}."""
    _, sink = source_and_sink(dag)
    unit_free: dict[int, float] = {}
    finish: dict[object, float] = {}
    arrival: dict[tuple[object, int], float] = {}  # (vertex, destination unit) -> arrival time
    busy: dict[int, float] = {}
    comm = 0.0
    for v in nx.lexicographical_topological_sort(dag, key=str):
        p = parts[v]
        ready = unit_free.get(p, 0.0)
        for u in dag.predecessors(v):
            if parts[u] == p:
                ready = max(ready, finish[u])
                continue
            if (u, p) not in arrival:
                t = link.message_latency_s + float(dag.nodes[u][cost]) / link.bandwidth_bytes_per_s
                arrival[(u, p)] = finish[u] + t
                comm += t
            ready = max(ready, arrival[(u, p)])
        run = float(dag.nodes[v][weight]) / link.unit_flops_per_s
        finish[v] = ready + run
        unit_free[p] = finish[v]
        busy[p] = busy.get(p, 0.0) + run
    return {"latency_s": finish[sink], "compute_s": max(busy.values()), "comm_s": comm}


def serial_latency(dag: nx.DiGraph, link: LinkModel = LinkModel(), weight: str = "flops") -> float:
    """Latency on one unit: the sum of all vertex work (no communication)."""
    return sum(float(dag.nodes[v][weight]) for v in dag.nodes) / link.unit_flops_per_s
