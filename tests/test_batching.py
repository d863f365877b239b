"""Batching over in-memory splits: sizes, the short-tail rule, order and dtype of what comes out."""

import numpy as np
import pytest
import torch

from repshare.features.batching import batch_bounds, labelled_batches, to_chw


def test_bounds_cover_every_item_once():
    assert batch_bounds(25, 10) == [(0, 10), (10, 20), (20, 25)]
    assert batch_bounds(20, 10) == [(0, 10), (10, 20)]
    assert batch_bounds(3, 10) == [(0, 3)]
    assert batch_bounds(0, 10) == []


def test_short_tail_joins_the_previous_batch():
    assert batch_bounds(21, 10, min_batch=4) == [(0, 10), (10, 21)]
    assert batch_bounds(18, 10, min_batch=4) == [(0, 10), (10, 18)]
    assert batch_bounds(21, 10) == [(0, 10), (10, 20), (20, 21)]
    assert batch_bounds(3, 10, min_batch=4) == [(0, 3)]  # one short batch stays; the estimator names it


def test_batch_below_the_estimator_minimum_is_named():
    with pytest.raises(ValueError, match="capture.batch_size=2 is below the minimum 4"):
        batch_bounds(21, 2, min_batch=4, name="capture.batch_size")
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        batch_bounds(21, 0)


def test_to_chw_keeps_pixels():
    imgs = np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3)
    x = to_chw(imgs[:, :, ::-1])  # a non-contiguous view
    assert x.shape == (2, 3, 3, 4) and x.dtype == torch.uint8 and x.is_contiguous()
    assert torch.equal(x.permute(0, 2, 3, 1), torch.from_numpy(imgs[:, :, ::-1].copy()))


def test_labelled_batches_keep_pixels_and_labels_aligned():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (7, 4, 6, 3), dtype=np.uint8)
    labels = np.arange(7, dtype=np.int32)
    out = labelled_batches(imgs, labels, 3)
    assert [len(y) for _, y in out] == [3, 3, 1]
    x = torch.cat([b for b, _ in out])
    assert x.dtype == torch.uint8 and x.shape == (7, 3, 4, 6)
    assert all(b.is_contiguous() for b, _ in out)
    assert torch.equal(x.permute(0, 2, 3, 1), torch.from_numpy(imgs))
    assert torch.cat([y for _, y in out]).tolist() == list(range(7))
    assert out[0][1].dtype == torch.int64
    with pytest.raises(ValueError, match="7 images but 6 labels"):
        labelled_batches(imgs, labels[:6], 3)


def test_progress_logs_with_an_eta_when_not_a_terminal(caplog, monkeypatch):
    import logging
    import sys

    from repshare.utils.progress import progress

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    with caplog.at_level(logging.INFO, logger="repshare"):
        assert list(progress(range(20), 20, "work", every=0.25)) == list(range(20))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("work:")]
    assert [ln.split()[1] for ln in lines] == ["5/20", "10/20", "15/20", "20/20"]
    assert all("ETA" in ln for ln in lines) and lines[-1].endswith("ETA 0 s")
