"""The cka -> evaluate_merged -> analyze wiring of issue 12 on toy models (stand-in loaders)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf, open_dict
from safetensors.torch import save_file
from torch import nn

from repshare.comparison import read_rows, read_section
from repshare.config import ConfigError, validate_config
from repshare.sharing.evaluate import evaluate_all_pairs
from repshare.utils.io import atomic_dir, write_json

sys.path.insert(0, str(Path(__file__).parent))
from test_adapters import Pre, Toy  # noqa: E402

torch.set_num_threads(1)


def install_fakes(monkeypatch, train_labels: np.ndarray | None = None):
    rng = np.random.default_rng(0)
    val = rng.integers(0, 256, (20, 16, 16, 3), dtype=np.uint8)
    val_labels = rng.integers(0, 5, 20).astype(np.int64)
    train = rng.integers(0, 256, (24, 16, 16, 3), dtype=np.uint8)
    tl = rng.integers(0, 5, 24).astype(np.int64) if train_labels is None else train_labels
    cls, donor = Toy(seed=0), Toy(widths=(5, 3, 7), seed=1)
    det = nn.Module()
    det.backbone, det.head = donor, nn.Linear(2, 2)
    shards = types.ModuleType("repshare.data.shards")
    shards.load_split = lambda root, split, verify=True, lazy=False: types.SimpleNamespace(
        images=val if split == "val" else train, labels=val_labels if split == "val" else tl)
    shards.read_manifest = lambda root: {"splits": {"val": {}, "train": {}, "select": {}}}
    load = types.ModuleType("repshare.models.load")
    load.load_classifier = lambda cfg: (cls, Pre(16))
    load.load_detector = lambda cfg: (det, Pre(24))
    load.resolve_device = lambda name: torch.device("cpu")
    monkeypatch.setitem(sys.modules, "repshare.data.shards", shards)
    monkeypatch.setitem(sys.modules, "repshare.models.load", load)
    return cls, donor, val, val_labels


def configure(cfg):
    with open_dict(cfg):
        cfg.capture.n_samples, cfg.capture.batch_size = 16, 8
        cfg.sharing.n_eval, cfg.sharing.batch_size, cfg.sharing.n_eval_variants = 20, 8, 9  # 2 of 3 batches
        cfg.sharing.n_calibration, cfg.sharing.calibration_batch_size = 24, 8
        cfg.adapter.distill.steps = cfg.adapter.supervised.steps = 3
        cfg.adapter.distill.top_k_cross = cfg.adapter.supervised.top_k_cross = 1
        cfg.adapter.distill.protocols = cfg.adapter.supervised.protocols = ["per_model", "shared"]
        cfg.analysis.n_bootstrap = 20
        cfg.analysis.budget_fracs = [0.0, 0.3, 0.6]
    results = Path(cfg.paths.results_dir)
    write_json(results / "metrics" / "classifier.json", {"top1": 0.5})
    write_json(results / "metrics" / "detector.json", {"map": 0.1})
    for name in ("classifier", "detector", "classifier_color"):  # the workload's weight bytes (denominator)
        (results / "models" / name).mkdir(parents=True, exist_ok=True)
        save_file({"w": torch.zeros(5000)}, str(results / "models" / name / "model.safetensors"))
    return cfg


def run_all(cfg):
    from repshare.stages import analyze, cka, evaluate_merged

    cka.run(cfg)
    evaluate_merged.run(cfg)
    return analyze.run(cfg)


@pytest.mark.slow
def test_pipeline_writes_every_protocol_and_adapter(smoke_cfg, monkeypatch):
    cls, donor, val, val_labels = install_fakes(monkeypatch)
    cfg = configure(smoke_cfg)
    metrics = run_all(cfg)
    results = Path(cfg.paths.results_dir)
    # CKA per protocol; the first protocol is also at the top (what earlier revisions wrote)
    top = json.loads((results / "cka" / "cka.json").read_text())
    per = json.loads((results / "cka" / "per_model" / "cka.json").read_text())
    shared = json.loads((results / "cka" / "shared" / "cka.json").read_text())
    assert top["cross_stage"] == per["cross_stage"] and per["protocol"] == "per_model" and shared["protocol"] == "shared"
    same_hw = [s[1:] for s in shared["shapes"]["detector"]] == [s[1:] for s in shared["shapes"]["classifier"]]
    assert same_hw  # shared input: same-stage resolutions match (no resizing)
    # the paper's setting is scored on all images and equals the original all-pairs evaluation
    pairs = json.loads((results / "evaluate_merged" / "pairs.json").read_text())
    batches = [(torch.from_numpy(val[a:a + 8]).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(val_labels[a:a + 8]))
               for a in (0, 8, 16)]
    ref = evaluate_all_pairs(donor, Pre(24), cls, Pre(16), batches, [(i, j) for i in range(3) for j in range(3)])
    assert pairs["n"] == 20 and len(pairs["pairs"]) == 9
    for r in pairs["pairs"]:
        assert r["acc"] == ref[(r["i"], r["j"])]["acc"] and r["acc_top5"] == ref[(r["i"], r["j"])]["acc_top5"]
    merges = json.loads((results / "evaluate_merged" / "merges.json").read_text())
    cells = {(m["protocol"], m["adapter"]) for m in merges["merges"]}
    assert cells == {(p, a) for p in ("per_model", "shared") for a in ("resample", "moments", "lstsq", "distill", "supervised")}
    by = {(m["protocol"], m["adapter"], m["i"], m["j"]): m for m in merges["merges"]}
    assert len([k for k in by if k[:2] == ("shared", "distill")]) == 3 + 1  # same-stage + top-1 cross
    m = by[("per_model", "lstsq", 1, 2)]
    assert m["n_variants"] == 16 and m["n"] == 16  # whole batches covering n_eval_variants
    assert m["adapter_bytes"] == 4 * (3 * 8 + 8) and m["bytes_saved"] == m["bytes_offloaded"] - m["adapter_bytes"]
    assert by[("per_model", "resample", 1, 2)]["n"] == 20 and by[("per_model", "resample", 1, 2)]["n_variants"] == 16
    assert by[("shared", "supervised", 0, 0)]["labels_used"] and not by[("shared", "distill", 0, 0)]["labels_used"]
    # outputs of the analysis
    out = results / "analyze"
    rows = read_rows(out / "comparison_rows.json")
    assert len(rows) == len(merges["merges"])
    assert {r.labels_used for r in rows if r.extra["adapter"] == "supervised"} == {True}
    assert not any(r.labels_used for r in rows if r.extra["adapter"] != "supervised")
    sec = read_section(out / "section.json")
    assert sec.method == "cka_sharing" and {"cka.abs_r_same", "cka.gap_flops_same", "cka.s_prime"} <= set(sec.measurements)
    hits = np.load(results / "evaluate_merged" / "correct.npy")
    assert hits.shape == (len(merges["merges"]), 20)
    for k, m in enumerate(merges["merges"]):  # each merge's per-image hits give its accuracy, on its own n images
        assert (hits[k, : m["n"]] >= 0).all() and hits[k, : m["n"]].mean() == pytest.approx(m["acc"])
        assert (hits[k, m["n"]:] == -1).all()
    for f in sec.figures:
        assert (out / f.path).stat().st_size > 1000, f.path
    assert not (results / "report").exists()  # the dashboard is someone else's: no HTML here
    regret = [t for t in sec.tables if t.title.startswith("Sharing-point search")][0]
    assert {r["predictor"] for r in regret.rows} >= {"cka", "agreement", "params", "size", "flops"}
    for key in ("r_same_S", "cka.abs_r_same", "shared/regret/agreement", "per_model/best_label_free"):
        assert key in metrics, key
    assert (results / "plots" / "regret.csv").is_file()


def fake_cka(results: Path, protocols=("per_model",)) -> None:
    """CKA files for the trained adapters' pair choice (3 x 3 stages), without running the cka stage."""
    S = [[0.9, 0.5, 0.2], [0.4, 0.8, 0.6], [0.1, 0.3, 0.7]]
    with atomic_dir(results / "cka", stage="cka") as tmp:  # with its checksums, as the cka stage writes it
        for p in protocols:
            write_json(tmp / p / "cka.json", {"cross_stage": S, "protocol": p})


