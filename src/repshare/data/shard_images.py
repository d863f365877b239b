"""The images of a prepared split read from its shards on demand.

Shards are ``.npz`` files written uncompressed (``ZIP_STORED``), so the ``images`` member is a
plain ``.npy`` array at a known offset inside the file: rows ``[a, b)`` are one read of
``(b - a) * H * W * 3`` bytes. A stage that walks the split in batches therefore holds one batch
of images, whatever the split's size (real ImageNet val is ~7 GB as uint8 at 224 px). Anything
that needs the whole array still gets it through ``np.asarray``.
"""

from __future__ import annotations

import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MEMBER = "images.npy"


def rows_then_rest(images, key: tuple):
    """``images[key]`` for a tuple key on a row-read array-like: the rows ``key[0]`` are read first,
    then the rest of the index applies to what they give."""
    rows = np.asarray(images[key[0]])
    return rows[key[1:]] if isinstance(key[0], (int, np.integer)) else rows[(slice(None), *key[1:])]


@dataclass(frozen=True)
class _Part:
    path: Path
    offset: int | None  # byte offset of row 0 in the file; None = compressed member, read whole
    n: int


def _member_offset(path: Path) -> tuple[int | None, int, tuple[int, ...], np.dtype]:
    """(data offset or None, rows, row shape, dtype) of the ``images`` array inside a shard."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(MEMBER)
        with zf.open(info) as f:  # the .npy header, read through zipfile (works for any member)
            version = np.lib.format.read_magic(f)
            shape, fortran, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                                     else np.lib.format.read_array_header_2_0(f))
            header_len = f.tell() if hasattr(f, "tell") else None
    if fortran or info.compress_type != zipfile.ZIP_STORED or header_len is None or dtype.hasobject:
        return None, int(shape[0]), tuple(shape[1:]), dtype
    with open(path, "rb") as raw:  # local file header: 30 fixed bytes, then name and extra field
        raw.seek(info.header_offset)
        head = raw.read(30)
        if head[:4] != b"PK\x03\x04":
            return None, int(shape[0]), tuple(shape[1:]), dtype
        name_len, extra_len = struct.unpack("<HH", head[26:30])
    return info.header_offset + 30 + name_len + extra_len + header_len, int(shape[0]), tuple(shape[1:]), dtype


class ShardedImages:
    """Read-only, array-like view of rows ``[start, stop)`` of a split's images across its shards.

    Supports ``len``, ``shape``, ``dtype``, ``ndim``, integer and index-array indexing (read now),
    slices with step 1 (a lazy view) and ``np.asarray`` (reads the rows of the view).
    """

    def __init__(self, paths: list[Path], *, _parts: list[_Part] | None = None, _row_shape=None, _dtype=None,
                 start: int = 0, stop: int | None = None):
        if _parts is None:
            parts, row_shape, dtype = [], None, None
            for p in paths:
                off, n, rs, dt = _member_offset(Path(p))
                if row_shape is not None and (rs != row_shape or dt != dtype):
                    raise ValueError(f"shard {p} holds images of shape {rs} {dt}, the others {row_shape} {dtype}")
                row_shape, dtype = rs, dt
                parts.append(_Part(Path(p), off, n))
            _parts, _row_shape, _dtype = parts, row_shape or (0, 0, 3), dtype or np.dtype(np.uint8)
        self._parts, self._row_shape, self._dtype = _parts, tuple(_row_shape), np.dtype(_dtype)
        self._starts = np.cumsum([0] + [p.n for p in _parts])
        total = int(self._starts[-1])
        self.start, self.stop = start, total if stop is None else stop

    # ---- array protocol
    @property
    def shape(self) -> tuple[int, ...]:
        return (self.stop - self.start, *self._row_shape)

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def ndim(self) -> int:
        return 1 + len(self._row_shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self._dtype.itemsize

    def __len__(self) -> int:
        return self.stop - self.start

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self._read(self.start, self.stop)
        return out if dtype is None else out.astype(dtype, copy=False)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            return rows_then_rest(self, key)
        if isinstance(key, slice):
            a, b, step = key.indices(len(self))
            if step != 1:
                return np.asarray(self)[key]
            return ShardedImages([], _parts=self._parts, _row_shape=self._row_shape, _dtype=self._dtype,
                                 start=self.start + a, stop=self.start + max(a, b))
        if isinstance(key, (int, np.integer)):
            k = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= k < len(self):
                raise IndexError(f"image {key} out of range for {len(self)} images")
            return self._read(self.start + k, self.start + k + 1)[0]
        idx = np.asarray(key)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64)
        idx = np.where(idx < 0, idx + len(self), idx)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"image index out of range for {len(self)} images")
        out = np.empty((len(idx), *self._row_shape), self._dtype)
        for pos, k in enumerate(idx):  # one read per row; callers index a few hundred rows at most
            out[pos] = self._read(self.start + int(k), self.start + int(k) + 1)[0]
        return out

    # ---- reading
    def _read(self, a: int, b: int) -> np.ndarray:
        """Global rows [a, b) as a fresh array."""
        out = np.empty((max(0, b - a), *self._row_shape), self._dtype)
        row = int(np.prod(self._row_shape)) * self._dtype.itemsize
        pos = 0
        for k, part in enumerate(self._parts):
            lo, hi = max(a, int(self._starts[k])), min(b, int(self._starts[k + 1]))
            if lo >= hi:
                continue
            r0, r1 = lo - int(self._starts[k]), hi - int(self._starts[k])
            dst = out[pos : pos + (r1 - r0)]
            if part.offset is None:
                with np.load(part.path, allow_pickle=False) as z:
                    dst[...] = z["images"][r0:r1]
            else:
                with open(part.path, "rb") as f:
                    f.seek(part.offset + r0 * row)
                    got = f.readinto(memoryview(dst.reshape(-1).view(np.uint8)))
                if got != (r1 - r0) * row:
                    raise ValueError(f"shard {part.path} is truncated (rows {r0}..{r1} of {part.n})")
            pos += r1 - r0
        return out
