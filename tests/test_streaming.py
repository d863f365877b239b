"""Issue 11, item 10: splits read from their shards batch by batch, forward passes in chunks."""

from __future__ import annotations

import zipfile
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from repshare.data.shard_images import ShardedImages
from repshare.data.shards import load_split, write_manifest, write_split
from repshare.features.batching import LabelledBatches, labelled_batches
from repshare.features.stages import in_chunks


def _data(n: int, size: int = 5, seed: int = 0) -> SimpleNamespace:
    rng = np.random.default_rng(seed)
    return SimpleNamespace(images=rng.integers(0, 256, (n, size, size + 1, 3), dtype=np.uint8),
                           labels=np.arange(n, dtype=np.int64), boxes=np.zeros((0, 4), np.float32),
                           box_classes=np.zeros(0, np.int64), box_offsets=np.zeros(n + 1, np.int64))


@pytest.fixture
def prepared(tmp_path):
    d = _data(10)
    write_manifest(tmp_path, {"val": write_split(tmp_path, "val", d, shard_size=3)}, {})  # shards of 3,3,3,1
    return tmp_path, d.images


def test_lazy_split_reads_the_same_pixels_across_shard_boundaries(prepared):
    root, images = prepared
    lazy = load_split(root, "val", lazy=True)
    assert isinstance(lazy.images, ShardedImages)
    assert len(lazy.images) == 10 and lazy.images.shape == images.shape and lazy.images.dtype == np.uint8
    assert np.array_equal(np.asarray(lazy.images), images)
    for a, b in [(0, 3), (2, 7), (5, 10), (9, 10), (4, 4)]:
        assert np.array_equal(np.asarray(lazy.images[a:b]), images[a:b])
    view = lazy.images[2:9]  # a view of a view
    assert np.array_equal(np.asarray(view[1:5]), images[3:7])
    assert np.array_equal(lazy.images[-1], images[-1]) and np.array_equal(view[0], images[2])
    idx = [8, 0, 4, 4]
    assert np.array_equal(lazy.images[idx], images[idx])
    assert np.array_equal(lazy.images[::3], images[::3])
    with pytest.raises(IndexError):
        lazy.images[10]
    assert np.array_equal(lazy.labels, np.arange(10))


def test_compressed_foreign_shard_is_read_too(tmp_path):
    d = _data(4)
    write_manifest(tmp_path, {"val": write_split(tmp_path, "val", d, shard_size=4)}, {})
    path = tmp_path / "val-00000.npz"
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    np.savez_compressed(path, **arrays)  # not ZIP_STORED: no row offsets, read through numpy
    with zipfile.ZipFile(path) as zf:
        assert zf.getinfo("images.npy").compress_type != zipfile.ZIP_STORED
    lazy = load_split(tmp_path, "val", verify=False, lazy=True)
    assert np.array_equal(np.asarray(lazy.images[1:3]), d.images[1:3])


def test_truncated_shard_is_named(prepared):
    root, _ = prepared
    path = root / "val-00001.npz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])  # the end of the images member is gone
    with pytest.raises(ValueError, match="val-00001.npz"):
        np.asarray(load_split(root, "val", verify=False, lazy=True).images)


def test_labelled_batches_are_read_when_indexed(prepared):
    root, images = prepared
    split = load_split(root, "val", lazy=True)
    batches = labelled_batches(split.images, split.labels, 4)
    assert isinstance(batches, LabelledBatches) and len(batches) == 3
    x = torch.cat([b for b, _ in batches])
    assert torch.equal(x.permute(0, 2, 3, 1), torch.from_numpy(images))
    tail = batches[1:]
    assert len(tail) == 2 and tail.bounds == [(4, 8), (8, 10)]
    assert torch.cat([y for _, y in tail]).tolist() == list(range(4, 10))


def test_in_chunks_gives_the_whole_batch_result():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    x = torch.randn(7, 3, 6, 6)
    with torch.no_grad():
        whole = net(x)
        assert torch.allclose(in_chunks(net, x, 3), whole, atol=1e-6)
        two = in_chunks(lambda t: [net(t), t.sum((1, 2, 3))], x, 2)
    assert torch.allclose(two[0], whole, atol=1e-6) and torch.allclose(two[1], x.sum((1, 2, 3)))
    calls = []
    in_chunks(lambda t: calls.append(t.shape[0]) or t, x, 3)
    assert calls == [3, 3, 1]
    with pytest.raises(ValueError, match="forward chunk"):
        in_chunks(net, x, 0)


