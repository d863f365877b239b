"""MEEdge part 2 stage: runs in process on a hand-made profiles.json (part 1's contract) and writes
every output; bad inputs fail before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import open_dict
from safetensors.torch import save_file

from repshare.comparison import read_rows, read_section
from repshare.multiexit.placement import candidates_from_profiles, synthetic_candidates
from repshare.workload import workload_models


def fake_profiles(n: int = 14, seed: int = 0) -> dict:
    rows, _ = synthetic_candidates(n, seed)
    rng = np.random.default_rng(seed)
    stage = [float(x) for x in rng.uniform(0.5, 1.5, 8) * 1e-3]
    branches = []
    for k, r in enumerate(rows):
        merged = k % 3 == 0
        branches.append({
            "id": r["id"], "exit": r["exit"], "structure": "none+pool4+fc[]", "conv": "none", "kernel": None,
            "n_conv": 0, "fc_widths": [], "params": r["params"], "flops": 10 * r["params"],
            "branch_latency_s": r["branch_latency_s"],
            "latency_to_exit_s": float(sum(stage[: r["exit"] + 1]) + r["branch_latency_s"]),
            "accuracy": r["accuracy"], "survived": k % 5 != 4, "drop_reason": None if k % 5 != 4 else "dominated",
            "merged_params": int(r["params"] * 0.6) if merged else None,
            "acc_merged": r["accuracy"] - 0.02 if merged else None,
            "acc_recovered": r["accuracy"] - 0.005 if merged and k % 2 == 0 else None,
        })
    return {"backbone": {"stage_latency_s": stage, "head_latency_s": 0.2e-3, "final_accuracy": 0.9,
                         "backbone_params": 4_000_000, "head_params": 400_000, "exits": [1, 2, 3, 4, 5, 6]},
            "branches": branches, "num_classes": 8, "n_val": 200}


def write_inputs(cfg, doc: dict) -> Path:
    results = Path(cfg.paths.results_dir)
    for m in workload_models(cfg.workload):
        d = results / "models" / m.name
        d.mkdir(parents=True, exist_ok=True)
        save_file({"w": torch.zeros(250_000)}, str(d / "model.safetensors"))  # 1 MB each
    p = results / "multiexit" / "profiles.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(doc))
    return results


@pytest.fixture
def cfg(smoke_cfg):
    with open_dict(smoke_cfg):
        smoke_cfg.placement.baselines.train = False
    return smoke_cfg


def test_candidates_from_profiles_uses_merged_and_recovered():
    doc = fake_profiles()
    rows, bb, notes = candidates_from_profiles(doc, "both")
    surv = [b for b in doc["branches"] if b["survived"]]
    merged = [b for b in surv if b["merged_params"] is not None]
    assert len(rows) == len(surv) + len(merged)
    for b in merged:
        m = next(r for r in rows if r["id"] == b["id"] + "+merged")
        assert m["params"] == b["merged_params"]
        assert m["accuracy"] == (b["acc_recovered"] if b["acc_recovered"] is not None else b["acc_merged"])
    assert bb.final_time_s == pytest.approx(sum(doc["backbone"]["stage_latency_s"]) + 0.2e-3)
    assert bb.exit_time_s[3] == pytest.approx(sum(doc["backbone"]["stage_latency_s"][:4]))
    only = candidates_from_profiles(doc, "merged")[0]
    assert len(only) == len(surv)
    with pytest.raises(ValueError, match="placement.candidates='all'"):
        candidates_from_profiles(doc, "all")


def test_stage_writes_everything(cfg):
    from repshare.stages.placement import run

    results = write_inputs(cfg, fake_profiles())
    metrics = run(cfg)
    out = results / "placement"
    for f in ("placements.json", "placements.csv", "baselines.json", "simulation.json", "candidates.json",
              "comparison_rows.json", "section.json"):
        assert (out / f).is_file(), f
    for stem in ("fig7_time_accuracy", "fig8_mae_vs_budget", "fig9a_mae_bars", "fig9b_trace"):
        assert (out / f"{stem}.png").is_file() and (out / f"{stem}.pdf").is_file()
    assert (results / "metrics" / "placement.json").is_file()
    assert (results / "metrics" / "placement_run.json").is_file()
    assert (results / "plots" / "placement_mae_vs_budget.csv").is_file()
    rows = read_rows(out / "comparison_rows.json")
    assert rows and all(r.method == "meedge_placement" and r.metric == {"classifier": "mAE"} for r in rows)
    assert all(r.bytes_saved <= 0 for r in rows)  # branches cost memory
    sec = read_section(out / "section.json")
    assert any("7.23" in c.paper for c in sec.claims)
    assert any(c.verdict == "not tested" for c in sec.claims)  # SPINN not trained here
    # every placement respects its budget and never beats the exact optimum
    doc = json.loads((out / "placements.json").read_text())
    for r in doc["rows"]:
        assert r["memory_bytes"] <= r["budget_bytes"] + 1e-9
        assert r["mae"] <= r["optimum"] + 1e-12
    assert metrics["mae_meedge"] >= metrics["mae_single_exit"]


def test_stage_bad_inputs_write_nothing(cfg):
    from repshare.stages.placement import run

    results = Path(cfg.paths.results_dir)
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        run(cfg)
    doc = fake_profiles()
    write_inputs(cfg, doc)
    (results / "multiexit" / "profiles.json").unlink()
    with pytest.raises(FileNotFoundError, match="profiles.json"):
        run(cfg)
    doc["branches"][0]["accuracy"] = float("nan")
    doc["branches"][0]["survived"] = True
    (results / "multiexit" / "profiles.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="accuracy"):
        run(cfg)
    assert not (results / "placement").exists()
    assert not (results / "metrics" / "placement.json").exists()


def test_stage_budget_below_every_branch_is_an_empty_placement(cfg):
    from repshare.stages.placement import run

    with open_dict(cfg):
        cfg.placement.budget_fractions = [1e-9]
    results = write_inputs(cfg, fake_profiles())
    run(cfg)
    doc = json.loads((results / "placement" / "placements.json").read_text())
    assert all(r["n_branches"] == 0 and "below the smallest branch" in r["message"] for r in doc["rows"])


def fake_cache(results: Path, n_train: int = 96, n_val: int = 48, shape=(8, 6, 6), classes: int = 8) -> None:
    """A feature cache in part 1's on-disk format whose labels are learnable from the features."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        d = results / "multiexit" / "features" / split
        d.mkdir(parents=True, exist_ok=True)
        labels = rng.integers(0, classes, n)
        for e in range(1, 7):
            x = rng.normal(size=(n, *shape)).astype(np.float16)
            x[np.arange(n), labels % shape[0]] += 3.0  # the label's channel lights up
            np.save(d / f"exit{e}.npy", x)
        np.save(d / "logits.npy", rng.normal(size=(n, classes)).astype(np.float32))
        np.save(d / "labels.npy", labels.astype(np.int64))


