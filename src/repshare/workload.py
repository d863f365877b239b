"""The workload: the models that run side by side on one edge box (config group ``workload``).

Pure helpers over the composed config's ``workload`` node and the weight files the training
stages write; every method uses them so "bytes of the whole workload" means the same thing in
every comparison row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from safetensors import safe_open

TASKS = ("classification", "detection")


@dataclass(frozen=True)
class WorkloadModel:
    name: str  # key: results/models/<name>/, results/metrics/<name>.json, cfg.model.<name>
    task: str  # classification | detection
    metric: str  # top1 | mAP


def workload_models(workload_cfg) -> list[WorkloadModel]:
    """The workload's models from its config node (a DictConfig or a plain dict)."""
    models = [WorkloadModel(str(m["name"]), str(m["task"]), str(m["metric"])) for m in workload_cfg["models"]]
    names = [m.name for m in models]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ValueError(f"workload.models names {sorted(dup)[0]!r} twice")
    for m in models:
        if m.task not in TASKS:
            raise ValueError(f"workload model {m.name!r}: task {m.task!r} is not one of {', '.join(TASKS)}")
    return models


def weight_bytes(weights_file: str | Path) -> int:
    """Bytes of the parameters and buffers stored in a safetensors file (from its header: no tensor is read).

    ValueError names the file when it is missing, truncated or not a safetensors file.
    """
    from safetensors import SafetensorError

    total = 0
    try:
        with safe_open(str(weights_file), framework="pt") as f:
            for key in f.keys():
                t = f.get_slice(key)
                n = 1
                for s in t.get_shape():
                    n *= s
                total += n * _dtype_bytes(t.get_dtype())
    except FileNotFoundError:
        raise FileNotFoundError(f"missing weight file {weights_file}") from None
    except (SafetensorError, OSError, KeyError) as err:
        raise ValueError(f"unreadable weight file {weights_file}: not a complete safetensors file "
                         f"({str(err).splitlines()[0][:100] if str(err) else type(err).__name__})") from None
    return total


def workload_bytes(results_dir: str | Path, models: list[WorkloadModel]) -> dict[str, int]:
    """Weight bytes of each workload model, from ``<results_dir>/models/<name>/model.safetensors``.

    The one denominator of every "% of the workload's weight bytes": every model must have its file
    (FileNotFoundError names the missing one and its stage); a method never counts a subset.
    """
    out = {}
    for m in models:
        f = Path(results_dir) / "models" / m.name / "model.safetensors"
        if not f.is_file():
            raise FileNotFoundError(f"no weights of workload model {m.name!r} at {f}: run its training stage "
                                    f"(train_{m.name}) first")
        out[m.name] = weight_bytes(f)
    return out


def _dtype_bytes(dtype: str) -> int:
    return {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}[dtype]
