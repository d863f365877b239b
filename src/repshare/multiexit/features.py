"""Frozen-backbone exit-feature cache.

The backbone stays frozen (MEEdge: "accuracy of branches is constrained by the pre-trained
parameters"), so each exit's feature map is a fixed function of the image: compute it once per
image and train every branch of that exit on the cached maps. One pass also records the final
classifier's logits (the KD teacher, Eq. 2).

Arrays stream batch by batch into ``.npy`` files (``numpy.lib.format.open_memmap``) when an
output folder is given, so a real-mode cache larger than memory never sits in RAM; readers open
them memory-mapped. Without a folder the arrays live in memory (tests, tiny runs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from repshare.features.batching import batch_bounds, to_chw
from repshare.features.stages import num_stages, run_from, run_stages

DTYPES = {"float16": np.float16, "float32": np.float32}


def max_exit(model: nn.Module) -> int:
    """Exits are block stages 1..n-2: the last block stage feeds the original head (the final exit)."""
    return num_stages(model) - 2


def check_exits(model: nn.Module, exits: Sequence[int]) -> list[int]:
    hi = max_exit(model)
    out = []
    for e in exits:
        if isinstance(e, bool) or not isinstance(e, (int, np.integer)) or not 1 <= int(e) <= hi:
            raise ValueError(f"exit index {e!r} out of range for {type(model).__name__} (1..{hi})")
        out.append(int(e))
    if not out:
        raise ValueError("no exits given")
    if len(set(out)) != len(out):
        raise ValueError(f"exits {list(exits)} list an exit twice")
    return sorted(out)


@torch.inference_mode()
def exit_shapes(model: nn.Module, pre: nn.Module | None, image_hw: Sequence[int], exits: Sequence[int],
                device: str | torch.device = "cpu") -> dict[int, tuple[int, int, int]]:
    """(C, H, W) of each exit's feature map for raw images of size ``image_hw``."""
    exits = check_exits(model, exits)
    x = torch.zeros(1, 3, int(image_hw[0]), int(image_hw[1]), dtype=torch.uint8, device=device)
    x = pre(x) if pre is not None else x.float()
    outs = run_stages(model.eval(), x, max(exits))
    return {e: tuple(int(v) for v in outs[e].shape[1:]) for e in exits}


@dataclass
class FeatureCache:
    """Exit feature maps (N, C, H, W), teacher logits (N, K) and labels (N,) of one image set."""

    features: dict[int, np.ndarray]
    logits: np.ndarray
    labels: np.ndarray
    folder: Path | None = None
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def tensor(self, exit_: int, index: np.ndarray | slice | None = None) -> torch.Tensor:
        """float32 tensor of exit ``exit_`` for rows ``index`` (sorted reads are fastest on a memmap)."""
        if exit_ not in self.features:
            raise KeyError(f"exit {exit_} not in the feature cache (have {sorted(self.features)})")
        arr = self.features[exit_]
        part = arr if index is None else arr[index]
        return torch.from_numpy(np.array(part, dtype=np.float32))  # a writable float32 copy

    def subset(self, index: np.ndarray) -> "FeatureCache":
        """In-memory copy of rows ``index`` (few-shot subsets, holdouts)."""
        index = np.sort(np.asarray(index))
        return FeatureCache({e: np.ascontiguousarray(a[index]) for e, a in self.features.items()},
                            self.logits[index].copy(), self.labels[index].copy(), None, dict(self.meta))


@torch.inference_mode()
def extract_features(
    model: nn.Module,
    pre: nn.Module | None,
    images: np.ndarray,
    labels: np.ndarray,
    exits: Sequence[int],
    batch_size: int = 200,
    folder: str | Path | None = None,
    dtype: str = "float16",
    device: str | torch.device = "cpu",
) -> FeatureCache:
    """Run the frozen ``model`` once over ``images`` (N, H, W, 3 uint8); cache the exits' maps.

    With ``folder`` each array is written straight into ``<folder>/exit<e>.npy`` (memmap) batch
    by batch, plus ``logits.npy`` and ``labels.npy``; the returned cache reads them memory-mapped.
    """
    if dtype not in DTYPES:
        raise ValueError(f"feature cache dtype {dtype!r} must be one of {', '.join(DTYPES)}")
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if len(images) == 0:
        raise ValueError("no images to cache features for")
    exits = check_exits(model, exits)
    device = torch.device(device)
    model = model.to(device).eval()
    pre = pre.to(device) if pre is not None else None
    n = len(images)
    shapes = exit_shapes(model, pre, images.shape[1:3], exits, device)
    np_dtype = DTYPES[dtype]
    folder = Path(folder) if folder is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)

    def alloc(name: str, shape: tuple, dt) -> np.ndarray:
        if folder is None:
            return np.empty(shape, dt)
        return np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=dt, shape=shape)

    feats = {e: alloc(f"exit{e}", (n, *shapes[e]), np_dtype) for e in exits}
    logits = None
    last = num_stages(model) - 1
    for a, b in batch_bounds(n, batch_size, name="multiexit.features.batch_size"):
        x = to_chw(images[a:b]).to(device)
        x = pre(x) if pre is not None else x.float()
        outs = run_stages(model, x)
        for e in exits:
            feats[e][a:b] = outs[e].cpu().numpy().astype(np_dtype, copy=False)
        out = run_from(model, outs[last], last).float().cpu().numpy()
        if logits is None:
            logits = alloc("logits", (n, out.shape[1]), np.float32)
        logits[a:b] = out
    labels_arr = np.asarray(labels, dtype=np.int64)
    if folder is None:
        return FeatureCache(feats, logits, labels_arr, None, {"dtype": dtype, "shapes": shapes})
    for arr in (*feats.values(), logits):
        arr.flush()
    np.save(folder / "labels.npy", labels_arr)
    del feats, logits
    return open_cache(folder, exits, meta={"dtype": dtype, "shapes": shapes})


def open_cache(folder: str | Path, exits: Sequence[int], meta: dict | None = None) -> FeatureCache:
    """Open a cache written by :func:`extract_features` (arrays memory-mapped, nothing loaded).

    A file that is not a plain numeric ``.npy`` array (a garbage header, an object array) or whose
    row count disagrees with the labels gives one line naming it; nothing is ever unpickled.
    """
    folder = Path(folder)
    need = [folder / f"exit{e}.npy" for e in exits] + [folder / "logits.npy", folder / "labels.npy"]
    for p in need:
        if not p.is_file():
            raise FileNotFoundError(f"feature cache file missing: {p} (run the branches stage first)")

    def load(path: Path, mmap: bool) -> np.ndarray:
        try:
            arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (ValueError, OSError, EOFError):
            raise ValueError(f"feature cache file {path} is not a readable numeric .npy array: "
                             "rerun the branches stage") from None
        if not isinstance(arr, np.ndarray) or arr.dtype.hasobject:
            raise ValueError(f"feature cache file {path} is not a numeric array: rerun the branches stage")
        return arr

    feats = {int(e): load(folder / f"exit{e}.npy", True) for e in exits}
    logits, labels = load(folder / "logits.npy", True), load(folder / "labels.npy", False)
    for name, arr in [*((f"exit{e}.npy", a) for e, a in feats.items()), ("logits.npy", logits)]:
        if len(arr) != len(labels):
            raise ValueError(f"feature cache file {folder / name} has {len(arr)} rows but labels.npy has "
                             f"{len(labels)}: rerun the branches stage")
    return FeatureCache(feats, logits, labels, folder, dict(meta or {}))
