"""HPF-based branch placement (MEEdge section 3.3): which candidate branches to load under a
memory budget M and a search-time budget L_search.

Everything here is a pure function of a candidate table (pandas DataFrame or list of dicts with
columns ``id, exit, branch_latency_s, accuracy, params``; ``bytes`` optional, default
``4 * params``), the backbone's exit times (:class:`Backbone`) and the budgets:

* :func:`greedy_order` - Algorithm 1: repeatedly append the branch with the best gain in unit-memory
  accuracy expectation ``delta(value) / bytes`` given those already appended (no budget: it is an
  ordering of all candidates);
* :func:`convex_hull_ids` / :func:`hull_refine` - the branches on the upper convex envelope of
  (time to exit, accuracy) move to the front, keeping their order;
* :func:`dfs` - Algorithm 2: depth-first search over the priority-first combination tree (children
  of a node = later branches in priority order that fit in M), keeping the best node; its first path
  is the greedy answer (:func:`first_path`), later paths improve on it while the node / wall-clock
  budget lasts;
* :func:`priority_order` - the eight priority variants m0..m7 of the paper's Fig. 8;
* :func:`exact_optimum` - exact branch-and-bound over include/exclude decisions (admissible bound
  from the exit-time model), so every variant's optimality gap is measured.

The value of a set of branches is the anytime mAE (or finite-time accuracy, or weighted mAE) of the
multi-exit model it makes, under the exit-time model of :mod:`repshare.multiexit.mae`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from repshare.multiexit.mae import accuracy_at, exit_finish_times, mae_weighted, shown_at, shown_weights

REQUIRED_COLUMNS = ("id", "exit", "branch_latency_s", "accuracy", "params")
OBJECTIVES = ("anytime", "finite", "weighted")
VARIANTS = ("m0", "m1", "m2", "m3", "m4", "m5", "m6", "m7")
VARIANT_LABELS = {
    "m0": "m0 params ascending + DFS",
    "m1": "m1 MC random, unit-memory + DFS",
    "m2": "m2 MC random, area + DFS",
    "m3": "m3 MC importance, unit-memory + DFS",
    "m4": "m4 MC importance, per memory^2 + DFS",
    "m5": "m5 greedy (first path)",
    "m6": "m6 greedy + DFS",
    "m7": "m7 greedy + convex hull + DFS (MEEdge)",
}
MONTE_CARLO = ("m1", "m2", "m3", "m4")
HEAD = -1  # the original head's position in :meth:`Problem.answer_weights`


@dataclass(frozen=True)
class Backbone:
    """The single-exit model the branches hang on: when each exit is reached with no branch run,
    when the original head finishes, and its accuracy."""

    exit_time_s: Mapping[int, float]
    final_time_s: float
    final_accuracy: float

    @classmethod
    def from_stage_latencies(cls, stage_latency_s: Sequence[float], head_latency_s: float,
                             final_accuracy: float, exits: Sequence[int]) -> "Backbone":
        """``stage_latency_s`` = [stem, stage 1..]; exit e sits after stage e."""
        lat = [float(x) for x in stage_latency_s]
        bad = [x for x in lat + [float(head_latency_s)] if not (math.isfinite(x) and x >= 0)]
        if bad:
            raise ValueError(f"backbone latency {bad[0]!r} must be a finite number >= 0")
        cum = np.cumsum(lat)
        times = {}
        for e in exits:
            if not 1 <= int(e) < len(lat):
                raise ValueError(f"backbone exit {e!r} is out of range 1..{len(lat) - 1}")
            times[int(e)] = float(cum[int(e)])
        return cls(times, float(cum[-1] + head_latency_s), float(final_accuracy))


@dataclass
class Problem:
    """A placement instance: candidates as parallel lists (fast to evaluate) plus the objective."""

    ids: list[str]
    exits: list[int]
    latency: list[float]
    accuracy: list[float]
    bytes: list[int]
    backbone: Backbone
    horizon: float
    objective: str = "anytime"
    deadline: float | None = None
    cdf: Callable[[float], float] | None = None
    return_best: bool = False
    max_per_exit: int | None = 1
    standalone_time: list[float] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.ids)

    def profile(self, selected: Sequence[int]) -> tuple[list[float], list[float]]:
        """Exit finish times (ascending, final head last) and accuracies of a placement."""
        ex = [self.exits[i] for i in selected]
        la = [self.latency[i] for i in selected]
        order, times, t_final = exit_finish_times(ex, la, self.backbone.exit_time_s, self.backbone.final_time_s)
        accs = [self.accuracy[selected[k]] for k in order]
        return times + [t_final], accs + [self.backbone.final_accuracy]

    def __post_init__(self) -> None:
        # run-order rank and backbone time per candidate: the hot path of every search
        order = sorted(range(len(self.ids)), key=lambda i: (self.exits[i], self.latency[i], i))
        self._rank = [0] * len(order)
        for r, i in enumerate(order):
            self._rank[i] = r
        self._bbt = [self.backbone.exit_time_s[e] for e in self.exits]

    def value_reference(self, selected: Sequence[int]) -> float:
        """The value through :mod:`repshare.multiexit.mae` (the definition; ``value`` is its fast twin)."""
        times, accs = self.profile(selected)
        if self.objective == "finite":
            return accuracy_at(times, accs, self.deadline, self.return_best)
        return mae_weighted(times, accs, self.horizon, self.cdf if self.objective == "weighted" else None,
                            self.return_best)

    def value(self, selected: Sequence[int]) -> float:
        """Anytime mAE (weighted: by ``cdf``) or finite-time accuracy of the placement ``selected``."""
        if self.objective == "finite":
            return self.value_reference(selected)
        T = self.horizon
        F = self.cdf if self.objective == "weighted" else None
        rb = self.return_best
        delay = t_prev = shown = area = 0.0
        lat, acc, bbt = self.latency, self.accuracy, self._bbt
        for i in sorted(selected, key=self._rank.__getitem__):
            delay += lat[i]
            t = bbt[i] + delay
            if t >= T:
                break
            area += shown * ((F(t) - F(t_prev)) if F else (t - t_prev))
            shown = (acc[i] if acc[i] > shown else shown) if rb else acc[i]
            t_prev = t
        else:
            t = self.backbone.final_time_s + delay
            if t < T:
                area += shown * ((F(t) - F(t_prev)) if F else (t - t_prev))
                a = self.backbone.final_accuracy
                shown = (a if a > shown else shown) if rb else a
                t_prev = t
        area += shown * ((F(T) - F(t_prev)) if F else (T - t_prev))
        return area / ((F(T) - F(0.0)) if F else T)

    def answers(self, selected: Sequence[int]) -> tuple[list[int], list[float], list[float]]:
        """The placed candidates in run order plus :data:`HEAD`, their finish times and accuracies."""
        ex = [self.exits[i] for i in selected]
        order, times, t_final = exit_finish_times(ex, [self.latency[i] for i in selected],
                                                  self.backbone.exit_time_s, self.backbone.final_time_s)
        who = [selected[k] for k in order] + [HEAD]
        return who, times + [t_final], [self.accuracy[i] for i in who[:-1]] + [self.backbone.final_accuracy]

    def answer_weights(self, selected: Sequence[int]) -> tuple[list[int], np.ndarray]:
        """Who answers when: the placed candidates in run order plus :data:`HEAD` (the original head),
        and the weight of each one's answer in the value, so ``value == sum(w_k * accuracy_k)``.

        The weights depend on the accuracies only through ``return_best``; they score any other
        accuracies of the same exits (another split, one image's correctness) for this placement."""
        who, times, accs = self.answers(selected)
        if self.objective == "finite":
            w = np.zeros(len(who))
            k = shown_at(times, accs, self.deadline, self.return_best)
            if k >= 0:
                w[k] = 1.0
            return who, w
        return who, shown_weights(times, accs, self.horizon, self.cdf if self.objective == "weighted" else None,
                                  self.return_best)

    def memory(self, selected: Sequence[int]) -> int:
        return int(sum(self.bytes[i] for i in selected))

    def feasible(self, selected: Sequence[int], memory_budget: float) -> bool:
        if self.memory(selected) > memory_budget:
            return False
        if self.max_per_exit is not None:
            counts: dict[int, int] = {}
            for i in selected:
                counts[self.exits[i]] = counts.get(self.exits[i], 0) + 1
            if any(c > self.max_per_exit for c in counts.values()):
                return False
        return True


@dataclass
class Placement:
    variant: str
    memory_budget: float
    selected: list[str]  # candidate ids, in run order
    indices: list[int]
    value: float
    memory_bytes: int
    nodes: int = 0
    search_s: float = 0.0
    stopped_by: str | None = None  # "nodes" | "time" | None (tree exhausted)
    message: str = ""

    def as_row(self) -> dict[str, Any]:
        return {"variant": self.variant, "memory_budget": self.memory_budget, "value": self.value,
                "memory_bytes": self.memory_bytes, "n_branches": len(self.selected),
                "selected": " ".join(self.selected), "nodes": self.nodes, "search_s": self.search_s,
                "stopped_by": self.stopped_by or "", "message": self.message}


# --------------------------------------------------------------------------- building a problem
def _records(table: Any) -> list[dict]:
    if hasattr(table, "to_dict"):
        return list(table.to_dict(orient="records"))
    if isinstance(table, (list, tuple)):
        return [dict(r) for r in table]
    raise ValueError(f"candidate table must be a DataFrame or a list of dicts, got {type(table).__name__}")


def make_problem(table: Any, backbone: Backbone, horizon: float, *, objective: str = "anytime",
                 deadline: float | None = None, cdf: Callable[[float], float] | None = None,
                 return_best: bool = False, max_per_exit: int | None = 1,
                 bytes_per_param: int = 4) -> Problem:
    """Validate a candidate table and build a :class:`Problem`; errors name the row and column."""
    rows = _records(table)
    if rows:
        missing = [c for c in REQUIRED_COLUMNS if c not in rows[0]]
        if missing:
            raise ValueError(f"candidate table is missing column {missing[0]!r} (needs {', '.join(REQUIRED_COLUMNS)})")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective={objective!r} must be one of {', '.join(OBJECTIVES)}")
    if not (isinstance(horizon, (int, float)) and math.isfinite(horizon) and horizon > 0):
        raise ValueError(f"horizon T={horizon!r} must be a finite number > 0")
    if objective == "finite" and not (deadline is not None and math.isfinite(deadline) and deadline > 0):
        raise ValueError(f"finite-time objective needs a deadline > 0, got {deadline!r}")
    if objective == "weighted" and cdf is None:
        raise ValueError("weighted objective needs a pre-emption-time cdf")
    if max_per_exit is not None and max_per_exit < 1:
        raise ValueError(f"max_per_exit={max_per_exit!r} must be >= 1 or None")
    if not (0.0 <= backbone.final_accuracy <= 1.0):
        raise ValueError(f"backbone final_accuracy={backbone.final_accuracy!r} must be in [0, 1]")
    ids, exits, lat, acc, nbytes, standalone = [], [], [], [], [], []
    seen: set[str] = set()
    for k, r in enumerate(rows):
        missing = [c for c in REQUIRED_COLUMNS if c not in r]
        if missing:
            raise ValueError(f"candidate row {k} is missing column {missing[0]!r}")
        cid = str(r["id"])
        if cid in seen:
            raise ValueError(f"candidate id {cid!r} appears twice")
        seen.add(cid)
        a, t, p = r["accuracy"], r["branch_latency_s"], r["params"]
        if a is None or not isinstance(a, (int, float, np.number)) or not math.isfinite(a) or not 0 <= a <= 1:
            raise ValueError(f"candidate {cid!r}: accuracy={a!r} must be a number in [0, 1] (NaN is not allowed)")
        if t is None or not isinstance(t, (int, float, np.number)) or not math.isfinite(t) or t < 0:
            raise ValueError(f"candidate {cid!r}: branch_latency_s={t!r} must be a finite number >= 0")
        if p is None or not isinstance(p, (int, float, np.number)) or not math.isfinite(p) or p <= 0:
            raise ValueError(f"candidate {cid!r}: params={p!r} must be a number > 0")
        e = int(r["exit"])
        if e not in backbone.exit_time_s:
            raise ValueError(f"candidate {cid!r}: exit={e!r} is not a backbone exit {sorted(backbone.exit_time_s)}")
        b = r.get("bytes")
        b = int(p) * bytes_per_param if b is None or (isinstance(b, float) and math.isnan(b)) else int(b)
        ids.append(cid)
        exits.append(e)
        lat.append(float(t))
        acc.append(float(a))
        nbytes.append(b)
        standalone.append(backbone.exit_time_s[e] + float(t))
    return Problem(ids, exits, lat, acc, nbytes, backbone, float(horizon), objective, deadline, cdf,
                   return_best, max_per_exit, standalone)


def check_budgets(memory_budget: float, search_time_s: float | None = None, node_budget: int | None = None) -> None:
    if isinstance(memory_budget, bool) or not isinstance(memory_budget, (int, float, np.number)) \
            or not math.isfinite(memory_budget) or memory_budget <= 0:
        raise ValueError(f"memory budget M={memory_budget!r} must be a finite number of bytes > 0")
    if search_time_s is not None and not (math.isfinite(search_time_s) and search_time_s > 0):
        raise ValueError(f"search-time budget L_search={search_time_s!r} must be > 0 seconds (or None)")
    if node_budget is not None and (isinstance(node_budget, bool) or int(node_budget) != node_budget or node_budget <= 0):
        raise ValueError(f"node budget={node_budget!r} must be a positive integer (or None)")


def _placement(problem: Problem, variant: str, budget: float, sel: Sequence[int], **kw: Any) -> Placement:
    order, _, _ = exit_finish_times([problem.exits[i] for i in sel], [problem.latency[i] for i in sel],
                                    problem.backbone.exit_time_s, problem.backbone.final_time_s)
    run = [sel[k] for k in order]
    msg = kw.pop("message", "")
    if not msg and problem.n and min(problem.bytes) > budget:
        msg = (f"memory budget M={budget:g} B is below the smallest branch ({min(problem.bytes)} B): "
               "empty placement (single-exit inference)")
    return Placement(variant, float(budget), [problem.ids[i] for i in run], list(run), problem.value(run),
                     problem.memory(run), message=msg, **kw)


# --------------------------------------------------------------------------- Algorithm 1
def greedy_order(problem: Problem) -> tuple[list[int], list[float]]:
    """Algorithm 1: candidate order by greedy gain in unit-memory accuracy expectation, and scores.

    Step k appends the not-yet-appended branch j maximising ``(value(S + j) - value(S)) / bytes_j``
    (ties: lower index); its score is that gain. Budget-free, as in the paper.
    """
    chosen: list[int] = []
    scores: list[float] = []
    left = list(range(problem.n))
    base = problem.value([])
    while left:
        best_j, best_g = left[0], -math.inf
        for j in left:
            g = (problem.value(chosen + [j]) - base) / problem.bytes[j]
            if g > best_g:
                best_j, best_g = j, g
        chosen.append(best_j)
        scores.append(best_g)
        left.remove(best_j)
        base = problem.value(chosen)
    return chosen, scores


# --------------------------------------------------------------------------- convex hull
def upper_envelope(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points on the rising part of the upper convex hull (time up, accuracy up).

    Andrew's monotone chain on (x, y); collinear points are not vertices. Only the part up to the
    most accurate point is kept: points after it are slower and less accurate (dominated)."""
    idx = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    hull: list[int] = []
    for i in idx:
        if hull and points[hull[-1]][0] == points[i][0]:
            continue  # same time, lower or equal accuracy: never on the upper hull
        while len(hull) >= 2:
            (x1, y1), (x2, y2), (x3, y3) = points[hull[-2]], points[hull[-1]], points[i]
            if (x2 - x1) * (y3 - y1) - (y2 - y1) * (x3 - x1) >= 0:  # not a right turn: drop the middle
                hull.pop()
            else:
                break
        hull.append(i)
    if not hull:
        return []
    top = max(range(len(hull)), key=lambda k: (points[hull[k]][1], -points[hull[k]][0]))
    return hull[: top + 1]


def convex_hull_ids(problem: Problem) -> list[int]:
    """Candidates on the upper-left envelope of (time to exit, accuracy), anchored at the origin
    (no answer before t=0) and the original head (the single-exit answer)."""
    pts = [(0.0, 0.0)] + [(problem.standalone_time[i], problem.accuracy[i]) for i in range(problem.n)]
    pts.append((problem.backbone.final_time_s, problem.backbone.final_accuracy))
    return sorted(k - 1 for k in upper_envelope(pts) if 1 <= k <= problem.n)


def hull_refine(order: Sequence[int], hull: Sequence[int]) -> list[int]:
    """Hull branches first, keeping their relative order in ``order``, then the rest."""
    h = set(hull)
    return [i for i in order if i in h] + [i for i in order if i not in h]


# --------------------------------------------------------------------------- Algorithm 2
class _Stop(Exception):
    pass


def first_path(problem: Problem, order: Sequence[int], memory_budget: float) -> list[int]:
    """The first root-to-leaf path of the priority tree: walk ``order``, append a branch when it
    fits (memory, branches per exit) and raises the value."""
    sel: list[int] = []
    p = problem.value(sel)
    for i in order:
        cand = sel + [i]
        if not problem.feasible(cand, memory_budget):
            continue
        v = problem.value(cand)
        if v > p:
            sel, p = cand, v
    return sel


def dfs(problem: Problem, order: Sequence[int], memory_budget: float, *, search_time_s: float | None = None,
        node_budget: int | None = None, prune_nonimproving: bool = True, variant: str = "dfs",
        clock: Callable[[], float] = time.perf_counter) -> Placement:
    """Algorithm 2: priority-based DFS within memory ``M`` and a search budget.

    Children of a node are the branches after it in ``order`` that keep the node feasible, visited
    in priority order; with ``prune_nonimproving`` (the paper's ``node.p > p'``) a child is expanded
    only if it raises the value. The best node seen is returned. The budget is nodes evaluated
    (deterministic) and/or wall-clock seconds (the paper's L_search); with neither and no pruning
    the search is exhaustive."""
    check_budgets(memory_budget, search_time_s, node_budget)
    t0 = clock()
    deadline = None if search_time_s is None else t0 + search_time_s
    state = {"nodes": 0, "stopped": None}
    # The first path of the tree is the greedy answer: take it whole before the budget can bite.
    greedy = first_path(problem, order, memory_budget)
    best: list[Any] = [problem.value(greedy), greedy]
    counts: dict[int, int] = {}
    sel: list[int] = []

    def visit(start: int, mem: int, p: float) -> None:
        for pos in range(start, len(order)):
            i = order[pos]
            m = mem + problem.bytes[i]
            if m > memory_budget:
                continue  # pruning by memory (Alg. 2 lines 15-17)
            e = problem.exits[i]
            if problem.max_per_exit is not None and counts.get(e, 0) >= problem.max_per_exit:
                continue
            if node_budget is not None and state["nodes"] >= node_budget:
                state["stopped"] = "nodes"
                raise _Stop
            if deadline is not None and (state["nodes"] & 63) == 0 and clock() >= deadline:
                state["stopped"] = "time"
                raise _Stop
            state["nodes"] += 1
            sel.append(i)
            v = problem.value(sel)
            if v > best[0]:
                best[0], best[1] = v, list(sel)
            if v > p or not prune_nonimproving:
                counts[e] = counts.get(e, 0) + 1
                visit(pos + 1, m, v)
                counts[e] -= 1
            sel.pop()

    try:
        visit(0, 0, problem.value([]))
    except _Stop:
        pass
    return _placement(problem, variant, memory_budget, best[1], nodes=state["nodes"],
                      search_s=clock() - t0, stopped_by=state["stopped"])


# --------------------------------------------------------------------------- priority variants
def _marginal_gains(problem: Problem, sample: Sequence[int], targets: Sequence[int]) -> np.ndarray:
    """value(S u {j}) - value(S minus {j}) for each j (S = the sample)."""
    out = np.empty(len(targets))
    for k, j in enumerate(targets):
        without = [i for i in sample if i != j]
        out[k] = problem.value(without + [j]) - problem.value(without)
    return out


def monte_carlo_scores(problem: Problem, kind: str, n_samples: int, seed: int,
                       mean_size: float | None = None) -> np.ndarray:
    """Priority scores by Monte-Carlo estimates of each branch's expected marginal gain over random
    sets of other branches (each included independently with probability ``rho = mean_size / n``).

    kind: ``random_unit`` (m1, gain/bytes), ``random_area`` (m2, gain), ``importance_unit`` (m3,
    gain/bytes) and ``importance_unit2`` (m4, gain/bytes^2). The importance variants draw the sets
    from a proposal that includes branch k with probability proportional to its stand-alone unit-memory
    gain (same mean size) and re-weight each sample by p(S)/q(S) (self-normalised)."""
    if n_samples < 1:
        raise ValueError(f"Monte-Carlo samples={n_samples!r} must be >= 1")
    n = problem.n
    if n == 0:
        return np.zeros(0)
    rng = np.random.default_rng(seed)
    n_exits = len(problem.backbone.exit_time_s)
    rho = min(0.5, (mean_size if mean_size is not None else n_exits / 2) / n)
    q = np.full(n, rho)
    importance = kind.startswith("importance")
    if importance:
        base = problem.value([])
        solo = np.array([(problem.value([i]) - base) / problem.bytes[i] for i in range(n)])
        solo = np.clip(solo, 0, None) + 1e-12
        q = np.clip(rho * n * solo / solo.sum(), 0.02, 0.98)
    gains = np.zeros((n_samples, n))
    logw = np.zeros(n_samples)
    for s in range(n_samples):
        x = rng.random(n) < q
        sample = list(np.flatnonzero(x))
        gains[s] = _marginal_gains(problem, sample, range(n))
        if importance:
            logw[s] = np.sum(np.where(x, np.log(rho) - np.log(q), np.log1p(-rho) - np.log1p(-q)))
    w = np.exp(logw - logw.max())
    w /= w.sum()
    mean_gain = w @ gains
    nbytes = np.asarray(problem.bytes, dtype=float)
    if kind in ("random_unit", "importance_unit"):
        return mean_gain / nbytes
    if kind == "random_area":
        return mean_gain
    if kind == "importance_unit2":
        return mean_gain / nbytes**2
    raise ValueError(f"Monte-Carlo score kind={kind!r} is unknown")


MC_KIND = {"m1": "random_unit", "m2": "random_area", "m3": "importance_unit", "m4": "importance_unit2"}


def priority_order(problem: Problem, variant: str, *, mc_samples: int = 100, seed: int = 0) -> list[int]:
    """The candidate order each variant feeds the DFS (m5 walks its order's first path only)."""
    if variant not in VARIANTS:
        raise ValueError(f"priority variant {variant!r} is unknown; choose one of {', '.join(VARIANTS)}")
    if variant == "m0":
        return sorted(range(problem.n), key=lambda i: (problem.bytes[i], i))
    if variant in MC_KIND:
        s = monte_carlo_scores(problem, MC_KIND[variant], mc_samples, seed)
        return sorted(range(problem.n), key=lambda i: (-s[i], i))
    order, _ = greedy_order(problem)
    if variant == "m7":
        order = hull_refine(order, convex_hull_ids(problem))
    return order


def place(problem: Problem, variant: str, memory_budget: float, *, search_time_s: float | None = None,
          node_budget: int | None = None, mc_samples: int = 100, seed: int = 0,
          prune_nonimproving: bool = True, order: Sequence[int] | None = None) -> Placement:
    """One placement by one priority variant (m5: the first path; the others: DFS on their order).
    ``order`` reuses a precomputed priority order (it does not depend on the budget)."""
    check_budgets(memory_budget, search_time_s, node_budget)
    t0 = time.perf_counter()
    if order is None:
        order = priority_order(problem, variant, mc_samples=mc_samples, seed=seed)
    if variant == "m5":
        sel = first_path(problem, order, memory_budget)
        return _placement(problem, variant, memory_budget, sel, search_s=time.perf_counter() - t0)
    res = dfs(problem, order, memory_budget, search_time_s=search_time_s, node_budget=node_budget,
              prune_nonimproving=prune_nonimproving, variant=variant)
    res.search_s = time.perf_counter() - t0
    return res


# --------------------------------------------------------------------------- exact optimum
def _staircases(problem: Problem, run: Sequence[int]) -> list[list[tuple[float, float]]]:
    """For each suffix ``run[k:]`` (plus the final head): the rising staircase of (earliest finish
    time with no delay yet, best accuracy reachable by then). A common delay shifts every time alike,
    so one staircase per suffix serves every node of the search."""
    out: list[list[tuple[float, float]]] = [[] for _ in range(len(run) + 1)]
    events = [(problem.backbone.final_time_s, problem.backbone.final_accuracy)]
    for k in range(len(run), -1, -1):
        if k < len(run):
            i = run[k]
            events.append((problem.backbone.exit_time_s[problem.exits[i]] + problem.latency[i], problem.accuracy[i]))
        stair, best = [], -1.0
        for t, a in sorted(events):
            if a > best:
                stair.append((t, a))
                best = a
        out[k] = stair
    return out


def exact_optimum(problem: Problem, memory_budget: float, *, incumbent: Sequence[int] | None = None,
                  node_limit: int | None = 5_000_000) -> Placement:
    """The optimal feasible placement by branch-and-bound over include/exclude decisions in run
    order (exit, latency), for the anytime and weighted objectives; the finite-time objective is
    solved in closed form (the best single branch done by the deadline). The bound: branches not
    yet decided finish after every decided one and no earlier than with no further delay, so the
    answer at time t is at most the best accuracy any of them (or the head) could have by t.
    Raises RuntimeError if ``node_limit`` is hit (never a silent non-optimum)."""
    check_budgets(memory_budget)
    t0 = time.perf_counter()
    n = problem.n
    if problem.objective == "finite":
        best_sel: list[int] = []
        best_v = problem.value([])
        for i in range(n):
            if problem.bytes[i] <= memory_budget:
                v = problem.value([i])
                if v > best_v:
                    best_v, best_sel = v, [i]
        # one branch suffices: a second one only delays, and "last finished" cannot beat the best
        return _placement(problem, "optimum", memory_budget, best_sel, nodes=n, search_s=time.perf_counter() - t0)
    run = sorted(range(n), key=lambda i: (problem.exits[i], problem.latency[i], i))
    F = problem.cdf if problem.objective == "weighted" else (lambda t: t)
    T = problem.horizon
    FT = F(T)
    norm = FT - F(0.0)
    t_head, a_head = problem.backbone.final_time_s, problem.backbone.final_accuracy
    stairs = _staircases(problem, run)
    inc = list(incumbent) if incumbent is not None and problem.feasible(list(incumbent), memory_budget) else []
    best: list[Any] = [problem.value(inc), sorted(inc)]
    nodes = [0]
    counts: dict[int, int] = {}
    suffix_min_bytes = [math.inf] * (n + 1)
    for k in range(n - 1, -1, -1):
        suffix_min_bytes[k] = min(suffix_min_bytes[k + 1], problem.bytes[run[k]])
    sel: list[int] = []
    rb = problem.return_best

    def closed(delay: float, t_last: float, shown: float, area: float) -> float:
        """Value if no further branch is added: the head closes the profile."""
        tf = t_head + delay
        v = area
        if t_last < T:
            v += shown * (F(min(tf, T)) - F(t_last))
        if tf < T:
            v += (max(shown, a_head) if rb else a_head) * (FT - F(tf))
        return v / norm

    def bound(k: int, delay: float, t_last: float, shown: float, area: float) -> float:
        if t_last >= T:
            return area / norm
        acc, t_prev, v = shown, t_last, area
        for t, a in stairs[k]:
            t = t + delay
            if t >= T:
                break
            if a <= acc:
                continue
            if t > t_prev:
                v += acc * (F(t) - F(t_prev))
                t_prev = t
            acc = a
        v += acc * (FT - F(t_prev))
        return v / norm

    def rec(k: int, mem: int, delay: float, t_last: float, shown: float, area: float) -> None:
        nodes[0] += 1
        if node_limit is not None and nodes[0] > node_limit:
            raise RuntimeError(f"exact optimum: node limit {node_limit} hit with {n} candidates; "
                               "raise placement.exact_node_limit or lower placement.exact_max_candidates")
        v_here = closed(delay, t_last, shown, area)
        if v_here > best[0] + 1e-15:
            best[0], best[1] = v_here, list(sel)
        if k == n or mem + suffix_min_bytes[k] > memory_budget:
            return
        if bound(k, delay, t_last, shown, area) <= best[0] + 1e-15:
            return
        i = run[k]
        e = problem.exits[i]
        if mem + problem.bytes[i] <= memory_budget and (problem.max_per_exit is None
                                                        or counts.get(e, 0) < problem.max_per_exit):
            t_i = problem.backbone.exit_time_s[e] + delay + problem.latency[i]
            seg = shown * (F(min(t_i, T)) - F(t_last)) if t_last < T else 0.0
            new_shown = max(shown, problem.accuracy[i]) if rb else problem.accuracy[i]
            counts[e] = counts.get(e, 0) + 1
            sel.append(i)
            rec(k + 1, mem + problem.bytes[i], delay + problem.latency[i], t_i, new_shown, area + seg)
            sel.pop()
            counts[e] -= 1
        rec(k + 1, mem, delay, t_last, shown, area)

    rec(0, 0, 0.0, 0.0, 0.0, 0.0)
    return _placement(problem, "optimum", memory_budget, best[1], nodes=nodes[0], search_s=time.perf_counter() - t0)


def brute_force(problem: Problem, memory_budget: float) -> tuple[float, list[int]]:
    """Reference optimum by enumerating every subset (tests only; 2^n)."""
    from itertools import combinations

    best_v, best_s = problem.value([]), []
    for r in range(1, problem.n + 1):
        for s in combinations(range(problem.n), r):
            if problem.feasible(s, memory_budget):
                v = problem.value(list(s))
                if v > best_v + 1e-15:
                    best_v, best_s = v, list(s)
    return best_v, best_s


# --------------------------------------------------------------------------- synthetic instances
def synthetic_candidates(n: int, seed: int = 0, n_exits: int = 6) -> tuple[list[dict], Backbone]:
    """A random but plausible candidate table (deeper exits: slower to reach, more accurate;
    bigger branches: slower, a little more accurate) for tests and the benchmark."""
    if n < 0:
        raise ValueError(f"n={n!r} must be >= 0")
    rng = np.random.default_rng(seed)
    stage = rng.uniform(0.5, 1.5, n_exits + 2) * 1e-3
    backbone = Backbone.from_stage_latencies(list(stage), 0.2e-3, 0.9, list(range(1, n_exits + 1)))
    rows = []
    for k in range(n):
        e = int(rng.integers(1, n_exits + 1))
        size = rng.lognormal(0.0, 1.0)
        acc = np.clip(0.35 + 0.5 * e / n_exits + 0.05 * np.log1p(size) + rng.normal(0, 0.05), 0.05, 0.99)
        rows.append({"id": f"b{k}", "exit": e, "branch_latency_s": float(0.15e-3 * size + 0.05e-3),
                     "accuracy": float(acc), "params": int(2000 * size) + 100})
    return rows, backbone


# --------------------------------------------------------------------------- part 1's profiles -> candidates
CANDIDATE_MODES = ("both", "original", "merged")


def candidates_from_profiles(doc: Mapping[str, Any], mode: str = "both") -> tuple[list[dict], Backbone, list[str]]:
    """Candidate rows, the backbone and notes from part 1's ``profiles.json`` document.

    Survivors are the candidates. A self-merged survivor (``merged_params`` set) becomes a second
    candidate ``<id>+merged`` with the merged parameter count and the recovered accuracy
    (``acc_recovered``, else ``acc_merged``); the paper places original and merged branches alike
    (``mode="both"``). A merged branch keeps the original's latency (the same layers run).
    ``score_id`` names the candidate's row in part 1's per-image correctness files (``<id>``,
    ``<id>+recovered`` or ``<id>+merged``); ``accuracy`` is the profile's (val) accuracy."""
    if mode not in CANDIDATE_MODES:
        raise ValueError(f"placement.candidates={mode!r} must be one of {', '.join(CANDIDATE_MODES)}")
    bb = doc["backbone"]
    backbone = Backbone.from_stage_latencies(bb["stage_latency_s"], bb["head_latency_s"], bb["final_accuracy"],
                                             bb["exits"])
    rows, notes = [], []
    n_merged = n_recovered = 0
    survivors = [b for b in doc["branches"] if b.get("survived")]
    for b in survivors:
        base = {"exit": int(b["exit"]), "branch_latency_s": b["branch_latency_s"], "flops": b.get("flops", 0),
                "structure": b.get("structure", ""), "params_unmerged": b["params"], "source": b["id"]}
        has_merge = b.get("merged_params") is not None
        if mode in ("both", "original") or not has_merge:
            rows.append({"id": b["id"], "accuracy": b["accuracy"], "params": b["params"], "merged": False,
                         "score_id": b["id"], **base})
        if mode in ("both", "merged") and has_merge:
            acc = b.get("acc_recovered")
            recovered = acc is not None
            n_recovered += recovered
            acc = acc if recovered else b.get("acc_merged")
            if acc is None:
                notes.append(f"{b['id']}: merged_params without acc_merged/acc_recovered: merged version skipped")
                continue
            n_merged += 1
            rows.append({"id": f"{b['id']}+merged", "accuracy": acc, "params": b["merged_params"], "merged": True,
                         "score_id": f"{b['id']}+{'recovered' if recovered else 'merged'}", **base})
    notes.append(f"{len(survivors)} of {len(doc['branches'])} branches survived part 1; {n_merged} have a "
                 f"self-merged version ({n_recovered} with KD-recovered accuracy, the rest merged accuracy); "
                 f"candidates = {mode}: {len(rows)} rows")
    return rows, backbone, notes