def test_evaluate_adapters_chunked_equals_whole_batches():
    import timm

    from repshare.models.preprocess import Preprocess
    from repshare.sharing.adapter import Adapter
    from repshare.sharing.evaluate import evaluate_adapters
    from repshare.sharing.merged import stage_shapes

    torch.manual_seed(0)
    cls = timm.create_model("efficientnet_b0", num_classes=5).eval()
    bb = timm.create_model("efficientnet_b0", features_only=True).eval()
    pc, pd = Preprocess(32), Preprocess(48)
    x = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    y = torch.arange(6) % 5
    src, dst = stage_shapes(bb, pd(x[:1])), stage_shapes(cls, pc(x[:1]))
    ads = {("resample", i, j): Adapter(src[i], dst[j]) for i, j in [(0, 0), (2, 3), (4, 1)]}
    whole, base_w = evaluate_adapters(bb, pd, cls, pc, [(x, y)], ads)
    chunked, base_c = evaluate_adapters(bb, pd, cls, pc, [(x, y)], ads, chunk=4)
    assert {k: v for k, v in base_w.items() if k != "per_image"} == {k: v for k, v in base_c.items() if k != "per_image"}
    assert (base_w["per_image"] == base_c["per_image"]).all()
    for k in ads:
        assert {m: whole[k][m] for m in ("correct", "agreed")} == {m: chunked[k][m] for m in ("correct", "agreed")}
        assert (whole[k]["per_image"] == chunked[k]["per_image"]).all()


def test_prepare_decodes_one_shard_at_a_time(tmp_path):
    from pathlib import Path

    from repshare.data.images import DecodedImages

    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (5, 4, 4, 3), dtype=np.uint8)
    calls: list[int] = []

    def decode(p: Path) -> np.ndarray:
        calls.append(int(p.name))
        return pixels[int(p.name)]

    lazy = DecodedImages([Path(str(k)) for k in range(5)], 4, decode)
    assert lazy.shape == (5, 4, 4, 3) and not calls  # nothing decoded yet
    d = SimpleNamespace(images=lazy, labels=np.arange(5), boxes=np.zeros((0, 4), np.float32),
                        box_classes=np.zeros(0, np.int64), box_offsets=np.zeros(6, np.int64))
    write_manifest(tmp_path, {"val": write_split(tmp_path, "val", d, shard_size=2)}, {})
    assert calls == [0, 1, 2, 3, 4]  # each image decoded once, in shard order
    assert np.array_equal(load_split(tmp_path, "val").images, pixels)
    with pytest.raises(ValueError, match="expected"):
        DecodedImages([Path("0")], 3, decode)[0]  # a decoder giving the wrong size is named


def test_imagenet_calibration_split_is_disjoint_from_val(tmp_path):
    from PIL import Image

    from repshare.data.imagenet import ImageNetSource

    rng = np.random.default_rng(0)
    for k in range(10):
        folder = tmp_path / ("n00000001" if k % 2 else "n00000002")
        folder.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(folder / f"{k}.JPEG")
    src = ImageNetSource(str(tmp_path), image_size=16, num_classes=2, calibration_images=3, seed=0)
    splits = src.splits()
    assert set(splits) == {"val", "calib"} and len(splits["val"]) == 7 and len(splits["calib"]) == 3
    names = {s: {p.name for p in splits[s].images.paths} for s in splits}
    assert not names["val"] & names["calib"] and len(names["val"] | names["calib"]) == 10
    again = ImageNetSource(str(tmp_path), image_size=16, num_classes=2, calibration_images=3, seed=0).splits()
    assert {p.name for p in again["calib"].images.paths} == names["calib"]  # deterministic for a seed
    assert np.asarray(splits["calib"].images).shape == (3, 16, 16, 3)
    with pytest.raises(ValueError, match="calibration_images=10"):
        ImageNetSource(str(tmp_path), image_size=16, num_classes=2, calibration_images=10).splits()
