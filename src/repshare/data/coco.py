"""COCO-style detection data for the real mode: an image folder plus an instances json.

Images are letterboxed to ``image_size`` (long side scaled, bottom/right padded, as EfficientDet
does), boxes scaled with them and converted from COCO's xywh to xyxy.

Class indices keep the original COCO category ids: class = category_id - 1. That is effdet's label
space (its published COCO weights have 90 outputs, output k = category id k + 1, the 10 unused ids
included), so predictions of a published detector and of one trained here (effdet trains on
class + 1 = the id) meet the ground truth in the same space; ids must lie in 1..data.num_classes.
The classification label of an image is the class of its largest box (-1 when it has none).
Every ``file_name`` must lie under ``images_dir`` (no absolute paths, no ``..`` out of it) unless
``allow_outside_root=true``: an entry that leaves it stops the stage naming the json and the image.
``skip_missing``: images listed in the json but absent from ``images_dir`` are skipped and counted
(``n_missing_skipped`` in the split meta) instead of failing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from repshare.data.images import DecodedImages, header_size, letterbox, open_rgb
from repshare.data.paths import escapes_root
from repshare.data.shards import Split

log = logging.getLogger(__name__)


def read_instances(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"missing annotations file: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"malformed annotations json {path}: {err}") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(data, dict) or key not in data:
            raise ValueError(f"malformed annotations json {path}: no {key!r} list")
    return data


def category_index(categories: list[dict], num_classes: int, path: Path) -> dict[int, int]:
    """COCO category id -> class index (id - 1), checked against the model's class count."""
    out = {}
    for c in categories:
        cid = c.get("id") if isinstance(c, dict) else None
        if not isinstance(cid, int) or isinstance(cid, bool):
            raise ValueError(f"malformed annotations json {path}: category {c!r} has no integer 'id'")
        if not 1 <= cid <= num_classes:
            raise ValueError(f"category id {cid} ({c.get('name', '?')!r}) in {path} is outside 1..data.num_classes="
                             f"{num_classes}: class indices keep the COCO ids (effdet's 90-class space)")
        out[cid] = cid - 1
    return out


def xyxy_box(a: dict, path: Path) -> list[float]:
    """COCO xywh -> xyxy, refusing what cannot be a box."""
    bbox = a.get("bbox")
    if bbox is None:
        raise ValueError(f"annotation {a.get('id')} (image {a.get('image_id')}) in {path} has no 'bbox' "
                         "(a detection json needs [x, y, width, height] per annotation)")
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(isinstance(v, (int, float)) for v in bbox):
        raise ValueError(f"annotation {a.get('id')} in {path}: bbox {bbox!r} is not [x, y, width, height]")
    x, y, w, h = (float(v) for v in bbox)
    if w < 0 or h < 0:
        raise ValueError(f"annotation {a.get('id')} in {path}: bbox {bbox!r} has a negative width or height "
                         "(COCO boxes are [x, y, width, height], not [x1, y1, x2, y2])")
    return [x, y, x + w, y + h]


