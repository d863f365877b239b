"""Streaming stage-wise capture with toy timm EfficientNet-B0 models (random init, tiny inputs)."""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass

import numpy as np
import pytest
import timm
import torch
from omegaconf import open_dict

from repshare.cka import MinibatchCKA
from repshare.features.capture import capture_activations, capture_cka
from repshare.models.preprocess import Preprocess
from repshare.stages.cka import run as run_cka

SIZE = 32


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    cls = timm.create_model("efficientnet_b0", num_classes=8).eval()
    torch.manual_seed(1)
    bb = timm.create_model("efficientnet_b0", features_only=True, out_indices=(2, 3, 4)).eval()
    return cls, bb


@pytest.fixture(scope="module")
def batches():
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (20, 3, 40, 40), dtype=torch.uint8, generator=g)
    return [imgs[0:8], imgs[8:14], imgs[14:20]]


def test_streamed_equals_minibatch_on_stored_activations(models, batches):
    cls, bb = models
    pre_c, pre_d = Preprocess(SIZE), Preprocess(48)
    res = capture_cka(cls, pre_c, bb, pre_d, batches)
    acts_c = capture_activations(cls, pre_c, batches)
    acts_d = capture_activations(bb, pre_d, batches)
    assert len(acts_c) == 8 and acts_c[0].shape[0] == 20
    ref = MinibatchCKA(8, 8)
    start = 0
    for b in batches:
        sl = slice(start, start + len(b))
        ref.update([a[sl] for a in acts_d], [a[sl] for a in acts_c])
        start += len(b)
    want = ref.compute().numpy()
    np.testing.assert_allclose(res.cross, want, atol=1e-6)
    np.testing.assert_allclose(res.same_stage, np.diag(want), atol=1e-6)
    assert res.cross.shape == (8, 8)
    assert res.n == 20
    assert res.seconds > 0
    # random-init models on different resolutions are not identical
    assert not np.allclose(res.same_stage, 1.0, atol=1e-3)


@pytest.mark.parametrize("estimator", ["minibatch_unbiased", "full_biased"])
def test_model_against_itself_has_unit_diagonal(models, batches, estimator):
    cls, _ = models
    pre = Preprocess(SIZE)
    res = capture_cka(cls, pre, cls, pre, batches, estimator=estimator)
    atol = 1e-9 if estimator.startswith("minibatch") else 1e-5  # Eq. 1 forms float32 grams
    np.testing.assert_allclose(res.same_stage, 1.0, atol=atol)
    np.testing.assert_allclose(res.cross, res.cross.T, atol=atol)
    assert res.n == 20


