"""Memory-elastic inference (MEEdge section 3.4): the device-server loop over a trace of memory
budgets, simulated in closed form.

Model (the paper describes the components, not a timing model; this is ours):

* the trace is a list of ``(t_s, memory_budget_bytes)`` changes, strictly time-ordered, starting at
  the first entry's time and ending at ``end_s``; the device starts with no branch loaded;
* at a change the device sends (latency budget, memory budget) to the server (``request_bits / R``),
  the server places branches for the new budget (it uses its whole search budget ``L_search``, as
  DFS does unless the tree is exhausted: a deterministic, pessimistic adaptation time) and sends
  the branches the device does not hold yet (``8 * bytes / R``);
* the device drops the branches outside the new placement at once (memory must fit immediately)
  and runs with the ones it keeps until the transfer is complete, then with the whole new placement;
  a transfer still running at the next change is abandoned;
* the device serves inferences back to back; each inference's expected accuracy is the value of the
  loaded placement (anytime mAE or finite-time accuracy, as the problem's objective says), so the
  trace's mAE is the time average of the placement values over the phases.

A static model (a baseline's fixed branch set) never adapts: when its branches do not fit the
budget it runs single-exit (the backbone, whose memory the budget trace always leaves free).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from repshare.multiexit.placement import Problem

RATE_BPS = 85e6  # the paper's average Wi-Fi rate, 85 Mbit/s


@dataclass
class Phase:
    t0: float
    t1: float
    memory_budget: float
    selected: list[str]
    memory_bytes: int
    value: float
    adapting: bool


@dataclass
class Window:
    t0: float
    t1: float
    memory_budget: float
    selected: list[str]
    bytes_sent: int
    adaptation_s: float
    completed: bool
    value: float  # time-averaged value over the window


@dataclass
class TraceResult:
    phases: list[Phase]
    windows: list[Window]
    mean_value: float  # time-averaged over the whole trace
    adaptation_s_total: float
    bytes_sent_total: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_trace(trace: Sequence[tuple[float, float]], end_s: float) -> list[tuple[float, float]]:
    """Validate ``[(t_s, budget_bytes), ...]``: finite, strictly increasing times before ``end_s``,
    budgets > 0. The error names the bad entry."""
    out = []
    if not trace:
        raise ValueError("memory trace is empty")
    for k, item in enumerate(trace):
        try:
            t, m = float(item[0]), float(item[1])
        except (TypeError, ValueError, IndexError):
            raise ValueError(f"memory trace entry {k} = {item!r} is not a (time_s, budget_bytes) pair") from None
        if not math.isfinite(t):
            raise ValueError(f"memory trace entry {k}: time {t!r} is not finite")
        if not (math.isfinite(m) and m > 0):
            raise ValueError(f"memory trace entry {k}: budget {m!r} must be a finite number of bytes > 0")
        if out and t <= out[-1][0]:
            raise ValueError(f"memory trace is not time-ordered: entry {k} at t={t} s comes after t={out[-1][0]} s")
        out.append((t, m))
    if not (math.isfinite(end_s) and end_s > out[-1][0]):
        raise ValueError(f"trace end {end_s!r} s must come after the last change at t={out[-1][0]} s")
    return out


def _finish(phases: list[Phase], windows: list[Window]) -> TraceResult:
    span = sum(p.t1 - p.t0 for p in phases)
    mean = sum((p.t1 - p.t0) * p.value for p in phases) / span if span > 0 else 0.0
    return TraceResult(phases, windows, mean, sum(w.adaptation_s for w in windows),
                       sum(w.bytes_sent for w in windows))


def simulate_elastic(problem: Problem, trace: Sequence[tuple[float, float]], end_s: float,
                     placer: Callable[[float], Sequence[int]], *, rate_bps: float = RATE_BPS,
                     request_bits: int = 64, search_time_s: float = 0.0) -> TraceResult:
    """MEEdge's loop: ``placer(M)`` returns the candidate indices the server selects for budget M."""
    trace = check_trace(trace, end_s)
    if not (math.isfinite(rate_bps) and rate_bps > 0):
        raise ValueError(f"transfer rate R={rate_bps!r} bit/s must be > 0")
    if request_bits < 0 or search_time_s < 0:
        raise ValueError(f"request_bits={request_bits!r} and search_time_s={search_time_s!r} must be >= 0")
    held: set[int] = set()
    phases: list[Phase] = []
    windows: list[Window] = []
    for k, (t0, budget) in enumerate(trace):
        t1 = trace[k + 1][0] if k + 1 < len(trace) else end_s
        new = list(placer(budget))
        if problem.memory(new) > budget:
            raise ValueError(f"placer returned {problem.memory(new)} B for a budget of {budget:g} B at t={t0} s")
        kept = [i for i in new if i in held]
        to_send = [i for i in new if i not in held]
        sent = problem.memory(to_send)
        adapt = request_bits / rate_bps + search_time_s + 8 * sent / rate_bps
        t_ready = t0 + adapt
        done = t_ready < t1
        ids = lambda sel: [problem.ids[i] for i in sel]  # noqa: E731
        win_phases = [Phase(t0, min(t_ready, t1), budget, ids(kept), problem.memory(kept), problem.value(kept), True)]
        if done:
            win_phases.append(Phase(t_ready, t1, budget, ids(new), problem.memory(new), problem.value(new), False))
        win_phases = [p for p in win_phases if p.t1 > p.t0]
        phases += win_phases
        val = sum((p.t1 - p.t0) * p.value for p in win_phases) / (t1 - t0)
        windows.append(Window(t0, t1, budget, ids(new), sent, adapt, done, val))
        held = set(new) if done else set(kept)
    return _finish(phases, windows)


def simulate_static(problem: Problem, trace: Sequence[tuple[float, float]], end_s: float,
                    selected: Sequence[int]) -> TraceResult:
    """A fixed multi-exit model: its branches while they fit the budget, single-exit otherwise
    (loaded once before the trace starts, so no adaptation time is charged)."""
    trace = check_trace(trace, end_s)
    selected = list(selected)
    need = problem.memory(selected)
    phases, windows = [], []
    for k, (t0, budget) in enumerate(trace):
        t1 = trace[k + 1][0] if k + 1 < len(trace) else end_s
        sel = selected if need <= budget else []
        p = Phase(t0, t1, budget, [problem.ids[i] for i in sel], problem.memory(sel), problem.value(sel), False)
        phases.append(p)
        windows.append(Window(t0, t1, budget, p.selected, 0, 0.0, True, p.value))
    return _finish(phases, windows)
