"""COCO-style detection data for the real mode: an image folder plus an instances json.

Images are letterboxed to ``image_size`` (long side scaled, bottom/right padded, as EfficientDet
does), boxes scaled with them and converted from COCO's xywh to xyxy. Category ids are mapped to
contiguous indices in sorted id order. The classification label of an image is the category of its
largest box (-1 when it has none).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from repshare.data.images import letterbox, open_rgb
from repshare.data.shards import Split


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


class CocoSource:
    def __init__(self, images_dir: str, annotations: str, image_size: int = 512, max_images: int | None = None,
                 num_classes: int = 90, seed: int = 0, **_: object):
        self.images_dir, self.annotations = Path(images_dir), Path(annotations)
        self.image_size, self.max_images, self.num_classes, self.seed = image_size, max_images, num_classes, seed
        if not self.images_dir.is_dir():
            raise FileNotFoundError(f"data.images_dir={images_dir!r} is not a directory")

    def splits(self) -> dict[str, Split]:
        data = read_instances(self.annotations)
        cat_ids = sorted(c["id"] for c in data["categories"])
        if len(cat_ids) > self.num_classes:
            raise ValueError(f"{len(cat_ids)} categories in {self.annotations} > data.num_classes={self.num_classes}")
        cat_index = {c: k for k, c in enumerate(cat_ids)}
        by_image: dict[int, list[dict]] = {}
        for a in data["annotations"]:
            if a.get("iscrowd", 0):
                continue
            if a["category_id"] not in cat_index:
                raise ValueError(f"annotation {a.get('id')} has unknown category_id {a['category_id']}")
            by_image.setdefault(a["image_id"], []).append(a)
        imgs = sorted(data["images"], key=lambda im: im["id"])
        if self.max_images is not None and len(imgs) > self.max_images:
            pick = np.sort(np.random.default_rng(self.seed).choice(len(imgs), self.max_images, replace=False))
            imgs = [imgs[k] for k in pick]
        if not imgs:
            raise ValueError(f"no images listed in {self.annotations}")
        images, labels, boxes, classes, offsets = [], [], [], [], [0]
        for info in tqdm(imgs, desc="coco", unit="img"):
            arr, scale = letterbox(open_rgb(self.images_dir / info["file_name"]), self.image_size)
            images.append(arr)
            anns = by_image.get(info["id"], [])
            b = np.array([a["bbox"] for a in anns], np.float32).reshape(-1, 4)
            b[:, 2:] += b[:, :2]  # xywh -> xyxy
            b = np.clip(b * scale, 0, self.image_size)
            c = np.array([cat_index[a["category_id"]] for a in anns], np.int64)
            area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
            labels.append(int(c[np.argmax(area)]) if len(c) else -1)
            boxes.append(b)
            classes.append(c)
            offsets.append(offsets[-1] + len(c))
        names = {c["id"]: c.get("name", str(c["id"])) for c in data["categories"]}
        split = Split(np.stack(images), np.array(labels, np.int64), np.concatenate(boxes), np.concatenate(classes),
                      np.array(offsets, np.int64), {"class_names": [names[c] for c in cat_ids], "category_ids": cat_ids})
        return {"val": split}
