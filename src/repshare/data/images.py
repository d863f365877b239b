"""Image-file helpers shared by the real-data sources (ImageNet, COCO)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from repshare.data.shard_images import rows_then_rest

IMAGE_EXTS = (".jpeg", ".jpg", ".png", ".bmp", ".webp")


def open_rgb(path: Path) -> Image.Image:
    if not path.is_file():
        raise FileNotFoundError(f"missing image file: {path}")
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"unreadable image file {path}: {err}") from None


def resize_center_crop(im: Image.Image, size: int, crop_pct: float) -> np.ndarray:
    """timm-style eval transform: resize the short side to size/crop_pct, centre-crop size x size."""
    scale = size / crop_pct / min(im.size)
    w, h = max(size, round(im.width * scale)), max(size, round(im.height * scale))
    im = im.resize((w, h), Image.BICUBIC)
    left, top = (w - size) // 2, (h - size) // 2
    return np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.uint8)


def letterbox(im: Image.Image, size: int) -> tuple[np.ndarray, float]:
    """EfficientDet-style: scale the long side to ``size``, pad bottom/right with zeros."""
    scale = size / max(im.size)
    w, h = max(1, round(im.width * scale)), max(1, round(im.height * scale))
    out = np.zeros((size, size, 3), np.uint8)
    out[:h, :w] = np.asarray(im.resize((w, h), Image.BILINEAR), dtype=np.uint8)
    return out, scale


class DecodedImages:
    """(N, size, size, 3) uint8 array-like whose rows are decoded from image files when sliced.

    The prepare stage writes shard by shard (``write_split`` slices ``images[start:stop]``), so it
    holds one shard of pixels instead of the whole split (ImageNet val at 224 px is 7.5 GB as one
    array). ``decode(path)`` must return a (size, size, 3) uint8 array.
    """

    def __init__(self, paths: list[Path], size: int, decode: Callable[[Path], np.ndarray]):
        self.paths, self.size, self.decode = list(paths), int(size), decode

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.paths), self.size, self.size, 3)

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, tuple):
            return rows_then_rest(self, key)
        if isinstance(key, (int, np.integer)):
            return self._one(self.paths[key])
        paths = self.paths[key] if isinstance(key, slice) else [self.paths[int(k)] for k in np.asarray(key)]
        out = np.empty((len(paths), self.size, self.size, 3), np.uint8)
        for k, p in enumerate(paths):
            out[k] = self._one(p)
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype, copy=False)

    def _one(self, path: Path) -> np.ndarray:
        arr = self.decode(path)
        if arr.shape != (self.size, self.size, 3) or arr.dtype != np.uint8:
            raise ValueError(f"decoding {path} gave {arr.shape} {arr.dtype}, expected ({self.size}, {self.size}, 3) uint8")
        return arr


def header_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file's header, without decoding the pixels."""
    if not path.is_file():
        raise FileNotFoundError(f"missing image file: {path}")
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"unreadable image file {path}: {err}") from None
