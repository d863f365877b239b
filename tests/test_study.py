"""The seed study's consuming side: the config fingerprint, the aggregation over seeds, the study file."""

from __future__ import annotations

import hashlib
import json
import math

import pytest

from repshare.comparison.study import (
    Study,
    StudyError,
    aggregate_seeds,
    build_study,
    config_fingerprint,
    parse_study,
    read_study,
    study_use,
    write_study,
)
from repshare.stats import Estimate

CFG = {"seed": 0, "paths": {"data_dir": "data", "results_dir": "results"}, "logger": {"dir": "results/wandb"},
       "data": {"n_val": 48, "image_size": 64}, "gemel": {"steps": 40}, "compare": {"keep_target": 0.95},
       "report": {"title": "t"}, "experiment_name": "smoke"}


def est(v: float, interpretable: bool = True, note: str = "") -> Estimate:
    return Estimate(v, v - 0.1, v + 0.1, 100, "images", "bootstrap", note=note, interpretable=interpretable)


def test_fingerprint_is_the_sha256_of_the_canonical_config_without_seed_and_paths():
    # independent truth: the canonical JSON written out by hand
    text = '{"data":{"image_size":64,"n_val":48},"experiment_name":"smoke","gemel":{"steps":40}}'
    assert config_fingerprint(CFG) == hashlib.sha256(text.encode()).hexdigest()


def test_fingerprint_ignores_what_a_study_varies_and_sees_everything_else():
    base = config_fingerprint(CFG)
    same = {**CFG, "seed": 7, "paths": {"data_dir": "/x", "results_dir": "/y"}, "logger": {"dir": "/z"},
            "compare": {"keep_target": 0.5}, "report": {"title": "other"}}
    assert config_fingerprint(same) == base
    assert config_fingerprint(dict(reversed(list(CFG.items())))) == base  # key order does not matter
    assert config_fingerprint({**CFG, "data": {"n_val": 49, "image_size": 64}}) != base
    assert config_fingerprint({**CFG, "gemel": {"steps": 40.0000001}}) != base


def test_fingerprint_of_a_composed_config(smoke_cfg):
    from omegaconf import OmegaConf, open_dict

    fp = config_fingerprint(smoke_cfg)
    assert fp == config_fingerprint(OmegaConf.to_container(smoke_cfg, resolve=True))
    with open_dict(smoke_cfg):
        smoke_cfg.seed = 3
        smoke_cfg.paths.results_dir = "/elsewhere"
    assert config_fingerprint(smoke_cfg) == fp


def test_aggregate_is_a_t_interval_over_seeds():
    per_seed = {0: {"q": est(1.0)}, 1: {"q": est(2.0)}, 2: {"q": est(3.0)}}
    (q,) = aggregate_seeds(per_seed).values()
    # mean 2, sd 1, t(0.975, df=2) = 4.302652729911275 -> half-width 4.3027 / sqrt(3)
    half = 4.302652729911275 / math.sqrt(3)
    assert (q.value, q.n, q.over, q.method) == (2.0, 3, "seeds", "t")
    assert q.lo == pytest.approx(2 - half, abs=1e-9) and q.hi == pytest.approx(2 + half, abs=1e-9)
    assert q.interpretable and "3 of 3 seeds" in q.note


def test_aggregate_counts_only_seeds_that_measured_and_keeps_not_interpretable():
    per_seed = {0: {"q": est(1.0), "r": est(5.0)}, 1: {"q": est(3.0), "r": est(math.nan)},
                2: {"q": est(2.0, interpretable=False, note="model at chance")}}
    got = aggregate_seeds(per_seed)
    assert got["q"].value == 2.0 and got["q"].n == 3
    assert not got["q"].interpretable and "seed 2: model at chance" in got["q"].note
    assert got["r"].value == 5.0 and got["r"].n == 1 and not got["r"].has_interval  # one seed: no interval
    assert "1 of 3 seeds" in got["r"].note


def test_build_study_refuses_jobs_with_different_configs_or_too_few_seeds():
    meas = {"q": est(1.0)}
    other = {**CFG, "data": {"n_val": 100, "image_size": 64}}
    with pytest.raises(StudyError, match="seeds 0 and 1 ran different configs"):
        build_study([(0, CFG, meas), (1, other, meas)])
    with pytest.raises(StudyError, match="at least 2 seeds"):
        build_study([(0, CFG, meas)])
    with pytest.raises(StudyError, match="appears twice"):
        build_study([(0, CFG, meas), (0, {**CFG, "seed": 0}, meas)])
    study = build_study([(0, CFG, meas), (1, {**CFG, "seed": 1}, {"q": est(3.0)})], commit="abc")
    assert study.seeds == [0, 1] and study.estimates["q"].value == 2.0 and study.fingerprint == config_fingerprint(CFG)


def test_study_file_round_trips_and_bad_fields_are_named(tmp_path):
    study = build_study([(s, {**CFG, "seed": s}, {"q": est(float(s))}) for s in (0, 1, 2)], commit="abc")
    path = write_study(tmp_path / "study", study)
    assert read_study(path) == study
    assert json.loads((tmp_path / "study" / "checksums.json").read_text())["stage"] == "study"
    assert read_study(tmp_path / "nowhere.json") is None
    doc = study.to_dict()
    for mutate, match in ((lambda d: d.update(format=2), "'format'"),
                          (lambda d: d.update(config_fingerprint="x"), "'config_fingerprint'"),
                          (lambda d: d.update(seeds=[0]), "'seeds'"),
                          (lambda d: d.update(extra=1), "unknown field 'extra'"),
                          (lambda d: d["estimates"]["q"].update(over="images"), "'estimates.q' must be an estimate over seeds"),
                          (lambda d: d["estimates"]["q"].update(n=9), "'estimates.q.n'")):
        bad = json.loads(json.dumps(doc))
        mutate(bad)
        with pytest.raises(StudyError, match=match):
            parse_study(bad, "study.json")


def test_study_use_says_which_intervals_and_why():
    study = Study("a" * 64, [0, 1, 2], "0123456789abcdef", {})
    assert study_use(None, "a" * 64)[0] is None
    used, note = study_use(study, "a" * 64)
    assert used is study and "seeds 0, 1, 2" in note and "0123456789ab" in note
    unused, note = study_use(study, "b" * 64)
    assert unused is None and "for another config" in note


def test_the_study_cli_fingerprints_configs_as_the_compare_stage_sees_them(tmp_path):
    """The CLI reads raw composed files (a sweep job's .hydra/config.yaml, params.yaml); the compare stage
    fingerprints its validated config, where the schema fills optional keys (workload labels, training
    options). A study of the embedded default was once refused by its own compare stage for that."""
    from omegaconf import OmegaConf, open_dict

    from repshare.config import compose_raw
    from repshare.stage import load_params
    from repshare.study import sweep_jobs

    raw = compose_raw([])  # what pipelines/compose.py writes to params.yaml
    for seed in (1, 2):
        job = tmp_path / "sweep" / str(seed) / ".hydra"
        job.mkdir(parents=True)
        with open_dict(cfg := raw.copy()):
            cfg.seed = seed
        OmegaConf.save(cfg, job / "config.yaml")
    params = tmp_path / "params.yaml"
    OmegaConf.save(raw, params)
    stage_fp = config_fingerprint(load_params(params))  # what the compare stage computes
    assert config_fingerprint(OmegaConf.load(params)) != stage_fp  # the raw file alone would not match
    jobs = sweep_jobs(tmp_path / "sweep")
    assert [s for s, _, _ in jobs] == [1, 2] and {config_fingerprint(c) for _, c, _ in jobs} == {stage_fp}
