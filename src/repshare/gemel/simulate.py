"""The edge box's GPU time-sharing (Gemel §2, reference ``scheduler.py``), as a small
deterministic event simulation.

Every model watches its own stream of frames (``fps``). Models take turns round-robin; a model
whose weights are not resident is loaded first, evicting the least recently used models until
its weights fit the memory budget. Merged models share tensors: only the bytes not already
resident are loaded (fewer swaps, and faster ones). A frame whose turn starts more than
``sla_ms`` after it arrived is dropped. Activation memory is not modelled (weights only).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SimModel:
    name: str
    tensors: dict[str, int]  # tensor id -> bytes; a tensor shared by merged models has one id
    load_ms: float  # loading the whole model onto the device
    run_ms: float  # one frame

    @property
    def bytes(self) -> int:
        return sum(self.tensors.values())


@dataclass
class SimResult:
    budget_bytes: int
    frames_total: int
    processed: int
    dropped: int
    loads: int
    load_ms: float  # total time spent loading
    processed_per_model: dict[str, int] = field(default_factory=dict)

    @property
    def processed_pct(self) -> float:
        return 100.0 * self.processed / max(1, self.frames_total)


def _resident_bytes(models: dict[str, SimModel], resident: list[str]) -> int:
    held: dict[str, int] = {}
    for name in resident:
        held.update(models[name].tensors)
    return sum(held.values())


def _missing_bytes(model: SimModel, models: dict[str, SimModel], resident: list[str]) -> int:
    held = {t for name in resident for t in models[name].tensors}
    return sum(b for t, b in model.tensors.items() if t not in held)


def simulate(models: list[SimModel], budget_bytes: int, fps: float, sla_ms: float, duration_s: float,
             batch_size: int = 1) -> SimResult:
    if not models:
        raise ValueError("simulate: no models")
    largest = max(models, key=lambda m: m.bytes)
    if budget_bytes < largest.bytes:
        raise ValueError(f"memory budget {budget_bytes} bytes is smaller than the largest model "
                         f"({largest.name}, {largest.bytes} bytes): it can never run")
    if fps <= 0 or sla_ms < 0 or duration_s <= 0 or batch_size < 1:
        raise ValueError(f"simulate: fps={fps}, sla_ms={sla_ms}, duration_s={duration_s}, batch_size={batch_size} "
                         "must be > 0 (sla_ms >= 0)")
    by_name = {m.name: m for m in models}
    n_frames = int(math.floor(duration_s * fps + 1e-9))
    period = 1000.0 / fps
    nxt = {m.name: 0 for m in models}  # first frame neither processed nor dropped
    done = {m.name: 0 for m in models}
    dropped, loads, load_total, t = 0, 0, 0.0, 0.0
    resident: list[str] = []  # least recently used first

    def expire(name: str) -> None:
        nonlocal dropped
        while nxt[name] < n_frames and nxt[name] * period + sla_ms < t:
            nxt[name] += 1
            dropped += 1

    while any(k < n_frames for k in nxt.values()):
        worked = False
        for m in models:
            expire(m.name)
            if nxt[m.name] >= n_frames or nxt[m.name] * period > t:
                continue  # nothing has arrived for this model yet
            if m.name not in resident:
                while _resident_bytes(by_name, resident + [m.name]) > budget_bytes:
                    resident.pop(0)  # evict the least recently used
                need = _missing_bytes(m, by_name, resident)
                ms = m.load_ms * need / max(1, m.bytes)
                t += ms
                load_total += ms
                loads += 1
                resident.append(m.name)
            else:
                resident.remove(m.name)
                resident.append(m.name)
            expire(m.name)
            k = 0
            while k < batch_size and nxt[m.name] < n_frames and nxt[m.name] * period <= t:
                nxt[m.name] += 1
                k += 1
            t += m.run_ms * k
            done[m.name] += k
            worked = True
        if not worked:
            pending = [nxt[n] * period for n in nxt if nxt[n] < n_frames]
            if pending:
                t = max(t, min(pending))
    processed = sum(done.values())
    return SimResult(int(budget_bytes), n_frames * len(models), processed, dropped, loads, round(load_total, 3),
                     dict(done))


@dataclass(frozen=True)
class SimSettings:
    """The simulated edge box (config ``gemel.sim``)."""

    fps: float = 30.0
    sla_ms: float = 100.0
    duration_s: float = 10.0
    batch_size: int = 4


def budgets(sizes: dict[str, int], budgets_mb: Sequence[float] | None, fractions: Sequence[float]) -> list[int]:
    """Memory budgets in bytes: ``budgets_mb`` as given (each must hold the largest model), else
    ``largest + f x (total - largest)`` for each fraction f (0 = the largest model, 1 = everything)."""
    largest, total = max(sizes.values()), sum(sizes.values())
    if budgets_mb is not None:
        small = [b for b in budgets_mb if b * 2**20 < largest]
        if small:
            raise ValueError(f"config value gemel.sim.budgets_mb={list(budgets_mb)!r} is invalid: {small[0]} MB "
                             f"is smaller than the largest model ({largest / 2**20:.2f} MB)")
        return [int(round(b * 2**20)) for b in budgets_mb]
    return [int(round(largest + f * (total - largest))) for f in fractions]


def sweep(settings: Sequence[tuple[str, dict[str, dict[str, int]]]], load_ms: dict[str, float],
          run_ms: dict[str, float], budget_list: Sequence[int], sim: SimSettings) -> list[dict]:
    """One simulation per (budget, setting); ``settings`` = (name, tensor map) with "unmerged" first.
    Each row also gives the % more frames processed than unmerged at the same budget."""
    rows = []
    for budget in budget_list:
        for setting, tmap in settings:
            models = [SimModel(n, tmap[n], load_ms[n], run_ms[n]) for n in tmap]
            r = simulate(models, budget, sim.fps, sim.sla_ms, sim.duration_s, sim.batch_size)
            rows.append({"setting": setting, "budget_mb": round(budget / 2**20, 3), "processed": r.processed,
                         "dropped": r.dropped, "frames": r.frames_total, "processed_pct": round(r.processed_pct, 2),
                         "loads": r.loads, "load_ms": r.load_ms})
    for row in rows:
        ref = next(s for s in rows if s["setting"] == "unmerged" and s["budget_mb"] == row["budget_mb"])
        row["more_frames_pct"] = round(100.0 * (row["processed"] - ref["processed"]) / max(1, ref["processed"]), 2)
    return rows
