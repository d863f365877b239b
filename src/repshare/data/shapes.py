"""The embedded default dataset: synthetic RGB images of geometric shapes.

Each image holds 1..``max_objects`` shapes of 8 classes on a textured background, plus small
distractor blobs that are not objects. Every object's box and class is kept (for the detector);
the image's classification label is the class of the largest object, which is painted last so it
is never occluded. Generation is vectorised over images with numpy (one pass per object slot), and
fully determined by the seed: the same seed gives identical bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

CLASS_NAMES: tuple[str, ...] = (
    "circle", "square", "triangle", "diamond", "plus", "ring", "star", "half_disk",
)
# Second label of the same images (a second workload classifier, Gemel's per-camera queries): the
# colour of the largest object, as the nearest corner of the RGB cube (bit 2 = red, 1 = green, 0 = blue).
COLOR_NAMES: tuple[str, ...] = ("black", "blue", "green", "cyan", "red", "magenta", "yellow", "white")
MIN_IMAGE_SIZE = 32  # below this the smallest objects are a few pixels and the classes blur
CHUNK = 512  # images generated at once (bounds peak memory at ~100 MB for 128 px)


@dataclass
class ShapeSet:
    """Images with per-image labels and a CSR list of boxes (object k of image n is
    ``boxes[box_offsets[n] + k]``)."""

    images: np.ndarray  # uint8 (N, H, W, 3)
    labels: np.ndarray  # int64 (N,): class of the largest object
    boxes: np.ndarray  # float32 (M, 4): x1, y1, x2, y2 in pixels, x2/y2 exclusive
    box_classes: np.ndarray  # int64 (M,)
    box_offsets: np.ndarray  # int64 (N + 1,)
    meta: dict = field(default_factory=dict)
    color_labels: np.ndarray | None = None  # int64 (N,): COLOR_NAMES index of the largest object

    def __len__(self) -> int:
        return len(self.labels)

    def boxes_of(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.box_offsets[n], self.box_offsets[n + 1]
        return self.boxes[a:b], self.box_classes[a:b]


def _shape_mask(cls: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-test of one class in normalised object coordinates (u, v in about [-1, 1])."""
    au, av = np.abs(u), np.abs(v)
    if cls in (0, 5, 6, 7):
        r = np.sqrt(u * u + v * v)
    if cls == 0:  # circle
        return r <= 1.0
    if cls == 1:  # square
        return np.maximum(au, av) <= 0.82
    if cls == 2:  # triangle, apex up (image y grows down)
        return (v <= 0.75) & (np.sqrt(3.0) * au - v <= 0.95)
    if cls == 3:  # diamond
        return au + av <= 1.0
    if cls == 4:  # plus
        return ((au <= 0.3) & (av <= 0.95)) | ((av <= 0.3) & (au <= 0.95))
    if cls == 5:  # ring
        return (r <= 1.0) & (r >= 0.55)
    if cls == 6:  # five-pointed star
        return r <= 0.55 + 0.4 * np.cos(5.0 * np.arctan2(v, u))
    return (r <= 1.0) & (v >= -0.1)  # half disk, flat side up


def _background(rng: np.random.Generator, n: int, s: int, difficulty: float) -> np.ndarray:
    """Low-frequency colour waves plus pixel noise; amplitude grows with difficulty."""
    t = np.arange(s, dtype=np.float32) / s
    amp = 15.0 + 45.0 * difficulty
    fx, fy = rng.uniform(0.5, 4.0, size=(2, n, 3, 1)).astype(np.float32)
    ph = rng.uniform(0, 2 * np.pi, size=(n, 3, 1)).astype(np.float32)
    col = rng.uniform(-1, 1, size=(n, 3, 3)).astype(np.float32) * (amp / 3.0)  # (n, wave, channel)
    # sin(a x + b y + p) = sin(a x) cos(b y + p) + cos(a x) sin(b y + p): separable, so cheap.
    ax, by = 2 * np.pi * fx * t, 2 * np.pi * fy * t + ph  # (n, 3, s)
    waves = np.einsum("nky,nkx->nyxk", np.cos(by), np.sin(ax)) + np.einsum("nky,nkx->nyxk", np.sin(by), np.cos(ax))
    img = np.einsum("nyxk,nkc->nyxc", waves, col)  # (n, s, s, 3)
    img += rng.uniform(40, 215, size=(n, 1, 1, 3)).astype(np.float32)
    img += rng.standard_normal(size=img.shape, dtype=np.float32) * (4.0 + 10.0 * difficulty)
    return img


