"""Where MEEdge part 1 keeps its artifacts, and how a later stage (self_merge, kd_recover,
placement) reads them back: feature caches, zoo.json, merge.json, branch weights, profiles and
per-image correctness.

One folder per writing stage, each written whole by ``atomic_dir(..., stage=...)`` with a
``checksums.json``; every reader here verifies the file against it first
(:func:`repshare.utils.artifacts.verify_file`), so a truncated, flipped or replaced file stops the
reading stage with one line naming the file and the stage to rerun, never a wrong result.

=========================================  ==================================================  ==========
what                                        where (under ``results_dir``)                        written by
=========================================  ==================================================  ==========
exit features, teacher logits, labels       ``branches/features/<split>/`` (train, select, val)  branches
zoo: zoo.json, branch weights, correctness  ``branches/zoo/``                                    branches
self-merge: merge.json, merged weights      ``self_merge/``                                      self_merge
part 1's report: profiles.json, section,    ``multiexit/``                                       kd_recover
comparison rows, correctness, branches/
=========================================  ==================================================  ==========
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from repshare.multiexit.features import FeatureCache, open_cache
from repshare.multiexit.zoo import Branch, spec_from_dict

SPLITS = ("train", "select", "val")
BRANCHES_STAGE, MERGE_STAGE, KD_STAGE = "branches", "self_merge", "kd_recover"


@dataclass(frozen=True)
class Part1:
    """Paths of part 1's artifacts under ``results_dir``."""

    results_dir: Path

    @property
    def features_dir(self) -> Path:
        return Path(self.results_dir) / "branches" / "features"

    def features(self, split: str) -> Path:
        if split not in SPLITS:
            raise ValueError(f"feature cache split {split!r} is not one of {', '.join(SPLITS)}")
        return self.features_dir / split

    @property
    def zoo_dir(self) -> Path:
        return Path(self.results_dir) / "branches" / "zoo"

    @property
    def merge_dir(self) -> Path:
        return Path(self.results_dir) / "self_merge"

    @property
    def report_dir(self) -> Path:
        """The method folder the comparison and the dashboard read (``compare.methods.meedge``)."""
        return Path(self.results_dir) / "kd_recover"

    @property
    def profiles(self) -> Path:
        return self.report_dir / "profiles.json"

    def correct(self, split: str) -> Path:
        return self.report_dir / f"correct_{split}.npz"


def open_split(results_dir: str | Path, split: str, exits: Sequence[int]) -> FeatureCache:
    """The verified exit features, teacher logits and labels of one cached split (memory-mapped)."""
    from repshare.utils.artifacts import verify_file

    folder = Part1(Path(results_dir)).features(split)
    for name in [*(f"exit{int(e)}.npy" for e in exits), "logits.npy", "labels.npy"]:
        verify_file(folder / name, BRANCHES_STAGE)
    return open_cache(folder, exits)


def read_zoo(results_dir: str | Path) -> dict[str, Any]:
    """zoo.json (verified): specs, exit shapes, profiles with survival, the cached row counts."""
    from repshare.utils.artifacts import read_json_verified

    return read_json_verified(Part1(Path(results_dir)).zoo_dir / "zoo.json", BRANCHES_STAGE)


def read_merge(results_dir: str | Path) -> dict[str, Any]:
    """merge.json (verified): self-merge rows, the twin-merge comparison and its measurements."""
    from repshare.utils.artifacts import read_json_verified

    return read_json_verified(Part1(Path(results_dir)).merge_dir / "merge.json", MERGE_STAGE)


def read_profiles(results_dir: str | Path) -> dict[str, Any]:
    """profiles.json (verified and schema-checked): the contract with placement."""
    from repshare.multiexit.profile import check_profiles
    from repshare.utils.artifacts import read_json_verified

    path = Part1(Path(results_dir)).profiles
    return check_profiles(read_json_verified(path, KD_STAGE), str(path))


def fit_rows(zoo: dict[str, Any]) -> np.ndarray:
    """Rows of the cached train split that trained the zoo's branches (the KD pool; baselines train on them too)."""
    return np.arange(int(zoo["n_fit"]))


def write_correct(path: Path, ids: Sequence[str], correct: np.ndarray) -> Path:
    """Per-image correctness: ``ids`` (one per row) and ``correct`` float32 (n_ids, n_images) in [0, 1]."""
    correct = np.asarray(correct, dtype=np.float32)
    if correct.ndim != 2 or correct.shape[0] != len(ids):
        raise ValueError(f"correctness table of shape {correct.shape} does not match {len(ids)} ids")
    import zipfile

    # np.savez stamps each member with the current time; a fixed stamp keeps the file's bytes (and its hash) stable.
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, arr in (("ids", np.asarray(list(ids), dtype=str)), ("correct", correct)):
            with z.open(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), "w", force_zip64=True) as f:
                np.lib.format.write_array(f, arr, allow_pickle=False)
    return path


