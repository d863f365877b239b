"""The gemel stage: bad input (one clear error or a valid empty result, earlier results intact)
and a small end-to-end run on the smoke preset whose merged workload loads back tied."""

from __future__ import annotations

import json
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
    monkeypatch.setattr(gemel, "run_study", lambda *a: pytest.fail("the search ran before the check"))
    with open_dict(smoke_cfg):
        smoke_cfg.gemel.sim.budgets_mb = [2.0]
    with pytest.raises(ConfigError, match="gemel.sim.budgets_mb"):
        gemel.run(smoke_cfg)


@pytest.mark.parametrize("value", ["0", "1.5", "-0.2"])
def test_target_outside_zero_one_is_named(value):
    with pytest.raises(ConfigError, match=rf"gemel.target={float(value)!r}"):
        compose(["experiment=smoke", f"gemel.target={value}"])


def test_budgets_by_hand_and_one_smaller_than_the_largest_model_is_named():
    from repshare.gemel.simulate import budgets

    with pytest.raises(ValueError, match=r"gemel.sim.budgets_mb=\[1.0, 100.0\].*1.0 MB is smaller"):
        budgets({"a": 2**21, "b": 2**20}, [1.0, 100.0], [0.0])
    assert budgets({"a": 200, "b": 100}, None, [0.0, 0.5, 1.0]) == [200, 250, 300]
    assert budgets({"a": 200, "b": 100}, [1.0], [0.0]) == [2**20]


@pytest.mark.parametrize("override", ["gemel.decision.alpha=0.5", "gemel.decision.n_boot=10",
                                      "gemel.decision.n_classification=1", "gemel.sim.timing=wallclock",
                                      "gemel.sim.cost.tflops=0", "gemel.sim.cost.run_overhead_ms=-1",
                                      "gemel.sim.claim_budget_fraction=1.5"])
def test_bad_gemel_values_are_named_at_compose(override):
    with pytest.raises(ConfigError, match=override.split("=")[0].replace(".", r"\.")):
        compose(["experiment=smoke", override])


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
    """prepare (with a select split) -> classifier -> colour classifier (warm start) -> gemel: decisions on the
    select split, a control row, measurements marked not interpretable (smoke models are at chance), the merged
    workload loads back tied, and a rerun gives the same bytes."""
    from repshare.gemel.store import load_merged
    from repshare.stages import gemel, train_classifier_color
    from repshare.stages.prepare import run as prepare
    from repshare.stages.train_classifier import run as train_classifier

    _workload(smoke_cfg, ["classifier", "classifier_color"])
    with open_dict(smoke_cfg):
        smoke_cfg.gemel.steps = 1
        smoke_cfg.gemel.max_iterations = 2
        smoke_cfg.gemel.decision.n_boot = 200
        smoke_cfg.data.n_select = 32
    prepare(smoke_cfg)
    train_classifier(smoke_cfg)
    color = train_classifier_color.run(smoke_cfg)
    assert color["label"] == "color_labels" and color["init_from"] == "classifier"
    out = gemel.run(smoke_cfg)
    assert out["tried"] == 2
    folder = Path(smoke_cfg.paths.results_dir) / "gemel"
    its = json.loads((folder / "iterations.json").read_text())
    assert {d["images"] for d in its["decisions"]} == {32}  # the select split decided
    rows = read_rows(folder / "comparison_rows.json")
    control = [r for r in rows if r.extra["control"]]
    assert len(control) == (1 if out["accepted"] else 0) and all(r.bytes_saved == 0 for r in control)
    assert all(r.method == "gemel" and r.labels_used for r in rows)
    for ext in ("png", "pdf"):
        assert (folder / "figures" / f"gemel_frames.{ext}").is_file()
    sec = read_section(folder / "section.json")
    assert sec.method == "gemel"
    assert {"gemel.memory_saved_pct", "gemel.more_frames_pct"} <= set(sec.measurements)
    assert all(not e.interpretable and "at chance" in e.note for e in sec.measurements.values())
    skeletons = {n: build_classifier(num_classes=8) for n in ("classifier", "classifier_color")}
    back = load_merged(folder / "merged", skeletons)
    manifest = json.loads((folder / "merged" / "manifest.json").read_text())
    for layer in manifest["shared_layers"]:
        (m1, p1), (m2, p2) = layer["members"].items()
        assert back[m1].get_submodule(p1).weight is back[m2].get_submodule(p2).weight
    assert len(manifest["shared_layers"]) == sum(it["layers"] for it in its["iterations"] if it["accepted"])
    first = {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    gemel.run(smoke_cfg)
    again = {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    assert first.keys() == again.keys() and [k for k in first if first[k] != again[k]] == []
