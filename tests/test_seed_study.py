"""`make study`'s aggregation step (python -m repshare.study) on hand-made sweep folders: the mean and
Student-t interval over seeds of each quantity, the main run counted as a seed when its config matches."""

from __future__ import annotations

import math

import pytest
from omegaconf import OmegaConf

from comparison_fixtures import SECTION_FOLDERS, make_section, write_method
from repshare import study
from repshare.comparison.study import read_study
from repshare.config import compose
from repshare.stats import Estimate

QUANTITY = "gemel.bytes_saved_pct"


def one_run(results, seed_value: float, chance: bool = False) -> None:
    """Every method's section; gemel's measures QUANTITY = seed_value (a point, as one run gives)."""
    for method, folder in SECTION_FOLDERS.items():
        meas = None
        if method == "gemel":
            e = Estimate(seed_value, seed_value - 1, seed_value + 1, 100, "images", "bootstrap",
                         note="model at chance" if chance else "", interpretable=not chance)
            meas = {QUANTITY: e}
        sec = make_section(method, results / folder, measurements=meas)
        write_method(results, method, folder, section=sec)


def job(sweep, k: int, seed: int, value: float, cfg_overrides=(), chance: bool = False):
    d = sweep / str(k)
    cfg = compose(["experiment=smoke", f"seed={seed}", *cfg_overrides])
    (d / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, d / ".hydra" / "config.yaml")
    one_run(d / "results", value, chance)
    return cfg


def t_interval_by_hand(values):
    n = len(values)
    m = sum(values) / n
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))
    t = {2: 12.706204736174698, 3: 4.302652729911275}[n]  # t_{0.975, n-1}, from a table
    return m, m - t * sd / math.sqrt(n), m + t * sd / math.sqrt(n)


def test_sweep_and_main_run_give_the_t_interval_over_seeds(tmp_path, capsys):
    sweep = tmp_path / "multirun"
    job(sweep, 0, 1, 30.0)
    job(sweep, 1, 2, 24.0)
    main_cfg = compose(["experiment=smoke", "seed=0"])
    OmegaConf.save(main_cfg, tmp_path / "params.yaml")
    one_run(tmp_path / "results", 27.0)
    rc = study.main([str(sweep), "--results", str(tmp_path / "results"), "--params", str(tmp_path / "params.yaml"),
                     "--out", str(tmp_path / "study")])
    assert rc == 0, capsys.readouterr().err
    got = read_study(tmp_path / "study" / "estimates.json")
    assert got.seeds == [0, 1, 2]
    e = got.estimates[QUANTITY]
    m, lo, hi = t_interval_by_hand([27.0, 30.0, 24.0])
    assert (e.value, e.lo, e.hi, e.n, e.over) == (pytest.approx(m), pytest.approx(lo), pytest.approx(hi), 3, "seeds")


def test_a_main_run_of_another_config_is_left_out_and_named(tmp_path, capsys):
    sweep = tmp_path / "multirun"
    job(sweep, 0, 1, 30.0)
    job(sweep, 1, 2, 24.0)
    OmegaConf.save(compose(["experiment=smoke", "seed=0", "gemel.target=0.9"]), tmp_path / "params.yaml")
    one_run(tmp_path / "results", 99.0)
    assert study.main([str(sweep), "--results", str(tmp_path / "results"), "--params", str(tmp_path / "params.yaml"),
                       "--out", str(tmp_path / "study")]) == 0
    assert "another config" in capsys.readouterr().err
    e = read_study(tmp_path / "study" / "estimates.json").estimates[QUANTITY]
    m, lo, hi = t_interval_by_hand([30.0, 24.0])
    assert e.n == 2 and e.value == pytest.approx(m) and e.lo == pytest.approx(lo)


def test_jobs_of_different_configs_or_too_few_seeds_stop_with_one_line(tmp_path, capsys):
    sweep = tmp_path / "multirun"
    job(sweep, 0, 1, 30.0)
    job(sweep, 1, 2, 24.0, cfg_overrides=["gemel.target=0.9"])
    assert study.main([str(sweep), "--results", str(tmp_path / "none"), "--out", str(tmp_path / "study")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error [study]:") and "different configs" in err[0]
    assert not (tmp_path / "study").exists()

    lone = tmp_path / "lone"
    job(lone, 0, 1, 30.0)
    assert study.main([str(lone), "--results", str(tmp_path / "none"), "--out", str(tmp_path / "s2")]) == 2
    assert "at least 2 seeds" in capsys.readouterr().err


def test_a_failed_job_is_named_and_left_out_and_chance_propagates(tmp_path, capsys):
    sweep = tmp_path / "multirun"
    job(sweep, 0, 1, 30.0, chance=True)
    job(sweep, 1, 2, 24.0)
    failed = sweep / "2"
    (failed / ".hydra").mkdir(parents=True)
    OmegaConf.save(compose(["experiment=smoke", "seed=3"]), failed / ".hydra" / "config.yaml")
    job(sweep, 3, 4, 26.0)
    assert study.main([str(sweep), "--results", str(tmp_path / "none"), "--out", str(tmp_path / "study")]) == 0
    assert "seed 3" in capsys.readouterr().err
    got = read_study(tmp_path / "study" / "estimates.json")
    assert got.seeds == [1, 2, 4]
    assert not got.estimates[QUANTITY].interpretable  # one seed at chance: the study cannot carry a verdict
