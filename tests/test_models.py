"""Source models: Lightning fast_dev_run, safetensors round trip, backbone initialisation, bad input."""

from __future__ import annotations

import pytest
import torch
from omegaconf import open_dict

from repshare.stages.prepare import run as prepare
from repshare.features.stages import stage_modules
from repshare.models.checkpoint import load_into, save_model
from repshare.models.classifier import build_classifier
from repshare.models.detector import build_detector, init_backbone_from_classifier, to_effdet_target
from repshare.models.load import load_classifier
from repshare.models.preprocess import Preprocess
from repshare.stages.train_classifier import run as train_classifier
from repshare.stages.train_detector import run as train_detector
from repshare.training.resume import state_dir


@pytest.fixture
def prepared(smoke_cfg):
    with open_dict(smoke_cfg):
        smoke_cfg.data.n_train, smoke_cfg.data.n_val = 16, 8
        smoke_cfg.trainer.fast_dev_run = True
        smoke_cfg.trainer.enable_progress_bar = False
        smoke_cfg.train.classifier.batch_size = 4
        smoke_cfg.train.detector.batch_size = 2
    prepare(smoke_cfg)
    return smoke_cfg


def test_fast_dev_run_both_models(prepared):
    train_classifier(prepared)  # one train + one val batch through the Lightning module
    with open_dict(prepared):
        prepared.model.detector.init_backbone_from_classifier = False
    train_detector(prepared)


def test_safetensors_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model = build_classifier("efficientnet_b0", num_classes=8).eval()
    save_model(model, tmp_path / "m", {"arch": "efficientnet_b0"})
    again = build_classifier("efficientnet_b0", num_classes=8, checkpoint_path=str(tmp_path / "m" / "model.safetensors")).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    assert (tmp_path / "m" / "model.json").is_file()


def test_backbone_initialisation_copies_every_stage_exactly():
    torch.manual_seed(0)
    classifier = build_classifier("efficientnet_b0", num_classes=8)
    detector = build_detector("efficientdet_d0", num_classes=8, image_size=128)
    before = [{n: t.clone() for n, t in s.state_dict().items()} for s in stage_modules(detector.backbone)]
    copied = init_backbone_from_classifier(detector, classifier)
    assert copied > 300
    for k, (src, dst) in enumerate(zip(stage_modules(classifier), stage_modules(detector.backbone))):
        for name, tensor in src.state_dict().items():
            assert torch.equal(tensor, dst.state_dict()[name]), (k, name)
    assert not all(torch.equal(before[1][n], stage_modules(detector.backbone)[1].state_dict()[n]) for n in before[1])


def test_tf_and_non_tf_models_are_not_mixed():
    classifier = build_classifier("tf_efficientnet_b0", num_classes=8)
    detector = build_detector("efficientdet_d0", num_classes=8, image_size=128)
    with pytest.raises(ValueError, match="stage 0"):
        init_backbone_from_classifier(detector, classifier)


def test_bad_checkpoint_path_arch_and_class_count(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        build_classifier("efficientnet_b0", num_classes=8, checkpoint_path=str(tmp_path / "nope.safetensors"))
    with pytest.raises(ValueError, match="efficientnet_b99"):
        build_classifier("efficientnet_b99", num_classes=8)
    with pytest.raises(ValueError, match="efficientdet_d99"):
        build_detector("efficientdet_d99", num_classes=8)
    save_model(build_classifier("efficientnet_b0", num_classes=8), tmp_path / "m", {})
    with pytest.raises(ValueError, match="class count"):
        build_classifier("efficientnet_b0", num_classes=10, checkpoint_path=str(tmp_path / "m"))
    with pytest.raises(ValueError, match="class count"):
        load_into(build_classifier("efficientnet_b1", num_classes=8), tmp_path / "m", "classifier")
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="bad.safetensors"):
        build_classifier("efficientnet_b0", num_classes=8, checkpoint_path=str(tmp_path / "bad.safetensors"))


def test_missing_trained_model_names_the_stage(smoke_cfg):
    with pytest.raises(FileNotFoundError, match="train_classifier"):
        load_classifier(smoke_cfg)


def test_resume_state_is_dropped_when_the_config_changes(smoke_cfg):
    d, resume = state_dir(smoke_cfg, "classifier", "aaa")
    assert resume is None
    # What ResumeState writes: a Lightning checkpoint with the fingerprint of its config beside it.
    torch.save({"state_dict": {}, "loops": {}}, d / "last.ckpt")
    (d / "fingerprint.txt").write_text("aaa\n")
    assert state_dir(smoke_cfg, "classifier", "aaa")[1] == d / "last.ckpt"  # same config: resume
    assert state_dir(smoke_cfg, "classifier", "bbb")[1] is None  # other config: start over


def test_preprocess_normalises_and_resizes():
    pre = Preprocess(16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    x = torch.full((1, 3, 32, 32), 255, dtype=torch.uint8)
    y = pre(x)
    assert y.shape == (1, 3, 16, 16) and torch.allclose(y, torch.full_like(y, 2.0))
    with pytest.raises(ValueError, match="lanczos"):
        Preprocess(16, interpolation="lanczos")


def test_effdet_target_conversion():
    t = {"bbox": torch.tensor([[[1.0, 2.0, 3.0, 4.0], [-1, -1, -1, -1]]]), "cls": torch.tensor([[0, -1]])}
    e = to_effdet_target(t, 128, 1)
    assert e["bbox"][0, 0].tolist() == [2.0, 1.0, 4.0, 3.0]  # yxyx
    assert e["cls"][0].tolist() == [1.0, -1.0]  # 1-based, padding kept
