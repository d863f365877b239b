"""Prepared-data format: per split, numbered ``.npz`` shards plus one ``manifest.json``.

A shard holds ``images`` (uint8 N,H,W,3), ``labels`` (int64 N), and the boxes as CSR arrays
(``boxes`` float32 M,4 xyxy pixels, ``box_classes`` int64 M, ``box_offsets`` int64 N+1, local to
the shard). The manifest records counts, every shard's sha256 and the config, so a corrupted or
truncated shard is caught by name when a later stage loads it.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from repshare.data.shard_images import ShardedImages
from repshare.utils.io import read_json, sha256_file, write_json

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


@dataclass
class Split:
    """One split in memory (same fields as ``ShapeSet``)."""

    images: np.ndarray  # or a ShardedImages (load_split(lazy=True)): read from the shards when indexed
    labels: np.ndarray
    boxes: np.ndarray
    box_classes: np.ndarray
    box_offsets: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    color_labels: np.ndarray | None = None  # shapes only: the largest object's colour (second label)

    def __len__(self) -> int:
        return len(self.labels)

    def boxes_of(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.box_offsets[n], self.box_offsets[n + 1]
        return self.boxes[a:b], self.box_classes[a:b]


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """``np.savez`` with fixed zip timestamps: the same arrays give the same bytes, so DVC's hash stays put.

    (np.savez stamps every member with the wall-clock time, so identical data got a new hash on each run.)
    """
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, value in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=False)


def write_split(root: Path, split: str, data: Any, shard_size: int) -> dict[str, Any]:
    """Write ``data`` (anything with Split's fields) as shards under ``root``; return its manifest entry."""
    root.mkdir(parents=True, exist_ok=True)
    n = len(data.labels)
    files = []
    for k, start in enumerate(range(0, max(n, 1), shard_size)):
        stop = min(start + shard_size, n)
        a, b = int(data.box_offsets[start]), int(data.box_offsets[stop])
        path = root / f"{split}-{k:05d}.npz"
        color = getattr(data, "color_labels", None)
        extra = {} if color is None else {"color_labels": color[start:stop]}  # shapes only
        save_npz(
            path,
            **extra,
            images=data.images[start:stop],
            labels=data.labels[start:stop],
            boxes=data.boxes[a:b],
            box_classes=data.box_classes[a:b],
            box_offsets=data.box_offsets[start : stop + 1] - a,
        )
        files.append({"file": path.name, "n": stop - start, "sha256": sha256_file(path)})
    h, w = data.images.shape[1:3]
    return {"n": n, "n_boxes": int(len(data.boxes)), "image_size": [int(h), int(w)], "shards": files}


def write_manifest(root: Path, splits: dict[str, Any], meta: dict[str, Any]) -> None:
    write_json(root / MANIFEST, {"format_version": FORMAT_VERSION, "splits": splits, **meta})


def read_manifest(root: str | Path) -> dict[str, Any]:
    root = Path(root)
    if not (root / MANIFEST).is_file():
        raise FileNotFoundError(f"no prepared data at {root} (missing {MANIFEST}); run the prepare stage first")
    manifest = read_json(root / MANIFEST)
    # Name what is wrong with a hand-edited or foreign manifest instead of failing later on a bare KeyError.
    splits = manifest.get("splits") if isinstance(manifest, dict) else None
    if not isinstance(splits, dict) or not splits:
        raise ValueError(f"{root / MANIFEST} has no 'splits' entry; it is not a manifest written by the prepare stage "
                         "(rerun prepare)")
    for name, entry in splits.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("shards"), list):
            raise ValueError(f"{root / MANIFEST}: split {name!r} lists no 'shards' (rerun prepare)")
        for shard in entry["shards"]:
            if not isinstance(shard, dict) or not {"file", "sha256"} <= set(shard):
                raise ValueError(f"{root / MANIFEST}: a shard of split {name!r} lacks 'file'/'sha256' (rerun prepare)")
    return manifest


def load_split(root: str | Path, split: str, verify: bool = True, lazy: bool = False) -> Split:
    """Load a split; with ``verify`` every shard's checksum is checked first.

    ``lazy``: ``images`` is a :class:`ShardedImages` that reads rows from the shards when indexed,
    so a stage walking the split in batches holds one batch of images (labels and boxes, which
    are small, are loaded). Otherwise the whole split is in memory.
    """
    root = Path(root)
    manifest = read_manifest(root)
    if split not in manifest["splits"]:
        raise KeyError(f"split {split!r} not in {root / MANIFEST} (have: {', '.join(manifest['splits'])})")
    entry = manifest["splits"][split]
    parts, paths = [], []
    for shard in entry["shards"]:
        path = root / shard["file"]
        if not path.is_file():
            raise FileNotFoundError(f"missing shard {path}")
        if verify and sha256_file(path) != shard["sha256"]:
            raise ValueError(f"corrupted shard {path}: checksum differs from {MANIFEST}; rerun the prepare stage")
        paths.append(path)
        keys = ("labels", "boxes", "box_classes", "box_offsets") if lazy else (
            "images", "labels", "boxes", "box_classes", "box_offsets")
        try:
            with np.load(path, allow_pickle=False) as z:
                parts.append({k: z[k] for k in keys})
                if "color_labels" in z.files:
                    parts[-1]["color_labels"] = z["color_labels"]
        except (zipfile.BadZipFile, ValueError, OSError, KeyError, io.UnsupportedOperation) as err:
            raise ValueError(f"corrupted shard {path}: {err}") from None
    offsets, base = [np.zeros(1, np.int64)], 0
    for p in parts:
        offsets.append(p["box_offsets"][1:] + base)
        base += int(p["box_offsets"][-1])
    meta = {k: v for k, v in manifest.items() if k != "splits"}
    if lazy:
        try:
            images = ShardedImages(paths)
        except (zipfile.BadZipFile, ValueError, OSError, KeyError) as err:
            raise ValueError(f"corrupted shards under {root}: {err}") from None
    else:
        images = np.concatenate([p["images"] for p in parts])
    return Split(
        images=images,
        labels=np.concatenate([p["labels"] for p in parts]).astype(np.int64),
        boxes=np.concatenate([p["boxes"] for p in parts]).astype(np.float32).reshape(-1, 4),
        box_classes=np.concatenate([p["box_classes"] for p in parts]).astype(np.int64),
        box_offsets=np.concatenate(offsets),
        meta=meta,
        color_labels=(np.concatenate([p["color_labels"] for p in parts]).astype(np.int64)
                      if parts and all("color_labels" in p for p in parts) else None),
    )


def prepared_dir(cfg: Any) -> Path:
    return Path(cfg.paths.data_dir) / "prepared"
