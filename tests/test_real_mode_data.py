"""Real-mode data: ImageNet label order and list formats, partial datasets, COCO category ids and mAP."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from repshare.data.coco import CocoSource
from repshare.data.imagenet import ImageNetSource, ilsvrc2012_synsets
from repshare.stages.prepare import run as prepare
from repshare.data.shards import load_split, prepared_dir
from repshare.models.detector import to_effdet_target
from repshare.models.preprocess import Preprocess
from repshare.training.evaluate import evaluate_detector

# Standard ILSVRC2012 label indices (timm / torchvision / caffe val.txt order), written down independently.
KNOWN = {"n01440764": 0, "n01443537": 1, "n02099601": 207, "n02123045": 281, "n15075141": 999}
# The 80 COCO category ids used by instances_val2017.json (1..90 with 10 gaps).
COCO_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]


def _write_images(folder: Path, names: list[str], size=(40, 30), seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in names:
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(folder / name)


# ----------------------------------------------------------------------------- item 1: label order
def test_packaged_synsets_are_the_1000_ilsvrc2012_wnids_in_order():
    wnids = ilsvrc2012_synsets()
    assert len(wnids) == 1000 == len(set(wnids)) and list(wnids) == sorted(wnids)
    assert all(wnids[k] == w for w, k in KNOWN.items())


def test_subset_of_class_folders_gets_the_standard_labels(tmp_path):
    # Three of the 1,000 classes present: the labels must be their standard indices, not 0, 1, 2.
    for w in ("n02123045", "n01443537", "n15075141"):
        _write_images(tmp_path / "val" / w, ["a.JPEG"])
    split = ImageNetSource(str(tmp_path / "val"), image_size=16, num_classes=1000).splits()["val"]
    assert split.labels.tolist() == [1, 281, 999]  # folders sorted: n014..., n021..., n150...
    assert split.meta["class_names"][281] == "n02123045"


def test_subset_without_known_order_is_refused_not_guessed(tmp_path):
    for w in ("b", "c"):
        _write_images(tmp_path / "val" / w, ["a.JPEG"])
    with pytest.raises(ValueError, match="data.synsets"):
        ImageNetSource(str(tmp_path / "val"), image_size=16, num_classes=5).items()
    # A 1,000-class model with folders that are not wnids: refused too.
    with pytest.raises(ValueError, match="'b' is not in the ILSVRC2012 synsets"):
        ImageNetSource(str(tmp_path / "val"), image_size=16, num_classes=1000).items()


def test_devkit_style_one_based_label_is_named(tmp_path):
    _write_images(tmp_path / "flat", ["x.JPEG"])
    (tmp_path / "val.txt").write_text("x.JPEG 1000\n")
    with pytest.raises(ValueError, match="0-based"):
        ImageNetSource(str(tmp_path / "flat"), val_txt=str(tmp_path / "val.txt")).items()


# ----------------------------------------------------------------------------- item 5: list formats
def test_val_txt_formats_space_comma_dot_slash_and_wnid(tmp_path):
    _write_images(tmp_path / "flat", ["a.JPEG", "b.JPEG", "c.JPEG", "d e.JPEG", "f.JPEG"])
    (tmp_path / "val.txt").write_text(
        "a.JPEG 3\nb.JPEG, 5\n./c.JPEG, 7\n\nd e.JPEG 9\n  ./f.JPEG,n02123045  \n")
    items, _ = ImageNetSource(str(tmp_path / "flat"), val_txt=str(tmp_path / "val.txt")).items()
    assert [(p.name, y) for p, y in items] == [("a.JPEG", 3), ("b.JPEG", 5), ("c.JPEG", 7), ("d e.JPEG", 9),
                                               ("f.JPEG", 281)]
    assert all(p.parent == tmp_path / "flat" for p, _ in items)


@pytest.mark.parametrize("text, word", [("path,label\na.JPEG,1\n", "header"), ("a.JPEG\n", "line 1"),
                                        ("a.JPEG 1\nb.JPEG -2\n", "line 2")])
def test_val_txt_bad_lines_are_named(tmp_path, text, word):
    _write_images(tmp_path / "flat", ["a.JPEG", "b.JPEG"])
    (tmp_path / "val.txt").write_text(text)
    with pytest.raises(ValueError, match=word):
        ImageNetSource(str(tmp_path / "flat"), val_txt=str(tmp_path / "val.txt")).items()


# ----------------------------------------------------------------------------- item 4: partial datasets
def test_missing_listed_images_strict_by_default_skipped_and_counted_on_request(smoke_cfg, tmp_path):
    _write_images(tmp_path / "flat", ["ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000003.JPEG"])
    (tmp_path / "val.txt").write_text("".join(f"ILSVRC2012_val_{k:08d}.JPEG {k}\n" for k in range(1, 6)))
    src = dict(root=str(tmp_path / "flat"), val_txt=str(tmp_path / "val.txt"), image_size=16)
    with pytest.raises(FileNotFoundError, match=r"00000002.JPEG \(3 of 5 .*data.skip_missing=true"):
        ImageNetSource(**src).items()
    split = ImageNetSource(**src, skip_missing=True).splits()["val"]
    assert split.labels.tolist() == [1, 3] and split.meta["n_missing_skipped"] == 3
    # Through the prepare stage, the count reaches the manifest.
    cfg = smoke_cfg
    from omegaconf import open_dict
    with open_dict(cfg):
        cfg.data = {"_target_": "repshare.data.imagenet.ImageNetSource", "name": "imagenet", "num_classes": 1000,
                    "shard_size": 64, "seed": 0, "skip_missing": True, **src}
    prepare(cfg)
    assert load_split(prepared_dir(cfg), "val").meta["n_missing_skipped"] == 3


@pytest.mark.parametrize("skip", [False, True])
def test_no_listed_image_on_disk_says_the_list_and_the_folder_do_not_match(tmp_path, skip):
    """Not "set skip_missing to evaluate the 0 present": the paths are relative to data.root, say so."""
    _write_images(tmp_path / "root" / "data", ["ILSVRC2012_val_00000001.JPEG"])
    (tmp_path / "val.txt").write_text("./ILSVRC2012_val_00000001.JPEG 1\n")  # relative to root/data, not root
    src = dict(root=str(tmp_path / "root"), val_txt=str(tmp_path / "val.txt"), image_size=16, skip_missing=skip)
    with pytest.raises(FileNotFoundError, match=r"none of the 1 listed images is under data.root=.*relative to data.root"):
        ImageNetSource(**src).items()
    ann = {"images": [{"id": 1, "file_name": "1.jpg"}], "categories": [{"id": 1}], "annotations": []}
    (tmp_path / "a.json").write_text(json.dumps(ann))
    with pytest.raises(FileNotFoundError, match=r"none of the 1 images in .*a.json is under data.images_dir="):
        CocoSource(str(tmp_path / "root"), str(tmp_path / "a.json"), image_size=128, skip_missing=skip).splits()


def test_coco_missing_images_skipped_on_request(tmp_path):
    _write_images(tmp_path / "img", ["1.jpg"])
    ann = {"images": [{"id": 1, "file_name": "1.jpg"}, {"id": 2, "file_name": "2.jpg"}], "categories": [{"id": 1}],
           "annotations": [{"id": 1, "image_id": 2, "category_id": 1, "bbox": [0, 0, 4, 4]}]}
    (tmp_path / "a.json").write_text(json.dumps(ann))
    with pytest.raises(FileNotFoundError, match="skip_missing"):
        CocoSource(str(tmp_path / "img"), str(tmp_path / "a.json"), image_size=128).splits()
    split = CocoSource(str(tmp_path / "img"), str(tmp_path / "a.json"), image_size=128, skip_missing=True).splits()
    assert len(split["val"]) == 1 and split["val"].meta["n_missing_skipped"] == 1


# ----------------------------------------------------------------------------- item 2: COCO ids and mAP
def _coco_fixture(tmp_path: Path) -> tuple[dict, Path]:
    """Four 64x48 images; boxes with ids spread over 1..90 (gaps included in the category list)."""
    names = [f"{k:012d}.jpg" for k in range(4)]
    _write_images(tmp_path / "img", names, size=(64, 48), seed=3)
    rng = np.random.default_rng(5)
    anns, aid = [], 1
    for k in range(4):
        for cid in rng.choice([1, 2, 44, 67, 70, 84, 90], size=3, replace=False):
            x, y = rng.uniform(0, 30, 2)
            w, h = rng.uniform(8, 30, 2)
            anns.append({"id": aid, "image_id": 100 + k, "category_id": int(cid), "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": 0})
            aid += 1
    data = {"images": [{"id": 100 + k, "file_name": n, "width": 64, "height": 48} for k, n in enumerate(names)],
            "annotations": anns, "categories": [{"id": c, "name": f"cat{c}"} for c in COCO_IDS]}
    (tmp_path / "instances.json").write_text(json.dumps(data))
    return data, tmp_path / "instances.json"


class GroundTruthDetector(nn.Module):
    """Returns each image's ground-truth boxes (xyxy at the detector input) with their COCO category ids."""

    def __init__(self, per_image: list[np.ndarray]):
        super().__init__()
        self.per_image, self.next = per_image, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], 100, 6)
        for b in range(x.shape[0]):
            det = torch.as_tensor(self.per_image[self.next], dtype=torch.float32)
            out[b, : len(det)] = det
            self.next += 1
        return out


