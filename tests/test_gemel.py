"""Gemel: identical layers, ties, heaviest-first search with the halving rule, the time-sharing
simulation, the merged workload on disk, the colour label of the third model, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from safetensors import safe_open
from torch import nn

from repshare.gemel.layers import Group, LayerInstance, group_layers, identical_layers, param_bytes
from repshare.gemel.merge import shared_bytes, tie_layers, unique_parameters
from repshare.gemel.retrain import JointModule, loss_weights
from repshare.gemel.search import search
from repshare.gemel.simulate import SimModel, simulate
from repshare.gemel.store import WEIGHTS, load_merged, save_merged


# --------------------------------------------------------------------------- small models with a known answer
def model_a() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Conv2d(8, 16, 3),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))


class ModelB(nn.Module):
    # conv1 as A; conv2 differs from A's in stride only; the same Linear twice (the spare has no partner in A)
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Conv2d(8, 16, 3, stride=2),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))
        self.spare = nn.Linear(16, 4)

    def forward(self, x):
        return self.body(x)


def model_b() -> ModelB:
    return ModelB()


def model_c() -> nn.Sequential:
    # conv1 differs from A's in bias only; the Linear as A
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 16), nn.Linear(16, 4))


def test_identical_layers_known_answer():
    torch.manual_seed(0)
    models = {"a": model_a(), "b": model_b(), "c": model_c()}
    inst = identical_layers(models)
    got = sorted((tuple(sorted(i.members.items())), i.bytes) for i in inst)
    conv1 = (3 * 8 * 9 + 8) * 4
    lin = (16 * 4 + 4) * 4
    assert got == sorted([
        ((("a", "0"), ("b", "body.0")), conv1),  # conv2 (stride), c's conv1 (bias), BatchNorm: not shared
        ((("a", "5"), ("b", "body.5"), ("c", "4")), lin),  # first Linear(16, 4) of each model
    ])
    # an instance never holds two layers of one model: b's second Linear(16, 4) stays unshared
    assert all(len(set(i.members)) == len(i.members) for i in inst)
    assert sum(i.saving for i in inst) == conv1 * 1 + lin * 2


def test_no_identical_layers_gives_no_groups():
    models = {"a": nn.Sequential(nn.Linear(3, 5)), "b": nn.Sequential(nn.Linear(5, 3))}
    assert identical_layers(models) == [] and group_layers([]) == []


def test_groups_heaviest_first():
    # x: 3 identical 8->8 linears in both models (3 x 288 B saved); y: one 16->16 (1088 B); z: 2->2 in three models
    def mk(extra: int) -> nn.Sequential:
        return nn.Sequential(nn.Linear(2, 2), nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(16, 16),
                             *[nn.Linear(4, 4) for _ in range(extra)])
    models = {"p": mk(0), "q": mk(1), "r": nn.Sequential(nn.Linear(2, 2))}
    groups = group_layers(identical_layers(models))
    savings = [g.saving for g in groups]
    assert savings == sorted(savings, reverse=True)
    assert [len(g.instances) for g in groups] == [1, 3, 1]  # 16->16 (1088) > 3 x 8->8 (864) > 2->2 in p,q,r (48)
    assert savings == [(16 * 16 + 16) * 4, 3 * (8 * 8 + 8) * 4, 2 * (2 * 2 + 2) * 4]
    assert groups[2].models == ("p", "q", "r")


def test_tied_parameters_share_storage_and_appear_once_in_the_optimizer():
    torch.manual_seed(0)
    models = {"a": model_a(), "b": model_b(), "c": model_c()}
    before = models["b"].body[5].weight.detach().clone()
    inst = identical_layers(models)
    tie_layers(models, inst, "first")
    wa, wb, wc = models["a"][5].weight, models["b"].body[5].weight, models["c"][4].weight
    assert wa is wb is wc and wa.data_ptr() == wb.data_ptr() == wc.data_ptr()  # storage, not equality
    assert models["a"][0].bias is models["b"].body[0].bias
    assert not torch.equal(wa.detach(), before)  # "first": model a's value
    total, distinct = shared_bytes(models)
    assert total - distinct == sum(i.saving for i in inst)
    module = JointModule(models, {n: "classification" for n in models}, {n: nn.Identity() for n in models},
                         {n: 1.0 for n in models}, lr=0.1)
    opt = module.configure_optimizers()
    params = [p for g in opt.param_groups for p in g["params"]]
    assert len(params) == len({id(p) for p in params}) == len(unique_parameters(models.values()))
    # one SGD step on a loss of two models keeps them tied
    x = torch.randn(2, 3, 8, 8)
    (models["a"](x).sum() + models["b"](x).sum()).backward()
    opt.step()
    assert models["a"][5].weight is models["b"].body[5].weight


def test_mean_init_averages_members():
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    expect = (a.weight.detach() + b.weight.detach()) / 2
    tie_layers({"a": a, "b": b}, [LayerInstance(0, ("L",), 32, {"a": "", "b": ""})], "mean")
    assert a.weight is b.weight and torch.allclose(a.weight, expect)
    with pytest.raises(ValueError, match="gemel.init='median'"):
        tie_layers({"a": a, "b": b}, [], "median")


def test_loss_weights_reference_formula():
    w = loss_weights({"a": 0.5, "b": 0.0, "c": 0.99, "d": 0.01}, {"a": 0.9, "b": 0.9, "c": 0.9, "d": 0.9})
    assert w["a"] == pytest.approx(1.8 ** 0.75)
    assert w["b"] == 10.0 and w["d"] == 10.0  # zero accuracy and the cap
    assert w["c"] == pytest.approx((0.9 / 0.99) ** 0.75) and w["c"] < 1


# --------------------------------------------------------------------------- search
def _groups(spec: list[list[int]]) -> list[Group]:
    """Groups of two-model instances; spec = per group, the saving of each instance (bytes)."""
    out, k = [], 0
    for gi, savings in enumerate(spec):
        insts = []
        for s in savings:
            insts.append(LayerInstance(k, ("L", gi), s, {"m1": f"l{k}", "m2": f"l{k}"}))
            k += 1
        out.append(Group(gi, insts))
    return out


def _trace(res):
    return [(it.group, it.halved, it.instances, it.accepted) for it in res.iterations]


def test_halving_rule_retries_the_first_half():
    groups = _groups([[100, 100, 100, 100], [150], [50]])
    fail_with = {3}  # any trial holding instance 3 fails

    def stub(merged, trial):
        return not any(i.index in fail_with for i in trial), {}

    res = search(groups, stub, max_iterations=10)
    assert _trace(res) == [(0, 0, [0, 1, 2, 3], False), (0, 1, [0, 1], True), (1, 0, [4], True), (2, 0, [5], True)]
    assert [i.index for i in res.merged] == [0, 1, 4, 5]
    assert res.iterations[-1].cumulative_bytes == 100 + 100 + 150 + 50
    assert res.stop_reason == "groups exhausted"


def test_halving_rule_moves_on_when_the_half_saves_less_than_the_next_group():
    groups = _groups([[100, 100, 100, 100], [300]])
    res = search(groups, lambda m, t: (t[0].index != 0, {}), max_iterations=10)
    assert _trace(res) == [(0, 0, [0, 1, 2, 3], False), (1, 0, [4], True)]  # half = 200 < 300: move on


def test_clean_stop_when_groups_run_out_and_every_trial_fails():
    groups = _groups([[10, 10, 10], [5]])
    seen = []

    def stub(merged, trial):
        seen.append([i.index for i in trial])
        return False, {}

    res = search(groups, stub, max_iterations=100)  # the reference indexes past its list here
    assert seen == [[0, 1, 2], [0], [3]] and res.merged == [] and res.stop_reason == "groups exhausted"
    assert search([], stub, 3).stop_reason == "no shareable layers"
    capped = search(groups, stub, 1)
    assert len(capped.iterations) == 1 and capped.stop_reason == "max_iterations reached"


def test_merged_trials_accumulate():
    groups = _groups([[30], [20], [10]])
    calls = []

    def stub(merged, trial):
        calls.append(([i.index for i in merged], [i.index for i in trial]))
        return trial[0].index != 1, {}

    search(groups, stub, 10)
    assert calls == [([], [0]), ([0], [1]), ([0], [2])]


# --------------------------------------------------------------------------- simulation, hand-computed
def _two(shared: int = 0) -> list[SimModel]:
    a = {"a/own": 100 - shared, **({"s": shared} if shared else {})}
    b = {"b/own": 100 - shared, **({"s": shared} if shared else {})}
    return [SimModel("A", a, load_ms=10.0, run_ms=5.0), SimModel("B", b, load_ms=10.0, run_ms=5.0)]


def test_simulation_two_models_fit():
    # fps 50 -> frames at 0 and 20 ms per stream; both resident after the first round:
    # A load 0-10 run -15; B load -25 run -30; A run -35; B run -40.
    r = simulate(_two(), budget_bytes=200, fps=50, sla_ms=25, duration_s=0.04)
    assert (r.frames_total, r.processed, r.dropped, r.loads, r.load_ms) == (4, 4, 0, 2, 20.0)


def test_simulation_two_models_do_not_fit():
    # A -10 -15; B evicts A, -25 -30; A evicts B, -40 -45; B evicts A, loaded at 55 > 20 + 25: dropped.
    r = simulate(_two(), budget_bytes=150, fps=50, sla_ms=25, duration_s=0.04)
    assert (r.processed, r.dropped, r.loads, r.load_ms) == (3, 1, 4, 40.0)
    assert r.processed_per_model == {"A": 2, "B": 1}


def test_simulation_merged_models_fit_and_load_faster():
    # 60 shared bytes: A + B hold 140 <= 150; B loads only its 40 own bytes (4 ms).
    r = simulate(_two(shared=60), budget_bytes=150, fps=50, sla_ms=25, duration_s=0.04)
    assert (r.processed, r.dropped, r.loads, r.load_ms) == (4, 0, 2, 14.0)


def test_simulation_budget_smaller_than_largest_model_is_named():
    with pytest.raises(ValueError, match="budget 99 bytes is smaller than the largest model"):
        simulate(_two(), budget_bytes=99, fps=50, sla_ms=25, duration_s=0.04)


# --------------------------------------------------------------------------- merged workload on disk
def test_saved_workload_loads_back_with_sharing_intact(tmp_path):
    torch.manual_seed(1)
    models = {"a": model_a(), "b": model_b(), "c": model_c()}
    inst = identical_layers(models)
    tie_layers(models, inst, "first")
    save_merged(models, inst, tmp_path)
    with safe_open(str(tmp_path / WEIGHTS), framework="pt") as f:
        keys = list(f.keys())
    shared_keys = [k for k in keys if k.startswith("shared/")]
    assert len(shared_keys) == 4  # conv1 weight + bias, linear weight + bias: each once
    n_tensors = len({id(t) for m in models.values() for t in m.state_dict(keep_vars=True).values()})
    assert len(keys) == n_tensors
    fresh = {"a": model_a(), "b": model_b(), "c": model_c()}
    back = load_merged(tmp_path, fresh)
    assert back["a"][5].weight is back["b"].body[5].weight is back["c"][4].weight
    assert back["a"][0].weight is back["b"].body[0].weight and back["a"][2].weight is not back["b"].body[2].weight
    x = torch.randn(2, 3, 8, 8)
    for n in models:
        models[n].eval(), back[n].eval()
        assert torch.equal(models[n](x), back[n](x))
    with pytest.raises(KeyError, match="'c'"):
        load_merged(tmp_path, {"a": model_a(), "b": model_b()})


def test_param_bytes():
    assert param_bytes(nn.Linear(3, 2)) == (6 + 2) * 4


# --------------------------------------------------------------------------- the third model's label
def test_color_label_is_the_main_objects_colour():
    from repshare.data.shapes import generate_shapes

    s = generate_shapes(40, image_size=64, max_objects=1, n_distractors=0, difficulty=0.0, seed=3)
    assert s.color_labels.shape == s.labels.shape and s.color_labels.dtype == np.int64
    for n in range(len(s)):
        (box,), _ = s.boxes_of(n)
        x1, y1, x2, y2 = box.astype(int)
        px = s.images[n, y1:y2, x1:x2].reshape(-1, 3)
        colours, counts = np.unique(px, axis=0, return_counts=True)
        main = colours[counts.argmax()].astype(int)  # the flat object colour is the most frequent pixel
        assert s.color_labels[n] == 4 * (main[0] >= 128) + 2 * (main[1] >= 128) + (main[2] >= 128)


def test_color_label_survives_shards_and_selects_in_the_datamodule(tmp_path):
    from repshare.data.datamodule import with_label
    from repshare.data.shapes import generate_shapes
    from repshare.data.shards import load_split, write_manifest, write_split

    s = generate_shapes(10, image_size=32, seed=0)
    write_manifest(tmp_path, {"train": write_split(tmp_path, "train", s, shard_size=4)}, {})
    back = load_split(tmp_path, "train")
    assert np.array_equal(back.color_labels, s.color_labels) and np.array_equal(back.labels, s.labels)
    assert np.array_equal(with_label(back, "color_labels").labels, s.color_labels)
    with pytest.raises(ValueError, match="label='size'"):
        with_label(back, "size")
    back.color_labels = None
    with pytest.raises(ValueError, match="no 'color_labels'"):
        with_label(back, "color_labels")


def test_holdout_is_disjoint_and_deterministic():
    from repshare.data.shapes import generate_shapes
    from repshare.gemel.splits import holdout_split

    s = generate_shapes(12, image_size=32, seed=0)
    train, hold = holdout_split(s, 4)
    assert len(train) == 8 and len(hold) == 4
    assert np.array_equal(hold.images, s.images[8:]) and np.array_equal(hold.color_labels, s.color_labels[8:])
    b, c = hold.boxes_of(3)
    b0, c0 = s.boxes_of(11)
    assert np.array_equal(b, b0) and np.array_equal(c, c0)
    with pytest.raises(ValueError, match="gemel.n_holdout=12"):
        holdout_split(s, 12)


def test_sim_model_bytes():
    assert math.isclose(_two(shared=60)[0].bytes, 100)
