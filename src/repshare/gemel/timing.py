"""Inputs of the time-sharing simulation: which tensors each model holds, and its load/run times.

Load and run times come from a deterministic cost model by default (issue 29: frames processed must
not depend on the wall clock): load = the model's weight bytes over an effective loading bandwidth,
run = a fixed per-frame overhead plus its FLOPs over an effective throughput. The constants describe
an edge GPU (config ``gemel.sim.cost``; docs/methods/gemel.md says where they come from). Measuring
on the machine that runs the stage is an option (``gemel.sim.timing: measured``), reported with the
spread of its repeats.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from repshare.gemel.layers import LayerInstance
from repshare.gemel.models import Member
from repshare.models.flops import count_flops


@dataclass(frozen=True)
class CostModel:
    load_gb_per_s: float  # effective weight-loading bandwidth onto the accelerator, 1e9 bytes/s
    tflops: float  # effective inference throughput, 1e12 FLOP/s
    run_overhead_ms: float  # fixed cost of one frame (kernel launches, pre/post-processing)

    def __post_init__(self) -> None:
        if not (self.load_gb_per_s > 0 and self.tflops > 0 and self.run_overhead_ms >= 0):
            raise ValueError(f"gemel.sim.cost: load_gb_per_s={self.load_gb_per_s} and tflops={self.tflops} must be "
                             f"> 0, run_overhead_ms={self.run_overhead_ms} >= 0")

    def load_ms(self, nbytes: int) -> float:
        return 1e3 * nbytes / (self.load_gb_per_s * 1e9)

    def run_ms(self, flops: int) -> float:
        return self.run_overhead_ms + 1e3 * flops / (self.tflops * 1e12)


def tensor_map(models: dict[str, torch.nn.Module]) -> dict[str, dict[str, int]]:
    """Per model: tensor id -> bytes; a tensor held by several models has one id."""
    ids: dict[int, str] = {}
    out = {}
    for name, model in models.items():
        out[name] = {}
        for key, t in model.state_dict(keep_vars=True).items():
            tid = ids.setdefault(id(t), f"{name}/{key}")
            out[name][tid] = t.numel() * t.element_size()
    return out


def tied_tensor_map(unmerged: dict[str, dict[str, int]], instances: Iterable[LayerInstance]) -> dict[str, dict[str, int]]:
    """The tensor map of the workload after tying ``instances``, from the unmerged map (ids ``model/key``)
    alone: each instance's weight and bias become one tensor ``shared/<instance>.<attr>``."""
    rename: dict[str, str] = {}
    for inst in instances:
        for attr in ("weight", "bias"):
            for model, path in inst.members.items():
                key = f"{model}/{path}.{attr}" if path else f"{model}/{attr}"
                if key in unmerged.get(model, {}):
                    rename[key] = f"shared/{inst.index}.{attr}"
    return {m: {rename.get(k, k): b for k, b in tensors.items()} for m, tensors in unmerged.items()}


def frame_flops(model: torch.nn.Module, member: Member, image_size: int) -> int:
    """FLOPs of one frame through the model's own preprocessing (resize + normalise: no FLOPs counted)."""
    x = torch.zeros(1, 3, image_size, image_size, dtype=torch.uint8)
    pre = member.pre.cpu()
    return count_flops(lambda t: model.cpu().eval()(pre(t)), x)


def modelled_times(sizes: dict[str, int], flops: dict[str, int], cost: CostModel) -> tuple[dict[str, float], dict[str, float]]:
    """(load ms, run ms per frame) per model from the cost model."""
    return ({n: cost.load_ms(b) for n, b in sizes.items()}, {n: cost.run_ms(flops[n]) for n in sizes})


@torch.inference_mode()
def measure_times(models: dict[str, torch.nn.Module], members: dict[str, Member], weight_files: dict[str, Path],
                  n: int, device, image_size: int) -> dict[str, tuple[list[float], list[float]]]:
    """Per model, ``n`` timings on this machine: (load ms, run ms per frame); load = read its safetensors
    file onto ``device``; run = one frame at the prepared image size (after one warm-up frame)."""
    from safetensors.torch import load_file

    out = {}
    for name, model in models.items():
        loads = []
        for _ in range(n):
            t0 = time.perf_counter()
            state = load_file(str(weight_files[name]), device=str(device))
            if device.type == "cuda":
                torch.cuda.synchronize()
            loads.append(1000 * (time.perf_counter() - t0))
            del state
        m, pre = model.to(device).eval(), members[name].pre.to(device)
        x = torch.zeros(1, 3, image_size, image_size, dtype=torch.uint8, device=device)
        m(pre(x))  # warm-up
        runs = []
        for _ in range(n):
            t0 = time.perf_counter()
            m(pre(x))
            if device.type == "cuda":
                torch.cuda.synchronize()
            runs.append(1000 * (time.perf_counter() - t0))
        out[name] = (loads, runs)
        model.cpu()
    return out


def medians(samples: dict[str, tuple[list[float], list[float]]]) -> tuple[dict[str, float], dict[str, float]]:
    return ({n: statistics.median(s[0]) for n, s in samples.items()},
            {n: statistics.median(s[1]) for n, s in samples.items()})
