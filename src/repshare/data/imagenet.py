"""ILSVRC2012-style validation data for the real mode.

Two layouts are accepted:
- class subfolders: ``root/<wnid>/*.JPEG``;
- flat: ``root/ILSVRC2012_val_*.JPEG`` plus ``val_txt`` with one ``<file> <label>`` per line. Accepted
  line forms: ``file label``, ``file, label`` and ``./file, label`` (common CSV exports); the label is a
  0-based class index in the standard order or a wnid (``n01440764``).

Label order (the index a model's output unit means) is never guessed:
- ``synsets`` given: one wnid per line, line index = label;
- otherwise, a 1,000-class model uses the standard ILSVRC2012 order shipped with the package
  (``imagenet_synsets.txt``: the 1,000 wnids sorted, as in timm / torchvision / caffe's val.txt);
- otherwise (another class count) class subfolders are taken in sorted order only when every one of
  the ``num_classes`` folders is present; a subset would shift every label, so it is refused.

Every file a label list names must lie under ``root`` (no absolute paths, no ``..`` out of it): a line
that leaves it stops the stage naming the file and the line, unless ``allow_outside_root=true``.

``skip_missing``: a label list naming images that are not on disk (e.g. all 50,000 listed, a subset
copied) fails by default; with ``skip_missing=true`` the images present are used and the number
skipped is logged and recorded in the split's meta (``n_missing_skipped``).

Training images (``train_root``, optionally ``train_txt``; either layout, the same class order as val)
give a ``train`` split, and ``n_select`` of them (drawn with the seed) a ``select`` split: what Gemel's
joint retraining and MEEdge's branches train and decide on in real mode. An image in both train and
val is refused.
"""

from __future__ import annotations

import logging
import re
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np

from repshare.data.images import IMAGE_EXTS, DecodedImages, open_rgb, resize_center_crop
from repshare.data.paths import escapes_root
from repshare.data.shards import Split

log = logging.getLogger(__name__)

SYNSETS_RESOURCE = "imagenet_synsets.txt"
ILSVRC_NUM_CLASSES = 1000
WNID = re.compile(r"^n\d{8}$")


@cache
def ilsvrc2012_synsets() -> tuple[str, ...]:
    """The 1,000 ILSVRC2012 wnids in the standard label order (index = label)."""
    text = resources.files("repshare.data").joinpath(SYNSETS_RESOURCE).read_text()
    wnids = tuple(line.strip() for line in text.splitlines() if line.strip())
    assert len(wnids) == ILSVRC_NUM_CLASSES, f"packaged {SYNSETS_RESOURCE} is damaged ({len(wnids)} lines)"
    return wnids


def read_synsets(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"missing synsets file: {path}")
    names = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if len(set(names)) != len(names):
        raise ValueError(f"malformed synsets file {path}: duplicate wnids")
    return names


def parse_label_line(line: str) -> tuple[str, str] | None:
    """``file label`` / ``file, label`` / ``./file, label`` -> (file, label text); None for a blank line."""
    s = line.strip()
    if not s:
        return None
    if "," in s:
        name, _, label = s.rpartition(",")
    else:
        parts = s.rsplit(None, 1)
        if len(parts) != 2:
            raise ValueError("want '<file> <label>' or '<file>, <label>'")
        name, label = parts
    name, label = name.strip().strip("\"'"), label.strip().strip("\"'")
    while name.startswith("./"):
        name = name[2:]
    if not name or not label:
        raise ValueError("want '<file> <label>' or '<file>, <label>'")
    return name, label


def read_val_txt(path: Path) -> list[tuple[str, str]]:
    """(file, label text) per line; the label is resolved against the class order later."""
    return [(name, label) for _, name, label in read_val_lines(path)]


def read_val_lines(path: Path) -> list[tuple[int, str, str]]:
    """(line number, file, label text) per non-blank line."""
    if not path.is_file():
        raise FileNotFoundError(f"missing val_txt file: {path}")
    out = []
    for k, line in enumerate(path.read_text().splitlines(), 1):
        try:
            parsed = parse_label_line(line)
        except ValueError as err:
            raise ValueError(f"malformed val_txt {path} line {k}: {line!r} ({err})") from None
        if parsed is None:
            continue
        label = parsed[1]
        if not (label.isdigit() or WNID.match(label)):
            hint = " (a header line? remove it)" if k == 1 else ""
            raise ValueError(f"malformed val_txt {path} line {k}: {line!r}: label {label!r} is neither a "
                             f"0-based class index nor a wnid like n01440764{hint}")
        out.append((k, *parsed))
    return out


