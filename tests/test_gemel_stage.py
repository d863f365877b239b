"""The gemel stage: bad input (one clear error or a valid empty result, earlier results intact)
and a small end-to-end run on the smoke preset whose merged workload loads back tied."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict

from repshare.comparison import read_rows, read_section
from repshare.config import ConfigError, WorkloadModelConfig, compose
from repshare.models.checkpoint import save_model
from repshare.models.classifier import build_classifier


def _models_on_disk(cfg, names=("classifier", "classifier_color")) -> None:
    """Untrained weights where the training stages would write them (the bad-input paths never train)."""
    for name in names:
        save_model(build_classifier(num_classes=cfg.model[name].num_classes), Path(cfg.paths.results_dir) /
                   "models" / name, {})


def _workload(cfg, names) -> None:
    entries = {"classifier": {"name": "classifier", "task": "classification", "metric": "top1"},
               "classifier_color": {"name": "classifier_color", "task": "classification", "metric": "top1",
                                    "label": "color_labels", "init_from": "classifier"},
               "foo": {"name": "foo", "task": "classification", "metric": "top1"}}
    with open_dict(cfg):
        cfg.workload.models = [WorkloadModelConfig(**entries[n]) for n in names]


def _sentinel(cfg) -> Path:
    p = Path(cfg.paths.results_dir) / "gemel" / "earlier.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("{}")
    return p


def test_one_model_workload_gives_a_valid_empty_result(smoke_cfg):
    from repshare.stages import gemel

    _workload(smoke_cfg, ["classifier"])
    _models_on_disk(smoke_cfg, ["classifier"])
    out = gemel.run(smoke_cfg)
    assert out["tried"] == 0 and "nothing to share" in out["stop_reason"]
    folder = Path(smoke_cfg.paths.results_dir) / "gemel"
    assert read_rows(folder / "comparison_rows.json") == []
    assert "1 model(s)" in read_section(folder / "section.json").summary


def test_unknown_model_name_is_named_and_earlier_results_stay(smoke_cfg):
    from repshare.stages import gemel

    _workload(smoke_cfg, ["classifier", "foo"])
    keep = _sentinel(smoke_cfg)
    with pytest.raises(ConfigError, match="model 'foo' is unknown"):
        gemel.run(smoke_cfg)
    assert keep.is_file()


def test_no_identical_layer_gives_a_valid_empty_result(smoke_cfg, monkeypatch):
    from repshare.stages import gemel

    _workload(smoke_cfg, ["classifier", "classifier_color"])
    _models_on_disk(smoke_cfg)
    monkeypatch.setattr(gemel, "identical_layers", lambda models: [])
    out = gemel.run(smoke_cfg)
    assert out["tried"] == 0 and "no identical conv/linear layer" in out["stop_reason"]
    assert read_rows(Path(smoke_cfg.paths.results_dir) / "gemel" / "comparison_rows.json") == []


def test_simulation_settings_are_checked_before_the_search(smoke_cfg, monkeypatch):
    from repshare.stages import gemel

    _workload(smoke_cfg, ["classifier", "classifier_color"])
    _models_on_disk(smoke_cfg)
    monkeypatch.setattr(gemel, "search", lambda *a: pytest.fail("the search ran before the check"))
    with open_dict(smoke_cfg):
        smoke_cfg.gemel.sim.load_ms = {"classifier": 5.0, "foo": 1.0}
    with pytest.raises(ConfigError, match="gemel.sim.load_ms names model 'foo'"):
        gemel.run(smoke_cfg)
    with open_dict(smoke_cfg):
        smoke_cfg.gemel.sim.load_ms = None
        smoke_cfg.gemel.sim.budgets_mb = [2.0]
    with pytest.raises(ConfigError, match="gemel.sim.budgets_mb"):
        gemel.run(smoke_cfg)


@pytest.mark.parametrize("value", ["0", "1.5", "-0.2"])
def test_target_outside_zero_one_is_named(value):
    with pytest.raises(ConfigError, match=rf"gemel.target={float(value)!r}"):
        compose(["experiment=smoke", f"gemel.target={value}"])


def test_budget_smaller_than_the_largest_model_is_named():
    from repshare.stages.gemel import budgets

    sim = OmegaConf.create({"budgets_mb": [1.0, 100.0], "budget_fractions": [0.0]})
    with pytest.raises(ConfigError, match=r"gemel.sim.budgets_mb=\[1.0, 100.0\].*1.0 MB is smaller"):
        budgets({"a": 2**21, "b": 2**20}, sim)
    sim.budgets_mb = None
    sim.budget_fractions = [0.0, 0.5, 1.0]
    assert budgets({"a": 200, "b": 100}, sim) == [200, 250, 300]


def test_bad_value_exits_2_through_the_entry_point(smoke_cfg, tmp_path, capsys):
    from repshare.stage import run_stage
    from repshare.stages import gemel

    params = tmp_path / "params.yaml"
    OmegaConf.save(smoke_cfg, params)
    with pytest.raises(SystemExit) as err:
        run_stage(gemel.run, ["--params", str(params), "gemel.target=2"])
    assert err.value.code == 2 and "gemel.target=2" in capsys.readouterr().err


@pytest.mark.slow
def test_two_classifier_workload_end_to_end(smoke_cfg):
    """prepare -> classifier -> colour classifier (warm start) -> gemel; the merged workload loads back tied."""
    from repshare.data.prepare import prepare
    from repshare.gemel.store import load_merged
    from repshare.stages import gemel, train_classifier_color
    from repshare.training import train_classifier

    _workload(smoke_cfg, ["classifier", "classifier_color"])
    with open_dict(smoke_cfg):
        smoke_cfg.gemel.steps = 1
        smoke_cfg.gemel.max_iterations = 2
    prepare(smoke_cfg)
    train_classifier(smoke_cfg)
    color = train_classifier_color.run(smoke_cfg)
    assert color["label"] == "color_labels" and color["init_from"] == "classifier"
    out = gemel.run(smoke_cfg)
    assert out["tried"] == 2
    folder = Path(smoke_cfg.paths.results_dir) / "gemel"
    rows = read_rows(folder / "comparison_rows.json")
    assert len(rows) == out["accepted"]
    assert all(r.method == "gemel" and r.labels_used and r.bytes_saved > 0 for r in rows)
    for ext in ("png", "pdf"):
        assert (folder / "figures" / f"gemel_frames.{ext}").is_file()
    sec = read_section(folder / "section.json")
    assert sec.method == "gemel" and len(sec.claims) == 2
    skeletons = {n: build_classifier(num_classes=8) for n in ("classifier", "classifier_color")}
    back = load_merged(folder / "merged", skeletons)
    manifest = OmegaConf.to_container(OmegaConf.load(folder / "merged" / "manifest.json"))
    for layer in manifest["shared_layers"]:
        (m1, p1), (m2, p2) = layer["members"].items()
        assert back[m1].get_submodule(p1).weight is back[m2].get_submodule(p2).weight
    its = OmegaConf.to_container(OmegaConf.load(folder / "iterations.json"))["iterations"]
    assert len(manifest["shared_layers"]) == sum(it["layers"] for it in its if it["accepted"])
