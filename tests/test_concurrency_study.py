"""The concurrency study, its controls, measurements, claims and the accuracy proxy, against closed
forms, brute force and hand-made rows (issue 22: study.py and proxy.py had no direct test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import networkx as nx
import numpy as np
import pytest
import torch

from repshare.claims import Claim, judge
from repshare.concurrency import measure
from repshare.concurrency.claims import CLAIMS, QUANTITIES
from repshare.concurrency.graphs import GeneratorParams, expected_dp_degree, parallel_chains, undirected_graph
from repshare.concurrency.latency import LinkModel
from repshare.concurrency.matched import base_generator, control_name, degree_matched_params, expected_degree
from repshare.concurrency.network import NetSpec
from repshare.concurrency.proxy import ProxyTraining, proxy_data, to_tensor_images, train_proxy
from repshare.concurrency.study import DPSweep, StudySettings, WorkloadDag, run_study
from repshare.concurrency.summary import summaries


# --------------------------------------------------------------------------- degree-matched controls
@pytest.mark.parametrize("n,m", [(12, 2), (40, 1), (40, 5), (80, 3)])
def test_ba_edge_count_is_the_closed_form(n, m):
    g = undirected_graph("ba", n, 0, GeneratorParams(ba_m=m))
    assert 2 * g.number_of_edges() / n == pytest.approx(expected_degree("ba", n, GeneratorParams(ba_m=m)))


def test_ws_keeps_k_and_er_dp_degree_match_monte_carlo():
    p = GeneratorParams(ws_k=6, er_p=0.1, dp_alpha=1.0, dp_beta=1.0, dp_p=0.6)
    assert all(2 * undirected_graph("ws", 30, s, p).number_of_edges() / 30 == 6 for s in range(5))
    for gen in ("er", "dp"):
        deg = [2 * undirected_graph(gen, 30, s, p).number_of_edges() / 30 for s in range(400)]
        se = np.std(deg, ddof=1) / np.sqrt(len(deg))
        assert abs(np.mean(deg) - expected_degree(gen, 30, p)) < 4 * se  # independent Monte Carlo estimate
    # DP's closed form, summed by hand over ring distances for N = 5: distances 1, 2, 2, 1
    assert expected_dp_degree(5, 1.0, 1.0, 0.5) == pytest.approx(0.5 + 0.25 + 0.25 + 0.5)


@pytest.mark.parametrize("n", [12, 40, 80])
def test_matched_constants_reach_dp_degree_or_the_nearest_integer(n):
    params = GeneratorParams()
    target = expected_dp_degree(n, params.dp_alpha, params.dp_beta, params.dp_p)
    er, info = degree_matched_params("er_matched", n, params)
    assert er.er_p * (n - 1) == pytest.approx(target) and info["dp_mean_degree"] == pytest.approx(target)
    ba, _ = degree_matched_params("ba_matched", n, params)
    brute = min(range(1, n), key=lambda m: abs(2 * m * (n - m) / n - target))  # brute force over every m
    assert ba.ba_m == brute
    ws, _ = degree_matched_params("ws_matched", n, params)
    assert ws.ws_k == min(range(2, n, 2), key=lambda k: abs(k - target))
    assert (er.ba_m, er.ws_k) == (params.ba_m, params.ws_k)  # only the matched constant moves


def test_control_names():
    assert control_name("er") == "er_matched" and base_generator("ws_matched") == "ws"
    with pytest.raises(ValueError, match="dp_matched"):
        base_generator("dp_matched")


# --------------------------------------------------------------------------- measurements on hand-made rows
def rows_from(cs: dict, k: int, sizes=(40,), units=(4, 6), speedup=1.0, latency=None) -> list[dict]:
    """Best rows whose CS is cs[generator] (a number, or a function of (size, n, graph))."""
    out = []
    for g, v in cs.items():
        for size in sizes:
            for n in units:
                for i in range(k):
                    c = v(size, n, i) if callable(v) else v
                    out.append({"generator": g, "n_vertices": size, "n_units": n, "graph": i, "best": True, "CS": c,
                                "speedup": speedup, "Lambda": 1e6, "latency_s": c if latency is None else latency(c),
                                "longest_path": size // 2})
    return out


def test_cs_gap_is_the_worst_setting_and_guards_few_graphs():
    # DP 1.0 everywhere except (40, n=6) where it is 1.5; the best other generator scores 2.0.
    rows = rows_from({"dp": lambda s, n, i: 1.5 if n == 6 else 1.0, "er": 2.0, "ba": 3.0}, k=6)
    est = measure.cs_gap(rows, ["er", "ba"], [40], [4, 6], n_boot=200, seed=0)
    assert est.value == pytest.approx(-0.5) and (est.lo, est.hi) == pytest.approx((-0.5, -0.5))
    assert est.interpretable and est.n == 6
    claim = next(c for c in CLAIMS if c.key == "concurrency.dp_lowest_cs")
    assert judge(claim, est).verdict == "holds"
    few = measure.cs_gap(rows_from({"dp": 1.0, "er": 2.0}, k=3), ["er"], [40], [4, 6], 200, 0)
    assert not few.interpretable and judge(claim, few).verdict == "inconclusive"


def test_cs_gap_interval_matches_a_brute_force_bootstrap():
    rng = np.random.default_rng(1)
    dp, er = rng.normal(3, 1, 8), rng.normal(4, 1, 8)
    rows = rows_from({"dp": lambda s, n, i: dp[i], "er": lambda s, n, i: er[i]}, k=8, units=(4,))
    est = measure.cs_gap(rows, ["er"], [40], [4], n_boot=500, seed=3)
    idx = np.random.default_rng(3).integers(0, 8, size=(500, 8))  # the documented resampling of graph indices
    boot = np.sort(dp[idx].mean(1) - er[idx].mean(1))
    assert est.value == pytest.approx(dp.mean() - er.mean())
    assert (est.lo, est.hi) == pytest.approx(tuple(np.percentile(boot, [2.5, 97.5])))


def test_unequal_graph_counts_are_refused():
    rows = rows_from({"dp": 1.0, "er": 2.0}, k=6)
    with pytest.raises(ValueError, match="unequal"):
        measure.cs_gap(rows[:-1], ["er"], [40], [4, 6], 100, 0)


def test_rho_is_one_for_a_monotone_latency_and_minus_one_for_a_decreasing_one():
    cs = {"dp": lambda s, n, i: 1 + i + n / 10, "er": lambda s, n, i: 20 + i + n / 10}
    up = measure.rho_cs_latency(rows_from(cs, k=6, latency=lambda c: c ** 2), ["dp", "er"], [40], [4, 6], 200, 0)
    down = measure.rho_cs_latency(rows_from(cs, k=6, latency=lambda c: -c), ["dp", "er"], [40], [4, 6], 200, 0)
    assert (up.value, up.lo, up.hi) == pytest.approx((1, 1, 1)) and down.value == pytest.approx(-1)


def test_table4_estimates_by_hand():
    rows = []
    for i in range(6):
        for g, (greedy, prob) in {"er": (50, 40 + i), "dp": (30, 20)}.items():
            rows += [{"generator": g, "graph": i, "staging": "greedy", "params": 1000 * greedy},
                     {"generator": g, "graph": i, "staging": "probabilistic", "params": 1000 * prob}]
    est = measure.table4_estimates(rows, ["er", "dp"], n_boot=200, seed=0)
    assert est["concurrency.table4_greedy_minus_prob_min"].value == pytest.approx(50 - 42.5)  # ER: 50 - mean(40..45)
    assert est["concurrency.table4_sd_greedy_minus_prob_max"].value == pytest.approx(0.0)  # DP: 0 - 0
    assert est["concurrency.table4_dp_minus_smallest_other"].value == pytest.approx(20 - 42.5)


def test_proxy_accuracy_difference_and_chance_guard():
    good = [{"generator": g, "arch": k, "top1": t, "correct": int(t * 500), "n_eval": 500}
            for k in range(3) for g, t in (("dp", 0.9), ("er", 0.8), ("ba", 0.7))]
    est = measure.proxy_accuracy(good, ["er", "ba", "dp"], num_classes=8)
    assert est.value == pytest.approx(100 * (0.9 - 0.75)) and est.interpretable
    chance = [{**r, "top1": 0.13, "correct": 65} for r in good]  # 13 % of 500 with 8 classes: not above 1/8
    est = measure.proxy_accuracy(chance, ["er", "ba", "dp"], num_classes=8)
    assert not est.interpretable and "chance" in est.note


def test_sanity_checks_are_not_claims():
    _, fig5 = __import__("repshare.concurrency.study", fromlist=["fig5_rows"]).fig5_rows()
    checks = measure.sanity_checks(fig5, [])
    assert [c.key for c in checks] == ["concurrency.fig5_eta"] and checks[0].passed
    assert not any(isinstance(c, Claim) for c in checks)
    assert "concurrency.fig5_eta" not in {c.key for c in CLAIMS}


def test_registry_entries_are_valid_and_cover_the_paper():
    from repshare.comparison.registry import registry

    keys = {c.key for c in registry() if c.paper == "concurrency"}
    assert keys == {c.key for c in CLAIMS}
    assert all(c.quantity in QUANTITIES and c.quantity.startswith("concurrency.") for c in CLAIMS)
    primary = {c.key for c in CLAIMS if c.primary}
    assert {"concurrency.dp_lowest_cs", "concurrency.dp_lowest_cs_degree_matched", "concurrency.dp_reduces_latency",
            "concurrency.accuracy_comparable", "concurrency.dp_speedup_6_7x"} == primary


# --------------------------------------------------------------------------- the study end to end (tiny)
def tiny_settings(**kw) -> StudySettings:
    base = dict(generators=("er", "dp"), n_vertices=(12,), n_units=(2, 3), epsilons=(0.1, 0.3), graphs_per_generator=2,
                staging_samples=2, grouping_units=(2,), exponents=(1.0, 1.5, 1.0), seed=0,
                generator=GeneratorParams(ba_m=2), network=NetSpec(base_channels=4, max_channels=8, image_size=16),
                latency=LinkModel(), proxy=ProxyTraining(archs_per_generator=0),
                dp_sweep=DPSweep(betas=(1.0,), n_vertices=12, n_units=2, graphs=1), controls=("ws_matched",))
    base.update(kw)
    return StudySettings(**base)


def chain_workload(n: int) -> WorkloadDag:
    dag = parallel_chains([n])
    for v in dag:
        dag.nodes[v].update(flops=100, bytes=64)
    return WorkloadDag(("m1", "m2"), "classification", "chain", 32, dag)


def test_run_study_rows_structure_and_determinism():
    s = tiny_settings()
    res = run_study(s, [chain_workload(6)])
    # (2 generators + 1 control) x 1 size x 2 graphs x 2 unit counts x 2 epsilons
    assert len(res.rows) == 3 * 2 * 2 * 2 and res.graphs_scored == 6
    for g in ("er", "dp", "ws_matched"):
        for i in range(2):
            for n in (2, 3):
                cell = [r for r in res.rows if (r["generator"], r["graph"], r["n_units"]) == (g, i, n)]
                assert sum(r["best"] for r in cell) == 1
                assert min(cell, key=lambda r: r["CS"])["best"]
    assert [c["generator"] for c in res.control_params] == ["ws_matched"] and res.control_params[0]["value"] == 2
    # A chain: eta = n exactly, and the workload's CS with the generators' U_c follows Eq. 4 by hand.
    for r in res.workload_rows:
        assert r["eta"] == pytest.approx(r["n_units"]) and r["model"] == "m1+m2"
        lam = r["Lambda"] / (r["generator_unit_cost"] * r["n_units"])
        assert r["CS_generator_uc"] == pytest.approx((r["delta_w"] * lam ** 1.5 * r["eta"]) ** (1 / 3))
        assert r["generator_unit_cost"] == min(v for k, v in res.unit_costs.items() if k != "ws_matched")
    assert len(res.sweep_rows) == 1 and res.proxy_rows == []
    again = run_study(s, [chain_workload(6)])
    assert json.dumps(again.rows, default=str) == json.dumps(res.rows, default=str)
    table = summaries(res.rows, ["er", "dp", "ws_matched"], [12], [2, 3])
    assert len(table) == 6 and all(r["graphs"] == 2 for r in table)


def test_mean_degree_column_counts_inner_edges():
    res = run_study(tiny_settings(generators=("dp",), controls=(), dp_sweep=DPSweep(graphs=0)))
    for r in res.rows:  # the generator's own graph, before the DAG conversion adds input and output
        g = undirected_graph("dp", 12, r["seed"], GeneratorParams(ba_m=2))
        assert r["mean_degree"] == pytest.approx(2 * g.number_of_edges() / 12)


# --------------------------------------------------------------------------- the accuracy proxy
def brightness_data(n: int, size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Two classes a network must separate: dark vs bright images."""
    y = np.arange(n) % 2
    x = np.where(y[:, None, None, None] == 1, 220, 30).astype(np.uint8) * np.ones((n, size, size, 3), np.uint8)
    return x, y