def _expected_detections(data: dict, size: int) -> list[np.ndarray]:
    """From the json alone: xywh -> xyxy scaled by the letterbox factor, score 1, class = category id."""
    out = []
    for im in sorted(data["images"], key=lambda im: im["id"]):
        scale = size / max(im["width"], im["height"])
        rows = [[a["bbox"][0] * scale, a["bbox"][1] * scale, (a["bbox"][0] + a["bbox"][2]) * scale,
                 (a["bbox"][1] + a["bbox"][3]) * scale, 1.0, a["category_id"]]
                for a in data["annotations"] if a["image_id"] == im["id"]]
        out.append(np.array(rows))
    return out


def test_coco_keeps_original_category_ids(tmp_path):
    data, path = _coco_fixture(tmp_path)
    split = CocoSource(str(tmp_path / "img"), str(path), image_size=128).splits()["val"]
    want = [a["category_id"] - 1 for im in sorted(data["images"], key=lambda i: i["id"])
            for a in data["annotations"] if a["image_id"] == im["id"]]
    assert split.box_classes.tolist() == want
    # What effdet trains on (class + 1) is the COCO id itself, as its published 90-class head predicts.
    t = to_effdet_target({"bbox": torch.from_numpy(split.boxes)[None], "cls": torch.from_numpy(split.box_classes)[None]},
                         128, 1)
    assert t["cls"][0].long().tolist() == [w + 1 for w in want]


