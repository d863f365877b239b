"""Gemel's incremental heaviest-first merge search (reference ``Incremental_Greedy_Algorithm``).

Each iteration adds one trial (a group, or half of a failed one) to everything already merged
and asks ``try_merge`` whether the models still meet their accuracy targets. On failure the first
half of the failed trial is retried unless it saves less than the next group, in which case the
search moves on (reference behaviour). When the groups run out the search stops cleanly (the
reference indexes past the end of its list and crashes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from repshare.gemel.layers import Group, LayerInstance

# try_merge(already merged, trial) -> (accepted, anything to record about the trial)
TryMerge = Callable[[list[LayerInstance], list[LayerInstance]], tuple[bool, dict[str, Any]]]


@dataclass
class Iteration:
    index: int
    group: int  # index of the group the trial comes from
    halved: int  # 0 = the whole group, k = its first 1/2**k
    instances: list[int]  # layer instance ids tried
    trial_bytes: int  # bytes the trial would save
    cumulative_bytes: int  # bytes saved by everything merged after this iteration
    accepted: bool
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class SearchResult:
    iterations: list[Iteration]
    merged: list[LayerInstance]  # every accepted instance, in merge order
    stop_reason: str  # "groups exhausted" | "max_iterations reached" | "no shareable layers"


def _saving(instances: list[LayerInstance]) -> int:
    return sum(i.saving for i in instances)


def search(groups: list[Group], try_merge: TryMerge, max_iterations: int) -> SearchResult:
    if max_iterations < 1:
        raise ValueError(f"max_iterations={max_iterations} must be >= 1")
    if not groups:
        return SearchResult([], [], "no shareable layers")
    merged: list[LayerInstance] = []
    iterations: list[Iteration] = []
    next_group = 0
    trial: list[LayerInstance] | None = None
    group, halved = -1, 0
    while len(iterations) < max_iterations:
        if trial is None:
            if next_group >= len(groups):
                return SearchResult(iterations, merged, "groups exhausted")
            group, halved = groups[next_group].index, 0
            trial = list(groups[next_group].instances)
            next_group += 1
        ok, info = try_merge(list(merged), list(trial))
        if ok:
            merged += trial
        iterations.append(Iteration(len(iterations), group, halved, [i.index for i in trial], _saving(trial),
                                    _saving(merged), bool(ok), dict(info)))
        if ok:
            trial = None
            continue
        half = trial[: len(trial) // 2]
        next_saving = groups[next_group].saving if next_group < len(groups) else 0
        if half and _saving(half) >= next_saving:
            trial, halved = half, halved + 1  # retry the first half
        else:
            trial = None  # move on to the next group
    more = trial is not None or next_group < len(groups)
    return SearchResult(iterations, merged, "max_iterations reached" if more else "groups exhausted")
