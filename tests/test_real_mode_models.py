"""Real-mode models: devices, offline published weights, random init in config, key conversion, any timm family."""

from __future__ import annotations

import importlib.util
import time
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from repshare.config import ConfigError, compose, compose_raw, validate_config
from repshare.stages.prepare import run as prepare
from repshare.features.capture import capture_cka
from repshare.features.stages import num_stages, run_from, run_stages, stage_modules, stage_names
from repshare.models import load as load_mod
from repshare.models import weights as weights_mod
from repshare.models.checkpoint import save_model
from repshare.models.classifier import build_classifier
from repshare.models.convert import convert_efficientnet_keys, main as convert_main
from repshare.models.detector import build_detector
from repshare.models.load import load_classifier, load_detector
from repshare.models.preprocess import Preprocess
from repshare.sharing.merged import MergedClassifier
from repshare.training.evaluate import evaluate_models

ROOT = Path(__file__).resolve().parents[1]


def _imagenet_folder(root: Path, wnids=("n01443537", "n02123045"), per_class: int = 2) -> Path:
    rng = np.random.default_rng(0)
    for w in wnids:
        (root / w).mkdir(parents=True)
        for k in range(per_class):
            Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(root / w / f"{k}.JPEG")
    return root


def _real(tmp_path: Path, *extra: str) -> DictConfig:
    return compose(["experiment=real", f"data.root={tmp_path / 'val'}", f"paths.data_dir={tmp_path / 'data'}",
                    f"paths.results_dir={tmp_path / 'results'}", "logger.wandb_mode=disabled", *extra])


def _device_keys(node, prefix="") -> dict[str, str]:
    out = {}
    for k, v in node.items():
        if isinstance(v, dict):
            out.update(_device_keys(v, f"{prefix}{k}."))
        elif k == "device":
            out[f"{prefix}{k}"] = v
    return out