class ImageNetSource:
    def __init__(self, root: str, val_txt: str | None = None, synsets: str | None = None, image_size: int = 224,
                 crop_pct: float = 0.875, max_images: int | None = None, num_classes: int = 1000,
                 seed: int = 0, skip_missing: bool = False, calibration_images: int = 0,
                 allow_outside_root: bool = False, label_offset: int = 0, train_root: str | None = None,
                 train_txt: str | None = None, train_max_images: int | None = None, n_select: int = 0, **_: object):
        self.root = Path(root)
        self.train_root = Path(train_root) if train_root else None
        self.train_txt = Path(train_txt) if train_txt else None
        self.train_max_images, self.n_select = train_max_images, int(n_select)
        self.val_txt = Path(val_txt) if val_txt else None
        self.synsets = Path(synsets) if synsets else None
        self.image_size, self.crop_pct = image_size, crop_pct
        self.max_images, self.num_classes, self.seed = max_images, num_classes, seed
        self.skip_missing = skip_missing
        self.allow_outside_root = bool(allow_outside_root)
        self.label_offset = int(label_offset)
        self.calibration_images = int(calibration_images)
        self.n_missing_skipped = 0
        if not self.root.is_dir():
            raise FileNotFoundError(f"data.root={root!r} is not a directory")
        if self.train_root is not None and not self.train_root.is_dir():
            raise FileNotFoundError(f"data.train_root={train_root!r} is not a directory")
        if self.n_select and self.train_root is None:
            raise ValueError(f"data.n_select={self.n_select} takes the select images out of the training images: "
                             "give data.train_root")

    def class_order(self) -> list[str] | None:
        """wnid per label: the synsets file, else the standard 1,000 for a 1,000-class model, else None."""
        if self.synsets is not None:
            wnids = read_synsets(self.synsets)
            if len(wnids) != self.num_classes:
                raise ValueError(f"data.synsets={str(self.synsets)!r} lists {len(wnids)} wnids but "
                                 f"data.num_classes={self.num_classes}")
            return wnids
        if self.num_classes == ILSVRC_NUM_CLASSES:
            return list(ilsvrc2012_synsets())
        return None

    def _folder_items(self, wnids: list[str] | None, root: Path, key: str) -> tuple[list[tuple[Path, int]], list[str]]:
        dirs = sorted(d.name for d in root.iterdir() if d.is_dir())
        if not dirs:
            raise ValueError(f"data.{key}={str(root)!r} has no class subfolders and no label list was given")
        if wnids is None:
            if len(dirs) != self.num_classes:
                # Sorted folder names are the labels only if all classes are there; a subset shifts them.
                raise ValueError(
                    f"data.{key}={str(root)!r} has {len(dirs)} class folders but data.num_classes="
                    f"{self.num_classes}: the label of each folder is unknown. Give data.synsets (one wnid per "
                    "line, line index = label) or provide every class folder")
            wnids = dirs
        index = {w: k for k, w in enumerate(wnids)}
        items = []
        for d in dirs:
            if d not in index:
                where = f"data.synsets={str(self.synsets)!r}" if self.synsets else "the ILSVRC2012 synsets"
                raise ValueError(f"class folder {d!r} is not in {where}; name folders by wnid or give data.synsets")
            items += [(p, index[d]) for p in sorted((root / d).iterdir()) if p.suffix.lower() in IMAGE_EXTS]
        return items, wnids

    def _list_items(self, wnids: list[str] | None, root: Path, listing: Path, key: str) -> list[tuple[Path, int]]:
        index = {w: k for k, w in enumerate(wnids or [])}
        items, what = [], f"{'val_txt' if key == 'root' else 'train_txt'} {listing}"
        for line_no, name, label in read_val_lines(listing):
            if not self.allow_outside_root and escapes_root(root, name):
                raise ValueError(f"{what} line {line_no}: {name!r} is outside data.{key}="
                                 f"{str(root)!r} (an absolute path or '..'); set data.allow_outside_root=true "
                                 "if the images really live there")
            if label.isdigit():
                if int(label) + self.label_offset < 0:
                    raise ValueError(f"{what} line {line_no}: label {label} with data.label_offset="
                                     f"{self.label_offset} is negative: the file is 0-based, set data.label_offset=0")
                items.append((root / name, int(label) + self.label_offset))
            elif label in index:
                items.append((root / name, index[label]))
            else:
                raise ValueError(f"{what}: wnid label {label!r} of {name} is not in "
                                 + ("the class order" if wnids else f"any synsets list (data.num_classes="
                                    f"{self.num_classes}: give data.synsets)"))
        return items

    def items(self) -> tuple[list[tuple[Path, int]], list[str] | None]:
        """The val images (root, val_txt) and the class order."""
        return self._items(self.class_order(), self.root, self.val_txt, self.max_images, "root", self.seed)

    def _items(self, wnids: list[str] | None, root: Path, listing: Path | None, max_images: int | None, key: str,
               seed: int) -> tuple[list[tuple[Path, int]], list[str] | None]:
        if listing is not None:
            items = self._list_items(wnids, root, listing, key)
        else:
            items, wnids = self._folder_items(wnids, root, key)
        for path, label in items:
            if label >= self.num_classes:
                raise ValueError(
                    f"label {label} of {path.name} >= data.num_classes={self.num_classes} (labels are 0-based "
                    "in the standard wnid order: a 1001-class file with 0 = background, or 1-based labels, needs "
                    "data.label_offset=-1; the devkit's ILSVRC2012_IDs, in another order, need converting)")
        items = self._drop_missing(items, root, key)
        if max_images is not None and len(items) > max_images:
            pick = np.sort(np.random.default_rng(seed).choice(len(items), max_images, replace=False))
            items = [items[k] for k in pick]
        return items, wnids

    def _drop_missing(self, items: list[tuple[Path, int]], root: Path, key: str) -> list[tuple[Path, int]]:
        present = [it for it in items if it[0].is_file()]
        missing = len(items) - len(present)
        self.n_missing_skipped = 0
        if not missing:
            return items
        first = next(p for p, _ in items if not p.is_file())
        if not present:  # whatever skip_missing says: the list and the folder do not match at all
            raise FileNotFoundError(f"none of the {len(items)} listed images is under data.{key}={root}, e.g. "
                                    f"{first} (list paths are relative to data.{key})")
        if not self.skip_missing:
            raise FileNotFoundError(
                f"missing image file: {first} ({missing} of {len(items)} listed images are not on disk); "
                f"set data.skip_missing=true to evaluate the {len(present)} present")
        log.warning("data.skip_missing: %d of %d listed images are not on disk and were skipped (e.g. %s)",
                    missing, len(items), first.name)
        self.n_missing_skipped = missing
        return present

    def splits(self) -> dict[str, Split]:
        """``val`` (and ``calib`` with ``calibration_images`` > 0: that many images drawn with the seed and
        taken out of ``val``, for fits that must not see the evaluated images). Pixels are decoded
        shard by shard when the prepare stage writes them (``DecodedImages``)."""
        items, wnids = self.items()
        if not items:
            raise ValueError(f"no images found under {self.root}")
        meta = {"class_names": wnids}
        if self.n_missing_skipped:
            meta["n_missing_skipped"] = self.n_missing_skipped
        parts = {"val": items}
        if self.calibration_images:
            if not 0 < self.calibration_images < len(items):
                raise ValueError(f"data.calibration_images={self.calibration_images} must be in 0..{len(items) - 1} "
                                 f"({len(items)} images found)")
            calib = np.zeros(len(items), bool)
            calib[np.random.default_rng(self.seed + 1).choice(len(items), self.calibration_images, replace=False)] = True
            parts = {"val": [it for it, c in zip(items, calib) if not c], "calib": [it for it, c in zip(items, calib) if c]}
        if self.train_root is not None:
            parts.update(self._train_parts(wnids, {p.resolve() for p, _ in items}))
        return {name: self._split(its, meta) for name, its in parts.items()}

    def _train_parts(self, wnids: list[str] | None, val_files: set[Path]) -> dict[str, list[tuple[Path, int]]]:
        """``train`` (and ``select``: ``n_select`` images drawn with the seed, taken out of train) from
        ``train_root``, in val's class order; an image that is also a val image is refused (it would be
        trained or decided on and then reported)."""
        items, _ = self._items(wnids, self.train_root, self.train_txt, self.train_max_images, "train_root",
                               self.seed + 3)
        if not items:
            raise ValueError(f"no images found under data.train_root={self.train_root}")
        both = next((p for p, _ in items if p.resolve() in val_files), None)
        if both is not None:
            raise ValueError(f"{both} is both a training image (data.train_root) and a val image (data.root): "
                             "train and val must not share images")
        if not self.n_select:
            return {"train": items}
        if not 0 < self.n_select < len(items):
            raise ValueError(f"data.n_select={self.n_select} must be in 0..{len(items) - 1} ({len(items)} training "
                             "images found)")
        sel = np.zeros(len(items), bool)
        sel[np.random.default_rng(self.seed + 2).choice(len(items), self.n_select, replace=False)] = True
        return {"train": [it for it, c in zip(items, sel) if not c], "select": [it for it, c in zip(items, sel) if c]}

    def _split(self, items: list[tuple[Path, int]], meta: dict) -> Split:
        size, crop = self.image_size, self.crop_pct
        images = DecodedImages([p for p, _ in items], size, lambda p: resize_center_crop(open_rgb(p), size, crop))
        n = len(items)
        return Split(images, np.array([label for _, label in items], np.int64), np.zeros((0, 4), np.float32),
                     np.zeros(0, np.int64), np.zeros(n + 1, np.int64), dict(meta))
