"""MEEdge part 1: neuron-level self-merge, twin-merge, Eq. 2 KD loss and few-shot recovery."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from repshare.multiexit.kd import check_kd, few_shot_index, kd_loss, recover
from repshare.multiexit.merge import (
    SharedLinear, branch_from_state, check_range, n_merge, neuron_pairs, select_by_accuracy, self_merge,
    shared_tensors, traverse_fractions, twin_merge, twin_pairs,
)
from repshare.multiexit.profile import count_params
from repshare.multiexit.zoo import Branch, BranchSpec


def known_layer() -> nn.Linear:
    """6 neurons: 0 == 1 exactly, 2 ~ 3 (error 0.1), 4 and 5 far apart."""
    lin = nn.Linear(3, 6)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1., 2., 3.], [1., 2., 3.], [-1., 0., 1.], [-1., 0., 1.1],
                                       [10., 0., 0.], [0., -10., 0.]]))
        lin.bias.copy_(torch.tensor([0.5, 0.5, 0.0, 0.0, 1.0, -1.0]))
    return lin


def test_closest_pairs_are_found_in_order():
    pairs = neuron_pairs(known_layer().weight, known_layer().bias)
    assert [(i, j) for i, j, _ in pairs] == [(0, 1), (2, 3), (4, 5)]
    assert pairs[0][2] == 0.0 and math.isclose(pairs[1][2], 0.1, rel_tol=1e-6)
    # the bias is part of the vector: make 0 and 1 differ only in the bias
    w = known_layer().weight
    b = known_layer().bias.clone()
    b[1] = 5.0
    assert [(i, j) for i, j, _ in neuron_pairs(w, b)][0] == (2, 3)


def test_merged_layer_keeps_identical_pairs_exact_and_averages_the_rest():
    lin = known_layer()
    x = torch.randn(5, 3)
    merged = SharedLinear.from_linear(lin, [(0, 1), (2, 3)])
    assert merged.weight.shape == (4, 3) and int(merged.shared.sum()) == 2
    y, ym = lin(x), merged(x)
    assert torch.allclose(ym[:, :2], y[:, :2], atol=1e-6)  # identical pair: outputs unchanged
    assert torch.allclose(ym[:, 4:], y[:, 4:])  # untouched neurons
    avg = x @ torch.tensor([-1., 0., 1.05]) + 0.0
    assert torch.allclose(ym[:, 2], avg, atol=1e-6) and torch.allclose(ym[:, 3], avg, atol=1e-6)
    assert count_params(lin) - count_params(merged) == 2 * (3 + 1)
    with pytest.raises(ValueError, match="overlaps"):
        SharedLinear.from_linear(lin, [(0, 1), (1, 2)])


def branch_with(layer: nn.Linear) -> Branch:
    b = Branch(BranchSpec(1, "none", None, 0, (6,), 1), (3, 1, 1), 2)
    b.fc[0] = layer
    return b


def test_self_merge_counts_pairs_and_saves_params():
    b = branch_with(known_layer())
    merged, res = self_merge(b, 2 / 3)
    assert res.candidates == {0: 3} and res.pairs == {0: 2} and res.params_saved == 2 * 4
    assert count_params(b) - count_params(merged) == res.params_saved
    assert isinstance(b.fc[0], nn.Linear)  # the original is untouched
    x = torch.randn(4, 3, 1, 1)
    # the class layer (fc[1]) is never merged by default
    assert isinstance(merged.fc[1], nn.Linear)
    # a saved merged branch loads back into a freshly built one
    fresh = branch_from_state(Branch(b.spec, (3, 1, 1), 2), merged.state_dict())
    assert torch.allclose(fresh(x), merged(x))


def test_twin_merge_pairs_across_branches():
    a, b = known_layer(), known_layer()
    with torch.no_grad():
        b.weight[4, 0] += 0.5  # neuron 4 of B is off by 0.5 in one weight
    pairs = twin_pairs(a.weight, a.bias, b.weight, b.bias)
    assert len(pairs) == 6 and sorted(e for *_, e in pairs)[-1] == pytest.approx(0.5)
    # Neuron 0 of A equals both 0 and 1 of B: greedy keeps one pair per neuron on each side.
    assert len({i for i, _, _ in pairs}) == 6 and len({j for _, j, _ in pairs}) == 6
    ba, bb = branch_with(a), branch_with(b)
    a2, b2, res = twin_merge(ba, bb, 0.5)
    assert res.pairs == {0: 3} and res.params_saved == 3 * 4
    for i, j, _ in pairs[:3]:
        assert torch.equal(a2.fc[0].weight[i], b2.fc[0].weight[j])


def test_traversal_window_and_rule():
    assert traverse_fractions(12, 1 / 3, 0.5) == [4 / 12, 5 / 12, 6 / 12]
    assert len(traverse_fractions(300, 1 / 3, 0.5, max_evals=5)) == 5
    best, trace = select_by_accuracy([0.3, 0.4, 0.5], {0.3: 0.8, 0.4: 0.9, 0.5: 0.9}.get)
    assert best == 0.5 and len(trace) == 3  # tie -> more pairs (more memory saved)
    assert n_merge(1 / 3, 64) == 21
    for lo, hi in ((-0.1, 0.5), (0.3, 0.6), (0.5, 0.4)):
        with pytest.raises(ValueError, match="merge range"):
            check_range(lo, hi)


# ---------------------------------------------------------------------------- KD (Eq. 2)
def test_kd_loss_terms_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # softmax (0.25, 0.75)
    labels = torch.tensor([1])
    teacher = torch.zeros(1, 2)  # softmax (0.5, 0.5)
    p = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    shared, init = [(p, torch.tensor([True, False]))], [torch.zeros(2, 2)]
    mse = 0.25 ** 2 + 0.25 ** 2
    kl = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    l1 = 3.0  # row 0 only: |1| + |2|
    total, parts = kd_loss(logits, labels, teacher, shared, init, a=1.0, b=0.0)
    assert float(total) == pytest.approx(mse) and parts["mse"] == pytest.approx(mse)
    total, parts = kd_loss(logits, labels, teacher, shared, init, a=0.0, b=0.0)
    assert float(total) == pytest.approx(kl) and parts["kl"] == pytest.approx(kl)
    total, parts = kd_loss(logits, labels, teacher, shared, init, a=0.5, b=2.0)
    assert float(total) == pytest.approx(0.5 * mse + 0.5 * kl + 2.0 * l1) and parts["l1"] == pytest.approx(l1)
    # KD target equal to the branch: KL vanishes
    _, parts = kd_loss(logits, labels, logits, a=0.0, b=0.0)
    assert parts["kl"] == pytest.approx(0.0, abs=1e-7)
    for bad in ({"a": 1.5}, {"b": -1.0}, {"temperature": 0.0}):
        with pytest.raises(ValueError):
            kd_loss(logits, labels, teacher, **bad)


@pytest.fixture(scope="module")
def merged_task():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 4, 1, 1, generator=g)
    y = (x[:, 0, 0, 0] > 0).long().numpy()
    teacher = torch.nn.functional.one_hot(torch.from_numpy(y), 2).float() * 4
    torch.manual_seed(0)
    b = Branch(BranchSpec(1, "none", None, 0, (8,), 1), (4, 1, 1), 2)
    merged, res = self_merge(b, 0.5)
    return merged, x.numpy(), y, teacher.numpy()


@pytest.mark.parametrize("b,freeze,moves", [(1e6, False, False), (0.0, False, True), (0.0, True, False)])
def test_shared_weights_bound_by_b(merged_task, b, freeze, moves):
    import copy

    merged, x, y, teacher = merged_task
    m = copy.deepcopy(merged)
    (w, mask), (bias, _) = shared_tensors(m)
    w0, b0, out0 = w.detach().clone(), bias.detach().clone(), m.fc[1].weight.detach().clone()
    res = recover(m, x, y, teacher, a=0.5, b=b, freeze_shared=freeze, epochs=3, batch_size=32, lr=1e-2, seed=0)
    shared_moved = not torch.equal(w[mask], w0[mask]) or not torch.equal(bias[mask], b0[mask])
    assert shared_moved == moves
    assert (res.shared_l1 > 0) == moves
    assert not torch.equal(w[~mask], w0[~mask])  # unshared rows always train
    assert not torch.equal(m.fc[1].weight, out0)


def test_few_shot_fraction():
    idx = few_shot_index(100, 0.2, 0)
    assert len(idx) == 20 and len(set(idx.tolist())) == 20 and not np.array_equal(idx, few_shot_index(100, 0.2, 1))
    for bad in (0.0, 1.5, -0.2):
        with pytest.raises(ValueError, match=f"few-shot fraction {bad}"):
            check_kd(0.5, 1.0, 1.0, bad)


def test_kd_retrains_the_fc_part_only_and_the_control_is_the_same_training():
    """recover_seeds: the conv part keeps its weights; merged and unmerged copies see the same subsets;
    the unmerged branch (the control) has no shared weights to hold."""
    from repshare.multiexit.features import FeatureCache
    from repshare.multiexit.study import FewShot, KDSettings, Sets, recover_seeds

    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 3, 4, 4)).astype(np.float32)
    y = (x[:, 0].mean((1, 2)) > 0).astype(np.int64)
    cache = FeatureCache({1: x}, np.eye(2, dtype=np.float32)[y] * 3, y)
    torch.manual_seed(0)
    b = Branch(BranchSpec(1, "dw", 3, 1, (8,), 2), (3, 4, 4), 2)
    merged, _ = self_merge(b, 0.5)
    kd = KDSettings(0.5, 1.0, 1.0, 0.5, False, 2.0, 8, 1e-2)
    sets, pool = Sets(cache, cache, [1]), FewShot(cache, np.arange(40))
    rec = recover_seeds(merged, pool, sets, kd, [0, 1], splits=("select", "val"))
    ctl = recover_seeds(b, pool, sets, kd, [0, 1])
    for name, p in rec.first.conv.named_parameters():
        assert torch.equal(p, dict(merged.conv.named_parameters())[name])  # conv untouched
    assert not torch.equal(rec.first.fc[1].weight, merged.fc[1].weight)  # the FC part trained
    assert rec.images_seen == ctl.images_seen > 0 and ctl.shared_l1 == [0.0, 0.0]
    assert len(rec.correct["select"]) == 2 and set(ctl.correct) == {"val"}
    # a seed subset of a recovery over more seeds is the same as running those seeds
    one = recover_seeds(b, pool, sets, kd, [1])
    assert np.array_equal(ctl.pick([0, 1], [1]).mean_correct("val"), one.mean_correct("val"))
    assert ctl.pick([0, 1], [2]) is None