# ----------------------------------------------------------------------------- item 3: devices
def test_real_preset_runs_on_a_cpu_only_machine(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = _real(tmp_path, "model.classifier.weights=random", "data.image_size=64", "model.classifier.input_size=64")
    devices = _device_keys(OmegaConf.to_container(cfg))
    assert devices and all(v == "auto" for v in devices.values()), devices
    assert cfg.trainer.accelerator in ("auto", "cpu") and cfg.trainer.precision == "32-true"
    _imagenet_folder(tmp_path / "val")
    prepare(cfg)
    out = evaluate_models(cfg, "classifier")["classifier"]
    assert out["n"] == 4 and 0.0 <= out["top1"] <= 1.0


# ----------------------------------------------------------------------------- item 7: random init in config
def test_random_weights_in_config_need_no_file_and_keep_1000_classes(tmp_path):
    cfg = _real(tmp_path, "model.classifier.weights=random", "model.detector.weights=random",
                "model.detector.image_size=128")
    model, _ = load_classifier(cfg)
    assert model.get_classifier().out_features == 1000
    det, _ = load_detector(cfg)
    assert det.config.num_classes == 90


def test_trained_fallback_mismatch_says_how_to_choose_weights(tmp_path):
    save_model(build_classifier("efficientnet_b0", num_classes=8), tmp_path / "results" / "models" / "classifier", {})
    cfg = _real(tmp_path, "model.classifier.pretrained=false")
    with pytest.raises(ValueError, match=r"weights=random\|pretrained"):
        load_classifier(cfg)


def test_weights_key_is_validated_and_backward_compatible():
    base = compose_raw()

    def cfg(*overrides: str) -> DictConfig:  # one Hydra compose, then dotlist overrides (fast)
        return validate_config(OmegaConf.merge(base, OmegaConf.from_dotlist(list(overrides))))

    with pytest.raises(ConfigError, match="model.classifier.weights='rnd'"):
        cfg("model.classifier.weights=rnd")
    with pytest.raises(ConfigError, match="needs model.detector.checkpoint_path"):
        cfg("model.detector.weights=checkpoint")
    with pytest.raises(ConfigError, match="contradicts"):
        cfg("model.classifier.weights=random", "model.classifier.checkpoint_path=/x.pth")
    cases = {(): "trained", ("model.classifier.pretrained=true",): "pretrained",
             ("model.classifier.checkpoint_path=/x",): "checkpoint",
             ("model.classifier.pretrained=true", "model.classifier.checkpoint_path=/x"): "checkpoint",
             ("model.classifier.pretrained=true", "model.classifier.weights=random"): "random"}
    for overrides, want in cases.items():
        assert load_mod.weights_source(cfg(*overrides), "classifier") == want, overrides


# ----------------------------------------------------------------------------- item 6: offline weights
@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """No locally cached weights anywhere, and no proxy that would hide the missing network."""
    from huggingface_hub import constants

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "torch_hub"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    for var in weights_mod.PROXY_VARS + weights_mod.OFFLINE_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def _no_network(monkeypatch):
    def refuse(*a, **k):
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr("socket.create_connection", refuse)


@pytest.mark.parametrize("build", [lambda: build_classifier("efficientnet_b0", num_classes=1000, pretrained=True),
                                   lambda: build_detector("tf_efficientdet_d0", num_classes=90, weights="pretrained")])
def test_published_weights_without_network_fail_fast_in_one_line(empty_caches, monkeypatch, build):
    _no_network(monkeypatch)
    t0 = time.time()
    with pytest.raises(RuntimeError, match="could not fetch the published weights") as err:
        build()
    assert time.time() - t0 < 10
    msg = str(err.value)
    assert "\n" not in msg and "checkpoint_path" in msg and "unreachable" in msg


def test_offline_flag_fails_at_once_and_a_raw_urlerror_becomes_one_line(empty_caches, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE is set; .*model.classifier.checkpoint_path"):
        build_classifier("efficientnet_b0", num_classes=1000, pretrained=True)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    # The host answers but the download fails (what effdet used to show as a URLError traceback).
    monkeypatch.setattr(weights_mod, "reachable", lambda url, timeout=0: True)

    def fail(*a, **k):
        raise urllib.error.URLError("[Errno 101] Network is unreachable")

    monkeypatch.setattr("effdet.helpers.load_state_dict_from_url", fail)
    with pytest.raises(RuntimeError, match=r"URLError: .*model.detector.checkpoint_path"):
        build_detector("tf_efficientdet_d0", num_classes=90, pretrained=True)


# ----------------------------------------------------------------------------- item 8: key conversion
def _timm_to_efficientnet_pytorch(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Built here by hand: timm tf_efficientnet_b0 keys renamed to efficientnet_pytorch's (flat block index)."""
    top = {"conv_stem": "_conv_stem", "bn1": "_bn0", "conv_head": "_conv_head", "bn2": "_bn1", "classifier": "_fc"}
    ir = {"conv_pw": "_expand_conv", "bn1": "_bn0", "conv_dw": "_depthwise_conv", "bn2": "_bn1",
          "se.conv_reduce": "_se_reduce", "se.conv_expand": "_se_expand", "conv_pwl": "_project_conv", "bn3": "_bn2"}
    ds = {"conv_dw": "_depthwise_conv", "bn1": "_bn1", "se.conv_reduce": "_se_reduce", "se.conv_expand": "_se_expand",
          "conv_pw": "_project_conv", "bn2": "_bn2"}
    blocks = sorted({tuple(int(p) for p in k.split(".")[1:3]) for k in state if k.startswith("blocks.")})
    flat = {b: n for n, b in enumerate(blocks)}
    out = {}
    for k, v in state.items():
        if k.startswith("blocks."):
            _, s, b, rest = k.split(".", 3)
            is_ir = any(x.startswith(f"blocks.{s}.{b}.conv_pwl") for x in state)
            module, _, leaf = rest.rpartition(".")
            out[f"_blocks.{flat[(int(s), int(b))]}.{(ir if is_ir else ds)[module]}.{leaf}"] = v
        else:
            head, _, rest = k.partition(".")
            out[f"{top[head]}.{rest}"] = v
    return out


def test_efficientnet_pytorch_keys_convert_to_timm(tmp_path):
    torch.manual_seed(0)
    timm_model = build_classifier("tf_efficientnet_b0", num_classes=10).eval()
    wild = _timm_to_efficientnet_pytorch(timm_model.state_dict())
    # Spot checks written out: block 0 is depthwise-separable, blocks 1-2 form stage 1, block 3 starts stage 2.
    assert "_blocks.0._depthwise_conv.weight" in wild and "_blocks.0._project_conv.weight" in wild
    converted = convert_efficientnet_keys(wild)
    assert torch.equal(converted["blocks.0.0.conv_dw.weight"], wild["_blocks.0._depthwise_conv.weight"])
    assert torch.equal(converted["blocks.0.0.conv_pw.weight"], wild["_blocks.0._project_conv.weight"])
    assert torch.equal(converted["blocks.1.1.conv_pwl.weight"], wild["_blocks.2._project_conv.weight"])
    assert torch.equal(converted["blocks.2.0.bn3.running_var"], wild["_blocks.3._bn2.running_var"])
    assert torch.equal(converted["classifier.weight"], wild["_fc.weight"])
    assert torch.equal(converted["bn2.bias"], wild["_bn1.bias"])
    assert converted.keys() == timm_model.state_dict().keys()
    # The documented command: .pth in, safetensors out, usable as checkpoint_path.
    torch.save({"state_dict": {f"module.{k}": v for k, v in wild.items()}}, tmp_path / "in.pth")
    assert convert_main([str(tmp_path / "in.pth"), str(tmp_path / "out.safetensors"), "--arch", "tf_efficientnet_b0"]) == 0
    loaded = build_classifier("tf_efficientnet_b0", num_classes=10, checkpoint_path=str(tmp_path / "out.safetensors"))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), timm_model(x))
    assert convert_main([str(tmp_path / "in.pth"), str(tmp_path / "o2.safetensors"), "--arch", "tf_efficientnet_b1"]) == 2


def test_conversion_matches_the_efficientnet_pytorch_implementation():
    ep = pytest.importorskip("efficientnet_pytorch")
    torch.manual_seed(0)
    ref = ep.EfficientNet.from_name("efficientnet-b0", num_classes=10).eval()
    for m in ref.modules():  # non-trivial BN statistics, so a swapped BN would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    model = build_classifier("tf_efficientnet_b0", num_classes=10).eval()
    model.load_state_dict(convert_efficientnet_keys(ref.state_dict()), strict=True)
    x = torch.randn(1, 3, 224, 224)  # efficientnet_pytorch pads statically for its 224 input
    with torch.no_grad():
        assert torch.allclose(model(x), ref(x), atol=1e-4)


# ----------------------------------------------------------------------------- item 9: other timm families
FAMILIES = {"resnet18": 5, "convnext_atto": 5, "mobilenetv3_small_050": 7, "regnetx_002": 5, "efficientnet_b0": 8}


@pytest.mark.parametrize("arch, n", FAMILIES.items())
def test_stage_walk_reproduces_every_family_at_every_cut(arch, n):
    torch.manual_seed(0)
    model = build_classifier(arch, num_classes=7).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        outs, direct = run_stages(model, x), model(x)
        assert num_stages(model) == n == len(outs) and stage_names(model)[0] == "stem"
        for j in range(n):
            assert torch.allclose(run_from(model, outs[j], j), direct, atol=1e-5), (arch, j)
    # Each stage's output width is the one timm's feature_info reports for that stage.
    widths = {f["num_chs"] for f in model.feature_info}
    assert outs[-1].shape[1] == model.feature_info[-1]["num_chs"] and widths <= {o.shape[1] for o in outs}


def test_efficientnet_stages_are_the_original_modules():
    model = build_classifier("efficientnet_b0", num_classes=7)
    stages = stage_modules(model)
    assert stages[0][0] is model.conv_stem and stages[0][1] is model.bn1
    assert all(s is b for s, b in zip(stages[1:], model.blocks)) and len(stages) == 1 + len(model.blocks)


@pytest.mark.slow
def test_resnet_classifier_merges_with_the_detector_and_gets_cka():
    torch.manual_seed(0)
    cls = build_classifier("resnet18", num_classes=5).eval()
    det = build_detector("efficientdet_d0", num_classes=5, image_size=128).eval()
    merged = MergedClassifier(det.backbone, cls, 3, 2, Preprocess(32), Preprocess(32))
    with torch.no_grad():
        assert merged(torch.rand(2, 3, 32, 32) * 255).shape == (2, 5)
    batches = [torch.randint(0, 255, (4, 3, 32, 32), dtype=torch.uint8) for _ in range(2)]
    res = capture_cka(cls, Preprocess(32), det.backbone, Preprocess(32), batches)
    assert res.cross.shape == (8, 5) and np.isfinite(res.cross).all()
    with pytest.raises(ValueError, match="vit_tiny_patch16_224.*no stage-wise walk"):
        build_classifier("vit_tiny_patch16_224", num_classes=5)


# ----------------------------------------------------------------------------- Also: error label
def test_evaluate_models_errors_are_labelled_with_the_stage(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("evaluate_models_entry", ROOT / "pipelines" / "evaluate_models.py")
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    with pytest.raises(SystemExit) as exit_:
        entry.main(["--params", str(tmp_path / "missing.yaml"), "which=classifier"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error [evaluate_models]") and "functools" not in err