class CocoSource:
    def __init__(self, images_dir: str, annotations: str, image_size: int = 512, max_images: int | None = None,
                 num_classes: int = 90, seed: int = 0, skip_missing: bool = False, allow_outside_root: bool = False,
                 **_: object):
        self.images_dir, self.annotations = Path(images_dir), Path(annotations)
        self.image_size, self.max_images, self.num_classes, self.seed = image_size, max_images, num_classes, seed
        self.skip_missing = skip_missing
        self.allow_outside_root = bool(allow_outside_root)
        if not self.images_dir.is_dir():
            raise FileNotFoundError(f"data.images_dir={images_dir!r} is not a directory")

    def _present(self, imgs: list[dict]) -> tuple[list[dict], int]:
        present = [im for im in imgs if (self.images_dir / im["file_name"]).is_file()]
        missing = len(imgs) - len(present)
        if not missing:
            return imgs, 0
        first = next(im["file_name"] for im in imgs if not (self.images_dir / im["file_name"]).is_file())
        if not present:  # whatever skip_missing says: the annotations and the folder do not match at all
            raise FileNotFoundError(f"none of the {len(imgs)} images in {self.annotations} is under "
                                    f"data.images_dir={self.images_dir}, e.g. {first}")
        if not self.skip_missing:
            raise FileNotFoundError(
                f"missing image file: {self.images_dir / first} ({missing} of {len(imgs)} listed images are not "
                f"on disk); set data.skip_missing=true to evaluate the {len(present)} present")
        log.warning("data.skip_missing: %d of %d listed images are not on disk and were skipped (e.g. %s)",
                    missing, len(imgs), first)
        return present, missing

    def _check_file_names(self, imgs: list) -> None:
        """Every image entry names a file under images_dir (or the option allows it)."""
        if not isinstance(imgs, list):
            raise ValueError(f"malformed annotations json {self.annotations}: 'images' is not a list")
        for k, im in enumerate(imgs):
            name = im.get("file_name") if isinstance(im, dict) else None
            where = f"annotations {self.annotations}: images[{k}]"
            if not isinstance(name, str) or not name:
                raise ValueError(f"{where} has no 'file_name' string")
            where += f" (id {im.get('id')})"
            if not self.allow_outside_root and escapes_root(self.images_dir, name):
                raise ValueError(f"{where}: file_name {name!r} is outside data.images_dir={str(self.images_dir)!r} "
                                 "(an absolute path or '..'); set data.allow_outside_root=true if the images really "
                                 "live there")

    def splits(self) -> dict[str, Split]:
        data = read_instances(self.annotations)
        cat_index = category_index(data["categories"], self.num_classes, self.annotations)
        by_image: dict[int, list[dict]] = {}
        for a in data["annotations"]:
            if a.get("iscrowd", 0):
                continue
            if a.get("category_id") not in cat_index:
                raise ValueError(f"annotation {a.get('id')} has unknown category_id {a.get('category_id')}")
            xyxy_box(a, self.annotations)  # validate every annotation, not only those of sampled images
            by_image.setdefault(a["image_id"], []).append(a)
        self._check_file_names(data["images"])
        imgs = sorted(data["images"], key=lambda im: im["id"])
        imgs, n_missing = self._present(imgs)
        if self.max_images is not None and len(imgs) > self.max_images:
            pick = np.sort(np.random.default_rng(self.seed).choice(len(imgs), self.max_images, replace=False))
            imgs = [imgs[k] for k in pick]
        if not imgs:
            raise ValueError(f"no images listed in {self.annotations}")
        labels, boxes, classes, offsets = [], [], [], [0]
        for info in tqdm(imgs, desc="coco", unit="img"):
            # the letterbox scale from the file's header; the pixels are decoded shard by shard when written
            scale = self.image_size / max(header_size(self.images_dir / info["file_name"]))
            anns = by_image.get(info["id"], [])
            b = np.array([xyxy_box(a, self.annotations) for a in anns], np.float32).reshape(-1, 4)
            b = np.clip(b * scale, 0, self.image_size)
            c = np.array([cat_index[a["category_id"]] for a in anns], np.int64)
            area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
            labels.append(int(c[np.argmax(area)]) if len(c) else -1)
            boxes.append(b)
            classes.append(c)
            offsets.append(offsets[-1] + len(c))
        names: list[str | None] = [None] * self.num_classes  # index = class = category id - 1; gaps stay None
        for c in data["categories"]:
            names[c["id"] - 1] = c.get("name", str(c["id"]))
        meta = {"class_names": names, "category_ids": sorted(cat_index)}
        if n_missing:
            meta["n_missing_skipped"] = n_missing
        size = self.image_size
        images = DecodedImages([self.images_dir / info["file_name"] for info in imgs], size,
                               lambda p: letterbox(open_rgb(p), size)[0])
        split = Split(images, np.array(labels, np.int64), np.concatenate(boxes), np.concatenate(classes),
                      np.array(offsets, np.int64), meta)
        return {"val": split}
