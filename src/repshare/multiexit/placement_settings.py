"""Settings of MEEdge part 2 (the ``placement`` config group) as plain science dataclasses.

The study reads these, never the config object; the config schema can reuse them as they are.
:meth:`PlacementSettings.from_mapping` builds them from the group's mapping and rejects unknown
keys; :meth:`PlacementSettings.check` says which key is wrong in one line (a ValueError naming
``placement.<key>``), so an empty or nonsensical value never reaches the search.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from repshare.multiexit.baselines import BaselineSettings
from repshare.multiexit.placement import CANDIDATE_MODES, VARIANTS

LATENCY_SOURCES = ("model", "measured")


@dataclass(frozen=True)
class SimulationSettings:
    """The device-server memory-elastic loop (Sec. 3.4) over a trace of memory budgets."""

    rate_mbps: float = 85.0  # transfer rate R (paper: ~85 Mbit/s Wi-Fi)
    request_bits: int = 64  # the device's (latency budget, memory budget) message
    search_s: float = 0.05  # L_search the server spends per placement (charged to the adaptation time)
    window_s: float = 2.0  # time between budget changes
    trace_fractions: tuple[float, ...] = (1.0, 0.35, 0.1, 0.5, 0.05, 0.75, 0.2, 0.02)  # x M_full; 8 = 7 changes
    deadline_factor: float = 0.8  # finite-time mode: deadline = factor x single-exit inference time


@dataclass(frozen=True)
class PlacementSettings:
    """MEEdge part 2: HPF branch placement (Alg. 1, 2), memory-elastic inference, baselines."""

    model_name: str = "classifier"  # workload model the multi-exit network is built on
    candidates: str = "both"  # both | original | merged
    bytes_per_param: int = 4
    max_per_exit: int | None = 1  # branches per exit point (None: any number)
    return_best: bool = False  # anytime answer: last exit finished (False) | best so far (True)
    horizon_factor: float = 1.5  # mAE horizon T = factor x single-exit inference time
    horizon_factors: tuple[float, ...] = (1.1, 1.25, 1.5, 2.0, 3.0)
    budget_fractions: tuple[float, ...] = (0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0)
    variant: str = "m7"  # MEEdge's own priority
    variants: tuple[str, ...] = VARIANTS
    search_time_s: float | None = None  # wall-clock cap of one DFS (None: results reproducible)
    node_budget: int | None = 2000  # DFS nodes per placement (deterministic search budget)
    prune_nonimproving: bool = True
    mc_samples: int = 48
    mc_seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    exact_max_candidates: int = 60
    exact_node_limit: int = 2_000_000
    n_bootstrap: int = 500
    simulation: SimulationSettings = field(default_factory=SimulationSettings)
    baselines: BaselineSettings = field(default_factory=BaselineSettings)

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any]) -> PlacementSettings:
        """From the ``placement`` config group (lists become tuples); unknown keys are refused."""
        sim = _build(SimulationSettings, doc.get("simulation") or {}, "placement.simulation")
        base = _build(BaselineSettings, doc.get("baselines") or {}, "placement.baselines")
        top = {k: v for k, v in doc.items() if k not in ("simulation", "baselines")}
        out = _build(cls, top, "placement", simulation=sim, baselines=base)
        out.check()
        return out

    def check(self) -> None:
        """One ValueError naming the first bad key."""
        def bad(key: str, value: Any, why: str) -> None:
            raise ValueError(f"placement.{key}={value!r} {why}")

        if self.candidates not in CANDIDATE_MODES:
            bad("candidates", self.candidates, f"must be one of {', '.join(CANDIDATE_MODES)}")
        if not _int(self.bytes_per_param) or self.bytes_per_param <= 0:
            bad("bytes_per_param", self.bytes_per_param, "must be an integer > 0")
        if self.max_per_exit is not None and (not _int(self.max_per_exit) or self.max_per_exit < 1):
            bad("max_per_exit", self.max_per_exit, "must be an integer >= 1 or null")
        if not _pos(self.horizon_factor) or self.horizon_factor <= 1:
            bad("horizon_factor", self.horizon_factor, "must be a finite number > 1 (T beyond the single-exit time)")
        for key in ("horizon_factors", "budget_fractions", "variants", "mc_seeds"):
            seq = getattr(self, key)
            if not seq:
                bad(key, list(seq), "must not be empty")
            if len(set(seq)) != len(seq):
                bad(key, list(seq), "lists a value twice")
        if not all(_pos(h) and h > 1 for h in self.horizon_factors):
            bad("horizon_factors", list(self.horizon_factors), "must all be finite numbers > 1")
        if not all(_pos(b) for b in self.budget_fractions):
            bad("budget_fractions", list(self.budget_fractions), "must all be finite fractions of M_full > 0")
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            bad("variants", list(self.variants), f"has {unknown[0]!r}, not one of {', '.join(VARIANTS)}")
        if self.variant not in self.variants:
            bad("variant", self.variant, f"must be one of placement.variants {list(self.variants)}")
        if self.search_time_s is not None and not _pos(self.search_time_s):
            bad("search_time_s", self.search_time_s, "must be > 0 seconds or null")
        if self.node_budget is not None and (not _int(self.node_budget) or self.node_budget < 1):
            bad("node_budget", self.node_budget, "must be an integer >= 1 or null")
        if not _int(self.mc_samples) or self.mc_samples < 1:
            bad("mc_samples", self.mc_samples, "must be an integer >= 1")
        if not all(_int(s) and s >= 0 for s in self.mc_seeds):
            bad("mc_seeds", list(self.mc_seeds), "must be integers >= 0")
        if not _int(self.exact_max_candidates) or self.exact_max_candidates < 0:
            bad("exact_max_candidates", self.exact_max_candidates, "must be an integer >= 0")
        if not _int(self.exact_node_limit) or self.exact_node_limit < 1:
            bad("exact_node_limit", self.exact_node_limit, "must be an integer >= 1")
        if not _int(self.n_bootstrap) or self.n_bootstrap < 0:
            bad("n_bootstrap", self.n_bootstrap, "must be an integer >= 0")
        s = self.simulation
        if not _pos(s.rate_mbps):
            bad("simulation.rate_mbps", s.rate_mbps, "must be a finite number > 0")
        if not _int(s.request_bits) or s.request_bits < 0:
            bad("simulation.request_bits", s.request_bits, "must be an integer >= 0")
        if not (isinstance(s.search_s, (int, float)) and math.isfinite(s.search_s) and s.search_s >= 0):
            bad("simulation.search_s", s.search_s, "must be a finite number >= 0 seconds")
        if not _pos(s.window_s):
            bad("simulation.window_s", s.window_s, "must be a finite number > 0 seconds")
        if len(s.trace_fractions) < 2 or not all(_pos(f) for f in s.trace_fractions):
            bad("simulation.trace_fractions", list(s.trace_fractions),
                "must hold at least 2 budgets (one change), each a finite fraction of M_full > 0")
        if not _pos(s.deadline_factor):
            bad("simulation.deadline_factor", s.deadline_factor, "must be a finite number > 0")
        self.baselines.check("placement.baselines")


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _pos(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _build(cls: type, doc: Mapping[str, Any], where: str, **given: Any) -> Any:
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(doc) - names)
    if unknown:
        raise ValueError(f"{where}.{unknown[0]} is not a setting (known: {', '.join(sorted(names))})")
    kw = {k: (tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in doc.items() if k not in given}
    return cls(**kw, **given)
