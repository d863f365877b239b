"""Image-file helpers shared by the real-data sources (ImageNet, COCO)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

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
