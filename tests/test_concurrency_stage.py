"""The `concurrency` stage end to end on the smoke preset (tiny data, untrained weights)."""

from __future__ import annotations

import csv
import shutil

import pytest
from omegaconf import open_dict

from repshare.comparison import read_section
from repshare.concurrency.claims import QUANTITIES
from repshare.utils.artifacts import verify_file
from repshare.utils.io import read_json


def _inputs(cfg) -> None:
    from repshare.stages.prepare import run as prepare
    from repshare.models.checkpoint import save_model
    from repshare.models.classifier import build_classifier
    from repshare.models.detector import build_detector
    from repshare.models.load import model_kwargs
    from repshare.workload import workload_models

    prepare(cfg)
    for m in workload_models(cfg.workload):
        builder = build_detector if m.task == "detection" else build_classifier
        save_model(builder(**model_kwargs(cfg, m.name, use_trained=False)),
                   f"{cfg.paths.results_dir}/models/{m.name}", {"name": m.name})


@pytest.mark.slow
def test_concurrency_stage_smoke(smoke_cfg, tmp_path):
    from repshare.stages.concurrency import run

    cfg = smoke_cfg
    with open_dict(cfg):
        cfg.concurrency.n_units = [2, 3]
        cfg.concurrency.epsilons = [0.3]
    _inputs(cfg)
    # A missing trained model is named before anything is computed or written.
    det = tmp_path / "results" / "models" / "detector"
    shutil.move(det, tmp_path / "detector_away")
    with pytest.raises(FileNotFoundError, match="detector"):
        run(cfg)
    assert not (tmp_path / "results" / "concurrency").exists()
    shutil.move(tmp_path / "detector_away", det)

    metrics = run(cfg)
    out = tmp_path / "results" / "concurrency"
    rows = list(csv.DictReader(open(out / "graphs.csv")))
    # (4 generators + 3 degree-matched controls) x 1 size x 2 graphs x 2 unit counts x 1 epsilon
    assert len(rows) == 28 and {r["generator"] for r in rows} == {"er", "ba", "ws", "dp", "er_matched", "ba_matched",
                                                                  "ws_matched"}
    assert all(r["best"] == "True" for r in rows)
    wl = list(csv.DictReader(open(out / "workload.csv")))
    cls = [r for r in wl if r["model"].startswith("classifier")]
    # EfficientNet-B0 is one chain: the longest path holds every operator, so eta = n exactly.
    assert cls and all(float(r["eta"]) == pytest.approx(int(r["n_units"])) for r in cls)
    assert any(r["model"] == "detector" for r in wl)
    section = read_section(out / "section.json")
    assert section.method == "concurrency" and not hasattr(section, "claims")  # the compare stage judges
    assert set(section.measurements) <= set(QUANTITIES)
    assert "concurrency.cs_dp_minus_best_matched" in section.measurements
    # Smoke's 2 graphs per generator cannot carry a verdict: every graph quantity says so.
    graph_estimates = [e for e in section.measurements.values() if e.over == "graphs"]
    assert graph_estimates and not any(e.interpretable for e in graph_estimates)
    assert [c.key for c in section.sanity][:1] == ["concurrency.fig5_eta"] and all(c.passed for c in section.sanity)
    assert all((out / f.path).is_file() for f in section.figures)
    assert all((out / f.path.replace(".png", ".pdf")).is_file() for f in section.figures)
    verify_file(out / "section.json", "concurrency")  # written with its checksums
    saved = read_json(tmp_path / "results" / "metrics" / "concurrency.json")
    assert saved["graphs_scored"] == 14 and metrics["graphs_scored"] == 14
    assert "train_seconds" not in open(out / "proxy.csv").read().splitlines()[0]
    assert not (out / "comparison_rows.json").exists()  # the score saves no memory

    # Same inputs, same seed: every cached output byte-identical (durations only in concurrency_run.json).
    first = {p.relative_to(tmp_path): p.read_bytes() for p in _cached_outputs(tmp_path)}
    run(cfg)
    second = {p.relative_to(tmp_path): p.read_bytes() for p in _cached_outputs(tmp_path)}
    assert first.keys() == second.keys()
    assert [k for k in first if first[k] != second[k]] == []


def _cached_outputs(root):
    res = root / "results"
    return [p for p in sorted((res / "concurrency").rglob("*")) if p.is_file()] + [
        res / "metrics" / "concurrency.json", res / "plots" / "concurrency_cs.csv",
        res / "plots" / "concurrency_cs_latency.csv"]