def test_shapes_and_names_recorded(models, batches):
    cls, bb = models
    res = capture_cka(cls, Preprocess(SIZE), bb, Preprocess(64), batches[:1], estimator="minibatch_biased")
    # documented efficientnet_b0 stage shapes at 64 px, and the same halved at 32 px
    at64 = [[32, 32, 32], [16, 32, 32], [24, 16, 16], [40, 8, 8], [80, 4, 4], [112, 4, 4], [192, 2, 2], [320, 2, 2]]
    assert res.shapes_detector == at64
    assert res.shapes_classifier == [[c, max(h // 2, 1), max(w // 2, 1)] for c, h, w in at64]
    assert res.stage_names_classifier == ["stem"] + [f"stage{k}" for k in range(1, 8)]
    assert res.stage_names_detector == res.stage_names_classifier
    assert res.n == 8 and res.estimator == "minibatch_biased"


def test_nan_activations_name_the_model_and_stage(models, batches):
    cls, bb = models

    class Poison(torch.nn.Module):
        def forward(self, x):
            return Preprocess(SIZE)(x) * float("nan")

    with pytest.raises(ValueError, match="detector/stem"):
        capture_cka(cls, Preprocess(SIZE), bb, Poison(), batches[:1])


@dataclass
class _Split:
    images: np.ndarray
    labels: np.ndarray
    meta: dict


def test_run_cka_writes_results(smoke_cfg, models, monkeypatch, tmp_path):
    cls, bb = models
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (24, 40, 40, 3), dtype=np.uint8)
    seen = {}

    def load_split(root, split, verify=True, lazy=False):
        seen["root"], seen["split"] = str(root), split
        return _Split(images, np.zeros(24, dtype=np.int64), {})

    det = types.SimpleNamespace(backbone=bb)
    fake_load = types.ModuleType("repshare.models.load")
    fake_load.load_classifier = lambda cfg: (cls, Preprocess(64))
    fake_load.load_detector = lambda cfg: (det, Preprocess(128))
    fake_load.resolve_device = lambda name: torch.device("cpu")
    fake_shards = types.ModuleType("repshare.data.shards")
    fake_shards.load_split = load_split
    monkeypatch.setitem(sys.modules, "repshare.models.load", fake_load)
    monkeypatch.setitem(sys.modules, "repshare.data.shards", fake_shards)
    with open_dict(smoke_cfg):
        smoke_cfg.capture.n_samples = 22
        smoke_cfg.capture.batch_size = 10
        smoke_cfg.capture.shared_input_size = SIZE

    res = run_cka(smoke_cfg)
    from pathlib import Path

    out = Path(smoke_cfg.paths.results_dir) / "cka"
    assert seen["split"] == smoke_cfg.capture.split and seen["root"].endswith("prepared")
    rec = json.loads((out / "cka.json").read_text())
    assert rec["n"] == 22 == res.n
    assert rec["shapes"]["classifier"][0] == [32, 16, 16] == rec["shapes"]["detector"][0]  # shared 32 px
    assert np.allclose(np.diag(rec["cross_stage"]), rec["same_stage"])
    assert rec["estimator"] == smoke_cfg.cka.estimator == "full_biased"
    assert "provenance" not in rec and "seconds" not in rec  # run-dependent values stay in the run log
    for name in ("same_stage.csv", "cross_stage.csv", "cka_heatmap.png", "cka_heatmap.pdf", "checksums.json"):
        assert (out / name).is_file(), name
    assert (Path(smoke_cfg.paths.results_dir) / "metrics" / "cka_run.json").is_file()
    # the paper's Eq. 1 on the 22 images, written out with numpy on the stored activations
    x = torch.from_numpy(images[:22]).permute(0, 3, 1, 2)
    acts_c = capture_activations(cls, Preprocess(SIZE), [x])
    acts_d = capture_activations(bb, Preprocess(SIZE), [x])
    H = np.eye(22) - 1.0 / 22
    for i, j in ((0, 0), (3, 5), (7, 2)):
        K = acts_d[i].reshape(22, -1).double().numpy()
        L = acts_c[j].reshape(22, -1).double().numpy()
        K, L = K @ K.T, L @ L.T
        want = np.trace(K @ H @ L @ H) / np.sqrt(np.trace(K @ H @ K @ H) * np.trace(L @ H @ L @ H))
        assert rec["cross_stage"][i][j] == pytest.approx(want, abs=1e-5)
    plot_csv = (Path(smoke_cfg.paths.results_dir) / "plots" / "cka_same_stage.csv").read_text().splitlines()
    assert plot_csv[0] == "stage,cka" and len(plot_csv) == 9
    with open_dict(smoke_cfg):
        smoke_cfg.capture.n_samples = 25
    with pytest.raises(ValueError, match="only 24"):
        run_cka(smoke_cfg)


def test_capture_batch_below_the_estimator_minimum_is_named(smoke_cfg, monkeypatch):
    images = np.zeros((24, 8, 8, 3), dtype=np.uint8)
    fake_shards = types.ModuleType("repshare.data.shards")
    fake_shards.load_split = lambda root, split, verify=True, lazy=False: _Split(images, np.zeros(24, dtype=np.int64), {})
    monkeypatch.setitem(sys.modules, "repshare.data.shards", fake_shards)
    with open_dict(smoke_cfg):
        smoke_cfg.capture.n_samples = 24
        smoke_cfg.capture.batch_size = 3
        smoke_cfg.cka.estimator = "minibatch_unbiased"  # its HSIC_1 needs 4 examples per batch
    with pytest.raises(ValueError, match="capture.batch_size=3 is below the minimum 4"):
        run_cka(smoke_cfg)
