"""Interrupted training resumes from last.ckpt and ends with the uninterrupted run's weights (issue 10, 1/3/6)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import open_dict
from safetensors.torch import load_file

from repshare.stages.prepare import run as prepare
from repshare.models.classifier import ClassifierModule
from repshare.stage import seed_everything
from repshare.training import resume as train_mod
from repshare.stages.train_classifier import run as train_classifier

EPOCHS = 3


class Crash(RuntimeError):
    pass


@pytest.fixture
def tiny_cfg(smoke_cfg):
    """Smoke classifier at 32 px, 3 epochs of 2 batches of 8: a real Lightning run in a few seconds."""
    with open_dict(smoke_cfg):
        smoke_cfg.data.n_train = 16
        smoke_cfg.data.n_val = 8
        smoke_cfg.model.classifier.input_size = 32
        smoke_cfg.train.classifier.epochs = EPOCHS
        smoke_cfg.train.classifier.batch_size = 8
        smoke_cfg.trainer.enable_progress_bar = False
    prepare(smoke_cfg)
    return smoke_cfg


def _weights(cfg) -> dict[str, torch.Tensor]:
    return load_file(str(Path(cfg.paths.results_dir) / "models" / "classifier" / "model.safetensors"))


def _count_steps(monkeypatch) -> list[int]:
    calls: list[int] = []
    original = ClassifierModule.training_step

    def counted(self, batch, batch_idx):
        calls.append(batch_idx)
        return original(self, batch, batch_idx)

    monkeypatch.setattr(ClassifierModule, "training_step", counted)
    return calls


@pytest.mark.slow  # three real (tiny) Lightning runs: ~20 s of CPU
def test_killed_training_resumes_from_last_ckpt_with_identical_weights(tiny_cfg, monkeypatch):
    results = Path(tiny_cfg.paths.results_dir)
    seed_everything(tiny_cfg.seed)
    train_classifier(tiny_cfg)
    reference = _weights(tiny_cfg)

    # Same run again, crashed right after epoch 1's checkpoint (as a kill in epoch 2 would leave it).
    original_end = train_mod.ResumeState.on_train_epoch_end

    def crash_after_first_epoch(self, trainer, pl_module):
        original_end(self, trainer, pl_module)
        if trainer.current_epoch == 0:
            raise Crash("simulated kill after epoch 1")

    monkeypatch.setattr(train_mod.ResumeState, "on_train_epoch_end", crash_after_first_epoch)
    seed_everything(tiny_cfg.seed)
    with pytest.raises(Crash):
        train_classifier(tiny_cfg)
    state = results / "train_state" / "classifier"
    assert (state / "last.ckpt").is_file() and (state / "fingerprint.txt").is_file()
    monkeypatch.setattr(train_mod.ResumeState, "on_train_epoch_end", original_end)

    steps = _count_steps(monkeypatch)
    seed_everything(tiny_cfg.seed)  # a fresh process seeds the same way
    train_classifier(tiny_cfg)
    assert len(steps) == 2 * (EPOCHS - 1)  # resumed: only epochs 2 and 3 were trained again
    resumed = _weights(tiny_cfg)
    assert resumed.keys() == reference.keys()
    worst = max((resumed[k].double() - reference[k].double()).abs().max().item() for k in reference)
    assert worst <= 1e-6, f"resumed weights differ from the uninterrupted run by {worst}"
    assert not any(state.iterdir())  # finished: the persisted state is empty again, as DVC recorded it
    # Provenance lives beside the metrics, not in model.json (a DVC output later stages hash).
    model_json = (results / "models" / "classifier" / "model.json").read_text()
    assert "created" not in model_json and "provenance" not in model_json
    assert "created" in (results / "metrics" / "classifier_run.json").read_text()


def test_corrupt_or_foreign_resume_state_is_ignored_with_a_warning(tiny_cfg, caplog):
    state = Path(tiny_cfg.paths.results_dir) / "train_state" / "classifier"
    fp = train_mod.fingerprint("x")
    state.mkdir(parents=True)
    (state / "fingerprint.txt").write_text(fp + "\n")
    (state / "last.ckpt").write_bytes(b"PK\x03\x04 truncated")
    with caplog.at_level("WARNING"):
        d, resume = train_mod.state_dir(tiny_cfg, "classifier", fp)
    assert resume is None and not any(d.iterdir())
    assert "last.ckpt" in caplog.text and "corrupt" in caplog.text

    # A checkpoint from another config is not resumed either; nothing is written before a checkpoint exists.
    (state / "fingerprint.txt").write_text("other\n")
    torch.save({"state_dict": {}, "loops": {}}, state / "last.ckpt")
    d, resume = train_mod.state_dir(tiny_cfg, "classifier", fp)
    assert resume is None and not any(d.iterdir())


def test_failed_training_leaves_the_persisted_state_untouched(tiny_cfg, monkeypatch):
    """A run that fails before its first checkpoint must not leave a fingerprint (DVC would see a change)."""

    def boom(self, batch, batch_idx):
        raise Crash("failed in the first step")

    monkeypatch.setattr(ClassifierModule, "training_step", boom)
    seed_everything(tiny_cfg.seed)
    with pytest.raises(Crash):
        train_classifier(tiny_cfg)
    state = Path(tiny_cfg.paths.results_dir) / "train_state" / "classifier"
    assert not state.exists() or not any(state.iterdir())