def test_label_free_adapters_never_read_calibration_labels(smoke_cfg, tmp_path, monkeypatch):
    """Garbage labels on the calibration split change only the supervised merges."""
    from repshare.stages import evaluate_merged

    def merges_with(labels, where):
        install_fakes(monkeypatch, labels)
        configure(smoke_cfg)
        with open_dict(smoke_cfg):
            smoke_cfg.paths.results_dir = str(tmp_path / where)
            smoke_cfg.capture.protocols = ["per_model"]
            smoke_cfg.adapter.resample = None
        fake_cka(tmp_path / where)
        evaluate_merged.run(smoke_cfg)
        doc = json.loads((tmp_path / where / "evaluate_merged" / "merges.json").read_text())
        return {(m["protocol"], m["adapter"], m["i"], m["j"]): (m["acc"], m["agree"]) for m in doc["merges"]}

    a = merges_with(np.random.default_rng(5).integers(0, 5, 24).astype(np.int64), "a")
    b = merges_with(np.full(24, 3, dtype=np.int64), "b")
    assert a.keys() == b.keys() and {k[1] for k in a} == {"moments", "lstsq", "distill", "supervised"}
    for k in a:
        if k[1] != "supervised":
            assert a[k] == b[k], k


def test_bad_inputs_are_named_and_earlier_results_stay(smoke_cfg, monkeypatch):
    install_fakes(monkeypatch)
    cfg = configure(smoke_cfg)
    from repshare.stages import evaluate_merged

    earlier = Path(cfg.paths.results_dir) / "evaluate_merged" / "merges.json"
    write_json(earlier, {"earlier": True})
    with pytest.raises(FileNotFoundError, match=r"cka/per_model/cka\.json.*cka stage"):
        evaluate_merged.run(cfg)  # the trained adapters need the protocol's CKA
    fake_cka(Path(cfg.paths.results_dir), ("per_model", "shared"))
    with open_dict(cfg):
        cfg.sharing.n_calibration = 25
    with pytest.raises(ValueError, match="sharing.n_calibration=25 but split 'select' has only 24"):
        evaluate_merged.run(cfg)
    assert json.loads(earlier.read_text()) == {"earlier": True}
    for key, value, match in (("capture.protocols", ["per_model", "same"], "capture.protocols='same'"),
                              ("analysis.budget_fracs", [0.5, 1.5], "analysis.budget_fracs=1.5"),
                              ("analysis.budget_fracs", [-0.1], "analysis.budget_fracs=-0.1"),
                              ("adapter.lstsq.ridge", -1.0, "adapter.lstsq.ridge=-1.0"),
                              ("adapter.distill.labels", True, "adapter.distill.labels=True"),
                              ("adapter.supervised.protocols", ["other"], "adapter.supervised.protocols='other'")):
        bad = cfg.copy()
        with open_dict(bad):
            sel = bad
            *parents, leaf = key.split(".")
            for p in parents:
                sel = sel[p]
            sel[leaf] = value
        with pytest.raises(ConfigError, match=match.replace("[", r"\[")):
            validate_config(bad)
    raw = OmegaConf.to_container(cfg)
    raw["adapter"]["pca"] = {"labels": False}  # an adapter that does not exist
    with pytest.raises(ConfigError, match="pca"):
        validate_config(raw)