def read_correct_file(path: Path, stage_hint: str) -> tuple[list[str], np.ndarray]:
    """(ids, correctness (n_ids, n_images) float32) from a verified ``correct_<split>.npz``."""
    import zipfile

    from repshare.utils.artifacts import ArtifactError, verify_file

    verify_file(path, stage_hint)
    try:
        with np.load(path, allow_pickle=False) as z:
            ids, correct = [str(i) for i in z["ids"]], np.asarray(z["correct"], dtype=np.float32)
    except (ValueError, KeyError, OSError, zipfile.BadZipFile):
        raise ArtifactError(f"{path} is not a correctness table (ids, correct): rerun the {stage_hint} stage") from None
    if correct.ndim != 2 or correct.shape[0] != len(ids):
        raise ArtifactError(f"{path}: correctness of shape {correct.shape} for {len(ids)} ids: rerun the {stage_hint} stage")
    return ids, correct


def read_correct(results_dir: str | Path, split: str) -> tuple[list[str], np.ndarray]:
    """Part 1's per-image correctness on ``split`` (select | val): rows ``final``, every zoo branch
    ``<id>``, ``<id>+merged`` and ``<id>+recovered`` (mean over the KD seeds); image order = that
    split's cached labels."""
    return read_correct_file(Part1(Path(results_dir)).correct(split), KD_STAGE)


def build_branch(spec_doc: dict, in_shape: Sequence[int], num_classes: int) -> Branch:
    """A fresh branch from its spec (as stored in zoo.json) and its exit's (C, H, W)."""
    return Branch(spec_from_dict(spec_doc), tuple(int(v) for v in in_shape), int(num_classes))


def load_branch(path: Path, spec_doc: dict, in_shape: Sequence[int], num_classes: int, stage_hint: str) -> Branch:
    """A saved (plain or merged) branch, verified against its writer's checksums, rebuilt from its spec."""
    from repshare.models.checkpoint import load_state_file
    from repshare.multiexit.merge import branch_from_state
    from repshare.utils.artifacts import verify_file

    verify_file(path, stage_hint)
    return branch_from_state(build_branch(spec_doc, in_shape, num_classes), load_state_file(path)).eval()


def zoo_branch_loader(results_dir: str | Path, zoo: dict[str, Any]):
    """``load(id, file=None)``: a zoo branch (its trained file by default) rebuilt from zoo.json."""
    paths = Part1(Path(results_dir))

    def load(bid: str, file: Path | None = None, stage_hint: str = BRANCHES_STAGE) -> Branch:
        spec = zoo["specs"][bid]
        path = file if file is not None else paths.zoo_dir / "branches" / f"{bid}.safetensors"
        return load_branch(path, spec, zoo["exit_shapes"][str(spec["exit"])], zoo["num_classes"], stage_hint)

    return load


def save_branch(branch: torch.nn.Module, path: Path, branch_id: str) -> Path:
    """Save a branch's weights (safetensors; one metadata key, so the header bytes are always the same)."""
    from safetensors.torch import save_file

    from repshare.utils.io import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in branch.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"id": str(branch_id)})
    return path


def write_branch_set(folder: Path, results_dir: str | Path, zoo: dict[str, Any], survivors: Sequence[dict],
                     recovered: dict[str, torch.nn.Module], seed: int) -> Path:
    """``folder``/index.json plus every survivor's weights as trained, merged and recovered (seed ``seed``):
    one folder from which a device could load any placed branch."""
    import shutil

    from repshare.utils.io import write_json

    paths = Part1(Path(results_dir))
    folder.mkdir(parents=True, exist_ok=True)
    index = {}
    for p in survivors:
        bid = p["id"]
        files = {"trained": f"{bid}.safetensors"}
        shutil.copyfile(paths.zoo_dir / "branches" / files["trained"], folder / files["trained"])
        if bid in recovered:
            files.update(merged=f"{bid}.merged.safetensors", recovered=f"{bid}.recovered.safetensors")
            shutil.copyfile(paths.merge_dir / "branches" / files["merged"], folder / files["merged"])
            save_branch(recovered[bid], folder / files["recovered"], bid)
        index[bid] = {"spec": zoo["specs"][bid], "in_shape": zoo["exit_shapes"][str(p["exit"])],
                      "num_classes": zoo["num_classes"], "files": files}
    return write_json(folder / "index.json", {
        "note": f"rebuild with repshare.multiexit.store.load_branch(file, spec, in_shape, num_classes, 'kd_recover'); "
                f"'recovered' is KD seed {seed}'s", "branches": index})