def _paint(img: np.ndarray, cx: np.ndarray, cy: np.ndarray, rad: np.ndarray, cls: np.ndarray,
           angle: np.ndarray, color: np.ndarray, shade_amount: float, num_classes: int) -> np.ndarray:
    """Paint one object per image on a square patch around it; return the (n, P, P) mask and the
    patch's absolute pixel rows/columns (for the box)."""
    s = img.shape[1]
    half = int(np.ceil(rad.max())) + 1
    off = np.arange(-half, half + 1, dtype=np.int64)
    gx = np.rint(cx).astype(np.int64)[:, None] + off[None]  # (n, P) absolute columns
    gy = np.rint(cy).astype(np.int64)[:, None] + off[None]
    dx = (gx[:, None, :] - cx[:, None, None]) / rad[:, None, None]
    dy = (gy[:, :, None] - cy[:, None, None]) / rad[:, None, None]
    ca, sa = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    u, v = (ca * dx + sa * dy).astype(np.float32), (-sa * dx + ca * dy).astype(np.float32)
    m = np.zeros(u.shape, dtype=bool)
    for c in range(num_classes):
        sel = np.flatnonzero(cls == c)
        if len(sel):
            m[sel] = _shape_mask(c, u[sel], v[sel])
    m &= (gy[:, :, None] >= 0) & (gy[:, :, None] < s) & (gx[:, None, :] >= 0) & (gx[:, None, :] < s)
    ii, yy, xx = np.nonzero(m)
    shade = 1.0 - shade_amount * (v[ii, yy, xx] + 1.0) / 2.0  # a gentle gradient across the object
    img[ii, gy[ii, yy], gx[ii, xx]] = color[ii] * shade[:, None]
    return m, gx, gy


def _generate_chunk(
    rng: np.random.Generator, n: int, s: int, num_classes: int, max_objects: int,
    n_distractors: int, difficulty: float, color_margin: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[np.ndarray], np.ndarray]:
    img = _background(rng, n, s, difficulty)
    # Distractors: small disks under the objects (painted first), never labelled.
    for _ in range(n_distractors):
        cx, cy = rng.uniform(0, s, size=(2, n)).astype(np.float32)
        rad = rng.uniform(0.015, 0.04, size=n).astype(np.float32) * s + 0.5
        col = rng.uniform(0, 255, size=(n, 3)).astype(np.float32)
        _paint(img, cx, cy, rad, np.zeros(n, np.int64), np.zeros(n, np.float32), col, 0.0, 1)

    n_obj = rng.integers(1, max_objects + 1, size=n)
    # Radii (fraction of the image): the main object is clearly the largest; harder = smaller.
    main_r = rng.uniform(0.20 - 0.06 * difficulty, 0.30 - 0.04 * difficulty, size=n)
    radii = np.empty((n, max_objects), dtype=np.float32)
    radii[:, 0] = main_r
    if max_objects > 1:
        radii[:, 1:] = main_r[:, None] * rng.uniform(0.35, 0.7, size=(n, max_objects - 1))
    classes = rng.integers(0, num_classes, size=(n, max_objects))
    present = np.arange(max_objects)[None, :] < n_obj[:, None]
    rad_px = radii * s
    cx = rng.uniform(rad_px, s - rad_px).astype(np.float32)
    cy = rng.uniform(rad_px, s - rad_px).astype(np.float32)
    angle = rng.uniform(-0.25, 0.25, size=(n, max_objects)).astype(np.float32)  # small tilt only
    # Object colour: far from the local background mean, less so when harder.
    bg_mean = img.mean(axis=(1, 2))  # (n, 3)
    contrast = 110.0 - 50.0 * difficulty
    colors = np.empty((n, max_objects, 3), dtype=np.float32)
    for k in range(max_objects):
        c = rng.uniform(0, 255, size=(n, 3))
        d = c - bg_mean
        norm = np.linalg.norm(d, axis=1, keepdims=True) + 1e-6
        c = np.where(norm < contrast, bg_mean + d / norm * contrast, c)
        colors[:, k] = np.clip(c, 0, 255)
    if color_margin > 0:
        # The colour label thresholds each channel of the main object at 128: keep every channel at least
        # ``color_margin`` away from it, so the label is not decided by a few grey levels (or by the shading).
        main = colors[:, 0]
        near = np.abs(main - 128.0) < color_margin
        colors[:, 0] = np.where(near, np.where(main >= 128.0, 128.0 + color_margin, 128.0 - color_margin), main)

    boxes: list[list[np.ndarray]] = [[] for _ in range(n)]
    box_cls: list[list[int]] = [[] for _ in range(n)]
    # Paint the smaller objects first and the main (largest) object last, on top.
    for k in list(range(1, max_objects)) + [0]:
        cls_k = np.where(present[:, k], classes[:, k], -1)  # -1 matches no class: nothing painted
        m, gx, gy = _paint(img, cx[:, k], cy[:, k], rad_px[:, k], cls_k, angle[:, k], colors[:, k],
                           0.25 * difficulty, num_classes)
        rows, cols = m.any(axis=2), m.any(axis=1)
        for i in np.flatnonzero(rows.any(axis=1)):
            y_idx, x_idx = gy[i, rows[i]], gx[i, cols[i]]
            boxes[i].append(np.array([x_idx[0], y_idx[0], x_idx[-1] + 1, y_idx[-1] + 1], np.float32))
            box_cls[i].append(int(classes[i, k]))

    images = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    labels = classes[:, 0].astype(np.int64)
    # Derived from the colours already drawn (no extra random draws: every other array is unchanged).
    bits = colors[:, 0] >= 128.0
    color_labels = (4 * bits[:, 0] + 2 * bits[:, 1] + bits[:, 2]).astype(np.int64)
    return images, labels, [np.stack(b) for b in boxes], [np.asarray(c, np.int64) for c in box_cls], color_labels


