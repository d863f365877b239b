"""ILSVRC2012-style validation data for the real mode.

Two layouts are accepted:
- class subfolders: ``root/<wnid>/*.JPEG``; labels follow the sorted folder names (or ``synsets``
  when given, one wnid per line, line index = label).
- flat: ``root/ILSVRC2012_val_*.JPEG`` plus ``val_txt`` with ``<file name> <label index>`` per line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from repshare.data.images import IMAGE_EXTS, open_rgb, resize_center_crop
from repshare.data.shards import Split


def read_synsets(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"missing synsets file: {path}")
    names = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if len(set(names)) != len(names):
        raise ValueError(f"malformed synsets file {path}: duplicate wnids")
    return names


def read_val_txt(path: Path) -> list[tuple[str, int]]:
    if not path.is_file():
        raise FileNotFoundError(f"missing val_txt file: {path}")
    out = []
    for k, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit() or int(parts[1]) < 0:
            raise ValueError(f"malformed val_txt {path} line {k}: {line!r} (want '<file> <label index>')")
        out.append((parts[0], int(parts[1])))
    return out


class ImageNetSource:
    def __init__(self, root: str, val_txt: str | None = None, synsets: str | None = None, image_size: int = 224,
                 crop_pct: float = 0.875, max_images: int | None = None, num_classes: int = 1000,
                 seed: int = 0, **_: object):
        self.root = Path(root)
        self.val_txt = Path(val_txt) if val_txt else None
        self.synsets = Path(synsets) if synsets else None
        self.image_size, self.crop_pct = image_size, crop_pct
        self.max_images, self.num_classes, self.seed = max_images, num_classes, seed
        if not self.root.is_dir():
            raise FileNotFoundError(f"data.root={root!r} is not a directory")

    def items(self) -> tuple[list[tuple[Path, int]], list[str] | None]:
        if self.val_txt is not None:
            items = [(self.root / f, label) for f, label in read_val_txt(self.val_txt)]
            wnids = read_synsets(self.synsets) if self.synsets else None
        else:
            dirs = sorted(d.name for d in self.root.iterdir() if d.is_dir())
            if not dirs:
                raise ValueError(f"data.root={str(self.root)!r} has no class subfolders and no val_txt was given")
            wnids = read_synsets(self.synsets) if self.synsets else dirs
            index = {w: k for k, w in enumerate(wnids)}
            items = []
            for d in dirs:
                if d not in index:
                    raise ValueError(f"class folder {d!r} is not in the synsets list")
                items += [(p, index[d]) for p in sorted((self.root / d).iterdir()) if p.suffix.lower() in IMAGE_EXTS]
        for path, label in items:
            if label >= self.num_classes:
                raise ValueError(f"label {label} of {path.name} >= data.num_classes={self.num_classes}")
        if self.max_images is not None and len(items) > self.max_images:
            pick = np.sort(np.random.default_rng(self.seed).choice(len(items), self.max_images, replace=False))
            items = [items[k] for k in pick]
        return items, wnids

    def splits(self) -> dict[str, Split]:
        items, wnids = self.items()
        if not items:
            raise ValueError(f"no images found under {self.root}")
        images = np.stack([resize_center_crop(open_rgb(p), self.image_size, self.crop_pct)
                           for p, _ in tqdm(items, desc="imagenet", unit="img")])
        labels = np.array([label for _, label in items], np.int64)
        n = len(items)
        split = Split(images, labels, np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(n + 1, np.int64),
                      {"class_names": wnids})
        return {"val": split}