@pytest.fixture
def one_thread():
    """Tiny branches: a second intra-op thread only adds synchronisation (badly so on a busy box)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.slow
def test_stage_with_baselines_trained_by_part1_code(smoke_cfg, one_thread):
    from repshare.stages.placement import run, train_baselines

    with open_dict(smoke_cfg):
        smoke_cfg.multiexit.features.n_holdout = 16
        smoke_cfg.multiexit.train.epochs = 3
        smoke_cfg.multiexit.train.batch_size = 16
        smoke_cfg.multiexit.train.lr = 0.02
        smoke_cfg.multiexit.latency.repeats = 2
    doc = fake_profiles()
    results = write_inputs(smoke_cfg, doc)
    fake_cache(results)
    # part 1's zoo already trained the one-FC branch of exit 1: it is reused, not retrained
    zoo = {"branches": [{"id": "e1-none-p4-fc0", "exit": 1, "structure": "none+pool4+fc[]", "params": 1032,
                         "flops": 2048, "branch_latency_s": 1e-5, "accuracy": 0.4242}], "train": {}, "n_fit": 80}
    (results / "multiexit" / "zoo").mkdir(parents=True)
    (results / "multiexit" / "zoo" / "zoo.json").write_text(json.dumps(zoo))
    base, info, _ = train_baselines(smoke_cfg, doc, smoke_cfg.placement)
    assert base["one_fc"][0]["accuracy"] == 0.4242 and base["one_fc"][0]["reused_from_zoo"]
    assert info["reused_from_zoo"] == 1 and not any(r.get("reused_from_zoo") for r in base["one_fc"][1:])
    assert [len(base[k]) for k in ("single_exit", "one_fc", "branchynet")] == [0, 6, 2]
    assert 1 <= len(base["spinn"]) <= 6 and base["spinn"] == sorted(base["spinn"], key=lambda r: r["exit"])
    # one FC on a 8 x 6 x 6 map pooled to 4 x 4, 8 classes: 8*16*8 weights + 8 biases
    assert all(r["params"] == 8 * 16 * 8 + 8 for r in base["one_fc"])
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["branch_latency_s"] > 0 for rs in base.values() for r in rs)
    assert max(r["accuracy"] for r in base["one_fc"][1:]) > 0.5  # learnable: the features carry the label
    assert info["spinn_exits"] == sorted(set(info["spinn_exits"]))
    metrics = run(smoke_cfg)
    assert "mae_spinn" in metrics and metrics["baseline_train_seconds"] > 0
    sec = read_section(results / "placement" / "section.json")
    assert not any(c.verdict == "not tested" for c in sec.claims)
    rows = read_rows(results / "placement" / "comparison_rows.json")
    assert {r.extra.get("baseline") for r in rows} >= {"single_exit", "one_fc", "spinn", "branchynet"}
