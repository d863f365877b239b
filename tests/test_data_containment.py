"""Paths read from data files stay under their root (issue 29): ImageNet label lists, COCO file_names.

A list line or a json entry that leaves the root (``..``, an absolute path) stops the prepare stage with
one line naming the file and the line/entry, exit 2; ``allow_outside_root=True`` lets it through.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from repshare.data.coco import CocoSource
from repshare.data.imagenet import ImageNetSource
from repshare.data.paths import escapes_root
from repshare.stage import describe_error


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(path)


@pytest.mark.parametrize("name, leaves", [
    ("a.JPEG", False), ("sub/a.JPEG", False), ("sub/../a.JPEG", False), ("./a.JPEG", False),
    ("../outside/a.JPEG", True), ("sub/../../a.JPEG", True), ("/etc/passwd", True), ("..", True),
])
def test_escapes_root_by_hand(tmp_path, name, leaves):
    assert escapes_root(tmp_path / "root", name) is leaves


def _imagenet(tmp_path: Path, lines: list[str], **kw) -> ImageNetSource:
    root = tmp_path / "root"
    _image(root / "a.JPEG")
    _image(tmp_path / "outside" / "b.JPEG")  # exists: the refusal is about where it is, not whether it is
    (tmp_path / "val.txt").write_text("\n".join(lines) + "\n")
    return ImageNetSource(str(root), val_txt=str(tmp_path / "val.txt"), image_size=8, num_classes=10, **kw)


@pytest.mark.parametrize("bad", ["../outside/b.JPEG 1", "ABS 1"])
def test_imagenet_list_line_outside_root_is_named(tmp_path, bad):
    bad = bad.replace("ABS", str(tmp_path / "outside" / "b.JPEG"))
    src = _imagenet(tmp_path, ["a.JPEG 0", bad])
    with pytest.raises(ValueError) as err:
        src.items()
    line = describe_error(err.value)
    assert "val.txt line 2" in line and bad.split()[0] in line and "data.allow_outside_root" in line
    assert "\n" not in line


def test_imagenet_outside_root_allowed_by_the_option(tmp_path):
    items, _ = _imagenet(tmp_path, ["a.JPEG 0", "../outside/b.JPEG 1"], allow_outside_root=True).items()
    assert [(p.name, label) for p, label in items] == [("a.JPEG", 0), ("b.JPEG", 1)]


def _coco(tmp_path: Path, file_names: list[str], **kw) -> CocoSource:
    images = tmp_path / "images"
    _image(images / "a.jpg")
    _image(tmp_path / "outside" / "b.jpg")
    doc = {"images": [{"id": k + 1, "file_name": n, "width": 16, "height": 12} for k, n in enumerate(file_names)],
           "annotations": [], "categories": [{"id": 1, "name": "x"}]}
    (tmp_path / "ann.json").write_text(json.dumps(doc))
    return CocoSource(str(images), str(tmp_path / "ann.json"), image_size=16, num_classes=90, **kw)


@pytest.mark.parametrize("bad", ["../outside/b.jpg", "ABS"])
def test_coco_file_name_outside_images_dir_is_named(tmp_path, bad):
    bad = bad.replace("ABS", str(tmp_path / "outside" / "b.jpg"))
    with pytest.raises(ValueError) as err:
        _coco(tmp_path, ["a.jpg", bad]).splits()
    line = describe_error(err.value)
    assert "ann.json: images[1] (id 2)" in line and repr(bad) in line and "data.allow_outside_root" in line


def test_coco_outside_allowed_by_the_option(tmp_path):
    split = _coco(tmp_path, ["a.jpg", "../outside/b.jpg"], allow_outside_root=True).splits()["val"]
    assert len(split.labels) == 2


def test_prepare_stage_exits_2_with_one_line(smoke_cfg, tmp_path):
    """The stage entry point on a smoke config whose data is an ImageNet list that leaves the root."""
    from omegaconf import OmegaConf, open_dict

    _imagenet(tmp_path, ["a.JPEG 0", "../outside/b.JPEG 1"])
    from repshare.config import CONF_DIR

    data = OmegaConf.load(CONF_DIR / "data" / "imagenet.yaml")  # every key of the data group, as composed
    data.merge_with({"root": str(tmp_path / "root"), "val_txt": str(tmp_path / "val.txt"), "image_size": 16,
                     "num_classes": smoke_cfg.data.num_classes, "shard_size": 64, "seed": 0})
    with open_dict(smoke_cfg):
        smoke_cfg.data = data
        smoke_cfg.sharing.calibration_split = "calib"  # the smoke preset's `select` split exists only on shapes
    params = tmp_path / "params.yaml"
    params.write_text(OmegaConf.to_yaml(smoke_cfg))
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(repo / "pipelines" / "prepare.py"), "--params", str(params)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error [")]
    assert len(errors) == 1 and "val.txt line 2" in errors[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "data" / "prepared").exists()