def test_stub_detector_returning_ground_truth_with_original_ids_scores_map_1(tmp_path):
    data, path = _coco_fixture(tmp_path)
    split = CocoSource(str(tmp_path / "img"), str(path), image_size=128).splits()["val"]
    pre = Preprocess(128)
    res = evaluate_detector(GroundTruthDetector(_expected_detections(data, 128)), pre, split, batch_size=3)
    assert res["map"] == pytest.approx(1.0) and res["map_50"] == pytest.approx(1.0) and res["n"] == 4
    # The same boxes labelled by contiguous index (the old mapping) must not score 1: the metric sees labels.
    contiguous = {c: k + 1 for k, c in enumerate(COCO_IDS)}
    shifted = [np.c_[d[:, :5], [contiguous[int(c)] for c in d[:, 5]]] for d in _expected_detections(data, 128)]
    assert evaluate_detector(GroundTruthDetector(shifted), pre, split, batch_size=3)["map"] < 0.9


def test_coco_bad_annotations_are_named(tmp_path):
    _write_images(tmp_path / "img", ["1.jpg"])

    def write(ann: dict, cats=({"id": 3},)) -> str:
        data = {"images": [{"id": 1, "file_name": "1.jpg"}], "categories": list(cats),
                "annotations": [{"id": 7, "image_id": 1, "category_id": 3, **ann}]}
        (tmp_path / "a.json").write_text(json.dumps(data))
        return str(tmp_path / "a.json")

    with pytest.raises(ValueError, match="annotation 7 .* no 'bbox'"):
        CocoSource(str(tmp_path / "img"), write({})).splits()
    with pytest.raises(ValueError, match="annotation 7 .*negative width"):
        CocoSource(str(tmp_path / "img"), write({"bbox": [10, 10, -4, 5]})).splits()
    with pytest.raises(ValueError, match="category id 95 .*1..data.num_classes=90"):
        CocoSource(str(tmp_path / "img"), write({"bbox": [1, 1, 4, 5]}, cats=({"id": 3}, {"id": 95}))).splits()


# ----------------------------------------------------------------------------- 1001-class label files
class _ByBrightness(nn.Module):
    """A perfect 'classifier' of the test images: class k = an image of brightness 20 k."""

    def forward(self, x):
        k = torch.round(x.mean(dim=(1, 2, 3)) * 255 / 20).long()
        return torch.nn.functional.one_hot(k, 1000).float()


def _brightness_images(tmp_path: Path, labels_in_file: list[int]) -> Path:
    (tmp_path / "flat").mkdir()
    for k in range(len(labels_in_file)):
        Image.fromarray(np.full((8, 8, 3), 20 * k, np.uint8)).save(tmp_path / "flat" / f"{k}.png")
    (tmp_path / "val.txt").write_text("".join(f"{k}.png {lab}\n" for k, lab in enumerate(labels_in_file)))
    return tmp_path / "val.txt"


