"""Config group ``data`` (conf/data/<name>.yaml): the data source ``prepare`` instantiates.

One schema per source, chosen by ``data.name``. Values live in conf/data/*.yaml (see schema.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from repshare.config.limits import MAX_COUNT, MAX_IMAGE_SIZE, MAX_SEED
from repshare.config.rules import Check, Fraction, Interval, IntRange, NonEmpty, OneOf, OrNull, Table, When
from repshare.data.shapes import CLASS_NAMES, MIN_IMAGE_SIZE

# data.name -> the only class its ``_target_`` may name
SOURCES: dict[str, str] = {
    "shapes": "repshare.data.shapes.ShapesSource",
    "imagenet": "repshare.data.imagenet.ImageNetSource",
    "coco": "repshare.data.coco.CocoSource",
}
MAX_SHAPES_BYTES = 32 * 2**30  # generated images on disk (uint8): half of a 64 GB disk; the gpu preset is 11 GB


@dataclass
class ShapesDataConfig:
    """Embedded default: synthetic images of geometric shapes (classification + boxes)."""

    _target_: str
    name: str
    image_size: int
    n_train: int
    n_val: int
    num_classes: int
    max_objects: int  # objects per image (the largest one gives the class label)
    n_distractors: int  # small clutter that is not an object
    difficulty: float  # 0 = plain, 1 = heavy texture, low contrast, small objects
    n_select: int  # images of the `select` split: decisions (accept/reject, survival, placement, fitting)
    color_margin: float  # each channel of the main object's colour at least this far from the 128 threshold
    shard_size: int
    seed: int


@dataclass
class ImageNetDataConfig:
    """ILSVRC2012-style validation set: class subfolders, or a flat folder + val.txt + synsets."""

    _target_: str
    name: str
    root: str
    val_txt: Optional[str]  # "<file> <label>" per line; None = class subfolders
    synsets: Optional[str]  # one wnid per line, index = label
    image_size: int
    crop_pct: float
    max_images: Optional[int]
    skip_missing: bool  # listed images not on disk: skip and count them instead of failing
    allow_outside_root: bool  # list lines may name images outside data.root (refused by default)
    calibration_images: int  # > 0: a seeded `calib` split of that many images, taken out of val
    label_offset: int  # added to every val_txt index label: -1 maps a 1-based / 1001-class (background = 0) file
    train_root: Optional[str]  # training images (either layout): a `train` split for Gemel and MEEdge
    train_txt: Optional[str]  # label list of train_root (as val_txt); None = class subfolders
    train_max_images: Optional[int]  # at most this many training images (drawn with the seed)
    n_select: int  # images of the `select` split (decisions), taken out of the training images
    num_classes: int
    shard_size: int
    seed: int


@dataclass
class CocoDataConfig:
    """COCO-style detection set: an image folder plus an instances json."""

    _target_: str
    name: str
    images_dir: str
    annotations: str
    image_size: int
    max_images: Optional[int]
    skip_missing: bool  # listed images not on disk: skip and count them instead of failing
    allow_outside_root: bool  # file_names may point outside data.images_dir (refused by default)
    num_classes: int
    shard_size: int
    seed: int


SCHEMAS: dict[str, type] = {"shapes": ShapesDataConfig, "imagenet": ImageNetDataConfig, "coco": CocoDataConfig}


def split_size(root, split: str) -> int | None:
    """Images in a split of the synthetic data (known at compose); None for real data (known at prepare)."""
    d = root.data
    if d.name != "shapes":
        return None
    return {"train": d.n_train, "val": d.n_val, "select": d.n_select}.get(split)


def _source_of_name(target, root) -> str | None:
    want = SOURCES[root.data.name]
    return None if target == want else f"data.name={root.data.name} is built by {want}"


def _shapes(root) -> bool:
    return root.data.name == "shapes"


def _shapes_fit_disk(n_train, root) -> str | None:
    d = root.data
    size = (d.n_train + d.n_val + d.n_select) * d.image_size ** 2 * 3
    if size <= MAX_SHAPES_BYTES:
        return None
    return (f"(n_train + n_val + n_select) x image_size^2 x 3 bytes = {size / 2**30:.0f} GiB of images; "
            f"at most {MAX_SHAPES_BYTES // 2**30} GiB")


def _imagenet(root) -> bool:
    return root.data.name == "imagenet"


def _select_needs_train(n_select, root) -> str | None:
    return None if not n_select or root.data.get("train_root") else "takes images out of data.train_root, which is null"


def _list_needs_train(train_txt, root) -> str | None:
    return None if train_txt is None or root.data.get("train_root") else "lists images of data.train_root, which is null"


TARGETS = {"data._target_": tuple(SOURCES.values())}
RULES: Table = [
    ("data.name", OneOf(*SCHEMAS)),  # checked first of all by validate_config, to pick the schema
    ("data._target_", Check(_source_of_name)),
    ("data.image_size", IntRange(1, MAX_IMAGE_SIZE), When(_shapes, IntRange(MIN_IMAGE_SIZE, MAX_IMAGE_SIZE))),
    ("data.num_classes", IntRange(1, 100_000), When(_shapes, IntRange(1, len(CLASS_NAMES)))),
    ("data.shard_size", IntRange(1, MAX_COUNT)),
    ("data.seed", IntRange(0, MAX_SEED)),
    ("data.max_images", OrNull(IntRange(1, MAX_COUNT))),
    # shapes
    ("data.n_train", IntRange(0, MAX_COUNT), When(_shapes, Check(_shapes_fit_disk))),
    ("data.n_val", IntRange(1, MAX_COUNT)),
    ("data.max_objects", IntRange(1, 16)),
    ("data.n_distractors", IntRange(0, 64)),
    ("data.difficulty", Fraction()),
    ("data.n_select", IntRange(0, MAX_COUNT), When(_imagenet, Check(_select_needs_train))),
    ("data.color_margin", Interval(0, 128, open_high=True)),
    # imagenet, coco
    ("data.root", NonEmpty()),
    ("data.val_txt", OrNull(NonEmpty())),
    ("data.synsets", OrNull(NonEmpty())),
    ("data.crop_pct", Interval(0, 1, open_low=True)),
    ("data.calibration_images", IntRange(0, MAX_COUNT)),
    ("data.label_offset", IntRange(-1, 0)),
    ("data.train_root", OrNull(NonEmpty())),
    ("data.train_txt", OrNull(NonEmpty()), When(_imagenet, Check(_list_needs_train))),
    ("data.train_max_images", OrNull(IntRange(1, MAX_COUNT))),
    ("data.images_dir", NonEmpty()),
    ("data.annotations", NonEmpty()),
]
