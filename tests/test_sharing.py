"""Representation sharing: adapter, merged classifier, skip alignment, memory/FLOPs, evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from repshare.features.stages import run_from, run_stages
from repshare.models.flops import count_flops, cumulative, stage_flops
from repshare.sharing.adapter import RESIZE_METHODS, Adapter, channel_index, resize
from repshare.sharing.evaluate import evaluate_all_pairs, evaluate_baseline, evaluate_pair
from repshare.sharing.memory import memory_saved_frac, model_bytes, model_params, offloaded_bytes, offloaded_params
from repshare.sharing.merged import (LayeredNet, MergedClassifier, SkipAlignedMerge, align_inputs,
                                     crossing_positions)

torch.set_num_threads(1)


# --------------------------------------------------------------------------- helpers
class Pre(nn.Module):
    """Toy preprocess: uint8 -> [0, 1] float, resized to ``size``."""

    def __init__(self, size: int):
        super().__init__()
        self.input_size = size

    def forward(self, x):
        x = x.float() / 255.0
        return F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)


class ToyNet(nn.Module):
    """EfficientNet-shaped toy: conv_stem, bn1, blocks, conv_head, bn2, forward_head."""

    def __init__(self):
        super().__init__()
        self.conv_stem = nn.Conv2d(3, 4, 3)  # 3*4*9 + 4 = 112 params
        self.bn1 = nn.BatchNorm2d(4)  # 8 params; buffers 4 + 4 float32 + 1 int64
        self.blocks = nn.Sequential(
            nn.Sequential(nn.Conv2d(4, 6, 1)),  # 30 params
            nn.Sequential(nn.Conv2d(6, 8, 1)),  # 56 params
        )
        self.conv_head = nn.Conv2d(8, 10, 1)  # 90 params
        self.bn2 = nn.BatchNorm2d(10)  # 20 params; buffers 10 + 10 float32 + 1 int64
        self.classifier = nn.Linear(10, 3)  # 33 params

    def forward_head(self, x):
        return self.classifier(x.mean((2, 3)))

    def forward(self, x):
        x = self.bn1(self.conv_stem(x))
        return self.forward_head(self.bn2(self.conv_head(self.blocks(x))))


@pytest.fixture(scope="module")
def effnet():
    torch.manual_seed(0)
    return timm.create_model("efficientnet_b0", num_classes=8).eval()


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(1)
    return timm.create_model("efficientnet_b0", features_only=True, out_indices=(2, 3, 4)).eval()


# --------------------------------------------------------------------------- adapter
@pytest.mark.parametrize("c_src,c_dst", [(16, 40), (3, 7), (5, 5), (40, 16), (320, 1280), (7, 3)])
def test_channel_index_uniform(c_src, c_dst):
    for seed in (0, 1, 7):
        idx = channel_index(c_src, c_dst, seed)
        assert idx.dtype == torch.long and idx.shape == (c_dst,)
        assert int(idx.min()) >= 0 and int(idx.max()) < c_src
        assert torch.equal(idx, idx.sort().values)
        counts = torch.bincount(idx, minlength=c_src)
        if c_dst >= c_src:  # repetition: every source channel at least once, counts within 1
            assert int(counts.min()) >= 1
            assert int(counts.max()) - int(counts.min()) <= 1
            assert int(counts.min()) == c_dst // c_src
        else:  # subsampling: distinct channels
            assert int(counts.max()) == 1
        assert torch.equal(idx, channel_index(c_src, c_dst, seed))  # deterministic
    if c_src == c_dst:
        assert torch.equal(channel_index(c_src, c_dst, 3), torch.arange(c_src))


def test_channel_index_seed_changes_phase():
    assert len({tuple(channel_index(40, 16, s).tolist()) for s in range(10)}) > 1


@pytest.mark.parametrize("method", RESIZE_METHODS)
def test_adapter_shapes_and_values(method):
    x = torch.randn(2, 16, 8, 8)
    for dst in [(40, 4, 4), (8, 16, 16), (16, 8, 8), (24, 5, 3)]:
        y = Adapter((16, 8, 8), dst, method, seed=0)(x)
        assert y.shape == (2, *dst)
    # same shape: exact identity
    assert torch.equal(Adapter((16, 8, 8), (16, 8, 8), method)(x), x)
    # channel-only change: exactly the sampled source channels
    ad = Adapter((16, 8, 8), (40, 8, 8), method, seed=3)
    assert torch.equal(ad(x), x[:, channel_index(16, 40, 3)])


def test_resize_closed_forms():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    # 2x2 average pooling by hand
    want = torch.tensor([[2.5, 4.5], [10.5, 12.5]])
    assert torch.allclose(resize(x, (2, 2), "adaptive_avg")[0, 0], want)
    assert torch.allclose(resize(x, (2, 2), "area")[0, 0], want)
    # nearest upsampling repeats every pixel
    up = resize(x, (8, 8), "nearest")[0, 0]
    assert torch.equal(up, x[0, 0].repeat_interleave(2, 0).repeat_interleave(2, 1))


def test_adapter_errors():
    with pytest.raises(ValueError, match="'lanczos'"):
        Adapter((16, 8, 8), (16, 4, 4), "lanczos")
    with pytest.raises(ValueError, match="lanczos"):
        resize(torch.zeros(1, 1, 4, 4), (2, 2), "lanczos")
    with pytest.raises(ValueError, match=r"\(16, 8, 8\)"):
        Adapter((16, 8, 8), (16, 4, 4))(torch.zeros(1, 8, 8, 8))


# --------------------------------------------------------------------------- merged classifier
def test_merged_identical_models_reproduce_classifier(effnet):
    x = torch.randn(3, 3, 32, 32)
    with torch.inference_mode():
        want = effnet(x)
        for j in range(8):
            got = MergedClassifier(effnet, effnet, j, j)(x)
            assert torch.allclose(got, want, atol=1e-6, rtol=0), j
            assert torch.equal(got, want), j


def test_merged_cross_pair_is_adapter_plus_suffix(effnet, backbone):
    x = torch.randint(0, 256, (2, 3, 48, 48), dtype=torch.uint8)
    det_pre, cls_pre = Pre(64), Pre(32)
    with torch.inference_mode():
        merged = MergedClassifier(backbone, effnet, 3, 5, det_pre, cls_pre, "bicubic", seed=2)
        got = merged(x)
        assert merged.adapter.src_shape == (40, 8, 8)  # detector stage 3 at 64 px
        assert merged.adapter.dst_shape == (112, 2, 2)  # classifier stage 5 at 32 px
        rep = run_stages(backbone, det_pre(x), 3)[-1]
        rep = F.interpolate(rep[:, channel_index(40, 112, 2)], size=(2, 2), mode="bicubic", align_corners=False)
        want = run_from(effnet, rep, 5)
    assert got.shape == (2, 8)
    assert torch.equal(got, want)


def test_merged_bad_stage_index(effnet, backbone):
    with pytest.raises(ValueError, match="8"):
        MergedClassifier(backbone, effnet, 8, 0)
    with pytest.raises(ValueError, match="-1"):
        MergedClassifier(backbone, effnet, 0, -1)
    with pytest.raises(ValueError, match="classifier"):
        MergedClassifier(backbone, effnet, 0, 9)
    with pytest.raises(ValueError, match="'cubic'"):
        MergedClassifier(backbone, effnet, 0, 0, method="cubic")


# --------------------------------------------------------------------------- skip alignment
class AddLinear(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.lin = nn.Linear(d, d)

    def forward(self, a, skip=None):
        return self.lin(a) if skip is None else self.lin(a) + skip


class Boom(nn.Module):
    def forward(self, *a):
        raise AssertionError("receiver layer before the cut must not run")


SKIP_SOURCES = [(-1,), (0,), (1,), (2, 1)]  # skip from layer 1 into layer 3


def toy_layered(seed):
    torch.manual_seed(seed)
    return LayeredNet([AddLinear(4) for _ in range(4)], SKIP_SOURCES)


def test_crossing_positions():
    assert crossing_positions(SKIP_SOURCES, 2) == [1, 2]
    assert crossing_positions(SKIP_SOURCES, 1) == [1]
    assert crossing_positions([(-1,), (0,), (1,), (2,)], 2) == [2]  # a chain: only the cut
    assert align_inputs({1: "a", 2: "b"}, 3) == [None, "a", "b"]
    with pytest.raises(ValueError, match="3"):
        align_inputs({3: torch.zeros(1)}, 3)


def test_skip_aligned_merge_identical_models():
    net = toy_layered(0)
    x = torch.randn(5, 4)
    assert torch.equal(SkipAlignedMerge(net, net, 2)(x), net(x))
    # by hand: out3 = L3(out2) + out1
    o0 = net.layers[0](x)
    o1 = net.layers[1](o0)
    o2 = net.layers[2](o1)
    assert torch.allclose(net(x), net.layers[3].lin(o2) + o1)


def test_skip_aligned_merge_uses_donor_for_every_crossing_tensor():
    donor, receiver = toy_layered(1), toy_layered(2)
    for k in range(3):
        receiver.layers[k] = Boom()
    scale = nn.Identity()
    merged = SkipAlignedMerge(donor, receiver, 2, adapters={1: scale})
    x = torch.randn(5, 4)
    d = donor.run_upto(x, 2)
    want = receiver.layers[3].lin(d[2]) + d[1]
    assert torch.equal(merged(x), want)
    # cutting the chain without aligning the skip leaves layer 3 without its input at position 1
    with pytest.raises(ValueError, match="position 1"):
        receiver.forward_from(align_inputs({2: d[2]}, 3), 2)


def test_skip_aligned_merge_bad_cut():
    net = toy_layered(0)
    with pytest.raises(ValueError, match="cut 4"):
        SkipAlignedMerge(net, net, 4)


# --------------------------------------------------------------------------- memory
def test_memory_by_hand():
    clf, det = ToyNet(), nn.Linear(5, 5)  # detector: 30 params = 120 bytes
    assert [offloaded_params(clf, j) for j in range(3)] == [120, 150, 206]
    bn_buffers = 8 * 4 + 8  # running mean/var float32 + num_batches_tracked int64
    assert offloaded_bytes(clf, 0) == 120 * 4 + bn_buffers
    assert offloaded_bytes(clf, 2) == 206 * 4 + bn_buffers
    assert model_params(clf) == 349
    total_clf = 349 * 4 + bn_buffers + (20 * 4 + 8)
    assert model_bytes(clf) == total_clf
    assert memory_saved_frac(clf, det, 0) == pytest.approx((120 * 4 + bn_buffers) / (total_clf + 120))
    assert memory_saved_frac(clf, det, 2) < 1
    with pytest.raises(ValueError, match="3"):
        offloaded_params(clf, 3)


def test_memory_counts_tied_weights_once():
    clf = ToyNet()
    shared = nn.Parameter(torch.zeros(4, 3, 3, 3))
    clf.conv_stem.weight = shared
    before = model_params(clf)
    clf.blocks[0][0].register_parameter("tied", shared)  # same tensor registered twice
    assert model_params(clf) == before
    assert offloaded_params(clf, 1) == 150


# --------------------------------------------------------------------------- FLOPs
def test_flops_closed_form():
    clf = ToyNet().eval()
    x = torch.zeros(1, 3, 10, 10)
    flops = stage_flops(clf, x)
    # conv: 2 * Cout * Cin * k*k * Hout * Wout (multiply-adds counted as 2)
    assert flops == [2 * 4 * 3 * 9 * 8 * 8, 2 * 6 * 4 * 8 * 8, 2 * 8 * 6 * 8 * 8]
    assert cumulative(stage_flops(clf, torch.zeros(4, 3, 10, 10))) == [flops[0], flops[0] + flops[1], sum(flops)]
    assert count_flops(nn.Linear(10, 3), torch.zeros(2, 10)) == 2 * 2 * 10 * 3
    # the stem wrapper stage_flops builds is a fresh (training-mode) Sequential around eval-mode layers: counting
    # must leave the layers in eval mode, or the BatchNorm would update its statistics on the next images
    assert not any(m.training for m in clf.modules())


# --------------------------------------------------------------------------- evaluation
def test_all_pairs_equal_per_pair(effnet, backbone):
    torch.manual_seed(0)
    det_pre, cls_pre = Pre(64), Pre(32)
    images = torch.randint(0, 256, (12, 3, 40, 40), dtype=torch.uint8)
    with torch.inference_mode():  # labels: half the classifier's own top-1, half something else
        pred = effnet(cls_pre(images)).argmax(1)
    labels = torch.where(torch.arange(12) % 2 == 0, pred, (pred + 1) % 8)
    batches = [(images[:5], labels[:5]), (images[5:], labels[5:])]
    pairs = [(0, 0), (3, 3), (7, 7), (2, 6), (6, 1), (7, 0), (0, 7)]
    res = evaluate_all_pairs(backbone, det_pre, effnet, cls_pre, batches, pairs, "bilinear", 0)
    assert set(res) == set(pairs)
    for i, j in pairs:
        one = evaluate_pair(backbone, det_pre, effnet, cls_pre, batches, i, j, "bilinear", 0)
        assert res[(i, j)] == one, (i, j)
        # independent recount straight from the merged model's logits
        merged = MergedClassifier(backbone, effnet, i, j, det_pre, cls_pre)
        with torch.inference_mode():
            logits = merged(images)
        assert one["acc"] == pytest.approx(float((logits.argmax(1) == labels).float().mean()))
        assert one["n"] == 12 and 0 <= one["acc"] <= one["acc_top5"] <= 1
    base = evaluate_baseline(effnet, cls_pre, batches)
    assert base["acc"] == pytest.approx(0.5)  # by construction of the labels


def test_all_pairs_identical_models_give_baseline(effnet):
    pre = Pre(32)
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    batches = [(images, labels)]
    base = evaluate_baseline(effnet, pre, batches)
    res = evaluate_all_pairs(effnet, pre, effnet, pre, batches, [(k, k) for k in range(8)])
    assert all(r == base for r in res.values())


def test_all_pairs_errors(effnet, backbone):
    batches = [(torch.zeros(1, 3, 32, 32), torch.zeros(1, dtype=torch.long))]
    with pytest.raises(ValueError, match="8"):
        evaluate_all_pairs(backbone, None, effnet, None, batches, [(8, 0)])
    with pytest.raises(ValueError, match="'spline'"):
        evaluate_all_pairs(backbone, None, effnet, None, batches, [(0, 0)], method="spline")
    with pytest.raises(ValueError, match="no images"):
        evaluate_all_pairs(backbone, None, effnet, None, [], [(0, 0)])


# --------------------------------------------------------------------------- pipeline stage (stand-in loaders)
def test_run_evaluate_merged_writes_results(smoke_cfg, monkeypatch, effnet, backbone):
    """The stage wiring with toy stand-ins for the data and model loaders."""
    import sys
    import types

    import numpy as np
    from omegaconf import open_dict

    from repshare.stages.evaluate_merged import run as run_evaluate_merged

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 40, 40, 3), dtype=np.uint8)
    labels = rng.integers(0, 8, 10).astype(np.int64)
    seen = {}

    def load_split(root, split, verify=True, lazy=False):
        seen["root"], seen["split"] = str(root), split
        return types.SimpleNamespace(images=images, labels=labels)

    det = nn.Module()
    det.backbone, det.head = backbone, nn.Linear(4, 4)
    shards = types.ModuleType("repshare.data.shards")
    shards.load_split = load_split
    load = types.ModuleType("repshare.models.load")
    load.load_classifier = lambda cfg: (effnet, Pre(32))
    load.load_detector = lambda cfg: (det, Pre(64))
    load.resolve_device = lambda name: torch.device("cpu")
    monkeypatch.setitem(sys.modules, "repshare.data.shards", shards)
    monkeypatch.setitem(sys.modules, "repshare.models.load", load)
    with open_dict(smoke_cfg):
        smoke_cfg.sharing.n_eval = 6
        smoke_cfg.sharing.batch_size = 4
        smoke_cfg.capture.protocols = ["per_model"]  # the paper's setting only (issue 12 settings: test_sharing_stages)
        for name in ("moments", "lstsq", "distill", "supervised"):
            smoke_cfg.adapter[name] = None

    out = run_evaluate_merged(smoke_cfg)
    assert seen == {"root": str(Path(smoke_cfg.paths.data_dir) / "prepared"), "split": "val"}
    rec = json.loads((out / "pairs.json").read_text())
    assert rec["n"] == 6 and len(rec["pairs"]) == 64
    assert rec["stage_names"] == ["stem"] + [f"stage{k}" for k in range(1, 8)]
    assert rec["baseline"]["params"] == sum(p.numel() for p in effnet.parameters())
    batches = [(torch.from_numpy(images[:4]).permute(0, 3, 1, 2), torch.from_numpy(labels[:4])),
               (torch.from_numpy(images[4:6]).permute(0, 3, 1, 2), torch.from_numpy(labels[4:6]))]
    assert rec["baseline"]["acc"] == evaluate_baseline(effnet, Pre(32), batches)["acc"]
    row = {(r["i"], r["j"]): r for r in rec["pairs"]}
    r = row[(3, 5)]
    assert r["kind"] == "cross" and row[(4, 4)]["kind"] == "same"
    assert r["acc"] == evaluate_pair(backbone, Pre(64), effnet, Pre(32), batches, 3, 5, smoke_cfg.sharing.resize_method)["acc"]
    assert r["size"] == 112 * 2 * 2  # classifier stage 5 at 32 px
    assert r["params_offloaded"] == offloaded_params(effnet, 5)
    assert r["memory_saved_frac"] == pytest.approx(offloaded_bytes(effnet, 5) / (model_bytes(effnet) + model_bytes(det)))
    flops = [row[(0, j)]["flops_offloaded"] for j in range(8)]
    assert flops == sorted(flops) and flops[0] == 2 * 32 * 3 * 9 * 16 * 16  # stem conv, 3x3 stride 2 at 32 px
    assert row[(0, 0)]["flops_shared"] == 2 * 32 * 3 * 9 * 32 * 32  # detector stem at 64 px
    assert (out / "pairs.csv").read_text().count("\n") == 65
    assert (Path(smoke_cfg.paths.results_dir) / "metrics" / "evaluate_merged_run.json").is_file()
    assert not (out / "evaluate_merged_run.json").exists()  # durations stay out of the DVC output
    import numpy as np  # noqa: F811
    hits = np.load(out / "correct.npy", allow_pickle=False)
    merges = json.loads((out / "merges.json").read_text())["merges"]
    assert hits.shape == (64, 6)
    for k, m in enumerate(merges):  # per-image hits add up to each merge's accuracy
        assert hits[k].mean() == pytest.approx(m["acc"])