def test_a_1001_class_label_file_is_refused_and_mapped_with_label_offset(tmp_path):
    from repshare.training.evaluate import check_label_shift, evaluate_classifier

    val_txt = _brightness_images(tmp_path, [k + 1 for k in range(5)])  # TF convention: true class k written k+1
    pre = Preprocess(8, mean=(0, 0, 0), std=(1, 1, 1), interpolation="nearest")

    def split(offset: int):
        return ImageNetSource(str(tmp_path / "flat"), val_txt=str(val_txt), image_size=8, crop_pct=1.0,
                              label_offset=offset).splits()["val"]

    shifted = evaluate_classifier(_ByBrightness(), pre, split(0), 1000, label_check=True)
    assert shifted["top1"] == 0.0 and shifted["top1_labels_minus_1"] == 1.0  # counted by hand: 5 of 5
    assert shifted["preprocess"] == {"input_size": 8, "interpolation": "nearest", "mean": [0.0] * 3, "std": [1.0] * 3}
    with pytest.raises(ValueError, match=r"one too high .* top-1 0.000 as given vs 1.000 .*data.label_offset=-1"):
        check_label_shift(shifted, "data=imagenet")
    mapped = evaluate_classifier(_ByBrightness(), pre, split(-1), 1000, label_check=True)
    assert mapped["top1"] == 1.0
    check_label_shift(mapped, "data=imagenet")  # passes
    check_label_shift({"top1": 0.001, "top1_labels_minus_1": 0.002}, "x")  # an untrained model: at chance both ways
    # a 0-based file with label 0 cannot be mapped down
    (tmp_path / "zero.txt").write_text("0.png 0\n")
    with pytest.raises(ValueError, match="line 1: label 0 with data.label_offset=-1 is negative"):
        ImageNetSource(str(tmp_path / "flat"), val_txt=str(tmp_path / "zero.txt"), label_offset=-1).items()


def test_label_offset_is_validated_at_compose():
    from repshare.config import ConfigError, compose

    with pytest.raises(ConfigError, match="data.label_offset"):
        compose(["data=imagenet", "data.root=/x", "data.label_offset=1"])


# ----------------------------------------------------------------------------- training images by path
def test_train_root_gives_train_and_select_splits_disjoint_in_the_val_class_order(tmp_path):
    """A train folder of two standard classes (5 + 4 images) beside val: the train labels are the standard
    indices (0 and 281, as val's), n_select = 3 of the 9 go to select, the rest to train, none lost or
    doubled; the same seed draws the same select images."""
    for w, n in (("n01440764", 5), ("n02123045", 4)):
        _write_images(tmp_path / "train" / w, [f"{w}_{k}.JPEG" for k in range(n)], seed=n)
    _write_images(tmp_path / "val" / "n02123045", ["v.JPEG"], seed=9)
    kw = dict(image_size=16, num_classes=1000, train_root=str(tmp_path / "train"), n_select=3)
    splits = ImageNetSource(str(tmp_path / "val"), **kw).splits()
    assert sorted(splits) == ["select", "train", "val"]
    assert (len(splits["train"]), len(splits["select"]), len(splits["val"])) == (6, 3, 1)
    labels = sorted(splits["train"].labels.tolist() + splits["select"].labels.tolist())
    assert labels == [0] * 5 + [281] * 4
    # every training image once: compare pixels with the files (decoded and cropped the same way)
    pixels = [bytes(np.asarray(im)) for sp in ("train", "select") for im in splits[sp].images]
    assert len(set(pixels)) == 9
    again = ImageNetSource(str(tmp_path / "val"), **kw).splits()
    assert np.array_equal(np.asarray(again["select"].images), np.asarray(splits["select"].images))


def test_train_list_and_val_sharing_an_image_is_refused(tmp_path):
    _write_images(tmp_path / "imgs", ["a.JPEG", "b.JPEG", "c.JPEG"])
    (tmp_path / "val.txt").write_text("a.JPEG 0\nb.JPEG 1\n")
    (tmp_path / "train.txt").write_text("c.JPEG 1\nb.JPEG 1\n")
    src = ImageNetSource(str(tmp_path / "imgs"), val_txt=str(tmp_path / "val.txt"), image_size=16, num_classes=1000,
                         train_root=str(tmp_path / "imgs"), train_txt=str(tmp_path / "train.txt"))
    with pytest.raises(ValueError, match=r"b.JPEG is both a training image .*data.train_root.* and a val image"):
        src.splits()
    (tmp_path / "train.txt").write_text("c.JPEG 7\n")
    splits = ImageNetSource(str(tmp_path / "imgs"), val_txt=str(tmp_path / "val.txt"), image_size=16,
                            num_classes=1000, train_root=str(tmp_path / "imgs"),
                            train_txt=str(tmp_path / "train.txt")).splits()
    assert splits["train"].labels.tolist() == [7]


@pytest.mark.parametrize("override, key", [
    (["data.n_select=5"], "data.n_select"),  # no train_root to take them from
    (["data.train_txt=/x.txt"], "data.train_txt"),
    (["data.train_root=/t", "data.train_max_images=0"], "data.train_max_images"),
])
def test_training_image_keys_are_checked_at_compose(override, key):
    from repshare.config import ConfigError, compose, validate_config

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_config(compose(["experiment=real", "data.root=/v", *override]))
