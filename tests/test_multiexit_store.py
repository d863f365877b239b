"""MEEdge part 1's artifacts are verified on read: a truncated, flipped or foreign file gives one
line naming the file and the stage to rerun; nothing is unpickled; written bytes are reproducible."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from repshare.multiexit.features import FeatureCache, open_cache
from repshare.multiexit.store import (
    Part1, build_branch, load_branch, open_split, read_correct_file, save_branch, write_correct,
)
from repshare.utils.artifacts import ArtifactError
from repshare.utils.io import atomic_dir

SPEC = {"exit": 2, "conv": "none", "kernel": None, "n_conv": 0, "fc_widths": [6], "pool": 2}
SHAPE = (3, 4, 4)


def write_cache(folder, n=5, exits=(2,)):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for e in exits:
        np.save(folder / f"exit{e}.npy", rng.standard_normal((n, *SHAPE)).astype(np.float16))
    np.save(folder / "logits.npy", rng.standard_normal((n, 4)).astype(np.float32))
    np.save(folder / "labels.npy", rng.integers(0, 4, n))


@pytest.fixture()
def results(tmp_path):
    """A results folder holding a verified feature cache (train split) and one zoo branch."""
    paths = Part1(tmp_path)
    with atomic_dir(paths.features_dir, stage="branches") as tmp:
        write_cache(tmp / "train")
    torch.manual_seed(0)
    with atomic_dir(paths.zoo_dir, stage="branches") as tmp:
        save_branch(build_branch(SPEC, SHAPE, 4), tmp / "branches" / "b.safetensors", "b")
    return tmp_path


def test_verified_reads_pass_on_intact_files(results):
    cache = open_split(results, "train", [2])
    assert cache.features[2].shape == (5, *SHAPE) and len(cache) == 5
    b = load_branch(Part1(results).zoo_dir / "branches" / "b.safetensors", SPEC, SHAPE, 4, "branches")
    assert b(torch.zeros(1, *SHAPE)).shape == (1, 4)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_feature_file_names_the_file_and_the_stage(results, damage):
    f = Part1(results).features("train") / "exit2.npy"
    data = bytearray(f.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[-10] ^= 0xFF  # a flipped byte in the data, header intact
    f.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"exit2\.npy.*rerun the branches stage"):
        open_split(results, "train", [2])


def test_a_truncated_branch_file_is_refused(results):
    f = Part1(results).zoo_dir / "branches" / "b.safetensors"
    f.write_bytes(f.read_bytes()[:-7])
    with pytest.raises(ArtifactError, match=r"b\.safetensors.*rerun the branches stage"):
        load_branch(f, SPEC, SHAPE, 4, "branches")


def test_garbage_and_pickled_feature_files_never_suggest_unpickling(tmp_path):
    write_cache(tmp_path / "c")
    f = tmp_path / "c" / "exit2.npy"
    f.write_bytes(b"\x93NUMPY\x01\x00v\x00{'descr': '|O', 'fortran_order': False, 'shape': (5,), }" + b" " * 60 + b"\n")
    with pytest.raises(ValueError) as err:
        open_cache(tmp_path / "c", [2])
    assert "exit2.npy" in str(err.value) and "allow_pickle" not in str(err.value)
    f.write_bytes(b"not an array at all")
    with pytest.raises(ValueError, match="exit2.npy is not a readable numeric .npy array") as err:
        open_cache(tmp_path / "c", [2])
    assert "allow_pickle" not in str(err.value)


def test_row_counts_must_agree(tmp_path):
    write_cache(tmp_path / "c")
    np.save(tmp_path / "c" / "labels.npy", np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="exit2.npy has 5 rows but labels.npy has 3"):
        open_cache(tmp_path / "c", [2])


def test_branch_and_correctness_files_have_reproducible_bytes(tmp_path):
    torch.manual_seed(0)
    b = build_branch(SPEC, SHAPE, 4)
    save_branch(b, tmp_path / "x.safetensors", "b")
    save_branch(b, tmp_path / "y.safetensors", "b")
    assert (tmp_path / "x.safetensors").read_bytes() == (tmp_path / "y.safetensors").read_bytes()
    table = np.array([[1, 0, 1], [0.5, 0.5, 1]], np.float32)
    write_correct(tmp_path / "a.npz", ["final", "b+recovered"], table)
    write_correct(tmp_path / "b.npz", ["final", "b+recovered"], table)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with atomic_dir(tmp_path / "out", stage="kd_recover") as tmp:
        write_correct(tmp / "correct_val.npz", ["final", "b+recovered"], table)
    ids, got = read_correct_file(tmp_path / "out" / "correct_val.npz", "kd_recover")
    assert ids == ["final", "b+recovered"] and np.array_equal(got, table)


def test_feature_cache_tensor_is_float32(tmp_path):
    write_cache(tmp_path / "c")
    cache: FeatureCache = open_cache(tmp_path / "c", [2])
    assert cache.tensor(2, slice(0, 2)).dtype == torch.float32
