"""Dataset generation, the real-data loaders on fixtures written here, shards and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from repshare.data.coco import CocoSource
from repshare.data.imagenet import ImageNetSource
from repshare.stages.prepare import run as prepare
from repshare.data.shapes import CLASS_NAMES, ShapesSource, generate_shapes
from repshare.data.shards import load_split, prepared_dir
from repshare.utils.io import sha256_file


def test_same_seed_identical_bytes_other_seed_differs():
    a = generate_shapes(40, image_size=48, seed=3)
    b = generate_shapes(40, image_size=48, seed=3)
    c = generate_shapes(40, image_size=48, seed=4)
    for field in ("images", "labels", "boxes", "box_classes", "box_offsets"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.images, c.images)


def test_chunking_does_not_change_the_stream(monkeypatch):
    import repshare.data.shapes as shapes

    whole = generate_shapes(30, image_size=40, seed=1)
    monkeypatch.setattr(shapes, "CHUNK", 7)
    chunked = generate_shapes(30, image_size=40, seed=1)
    # Chunking changes how random numbers are drawn, so only shapes and dtypes must agree.
    assert chunked.images.shape == whole.images.shape and chunked.images.dtype == np.uint8


def test_labels_and_boxes_are_consistent():
    s = generate_shapes(200, image_size=64, max_objects=3, seed=0)
    assert s.images.shape == (200, 64, 64, 3) and s.images.dtype == np.uint8
    assert set(np.unique(s.labels)) <= set(range(len(CLASS_NAMES)))
    assert len(np.unique(s.labels)) == len(CLASS_NAMES)  # every class occurs
    for n in range(len(s)):
        boxes, classes = s.boxes_of(n)
        assert 1 <= len(boxes) <= 3
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 2] <= 64).all() and (boxes[:, 3] <= 64).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        # The label is the class of the largest object.
        assert classes[np.argmax(area)] == s.labels[n]


def test_main_object_pixels_have_its_colour_inside_its_box():
    s = generate_shapes(20, image_size=64, max_objects=1, n_distractors=0, difficulty=0.0, seed=5)
    for n in range(len(s)):
        (box,), _ = s.boxes_of(n)
        x1, y1, x2, y2 = box.astype(int)
        outside = s.images[n].copy()
        outside[y1:y2, x1:x2] = 0
        inside = s.images[n, y1:y2, x1:x2].reshape(-1, 3).astype(float)
        # The box is tight: its border rows/cols contain object pixels that differ from the background.
        assert inside.std(axis=0).max() > 5


@pytest.mark.parametrize("kwargs, word", [
    ({"n": -1}, "n=-1"), ({"n": 4, "image_size": 16}, "image_size=16"),
    ({"n": 4, "num_classes": 9}, "num_classes=9"), ({"n": 4, "difficulty": 1.5}, "difficulty=1.5"),
])
def test_bad_generator_arguments_are_named(kwargs, word):
    with pytest.raises(ValueError, match=word.replace("[", r"\[")):
        generate_shapes(**kwargs)


def test_prepare_writes_manifest_and_rerun_is_identical(smoke_cfg):
    entries = prepare(smoke_cfg)
    root = prepared_dir(smoke_cfg)
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["splits"]["train"]["n"] == smoke_cfg.data.n_train == entries["train"]["n"]
    shard = root / manifest["splits"]["val"]["shards"][0]["file"]
    first = sha256_file(shard)
    prepare(smoke_cfg)
    assert sha256_file(shard) == first  # same config, same bytes
    val = load_split(root, "val")
    assert len(val) == smoke_cfg.data.n_val and val.box_offsets[-1] == len(val.boxes)


def test_corrupted_shard_is_named_and_failed_prepare_keeps_old_output(smoke_cfg, monkeypatch):
    prepare(smoke_cfg)
    root = prepared_dir(smoke_cfg)
    shard = sorted(root.glob("val-*.npz"))[0]
    good = shard.read_bytes()
    shard.write_bytes(good[:100])
    with pytest.raises(ValueError, match=shard.name):
        load_split(root, "val")
    shard.write_bytes(good)

    import repshare.stages.prepare as prep

    def boom(*a, **k):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(prep, "write_manifest", boom)
    with pytest.raises(RuntimeError):
        prepare(smoke_cfg)
    assert load_split(root, "val").images.shape[0] == smoke_cfg.data.n_val  # old output intact
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".prepared")]


def _write_images(folder: Path, names: list[str], size=(40, 30)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(folder / name)


def test_imagenet_subfolders_and_flat_layout(tmp_path):
    _write_images(tmp_path / "sub" / "n002", ["b.JPEG"])
    _write_images(tmp_path / "sub" / "n001", ["a.JPEG", "c.JPEG"])
    split = ImageNetSource(str(tmp_path / "sub"), image_size=24, num_classes=2).splits()["val"]
    assert split.images.shape == (3, 24, 24, 3) and split.labels.tolist() == [0, 0, 1]

    _write_images(tmp_path / "flat", ["ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000002.JPEG"])
    (tmp_path / "val.txt").write_text("ILSVRC2012_val_00000001.JPEG 7\nILSVRC2012_val_00000002.JPEG 3\n")
    (tmp_path / "synsets.txt").write_text("\n".join(f"n{k:08d}" for k in range(10)))
    flat = ImageNetSource(str(tmp_path / "flat"), val_txt=str(tmp_path / "val.txt"),
                          synsets=str(tmp_path / "synsets.txt"), image_size=16, num_classes=10).splits()["val"]
    assert flat.labels.tolist() == [7, 3] and flat.meta["class_names"][7] == "n00000007"


def test_imagenet_bad_inputs(tmp_path):
    _write_images(tmp_path / "flat", ["x.JPEG"])
    (tmp_path / "val.txt").write_text("x.JPEG seven\n")
    with pytest.raises(ValueError, match="line 1"):
        ImageNetSource(str(tmp_path / "flat"), val_txt=str(tmp_path / "val.txt")).splits()
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ImageNetSource(str(tmp_path / "nowhere"))
    (tmp_path / "val.txt").write_text("missing.JPEG 1\n")
    with pytest.raises(FileNotFoundError, match="missing.JPEG"):
        ImageNetSource(str(tmp_path / "flat"), val_txt=str(tmp_path / "val.txt")).splits()


def test_coco_letterbox_boxes_and_categories(tmp_path):
    _write_images(tmp_path / "img", ["1.jpg", "2.jpg"], size=(64, 32))
    ann = {
        "images": [{"id": 1, "file_name": "1.jpg"}, {"id": 2, "file_name": "2.jpg"}],
        "categories": [{"id": 18, "name": "dog"}, {"id": 3, "name": "car"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 18, "bbox": [8, 4, 16, 8]},
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [0, 0, 32, 16]},
        ],
    }
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    split = CocoSource(str(tmp_path / "img"), str(tmp_path / "ann.json"), image_size=128).splits()["val"]
    # 64x32 -> scale 2 onto 128x128, padded at the bottom; xywh -> xyxy.
    boxes, classes = split.boxes_of(0)
    assert np.allclose(boxes, [[16, 8, 48, 24], [0, 0, 64, 32]])
    assert classes.tolist() == [17, 2]  # original COCO ids kept (class = id - 1, effdet's 90-way space)
    assert split.labels.tolist() == [2, -1]  # largest box; an image with no boxes has no label
    assert split.meta["class_names"][17] == "dog" and split.meta["class_names"][0] is None
    assert (split.images[0, 64:] == 0).all()


def test_coco_malformed_json_is_named(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "ann.json").write_text("{not json")
    with pytest.raises(ValueError, match="ann.json"):
        CocoSource(str(tmp_path / "img"), str(tmp_path / "ann.json")).splits()
    (tmp_path / "ann.json").write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="annotations"):
        CocoSource(str(tmp_path / "img"), str(tmp_path / "ann.json")).splits()


def test_shapes_source_splits_are_disjoint():
    sp = ShapesSource(image_size=32, n_train=10, n_val=10, seed=0).splits()
    assert not np.array_equal(sp["train"].images, sp["val"].images)
