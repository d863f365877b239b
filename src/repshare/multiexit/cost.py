"""Batch-1 latency of backbone stages and branches: a deterministic cost model by default, measured
wall-clock time as an option.

Survival ("returns before the single-exit inference ends") and placement's mAE depend on latency.
Measured times differ from run to run (and with the load of a shared machine), so a decision or a
verdict resting on them could flip on the same inputs. The default is therefore a cost model:

    seconds = call_overhead_s + flops / flops_per_s

with FLOPs from :func:`repshare.models.flops.count_flops` (a multiply-add counts 2) and the two
constants in ``multiexit.latency`` (documented in docs/methods/meedge.md, with how they were
calibrated). ``multiexit.latency.source=measured`` times every call instead (median of
``repeats`` after ``warmup``) and reports the spread (interquartile range) beside it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from repshare.models.flops import count_flops

SOURCES = ("flops", "measured")


@dataclass(frozen=True)
class CostModel:
    """Latency of one call from its FLOPs: ``call_overhead_s + flops / flops_per_s``."""

    flops_per_s: float
    call_overhead_s: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.flops_per_s) and self.flops_per_s > 0):
            raise ValueError(f"multiexit.latency.flops_per_s={self.flops_per_s!r} must be a finite number > 0")
        if not (math.isfinite(self.call_overhead_s) and self.call_overhead_s >= 0):
            raise ValueError(f"multiexit.latency.call_overhead_s={self.call_overhead_s!r} must be a finite number >= 0")

    def seconds(self, flops: float) -> float:
        return float(self.call_overhead_s + float(flops) / self.flops_per_s)

    def to_dict(self) -> dict[str, float]:
        return {"flops_per_s": self.flops_per_s, "call_overhead_s": self.call_overhead_s}


def cost_model(latency: Mapping[str, Any]) -> CostModel:
    """The cost model of a ``multiexit.latency`` mapping (keys ``flops_per_s``, ``call_overhead_s``)."""
    return CostModel(float(latency["flops_per_s"]), float(latency["call_overhead_s"]))


@dataclass(frozen=True)
class Timing:
    median_s: float
    spread_s: float  # interquartile range of the timed calls


@torch.inference_mode()
def measure_latency(fn: Callable[[torch.Tensor], Any], x: torch.Tensor, repeats: int = 30, warmup: int = 3) -> Timing:
    """Median and interquartile range of ``fn(x)`` over ``repeats`` calls (after ``warmup`` untimed calls)."""
    if repeats < 1:
        raise ValueError(f"multiexit.latency.repeats={repeats!r} must be >= 1")
    if warmup < 0:
        raise ValueError(f"multiexit.latency.warmup={warmup!r} must be >= 0")
    for _ in range(warmup):
        fn(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    q1, med, q3 = np.percentile(times, [25, 50, 75])
    return Timing(float(med), float(q3 - q1))


class Latency:
    """Latency of a call on one input, by the cost model or measured (``source``)."""

    def __init__(self, source: str, model: CostModel, repeats: int = 30, warmup: int = 3):
        if source not in SOURCES:
            raise ValueError(f"multiexit.latency.source={source!r} must be one of {', '.join(SOURCES)}")
        self.source, self.model, self.repeats, self.warmup = source, model, int(repeats), int(warmup)

    def __call__(self, fn: Callable[[torch.Tensor], Any], x: torch.Tensor, flops: int | None = None) -> Timing:
        if self.source == "measured":
            return measure_latency(fn, x, self.repeats, self.warmup)
        return Timing(self.model.seconds(count_flops(fn, x) if flops is None else flops), 0.0)


@torch.inference_mode()
def backbone_timings(model: nn.Module, x1: torch.Tensor, latency: Latency) -> tuple[list[Timing], Timing, list[int], int]:
    """(per-stage timings for stem, stage 1..N; head timing; per-stage FLOPs; head FLOPs) at batch 1."""
    from repshare.features.stages import run_from, stage_modules

    model.eval()
    x = x1[:1]
    stages, flops = [], []
    for stage in stage_modules(model):
        f = count_flops(stage, x)
        stages.append(latency(stage, x, f))
        flops.append(f)
        x = stage(x)
    last = len(stage_modules(model)) - 1
    head = lambda t: run_from(model, t, last)  # noqa: E731
    head_flops = count_flops(head, x)
    return stages, latency(head, x, head_flops), flops, head_flops