def generate_shapes(
    n: int, image_size: int = 128, num_classes: int = 8, max_objects: int = 3,
    n_distractors: int = 4, difficulty: float = 0.5, seed: int = 0, color_margin: float = 0.0,
) -> ShapeSet:
    """Generate ``n`` images deterministically from ``seed`` (same arguments, same bytes)."""
    if n < 0:
        raise ValueError(f"number of images n={n} must be >= 0")
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size={image_size} is too small for the objects (min {MIN_IMAGE_SIZE})")
    if not 1 <= num_classes <= len(CLASS_NAMES):
        raise ValueError(f"num_classes={num_classes} must be in 1..{len(CLASS_NAMES)}")
    if max_objects < 1:
        raise ValueError(f"max_objects={max_objects} must be >= 1")
    if not 0.0 <= difficulty <= 1.0:
        raise ValueError(f"difficulty={difficulty} must be in [0, 1]")
    if not 0.0 <= color_margin < 128.0:
        raise ValueError(f"color_margin={color_margin} must be in [0, 128)")
    rng = np.random.default_rng(seed)
    parts = []
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        parts.append(_generate_chunk(rng, m, image_size, num_classes, max_objects, n_distractors, difficulty,
                                     color_margin))
    if not parts:
        s = image_size
        return ShapeSet(np.zeros((0, s, s, 3), np.uint8), np.zeros(0, np.int64), np.zeros((0, 4), np.float32),
                        np.zeros(0, np.int64), np.zeros(1, np.int64), color_labels=np.zeros(0, np.int64))
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    box_list = [b for p in parts for b in p[2]]
    cls_list = [c for p in parts for c in p[3]]
    counts = np.array([len(c) for c in cls_list], np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    meta = {"class_names": list(CLASS_NAMES[:num_classes]), "image_size": image_size}
    color_labels = np.concatenate([p[4] for p in parts])
    return ShapeSet(images, labels, np.concatenate(box_list), np.concatenate(cls_list), offsets, meta, color_labels)


class ShapesSource:
    """Data source for the ``shapes`` config: train, val and (``n_select`` > 0) select splits, each
    from its own seed.

    ``val`` is the report split: every number a page or a verdict shows is measured on it. ``select``
    is for decisions (accept/reject, survival, placement, fitting): no method decides on the images it
    reports on. Generated data is free, so the select split can be large enough that a decision's
    standard error is well below the margin it is compared to.
    """

    def __init__(
        self, image_size: int = 128, n_train: int = 4000, n_val: int = 1000, num_classes: int = 8,
        max_objects: int = 3, n_distractors: int = 4, difficulty: float = 0.5, seed: int = 0,
        n_select: int = 0, color_margin: float = 0.0, **_: object,
    ):
        self.kw = dict(image_size=image_size, num_classes=num_classes, max_objects=max_objects,
                       n_distractors=n_distractors, difficulty=difficulty, color_margin=color_margin)
        self.n_train, self.n_val, self.n_select, self.seed = n_train, n_val, n_select, seed

    def splits(self) -> dict[str, ShapeSet]:
        # Distinct child seeds so no two splits share images; spawn(3)'s first two children are those of
        # spawn(2), so adding the select split leaves train and val unchanged.
        s_train, s_val, s_select = np.random.SeedSequence(self.seed).spawn(3)
        out = {
            "train": generate_shapes(self.n_train, seed=s_train, **self.kw),
            "val": generate_shapes(self.n_val, seed=s_val, **self.kw),
        }
        if self.n_select > 0:
            out["select"] = generate_shapes(self.n_select, seed=s_select, **self.kw)
        return out