def test_to_tensor_images_range_and_shape():
    x = to_tensor_images(np.array([[[[0, 255, 0]]]], dtype=np.uint8), 1)
    assert x.shape == (1, 3, 1, 1) and x.flatten().tolist() == [-1.0, 1.0, -1.0]
    assert to_tensor_images(np.zeros((2, 8, 8, 3), np.uint8), 4).shape == (2, 3, 4, 4)


def test_train_proxy_learns_a_trivial_task_and_is_deterministic():
    tx, ty = brightness_data(64)
    data = proxy_data(tx, ty, *brightness_data(32), image_size=8, num_classes=2)
    spec = NetSpec(base_channels=4, max_channels=8, image_size=8, min_resolution=2, num_classes=2)
    cfg = ProxyTraining(steps=30, batch_size=16, lr=1e-2, n_eval=32)
    dag = parallel_chains([2, 2])
    a = train_proxy(dag, spec, data, cfg, seed=3)
    b = train_proxy(dag, spec, data, cfg, seed=3)
    assert a == b  # no clock, no hidden state: the same seed gives the same row
    assert a["top1"] == 1.0 and a["correct"] == 32 and a["n_eval"] == 32
    assert set(a) == {"top1", "correct", "n_eval", "params", "final_loss"}  # no durations in a cached row
    with pytest.raises(ValueError, match="archs_per_generator=0"):
        proxy_data(tx[:0], ty[:0], tx, ty, image_size=8, num_classes=2)
    with pytest.raises(ValueError, match="steps"):
        train_proxy(dag, spec, data, replace(cfg, steps=0), seed=0)


# --------------------------------------------------------------------------- thread-count independence
SCRIPT = """
import json, torch
from repshare.concurrency.graphs import random_dag
from repshare.concurrency.hypergraph import build_hypergraph, partition
from repshare.concurrency.metrics import score_partitions
from repshare.concurrency.network import NetSpec, annotate
out = []
for g, s in (("er", 1), ("dp", 2), ("ba", 3)):
    dag = annotate(random_dag(g, 40, s), NetSpec(), s)
    rows = score_partitions(dag, 6, [0.03, 0.3], seed=0)
    out.append([[r["CS"], sorted((str(k), v) for k, v in r["parts"].items())] for r in rows])
    out.append(sorted((str(v), d["flops"], d["bytes"]) for v, d in dag.nodes(data=True)))
print(json.dumps(out))
"""


def test_partitions_and_scores_do_not_depend_on_the_thread_count():
    outs = []
    for threads in ("1", "2"):
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        res = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        outs.append(res.stdout)
    assert outs[0] == outs[1]
